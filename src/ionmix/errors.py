"""One error hierarchy for every stage; the CLI maps it to exit statuses in one place.

* `InputError` (exit 2): the user's input is wrong — a config key, a file, a species, a
  setting. The message is one line naming the file, key, frame or species at fault.
* `RunError` (exit 1): valid input, but the work failed — a crashed `nequip-train`, an
  OpenMM integration that diverged, a quantum-chemistry code that did not converge.
* `MDBlowUp` (exit 3, in `ionmix.md`): a model left sane bounds during MD; the data
  written so far is kept.

Stage-specific classes (``ConfigError``, ``DatasetError``, ``MDError`` …) subclass one of
these, so callers can catch either the specific class or the whole family.
"""

from __future__ import annotations


class IonmixError(Exception):
    """Base of every error ionmix raises on purpose."""

    exit_code: int = 1


class InputError(IonmixError, ValueError):
    """Bad input (config, file, structure, setting); exit status 2."""

    exit_code = 2


class RunError(IonmixError, RuntimeError):
    """Valid input, but the work itself failed (an engine crashed or diverged); exit 1."""

    exit_code = 1
