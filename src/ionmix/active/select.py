"""Selection: which explored frames the teacher should label.

dpgen's trust window on the committee's maximum force deviation: below ``lo`` a frame is
*accurate* (the committee agrees: nothing to learn), between ``lo`` and ``hi`` it is a
*candidate*, above ``hi`` it has *failed* (too far from anything learned for its label to
help). Candidates are then thinned by farthest-point sampling on a structural descriptor
(per element-pair radial histograms), so one generation's frames are diverse rather than
many near-copies of one excursion; the first pick is the candidate the committee
disagrees on most.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from ionmix.errors import InputError


@dataclass(frozen=True)
class TrustWindow:
    """[lo, hi) on the max force deviation (eV/Å)."""

    lo_eV_per_A: float
    hi_eV_per_A: float

    def __post_init__(self):
        if not 0 < self.lo_eV_per_A < self.hi_eV_per_A:
            raise InputError(f"trust levels must satisfy 0 < lo < hi, got lo = "
                             f"{self.lo_eV_per_A}, hi = {self.hi_eV_per_A} eV/Å")

    def classify(self, deviation_eV_per_A: np.ndarray) -> np.ndarray:
        """'accurate', 'candidate' or 'failed' for each deviation, shape (n,)."""
        dev = np.asarray(deviation_eV_per_A, dtype=float)
        return np.where(dev < self.lo_eV_per_A, "accurate",
                        np.where(dev < self.hi_eV_per_A, "candidate", "failed"))


def descriptor(atoms: Atoms, elements: list[str], r_max_A: float = 6.0,
               n_bins: int = 24) -> np.ndarray:
    """Radial histograms per element pair (pair counts per atom, minimum image), flattened:
    shape (n_pairs × n_bins,). Invariant to rotation, translation and permutation."""
    i, j, d = neighbor_list("ijd", atoms, r_max_A)
    symbols = np.array(atoms.get_chemical_symbols())
    edges = np.linspace(0.0, r_max_A, n_bins + 1)
    blocks = []
    for a, ea in enumerate(elements):
        for eb in elements[a:]:
            mask = (symbols[i] == ea) & (symbols[j] == eb)
            blocks.append(np.histogram(d[mask], edges)[0] / len(atoms))
    return np.concatenate(blocks)


def farthest_points(vectors: np.ndarray, k: int, first: int) -> list[int]:
    """`k` row indices of `vectors` (n, m) chosen greedily farthest from those already
    chosen (Euclidean), starting at `first`."""
    chosen = [first]
    dist = np.linalg.norm(vectors - vectors[first], axis=1)
    while len(chosen) < min(k, len(vectors)):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(vectors - vectors[nxt], axis=1))
    return chosen


@dataclass(frozen=True)
class Selection:
    """Outcome of `select`: the category of every frame and the chosen candidates."""

    categories: list[str]
    chosen: list[int]

    def share(self, category: str) -> float:
        return self.categories.count(category) / len(self.categories) if self.categories \
            else 0.0


def select(frames: list[Atoms], deviations_eV_per_A, window: TrustWindow,
           max_frames: int) -> Selection:
    """Classify `frames` by their max force deviation and pick up to `max_frames`
    diverse candidates (see the module docstring)."""
    dev = np.asarray(deviations_eV_per_A, dtype=float)
    categories = window.classify(dev)
    candidates = np.flatnonzero(categories == "candidate")
    if candidates.size == 0 or max_frames <= 0:
        return Selection(categories.tolist(), [])
    elements = sorted({s for f in frames for s in f.get_chemical_symbols()})
    vectors = np.array([descriptor(frames[i], elements) for i in candidates])
    first = int(np.argmax(dev[candidates]))
    picked = farthest_points(vectors, max_frames, first)
    return Selection(categories.tolist(), sorted(int(candidates[p]) for p in picked))
