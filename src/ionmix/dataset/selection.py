"""Which frames a stage uses: the one selection rule of the study, the loop, the labeller
and ``ionmix train``.

A split takes its frames from the sampling runs as they were sampled: `run_frames` picks
``n`` frames equally spaced along one run's MD frames (`equally_spaced`: the paper's every
(N/n)-th frame, the first included) and then reads each as `teacher` labelled it (same
``run_id`` and ``frame_index``). So the frames a quantum teacher is asked to label
(`ionmix.labelling.run.label_split_frames`, `split_counts`) are by construction the
frames the split then trains and tests on, and a frame the teacher failed on is left out
instead of shifting the selection to other frames. With the classical teacher the MD
frames are the labelled frames and the lookup is the identity.

`split_by_replica` is the paper's split: train/val from one replica, test from the other.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from ionmix.dataset.store import DatasetError, DatasetStore, Frame, composition_key

__all__ = ["SPLIT_TASKS", "Split", "equally_spaced", "equally_spaced_indices", "frames_from",
           "run_frames", "split_by_replica", "split_counts"]

#: the tasks of a frame a split may use: a sampled MD frame, or its single-point relabel
SPLIT_TASKS = ("md", "single-point")


def equally_spaced_indices(n_available: int, n: int, include_last: bool = False) -> np.ndarray:
    """Indices of `n` of `n_available` frames equally spaced along a run, the first
    included: the paper's selection (every (n_available / n)-th frame), or, with
    `include_last`, the two ends and equal steps between them (a check along a trajectory,
    whose end is where a drift shows; fewer when `n_available` < `n`)."""
    if include_last:
        return np.unique(np.linspace(0, n_available - 1, min(n, n_available)).round()
                         ).astype(int)
    return np.floor(np.arange(n) * n_available / n).astype(int)


def equally_spaced(frames: Sequence, n: int, what: str = "selection") -> list:
    """`n` frames equally spaced along `frames` (Frames or Atoms; first included), as the
    paper selects (`equally_spaced_indices`).

    Raises DatasetError if fewer than `n` frames are available.
    """
    if n <= 0:
        raise DatasetError(f"{what}: asked for {n} frames")
    if len(frames) < n:
        raise DatasetError(f"{what}: asked for {n} frames but only {len(frames)} are stored")
    return [frames[i] for i in equally_spaced_indices(len(frames), n)]


def run_frames(store: DatasetStore, key: str, replica: int, n: int, teacher: str | None,
               temperature_K: float | None = None, what: str | None = None) -> list[Frame]:
    """`n` frames equally spaced along the MD frames of the run (composition `key`,
    `replica`, sampled at `temperature_K` when given), each as `teacher` labelled it (any
    teacher's label when None); frames `teacher` has no label for are left out (module
    docstring). DatasetError when the run has fewer than `n` MD frames."""
    what = what or f"{key} replica {replica}"
    sampled = store.select(key, temperature_K, replica, task="md")
    picked = equally_spaced(sampled, n, what)
    if teacher is None:
        return picked
    labelled = {_source(f): f for f in store.select(key, temperature_K, replica, teacher)
                if f.info["task"] in SPLIT_TASKS}
    out = [labelled[_source(f)] for f in picked if _source(f) in labelled]
    if not out:
        raise DatasetError(f"{what}: teacher {teacher} labelled none of the {n} frames picked "
                           "from this run; label them first (ionmix label, or the study's "
                           "[teacher])")
    return out


def _source(frame: Frame) -> tuple[str, int]:
    """The sampled frame a frame is (or was labelled from): run id and frame index."""
    return frame.info.get("run_id", ""), int(frame.info.get("frame_index", -1))


def split_counts(train_keys: Iterable[str], test_keys: Iterable[str], n_train: int,
                 n_val: int, n_test: int, train_replica: int = 0,
                 test_replica: int = 1) -> dict[tuple[str, int], int]:
    """(composition key, replica) → how many frames `split_by_replica` takes from that run:
    n_train + n_val from the training replica of each of `train_keys`, n_test from the test
    replica of each of `test_keys` (what a quantum teacher must label first)."""
    counts = {(key, test_replica): n_test for key in test_keys if n_test}
    counts.update({(key, train_replica): n_train + n_val for key in sorted(set(train_keys))})
    return counts


@dataclass(frozen=True)
class Split:
    """Frames for training, validation and testing (lists of Frame)."""

    train: list[Frame]
    val: list[Frame]
    test: list[Frame]


def split_by_replica(store: DatasetStore, compositions: Iterable[dict[str, float] | str],
                     n_train: int, n_val: int, n_test: int, train_replica: int = 0,
                     test_replica: int = 1, seed: int | None = 0, teacher: str | None = None,
                     temperature_K: float | None = None) -> Split:
    """The paper's split: train/val from one replica, test from the independent one.

    For each composition, ``n_train + n_val`` frames are taken equally spaced along the
    training replica (`run_frames`) and shuffled with `seed` into train and val (`seed`
    None: the first n_train are train, the rest val); ``n_test`` frames are taken equally
    spaced along the test replica. Same seed → same split.
    """
    rng = None if seed is None else np.random.default_rng(seed)
    train, val, test = [], [], []
    for comp in compositions:
        key = comp if isinstance(comp, str) else composition_key(comp)
        picked = run_frames(store, key, train_replica, n_train + n_val, teacher, temperature_K,
                            f"{key} replica {train_replica} (n_train {n_train} + n_val {n_val})")
        order = np.arange(len(picked)) if rng is None else rng.permutation(len(picked))
        train += [picked[i] for i in sorted(order[:n_train])]
        val += [picked[i] for i in sorted(order[n_train:])]
        if n_test:
            test += run_frames(store, key, test_replica, n_test, teacher, temperature_K,
                               f"{key} replica {test_replica} (n_test)")
    return Split(train, val, test)


def frames_from(path: str | os.PathLike, *, composition: str | None = None,
                replica: int | None = None, task: str | None = None,
                n_frames: int | None = None, what: str = "input") -> tuple[list[Atoms], object]:
    """Frames of a dataset store or of any ASE-readable file, with the `Provenance` of
    their teacher and ion-set keys: the one reader of "frames from a store or a file".

    A store (``.db``) gives, per composition (`composition`, else every one), its frames of
    `replica` and `task` (None: any), `n_frames` of them equally spaced when given. A file
    gives every frame (`n_frames` equally spaced), each with a ``label_id``
    ``<file name>#<index>`` when it has none. DatasetError naming the path and the
    selection when nothing matches (`what` names the file's role in read errors).
    """
    from ionmix.dataset.provenance import load_provenance
    from ionmix.files import read_frames

    path = Path(path)
    if path.suffix != ".db":
        frames = read_frames(path, ":", what=what)
        for i, atoms in enumerate(frames):
            atoms.info.setdefault("label_id", f"{path.name}#{i}")
        if n_frames is not None:
            frames = equally_spaced(frames, n_frames, str(path))
        return frames, load_provenance(path)
    store = DatasetStore(path, must_exist=True)
    keys = [composition] if composition else store.compositions()
    if not keys:
        raise DatasetError(f"{path}: no frames in this store")
    frames = []
    for key in keys:
        picked = store.select(key, replica=replica, task=task)
        if not picked:
            which = f"{task} frames" if task else "frames"
            raise DatasetError(f"{path}: no {which} of composition {key}"
                               + (f" in replica {replica}" if replica is not None else ""))
        if n_frames is not None:
            picked = equally_spaced(picked, n_frames, f"{path} {key}")
        frames += [f.atoms for f in picked]
    return frames, store.provenance()
