"""Typed errors of the training stage; each message names the preset, key, file or frame."""

from __future__ import annotations

from ionmix.errors import InputError, RunError


class TrainConfigError(InputError):
    """Unknown preset, unknown or invalid override key, or an inconsistent run directory."""


class TrainDataError(InputError):
    """Bad training/validation/test data: empty or unreadable file, missing labels,
    species outside ``type_names``, non-finite labels, cutoff too long for a box."""


class TrainRunError(RunError):
    """``nequip-train`` or ``nequip-package`` failed; the message carries its log tail."""
