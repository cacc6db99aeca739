"""Selection: which explored frames the teacher should label.

dpgen's trust window on the committee's maximum force deviation: below ``lo`` a frame is
*accurate* (the committee agrees: nothing to learn), between ``lo`` and ``hi`` it is a
*candidate*, above ``hi`` it has *failed* (too far from anything learned for its label to
help). Candidates are then thinned by farthest-point sampling on a structural descriptor
(per element-pair radial histograms), so one generation's frames are diverse rather than
many near-copies of one excursion; the first pick is the candidate the committee
disagrees on most.

With a cheap teacher (classical, xTB) the frames above ``hi`` are candidates too
(``label_above_hi``): they stay "failed" in the shares, but the teacher labels them if the
thinning picks them. Each chosen frame carries the reason it was chosen
(`Selection.reasons`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """Outcome of `select`: the category of every frame, the chosen frames (indices,
    ascending) and why each was chosen (``reasons[k]`` for ``chosen[k]``: its category —
    "candidate" or "above hi" — and whether it was the first pick, the largest deviation,
    or a farthest-point pick)."""

    categories: list[str]
    chosen: list[int]
    reasons: list[str] = field(default_factory=list)

    def share(self, category: str) -> float:
        return self.categories.count(category) / len(self.categories) if self.categories \
            else 0.0


def select(frames: list[Atoms], deviations_eV_per_A, window: TrustWindow,
           max_frames: int, label_above_hi: bool = False) -> Selection:
    """Classify `frames` by their max force deviation (eV/Å) and pick up to `max_frames`
    diverse ones among the candidates (and, with `label_above_hi`, the frames above
    ``hi`` too); see the module docstring."""
    dev = np.asarray(deviations_eV_per_A, dtype=float)
    categories = window.classify(dev)
    above_hi = label_above_hi & (categories == "failed") & np.isfinite(dev)  # not NaN
    eligible = (categories == "candidate") | above_hi
    pool = np.flatnonzero(eligible)
    if pool.size == 0 or max_frames <= 0:
        return Selection(categories.tolist(), [])
    elements = sorted({s for f in frames for s in f.get_chemical_symbols()})
    vectors = np.array([descriptor(frames[i], elements) for i in pool])
    picked = farthest_points(vectors, max_frames, int(np.argmax(dev[pool])))
    why = {int(pool[p]): _reason(categories[pool[p]], dev[pool[p]], window, k == 0)
           for k, p in enumerate(picked)}
    chosen = sorted(why)
    return Selection(categories.tolist(), chosen, [why[i] for i in chosen])


def _reason(category: str, deviation_eV_per_A: float, window: TrustWindow,
            first: bool) -> str:
    """Why one frame was chosen, in words (kept in ``selection.json``)."""
    lo, hi = window.lo_eV_per_A, window.hi_eV_per_A
    where = (f"candidate: max deviation {deviation_eV_per_A:.3f} eV/Å in [lo, hi) = "
             f"[{lo:.3f}, {hi:.3f})" if category == "candidate" else
             f"above hi: max deviation {deviation_eV_per_A:.3f} ≥ hi = {hi:.3f} eV/Å "
             "(label_above_hi: the teacher is cheap)")
    how = "first pick (largest deviation)" if first else "farthest-point pick"
    return f"{where}; {how}"
