"""Errors of a model against labelled frames, overall, per element and per group.

The metrics themselves (and their definitions, which match nequip's test metrics) live in
`ionmix.metrics`; the stress MAE covers the frames that carry a stress label.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.stress import voigt_6_to_full_3x3_stress

from ionmix.dataset.frames import validate_labels
from ionmix.metrics import (
    energy_errors_meV_per_atom,
    force_errors_meV_per_A,
    stress_mae_meV_per_A3,
)

from .data import read_data_file
from .errors import TrainDataError


def _labels(atoms: Atoms, k: int) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Energy (eV), forces (n_atoms, 3) eV/Å and 3×3 stress (eV/Å³, or None) of frame k."""
    labels = validate_labels(atoms, f"frame {k}", require_forces=True, error=TrainDataError)
    stress = labels.get("stress")
    return (
        labels["energy"],
        labels["forces"],
        None if stress is None else voigt_6_to_full_3x3_stress(stress),
    )


@dataclass(frozen=True)
class EvaluationResult:
    """Errors of a model on labelled frames (`evaluate`); units in the names (`ionmix.metrics`).

    Attributes:
        n_frames, n_atoms, n_frames_with_stress: what was evaluated.
        energy_mae_meV_per_atom, energy_rmse_meV_per_atom: per-atom energy errors.
        force_mae_meV_per_A, force_rmse_meV_per_A: over every force component.
        force_mae_meV_per_A_by_element: element → force MAE.
        stress_mae_meV_per_A3: None when no frame has a stress label.
        groups: group name → the same errors of that group's frames (with `group_by`).
    """

    n_frames: int
    n_atoms: int
    n_frames_with_stress: int
    energy_mae_meV_per_atom: float
    energy_rmse_meV_per_atom: float
    force_mae_meV_per_A: float
    force_rmse_meV_per_A: float
    force_mae_meV_per_A_by_element: dict[str, float]
    stress_mae_meV_per_A3: float | None
    groups: dict[str, EvaluationResult] | None = None

    def to_json(self) -> dict[str, Any]:
        """The errors as a dict (``groups`` only when grouped)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "groups"}
        if self.groups is not None:
            out["groups"] = {name: g.to_json() for name, g in self.groups.items()}
        return out


def _summarise(records: list[dict[str, Any]]) -> EvaluationResult:
    """Metrics (meV units, `ionmix.metrics`) over a list of per-frame prediction records."""
    energy = energy_errors_meV_per_atom(
        [r["energy_pred_eV"] for r in records],
        [r["energy_ref_eV"] for r in records],
        [len(r["symbols"]) for r in records],
    )
    forces = force_errors_meV_per_A(
        np.concatenate([r["forces_pred_eV_per_A"] for r in records]),
        np.concatenate([r["forces_ref_eV_per_A"] for r in records]),
        np.concatenate([r["symbols"] for r in records]),
    )
    with_stress = [r for r in records if r["stress_ref_eV_per_A3"] is not None]
    return EvaluationResult(
        n_frames=len(records),
        n_atoms=int(sum(len(r["symbols"]) for r in records)),
        n_frames_with_stress=len(with_stress),
        energy_mae_meV_per_atom=energy["energy_mae_meV_per_atom"],
        energy_rmse_meV_per_atom=energy["energy_rmse_meV_per_atom"],
        force_mae_meV_per_A=forces["force_mae_meV_per_A"],
        force_rmse_meV_per_A=forces["force_rmse_meV_per_A"],
        force_mae_meV_per_A_by_element={
            el: m["mae_meV_per_A"] for el, m in forces["by_element"].items()
        },
        stress_mae_meV_per_A3=stress_mae_meV_per_A3(
            [r["stress_pred_eV_per_A3"] for r in with_stress],
            [r["stress_ref_eV_per_A3"] for r in with_stress],
        ),
    )


def evaluate(
    model: Calculator | str | Path,
    frames: Sequence[Atoms] | str | Path,
    group_by: str | Callable[[Atoms], str] | None = None,
    device: str = "cpu",
    provenance=None,
    on_frame: Callable[[Atoms, dict[str, Any]], None] | None = None,
) -> EvaluationResult:
    """Energy, force and stress errors of `model` on labelled `frames`.

    Args:
        model: an ASE calculator, or a model path (loaded with its baseline by
            `ionmix.models.load_model(path, frames[0])`, in the model's own dtype).
        frames: labelled frames (labels in ``atoms.calc.results``), or an ASE-readable file.
        group_by: an ``atoms.info`` key (e.g. ``"composition"``) or a function
            atoms → group name; adds per-group metrics under ``"groups"``.
        device: device used when `model` is a path.
        provenance: the frames' `Provenance` (ion set of a Coulomb baseline) when `model`
            is a path.
        on_frame: called as ``on_frame(atoms, results)`` after each frame's prediction
            (`results`: the calculator's results, e.g. per-atom ``energies``), so a caller
            that needs more than the errors does not predict every frame twice.

    Returns:
        an `EvaluationResult` (with `group_by`, its ``groups`` too).

    Raises:
        TrainDataError: a frame without energy/forces labels, or without the group key.
    """
    if isinstance(frames, str | Path):
        frames = read_data_file(frames, "evaluation")
    if not frames:
        raise TrainDataError("no frames to evaluate")
    if isinstance(model, str | Path):
        from ionmix.models import load_model

        loaded = load_model(model, frames[0], provenance=provenance, device=device)
        for k, atoms in enumerate(frames):
            loaded.check_species(atoms, f"frame {k}")
        model = loaded.calc

    records: list[dict[str, Any]] = []
    for k, atoms in enumerate(frames):
        energy_ref, forces_ref, stress_ref = _labels(atoms, k)
        work = atoms.copy()
        work.calc = model
        energy = float(work.get_potential_energy())
        forces = np.asarray(work.get_forces(), dtype=float)
        stress = None
        if stress_ref is not None:
            stress = np.asarray(work.get_stress(voigt=False), dtype=float)
        if on_frame is not None:
            on_frame(atoms, work.calc.results)
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
                "energy_pred_eV": energy,
                "energy_ref_eV": energy_ref,
                "forces_pred_eV_per_A": forces,
                "forces_ref_eV_per_A": forces_ref,
                "symbols": np.array(atoms.get_chemical_symbols()),
                "stress_pred_eV_per_A3": stress,
                "stress_ref_eV_per_A3": stress_ref,
            }
        )

    out = _summarise(records)
    if group_by is None:
        return out
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["group"], []).append(r)
    return replace(out, groups={g: _summarise(rs) for g, rs in groups.items()})
