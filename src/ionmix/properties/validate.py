"""Validation of a model along its own MD trajectory against the teacher (Figure 2c–e)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ionmix.dataset import equally_spaced_indices
from ionmix.files import atomic_write_json, read_frames
from ionmix.md import MDError
from ionmix.metrics import (
    energy_errors_meV_per_atom,
    force_errors_meV_per_A,
    intramolecular_virial_bar,
    molecule_force_errors,
)
from ionmix.progress import Progress


@dataclass(frozen=True)
class ValidationResult:
    """A model against its teacher along the model's own trajectory (`validate_trajectory`).

    Attributes (units in the names):
        trajectory: the trajectory file.
        n_frames, n_atoms: frames relabelled, atoms per frame.
        energy_*_meV_per_atom: MAE, RMSE, mean offset (model − teacher) and the MAE after
            removing that offset (`ionmix.metrics.energy_errors_meV_per_atom`).
        force_mae_meV_per_A, force_rmse_meV_per_A: over every force component.
        force_by_element: element → {"mae_meV_per_A", "rmse_meV_per_A", ...}.
        frames: per frame ``step``, ``time_ps``, ``model_energy_eV_per_atom``,
            ``teacher_energy_eV_per_atom`` (and ``model_pressure_bar``,
            ``teacher_pressure_bar`` when both have a stress).
        pressure_*: the configurational pressure, model − teacher, over the frames with
            both stresses (mean, its standard error, MAE; bar); None without stresses.
        teacher_term_change_meV_per_atom: with a classical teacher, its energy by
            force-field term (`ionmix.teachers.classical.terms`; per frame in ``frames``
            as ``teacher_terms_meV_per_atom``): the mean over the later half of the frames
            minus the first frame's. The first frame is where the run started (a
            teacher-sampled frame, usually), so a term that rises is strain the model's
            dynamics put where the teacher's own would not (at a fixed temperature a term's
            mean stays put). None for other teachers.
        molecule_forces: errors of each molecule's net force and torque
            (`ionmix.metrics.molecule_force_errors`: what packs the liquid and sets its
            density), with the teacher's mean magnitude as the scale; None when the frames
            carry no molecules (``mol_id``/``ion_name`` arrays, as `ionmix md` writes).
        molecular_pressure_*: the same pressure comparison with the molecular virial
            (`ionmix.metrics.intramolecular_virial_bar` removed; per frame
            ``model_molecular_pressure_bar``/``teacher_molecular_pressure_bar``): what the
            forces on whole molecules push, free of the stiff bonds' virial, which on
            frames a model did not make can differ by hundreds of bar and even in sign.
            None without molecules or stresses.
    """

    trajectory: str
    n_frames: int
    n_atoms: int
    energy_mae_meV_per_atom: float
    energy_rmse_meV_per_atom: float
    energy_mean_offset_meV_per_atom: float
    energy_mae_after_offset_meV_per_atom: float
    force_mae_meV_per_A: float
    force_rmse_meV_per_A: float
    force_by_element: dict
    frames: list[dict]
    pressure_n_frames: int | None = None
    pressure_mean_difference_bar: float | None = None
    pressure_mean_difference_sem_bar: float | None = None
    pressure_mae_bar: float | None = None
    teacher_term_change_meV_per_atom: dict | None = None
    molecule_forces: dict | None = None
    molecular_pressure_mean_difference_bar: float | None = None
    molecular_pressure_mean_difference_sem_bar: float | None = None

    def to_json(self) -> dict:
        """``validate.json``'s content (the pressure, term and molecule keys only when
        there are some)."""
        return {k: v for k, v in asdict(self).items()
                if not (k.startswith(("pressure_", "teacher_term", "molecul"))
                        and v is None)}


def validate_trajectory(trajectory: str | os.PathLike, teacher_calc, out_dir: str | os.PathLike,
                        n_frames: int = 10,
                        progress: Progress | None = None) -> ValidationResult:
    """Relabel `n_frames` equally spaced trajectory frames with the teacher and compare.

    The model's energies and forces are the ones stored in the trajectory (written by
    `ionmix md`), so the model is not re-run. Teacher labels are appended to
    ``out_dir/teacher_labels.extxyz`` frame by frame; a rerun skips frames already labelled
    (a DFT teacher is slow).

    Returns (and writes ``validate.json`` and ``validate.png``) a `ValidationResult`: energy
    MAE/RMSE/mean offset (meV/atom), force MAE/RMSE overall and per element (meV/Å), and
    per-frame energies. When the trajectory holds the model's stress (periodic NPT/NVT runs
    of `ionmix md`) and the teacher computes one, also the configurational pressure of both
    (no kinetic term) per frame and their mean difference (model − teacher) and MAE: what
    decides an NPT density (a model that prices its own configurations ΔP above the
    teacher expands by ≈ κ_T·ΔP). With a classical teacher, also its energy by force-field
    term along the frames and each term's change from the first frame
    (``teacher_term_change_meV_per_atom``): which degrees of freedom the model strains.
    """
    import ase.io

    path = Path(trajectory)
    if path.is_dir():
        path = path / "trajectory.extxyz"
    frames = read_frames(path, ":", what="trajectory")
    for i, f in enumerate(frames):
        if f.calc is None or "energy" not in f.calc.results or "forces" not in f.calc.results:
            raise MDError(f"{path}: frame {i} has no model energy/forces (write trajectories "
                          "with `ionmix md`)")
    if n_frames < 2:
        raise MDError(f"validate needs at least 2 frames, got --frames {n_frames}")
    picks = equally_spaced_indices(len(frames), n_frames, include_last=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels_path = out / "teacher_labels.extxyz"
    done = {}
    if labels_path.exists():
        for f in ase.io.read(labels_path, ":"):
            done[int(f.info["step"])] = f
    from ase.calculators.singlepoint import SinglePointCalculator

    for j, i in enumerate(picks):
        frame = frames[i]
        step = int(frame.info.get("step", i))
        if step not in done:
            atoms = frame.copy()
            atoms.calc = teacher_calc
            labels = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
            if _has_stress(frame) and "stress" in teacher_calc.implemented_properties:
                labels["stress"] = atoms.get_stress()
            labelled = frame.copy()
            labelled.calc = SinglePointCalculator(labelled, **labels)
            with open(labels_path, "a", encoding="utf-8") as fh:
                ase.io.write(fh, labelled, format="extxyz")
                fh.flush()
                os.fsync(fh.fileno())
            done[step] = labelled
        if progress is not None:
            progress(j + 1, len(picks), "teacher labels")

    n_atoms = len(frames[0])
    symbols = np.array(frames[0].get_chemical_symbols())
    per_frame, f_model, f_teacher = [], [], []
    for i in picks:
        frame = frames[i]
        step = int(frame.info.get("step", i))
        teacher = done[step]
        per_frame.append({
            "step": step, "time_ps": float(frame.info.get("time_ps", np.nan)),
            "model_energy_eV_per_atom": float(frame.get_potential_energy()) / n_atoms,
            "teacher_energy_eV_per_atom": float(teacher.get_potential_energy()) / n_atoms,
            **_pressures_bar(frame, teacher)})
        f_model.append(frame.get_forces())
        f_teacher.append(teacher.get_forces())
    f_model, f_teacher = np.array(f_model), np.array(f_teacher)
    term_change = _teacher_terms(teacher_calc, [frames[i] for i in picks], per_frame)
    molecules = _molecules([frames[i] for i in picks], f_model, f_teacher, per_frame)
    energy = energy_errors_meV_per_atom(  # energies already per atom: n_atoms = 1
        [r["model_energy_eV_per_atom"] for r in per_frame],
        [r["teacher_energy_eV_per_atom"] for r in per_frame], 1)
    forces = force_errors_meV_per_A(f_model.reshape(-1, 3), f_teacher.reshape(-1, 3),
                                    np.tile(symbols, len(picks)))
    result = ValidationResult(
        trajectory=str(path), n_frames=int(len(picks)), n_atoms=n_atoms, **energy,
        force_mae_meV_per_A=forces["force_mae_meV_per_A"],
        force_rmse_meV_per_A=forces["force_rmse_meV_per_A"],
        force_by_element=forces["by_element"], frames=per_frame,
        **_pressure_errors_bar(per_frame), teacher_term_change_meV_per_atom=term_change,
        **molecules)
    atomic_write_json(out / "validate.json", result.to_json())
    from ionmix.report.figure import save_figure
    from ionmix.report.properties import plot_validation

    save_figure(plot_validation(result.to_json(), f_model, f_teacher, symbols),
                out / "validate.png")
    return result


def _molecules(frames: list, f_model: np.ndarray, f_teacher: np.ndarray,
               per_frame: list[dict]) -> dict:
    """What moves whole molecules on the picked frames: ``molecule_forces``
    (`molecule_force_errors`) and, when each row of `per_frame` has both atomic pressures,
    the molecular ones (written into the rows) with their mean difference (model −
    teacher) and its standard error, bar. {} without molecule arrays."""
    from ionmix.chemistry.topology import ION_NAME_ARRAY, MOL_ID_ARRAY

    first = frames[0]
    if MOL_ID_ARRAY not in first.arrays or ION_NAME_ARRAY not in first.arrays:
        return {}
    geometry = (first.arrays[MOL_ID_ARRAY], np.array([f.positions for f in frames]),
                np.array([f.cell.array for f in frames]), first.get_masses())
    out: dict = {"molecule_forces": molecule_force_errors(
        f_model, f_teacher, geometry[0], first.arrays[ION_NAME_ARRAY], *geometry[1:])}
    if any("model_pressure_bar" not in row for row in per_frame):
        return out
    model = intramolecular_virial_bar(f_model, *geometry)
    teacher = intramolecular_virial_bar(f_teacher, *geometry)
    for row, m, t in zip(per_frame, model, teacher, strict=True):
        row["model_molecular_pressure_bar"] = row["model_pressure_bar"] - float(m)
        row["teacher_molecular_pressure_bar"] = row["teacher_pressure_bar"] - float(t)
    diff = np.array([r["model_molecular_pressure_bar"] - r["teacher_molecular_pressure_bar"]
                     for r in per_frame])
    out["molecular_pressure_mean_difference_bar"] = float(diff.mean())
    out["molecular_pressure_mean_difference_sem_bar"] = float(diff.std(ddof=1)
                                                              / np.sqrt(diff.size))
    return out


def _teacher_terms(teacher_calc, frames: list, per_frame: list[dict]) -> dict | None:
    """A classical teacher's energy terms on `frames` into each row of `per_frame`
    (``teacher_terms_meV_per_atom``); returns each term's change from the first frame to
    the mean of the later half (meV/atom), or None for another teacher."""
    from ionmix.teachers.classical import ClassicalCalculator

    if not isinstance(teacher_calc, ClassicalCalculator) or teacher_calc.electrostatics_only:
        return None
    from ionmix.teachers.classical.terms import energy_terms_meV_per_atom

    terms = energy_terms_meV_per_atom(frames, teacher_calc)
    for k, row in enumerate(per_frame):
        row["teacher_terms_meV_per_atom"] = {name: float(v[k]) for name, v in terms.items()}
    later = len(frames) // 2
    return {name: float(v[later:].mean() - v[0]) for name, v in terms.items()}


def _has_stress(atoms) -> bool:
    return atoms.calc is not None and "stress" in atoms.calc.results and all(atoms.pbc)


def _pressures_bar(model_frame, teacher_frame) -> dict:
    """Configurational pressures (bar, −trace(σ)/3) of model and teacher on one frame, or {}
    when either has no stress."""
    if not (_has_stress(model_frame) and _has_stress(teacher_frame)):
        return {}
    from ase.units import bar

    def pressure(atoms):
        return float(-np.mean(atoms.get_stress(voigt=True)[:3]) / bar)

    return {"model_pressure_bar": pressure(model_frame),
            "teacher_pressure_bar": pressure(teacher_frame)}


def _pressure_errors_bar(per_frame: list[dict]) -> dict:
    """Mean difference (model − teacher), its standard error and the MAE of the frames'
    configurational pressures, bar; {} when no frame has both."""
    diff = np.array([f["model_pressure_bar"] - f["teacher_pressure_bar"] for f in per_frame
                     if "model_pressure_bar" in f])
    if diff.size == 0:
        return {}
    sem = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("nan")
    return {"pressure_n_frames": int(diff.size),
            "pressure_mean_difference_bar": float(diff.mean()),
            "pressure_mean_difference_sem_bar": sem,
            "pressure_mae_bar": float(np.abs(diff).mean())}
