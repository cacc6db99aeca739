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
from .errors import TrainDataError
from .run import TrainResult, run_training


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
    progress: Callable[[str], None] | None = print,
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
    store = DatasetStore(dataset)
    keys = [c if isinstance(c, str) else composition_key(c) for c in compositions]
    stored = store.compositions()
    for key in keys:
        if key not in stored:
            raise TrainDataError(
                f"composition {key} is not in {dataset}; stored: {', '.join(stored) or 'none'}")
    split = split_by_replica(store, keys, n_train, n_val, n_test, train_replica, test_replica,
                             seed, teacher=teacher)
    teacher_key = _one_teacher(split.train + split.val + split.test, dataset)
    data = Path(run_dir) / "data"
    files = {name: data / f"{name}.extxyz" for name in ("train", "val", "test")}
    for name, frames in (("train", split.train), ("val", split.val), ("test", split.test)):
        if not files[name].exists():
            atomic_write_extxyz(frames, files[name])
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
                        overrides=overrides, progress=progress, initial_model=initial_model,
                        baseline=baseline, provenance=store.provenance())


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
