"""Label checks for a labelled frame: one validator for the store, training and evaluation.

Labels are read as ASE keeps them on ``atoms.calc.results`` (a SinglePointCalculator, or
an extxyz read back by ASE): ``energy`` (eV), ``forces`` (n_atoms, 3) eV/Å and optionally
``stress`` (Voigt 6, order xx, yy, zz, yz, xz, xy, or 3×3) eV/Å³.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ase import Atoms

from ionmix.errors import InputError

#: Voigt order of a 3×3 stress: xx, yy, zz, yz, xz, xy.
_VOIGT_ROWS, _VOIGT_COLS = [0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]


def validate_labels(
    atoms: Atoms,
    where: str,
    require_forces: bool = True,
    require_stress: bool = False,
    error: type[Exception] = InputError,
) -> dict[str, Any]:
    """Check a frame's positions and labels; return the labels.

    Args:
        atoms: the frame, labels on ``atoms.calc.results``.
        where: names the frame in every message, e.g. "frame 7 of run r0".
        require_forces: a frame without forces is an error (else forces are optional).
        require_stress: a frame without stress is an error (else stress is optional).
        error: the exception class raised (the caller's stage error).

    Returns:
        ``energy`` (float, eV), ``forces`` ((n_atoms, 3) eV/Å, when labelled) and
        ``stress`` ((6,) Voigt eV/Å³, when labelled).

    Raises:
        `error`, message "<where>: ...": non-finite positions; no or non-finite energy;
        missing forces (when required), forces of the wrong shape or non-finite; missing
        stress (when required), stress not 6 Voigt (or 3×3) finite components.
    """
    if not np.all(np.isfinite(atoms.positions)):
        raise error(f"{where}: positions are not finite (NaN/inf)")
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    labels: dict[str, Any] = {"energy": _energy_eV(results, where, error)}
    if results.get("forces") is not None:
        labels["forces"] = _forces_eV_per_A(results["forces"], len(atoms), where, error)
    elif require_forces:
        raise error(f"{where}: no forces label (missing forces)")
    if results.get("stress") is not None:
        labels["stress"] = _stress_voigt_eV_per_A3(results["stress"], where, error)
    elif require_stress:
        raise error(f"{where}: no stress label (missing stress)")
    return labels


def _energy_eV(results: dict[str, Any], where: str, error: type[Exception]) -> float:
    if results.get("energy") is None:
        raise error(f"{where}: no energy label")
    energy = float(np.asarray(results["energy"]).reshape(()))
    if not math.isfinite(energy):
        raise error(f"{where}: energy is not finite ({energy})")
    return energy


def _forces_eV_per_A(
    forces: Any, n_atoms: int, where: str, error: type[Exception]
) -> np.ndarray:
    forces = np.asarray(forces, dtype=float)
    if forces.shape != (n_atoms, 3):
        raise error(
            f"{where}: forces have shape {forces.shape}, expected ({n_atoms}, 3) "
            "(atom-count mismatch)"
        )
    if not np.all(np.isfinite(forces)):
        bad = int(np.flatnonzero(~np.isfinite(forces).all(axis=1))[0])
        raise error(f"{where}: force on atom {bad} is not finite")
    return forces


def _stress_voigt_eV_per_A3(stress: Any, where: str, error: type[Exception]) -> np.ndarray:
    stress = np.asarray(stress, dtype=float)
    if stress.shape == (3, 3):
        stress = stress[_VOIGT_ROWS, _VOIGT_COLS]
    if stress.shape != (6,):
        raise error(f"{where}: stress must be 6 Voigt components or 3×3, got {stress.shape}")
    if not np.all(np.isfinite(stress)):
        raise error(f"{where}: stress is not finite")
    return stress
