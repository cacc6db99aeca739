"""Errors of a model against labelled frames, overall, per element and per group.

Definitions match nequip's test metrics so the two can be compared number for number:

* energy MAE per atom: mean over frames of |E_pred − E_ref| / n_atoms (meV/atom);
* force MAE: mean over every Cartesian component of every atom (meV/Å); per element,
  the same restricted to atoms of that element;
* stress MAE: mean over all 9 components of the 3×3 stress of the frames that carry a
  stress label (meV/Å³).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.stress import voigt_6_to_full_3x3_stress

from .data import read_frames
from .errors import TrainDataError

EV_TO_MEV = 1000.0


def _labels(atoms: Atoms, k: int) -> tuple[float, np.ndarray, np.ndarray | None]:
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    if "energy" not in results or "forces" not in results:
        raise TrainDataError(f"frame {k}: needs energy and forces labels to be evaluated")
    energy = float(np.asarray(results["energy"]).reshape(()))
    forces = np.asarray(results["forces"], dtype=float).reshape(len(atoms), 3)
    stress = results.get("stress")
    if stress is not None:
        stress = np.asarray(stress, dtype=float)
        stress = voigt_6_to_full_3x3_stress(stress) if stress.shape == (6,) else stress
    return energy, forces, stress


def _summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics (meV units) over a list of per-frame error records."""
    energy_err = np.array([r["energy_err_per_atom_eV"] for r in records])
    force_err = np.concatenate([r["force_abs_err_eV_per_A"] for r in records])  # (n_atoms, 3)
    symbols = np.concatenate([r["symbols"] for r in records])
    stress_err = [
        r["stress_abs_err_eV_per_A3"]
        for r in records
        if r["stress_abs_err_eV_per_A3"] is not None
    ]
    by_element = {
        str(el): float(force_err[symbols == el].mean() * EV_TO_MEV) for el in sorted(set(symbols))
    }
    return {
        "n_frames": len(records),
        "n_atoms": int(force_err.shape[0]),
        "n_frames_with_stress": len(stress_err),
        "energy_mae_meV_per_atom": float(np.abs(energy_err).mean() * EV_TO_MEV),
        "energy_rmse_meV_per_atom": float(np.sqrt(np.mean(energy_err**2)) * EV_TO_MEV),
        "force_mae_meV_per_A": float(force_err.mean() * EV_TO_MEV),
        "force_rmse_meV_per_A": float(np.sqrt(np.mean(force_err**2)) * EV_TO_MEV),
        "force_mae_meV_per_A_by_element": by_element,
        "stress_mae_meV_per_A3": (
            float(np.concatenate([s.ravel() for s in stress_err]).mean() * EV_TO_MEV)
            if stress_err
            else None
        ),
    }


def evaluate(
    model: Calculator | str | Path,
    frames: Sequence[Atoms] | str | Path,
    group_by: str | Callable[[Atoms], str] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Energy, force and stress errors of `model` on labelled `frames`.

    Args:
        model: an ASE calculator, or a path to a ``.nequip.zip`` / ``.ckpt`` (loaded with
            `load_calculator(path, device)`, i.e. in the model's own dtype).
        frames: labelled frames (labels in ``atoms.calc.results``), or an ASE-readable file.
        group_by: an ``atoms.info`` key (e.g. ``"composition"``) or a function
            atoms → group name; adds per-group metrics under ``"groups"``.
        device: device used when `model` is a path.

    Returns:
        dict with ``n_frames``, ``n_atoms``, ``n_frames_with_stress``,
        ``energy_mae_meV_per_atom``, ``energy_rmse_meV_per_atom``, ``force_mae_meV_per_A``,
        ``force_rmse_meV_per_A``, ``force_mae_meV_per_A_by_element`` ({element: meV/Å}),
        ``stress_mae_meV_per_A3`` (None if no frame has stress) and, with `group_by`,
        ``groups``: {group: the same keys}.

    Raises:
        TrainDataError: a frame without energy/forces labels, or without the group key.
    """
    if isinstance(model, str | Path):
        from .model import load_calculator

        model = load_calculator(model, device=device)
    if isinstance(frames, str | Path):
        frames = read_frames(frames, "evaluation")
    if not frames:
        raise TrainDataError("no frames to evaluate")

    records: list[dict[str, Any]] = []
    for k, atoms in enumerate(frames):
        energy_ref, forces_ref, stress_ref = _labels(atoms, k)
        work = atoms.copy()
        work.calc = model
        energy = float(work.get_potential_energy())
        forces = np.asarray(work.get_forces(), dtype=float)
        stress_err = None
        if stress_ref is not None:
            stress = np.asarray(work.get_stress(voigt=False), dtype=float)
            stress_err = np.abs(stress - stress_ref)
        if group_by is None:
            group = None
        elif callable(group_by):
            group = str(group_by(atoms))
        else:
            if group_by not in atoms.info:
                raise TrainDataError(f"frame {k}: no atoms.info[{group_by!r}] to group by")
            group = str(atoms.info[group_by])
        records.append(
            {
                "group": group,
                "energy_err_per_atom_eV": (energy - energy_ref) / len(atoms),
                "force_abs_err_eV_per_A": np.abs(forces - forces_ref),
                "symbols": np.array(atoms.get_chemical_symbols()),
                "stress_abs_err_eV_per_A3": stress_err,
            }
        )

    out = _summarise(records)
    if group_by is not None:
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            groups.setdefault(r["group"], []).append(r)
        out["groups"] = {g: _summarise(rs) for g, rs in groups.items()}
    return out
