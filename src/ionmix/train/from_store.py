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
        energy_reference: ``isolated-atoms`` (default; element energies default to 0, right
            for the classical teacher), ``fit`` or ``mean``.
        isolated_atom_energies_eV: element → eV for ``isolated-atoms`` (and to fix the
            undetermined directions of ``fit``).
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
                             seed)
    data = Path(run_dir) / "data"
    files = {name: data / f"{name}.extxyz" for name in ("train", "val", "test")}
    for name, frames in (("train", split.train), ("val", split.val), ("test", split.test)):
        if not files[name].exists():
            atomic_write_extxyz(frames, files[name])
    type_names = sorted({s for f in split.train + split.val + split.test
                         for s in f.atoms.get_chemical_symbols()})
    if energy_reference == "isolated-atoms":
        iso = dict(isolated_atom_energies_eV or dict.fromkeys(type_names, 0.0))
        shifts: Mapping[str, float] | str = per_type_energy_shifts(
            "isolated-atoms", type_names, isolated_atom_energies_eV=iso)
    else:
        shifts = per_type_energy_shifts(
            energy_reference, type_names, frames=[f.atoms for f in split.train],
            isolated_atom_energies_eV=isolated_atom_energies_eV)
    return run_training(files["train"], files["val"], files["test"], type_names,
                        preset=preset, energy_shifts=shifts, run_dir=run_dir, seed=seed,
                        overrides=overrides, progress=progress)
