"""Train from a dataset-store selection: the `ionmix train` entry point.

Selects frames by composition from an ionmix dataset store (ASE database), splits them the
paper's way (train/val equally spaced along replica 0, test from the independent replica
1), writes the splits as extxyz next to the run and trains with `run_training`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ionmix.dataset import DatasetStore, atomic_write_extxyz, composition_key, split_by_replica

from .energy import per_type_energy_shifts
from .errors import TrainConfigError, TrainDataError
from .run import MANIFEST_NAME, TrainResult, check_options, run_training


def train_from_store(
    dataset: str | Path,
    compositions: Sequence[dict[str, float] | str],
    *,
    n_train: int,
    n_val: int,
    n_test: int,
    preset: str,
    run_dir: str | Path,
    energy_reference: str = "isolated-atoms",
    isolated_atom_energies_eV: Mapping[str, float] | None = None,
    train_replica: int = 0,
    test_replica: int = 1,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    say: Callable[[str], None] | None = print,
    teacher: str | None = None,
    initial_model: str | Path | None = None,
    baseline: str = "none",
) -> TrainResult:
    """Select, split, export and train (see `run_training` for the training itself).

    Args:
        dataset: ASE database URL or path of an ionmix dataset store.
        compositions: training compositions (dicts of unit mole fractions, or composition
            keys as stored, e.g. ``"LiPF6=0.4,EMIMPF6=0.6"``).
        n_train, n_val: frames per composition from `train_replica`, equally spaced,
            shuffled into train/val by `seed`.
        n_test: frames per composition from `test_replica` (the independent box).
        preset: a name from `ionmix.train.PRESETS`.
        run_dir: output folder (splits go to ``run_dir/data``).
        energy_reference: ``isolated-atoms`` (default), ``fit`` or ``mean``.
        isolated_atom_energies_eV: element → eV for ``isolated-atoms`` (and to fix the
            undetermined directions of ``fit``); default: the teacher's own (labels of task
            ``isolated-atom`` in the store, else computed by the teacher).
        teacher: teacher key of the frames to use; required only when the store holds
            labels of several teachers at these compositions (they are never mixed).
        initial_model: fine-tune from this package (see `run_training`).
        baseline: the physics under the network (see `run_training`).
    """
    if not compositions:
        raise TrainDataError("empty selection: give at least one training composition")
    check_options(preset, overrides, baseline)  # before anything is written
    store = DatasetStore(dataset, must_exist=True)
    keys = [c if isinstance(c, str) else composition_key(c) for c in compositions]
    stored = store.compositions()
    teachers = sorted(store.records()["teachers"])
    if teacher is not None and teachers and teacher not in teachers:
        raise TrainDataError(f"teacher {teacher!r} has no labels in {dataset}; its teachers: "
                             f"{', '.join(teachers)}")
    for key in keys:
        if key not in stored:
            raise TrainDataError(
                f"composition {key} is not in {dataset}; stored: {', '.join(stored) or 'none'}")
    split = split_by_replica(store, keys, n_train, n_val, n_test, train_replica, test_replica,
                             seed, teacher=teacher)
    teacher_key = _one_teacher(split.train + split.val + split.test, dataset)
    files = write_split({"train": split.train, "val": split.val, "test": split.test},
                        Path(run_dir) / "data", Path(run_dir))
    store.provenance().write(Path(run_dir) / "data")  # the split files are inputs elsewhere
    type_names = sorted({s for f in split.train + split.val + split.test
                         for s in f.atoms.get_chemical_symbols()})
    if energy_reference == "isolated-atoms":
        iso = dict(isolated_atom_energies_eV or teacher_isolated_atom_energies(
            store, teacher_key, type_names, split.train[0].atoms))
        shifts: Mapping[str, float] | str = per_type_energy_shifts(
            "isolated-atoms", type_names, isolated_atom_energies_eV=iso)
    else:
        shifts = per_type_energy_shifts(
            energy_reference, type_names, frames=[f.atoms for f in split.train],
            isolated_atom_energies_eV=isolated_atom_energies_eV)
    return run_training(files["train"], files["val"], files["test"], type_names,
                        preset=preset, energy_shifts=shifts, run_dir=run_dir, seed=seed,
                        overrides=overrides, say=say, initial_model=initial_model,
                        baseline=baseline, provenance=store.provenance())


def write_split(split: dict[str, list], data_dir: Path, run_dir: Path) -> dict[str, Path]:
    """Write each role's frames to ``data_dir/<role>.extxyz`` for a training in `run_dir`;
    their paths.

    A split already there is kept when it holds the same frames (a resumed run). Other
    frames (a changed selection: dataset, compositions, counts, seed) are refused once a
    training started in `run_dir` — never answered with the model of the old data — and
    replaced when none did (a first attempt that stopped before training)."""
    files = {role: Path(data_dir) / f"{role}.extxyz" for role in split}
    trained = (Path(run_dir) / MANIFEST_NAME).is_file()
    for role, frames in split.items():
        path = files[role]
        if path.is_file() and _same_frames(path, [f.atoms for f in frames]):
            continue
        if path.is_file() and trained:
            raise TrainConfigError(
                f"{run_dir} was trained on another selection ({path} holds other {role} "
                "frames than this dataset/composition/count/seed gives); train into a new "
                "folder, or delete it to start over")
        atomic_write_extxyz(frames, path)
    return files


def _same_frames(path: Path, frames: list) -> bool:
    """Whether the extxyz `path` holds `frames`: same count, label ids, species and
    positions (to the file's written precision)."""
    import ase.io
    import numpy as np

    try:
        old = ase.io.read(path, ":")
    except Exception:  # noqa: BLE001 - a damaged file (any of ASE's errors) is not these frames
        return False
    if len(old) != len(frames):
        return False
    for a, b in zip(old, frames, strict=True):
        if (a.info.get("label_id"), a.info.get("teacher")) != (b.info.get("label_id"),
                                                               b.info.get("teacher")):
            return False
        if (len(a) != len(b) or (a.numbers != b.numbers).any()
                or not np.allclose(a.positions, b.positions, atol=1e-5)):
            return False
    return True


def _one_teacher(frames, dataset) -> str:
    """The single teacher key of `frames`; a selection that mixes teachers is refused."""
    keys = sorted({f.info["teacher"] for f in frames})
    if len(keys) != 1:
        raise TrainDataError(f"{dataset}: the selection mixes labels of teachers {keys}; "
                             "choose one (teacher=...)")
    return keys[0]


def teacher_isolated_atom_energies(store: DatasetStore, teacher_key: str,
                                   elements: Sequence[str], frame) -> dict[str, float]:
    """Isolated-atom energies (eV) of `teacher_key`: stored labels of task ``isolated-atom``
    where the store has them, else the teacher's own value (`Teacher.isolated_atom_energy_eV`).
    """
    stored = {}
    for f in store.select(teacher=teacher_key, task="isolated-atom"):
        if len(f.atoms) == 1:
            stored[f.atoms.get_chemical_symbols()[0]] = float(f.atoms.get_potential_energy())
    missing = [el for el in elements if el not in stored]
    if missing:
        from ionmix.teachers import make_teacher

        spec = store.provenance().teacher_spec(frame)
        stored.update(make_teacher(spec).isolated_atom_energies_eV(missing))
    return {el: stored[el] for el in elements}
