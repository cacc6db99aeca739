"""Resuming a run folder: refuse when the settings recorded there differ from this call's.

MD runs (`ionmix.md`), sampling studies (`ionmix.sampling`) and training runs
(`ionmix.train.run`) all continue from what a folder already holds. Each records its
settings there and, on the next call, compares them with `check_same_settings`: a setting
that may grow (``n_steps``, ``max_epochs``) is allowed to change, anything else makes a
folder that mixes two protocols, so it is refused with every changed key, old → new.

Settings are nested dicts/lists (JSON or YAML); keys are compared leaf by leaf as dotted
paths (``sampling.temperature_K``, ``trainer.callbacks.0.patience``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ionmix.errors import InputError

#: Changed keys named in a message at most (the rest are counted).
MAX_KEYS_NAMED = 8


def flatten_settings(node: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of nested dicts/lists as {dotted path: value}; empty containers below the
    top are leaves (an empty top-level record has none)."""
    if isinstance(node, Mapping) and node:
        items = node.items()
    elif isinstance(node, list | tuple) and node:
        items = enumerate(node)
    else:
        return {prefix[:-1]: node} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flatten_settings(value, f"{prefix}{key}."))
    return out


def _under(key: str, paths: Sequence[str]) -> bool:
    """True if dotted `key` is one of `paths` or lies below one of them."""
    return any(key == p or key.startswith(p + ".") for p in paths)


def changed_settings(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    fixed: Sequence[str] | None = None,
    may_change: Sequence[str] = (),
    recorded_only: bool = False,
) -> dict[str, tuple[Any, Any]]:
    """The settings that differ: {dotted key: (old value, new value)}, sorted by key.

    Args:
        old: the settings recorded in the folder.
        new: this call's settings.
        fixed: dotted paths that may not change (each with everything below it); None:
            every key.
        may_change: dotted paths that may change (e.g. ``("n_steps",)``).
        recorded_only: compare only keys the old record has (a record written before a
            setting existed does not refuse it). A key missing on one side is None there.
    """
    old_flat, new_flat = flatten_settings(old), flatten_settings(new)
    keys = sorted(set(old_flat) | set(new_flat))
    if recorded_only:
        keys = [k for k in keys if k in old_flat]
    if fixed is not None:
        keys = [k for k in keys if _under(k, fixed)]
    return {
        k: (old_flat.get(k), new_flat.get(k))
        for k in keys
        if not _under(k, may_change) and old_flat.get(k) != new_flat.get(k)
    }


def describe_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """E.g. "temperature_K = 300.0 → 310.0; seed = 1 → 2" (at most MAX_KEYS_NAMED keys)."""
    parts = [f"{k} = {old!r} → {new!r}" for k, (old, new) in changes.items()]
    more = len(parts) - MAX_KEYS_NAMED
    return "; ".join(parts[:MAX_KEYS_NAMED]) + (f"; and {more} more" if more > 0 else "")


def check_same_settings(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    *,
    what: str,
    advice: str,
    error: type[InputError] = InputError,
    fixed: Sequence[str] | None = None,
    may_change: Sequence[str] = (),
    recorded_only: bool = False,
) -> None:
    """Raise `error` "<what> (<key = old → new; ...>); <advice>" if settings changed.

    Args:
        old: settings recorded in the folder; None when the folder holds none (a new run).
        new: this call's settings.
        what: names the folder, e.g. "runs/md holds a run with other settings".
        advice: what the user can do, e.g. "use another --out folder".
        error: the caller's InputError subclass.
        fixed, may_change, recorded_only: see `changed_settings`.
    """
    if old is None:
        return
    changes = changed_settings(old, new, fixed, may_change, recorded_only)
    if changes:
        raise error(f"{what} ({describe_changes(changes)}); {advice}")
