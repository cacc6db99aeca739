"""Molecular centres of a trajectory whose positions may be wrapped into the box (LAMMPS
dumps, GROMACS files), continuous in time: what transport needs.

Two steps, both exact for a trajectory that needs neither (an `ionmix md` run, whose
positions are never wrapped, comes back unchanged):

1. **Whole molecules.** In every frame each molecule is rebuilt outwards from its first
   atom along its covalent bonds (found once, in the first frame: pairs of one molecule
   closer than `COVALENT_BOND_FACTOR` (1.25) × the sum of covalent radii at the nearest
   image), each atom placed at the nearest image of the bonded atom it is reached from.
   This works for a molecule of any length, also one longer than half the box. A molecule
   whose atoms are not all joined by such bonds in the first frame cannot be made whole
   and is refused, named.
2. **No jumps** (MDAnalysis' NoJump; the "toroidal" scheme of Kulke & Vermaas, J. Chem.
   Theory Comput. 18, 6161 (2022)). The centre of mass of each whole molecule moves from
   saved frame k−1 to k by its displacement reduced to the nearest image in frame k's cell
   (fractional coordinates rounded). Under NPT the cell changes between frames; reducing
   the *displacement* with the current cell, rather than unwrapping positions with
   image counts, is the scheme that keeps box fluctuations out of the diffusion (Kulke &
   Vermaas; with image counts a molecule far from the origin is carried along by every
   change of the box edge).

The rule is ambiguous when a centre moves far between saved frames: a displacement of
more than `MAX_STEP_FRACTION` of half the box's shortest width could as well have been the
nearest image's complement. That is refused, naming the frames and the molecule: save
frames more often. Units: Å.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from ionmix.chemistry.topology import COVALENT_BOND_FACTOR
from ionmix.errors import InputError

__all__ = ["MAX_STEP_FRACTION", "BondTree", "UnwrapError", "bond_tree", "continuous_centres_A",
           "make_whole"]

#: a centre may move at most this fraction of half the box's shortest width between two
#: saved frames (beyond it, the nearest image is no longer the likely one)
MAX_STEP_FRACTION = 0.5


class UnwrapError(InputError):
    """A trajectory whose molecules cannot be made whole or followed between frames."""


@dataclass(frozen=True)
class BondTree:
    """How every molecule is rebuilt: breadth-first levels of (child atoms, their parent
    atoms), shape (n,) each; the root of each molecule (its first atom) is in no level."""

    levels: tuple[tuple[np.ndarray, np.ndarray], ...]


def bond_tree(atoms: Atoms, mol: np.ndarray, names: Sequence[str]) -> BondTree:
    """The breadth-first bond tree of every molecule of `atoms` (module docstring, step 1).

    Args:
        mol: (n_atoms,) molecule index of each atom, molecules contiguous.
        names: the ion name of each molecule (for the error message).

    Raises UnwrapError naming the first molecule whose atoms are not all bonded together.
    """
    from ase.neighborlist import natural_cutoffs, neighbor_list

    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=COVALENT_BOND_FACTOR))
    same = mol[i] == mol[j]
    neighbours: dict[int, list[int]] = {}
    for a, b in zip(i[same], j[same], strict=True):
        neighbours.setdefault(int(a), []).append(int(b))
    depth = np.full(len(atoms), -1)
    parent = np.full(len(atoms), -1)
    roots = np.r_[0, np.flatnonzero(np.diff(mol)) + 1]
    depth[roots] = 0
    frontier = list(roots)
    while frontier:
        nxt = []
        for a in frontier:
            for b in neighbours.get(a, ()):
                if depth[b] < 0:
                    depth[b], parent[b] = depth[a] + 1, a
                    nxt.append(b)
        frontier = nxt
    lost = np.flatnonzero(depth < 0)
    if lost.size:
        m = int(mol[lost[0]])
        raise UnwrapError(
            f"molecule {m} ({names[m]}): atom {int(lost[0])} is not bonded to the rest of "
            "its molecule in the first frame (no covalent distance at any image), so the "
            "molecule cannot be made whole; are the atoms in the topology's order?")
    levels = tuple((np.flatnonzero(depth == d), parent[depth == d])
                   for d in range(1, int(depth.max()) + 1))
    return BondTree(levels)


def _nearest_image_A(d_A: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Vectors `d_A` (n, 3) reduced to their nearest image in `cell` (rows = vectors)."""
    frac = d_A @ np.linalg.inv(cell)
    return (frac - np.round(frac)) @ cell


def make_whole(positions_A: np.ndarray, cell: np.ndarray, tree: BondTree) -> np.ndarray:
    """Positions (n_atoms, 3) with every molecule whole: each atom at the nearest image of
    its parent in `tree` (module docstring, step 1)."""
    out = np.array(positions_A, dtype=float)
    for child, parent in tree.levels:
        out[child] = out[parent] + _nearest_image_A(out[child] - out[parent], cell)
    return out


def continuous_centres_A(frames: Sequence[Atoms], mol: np.ndarray, names: Sequence[str],
                         masses: np.ndarray,
                         max_step_fraction: float = MAX_STEP_FRACTION) -> np.ndarray:
    """Centres of mass of the molecules, shape (n_frames, n_molecules, 3), Å, whole and
    without jumps (module docstring).

    Args:
        frames: the trajectory (same atoms in every frame, periodic cells).
        mol: (n_atoms,) molecule index of each atom; names: ion name of each molecule.
        masses: (n_atoms,) atomic masses, u.

    Raises UnwrapError naming the frames and molecule where a centre moves more than
    `max_step_fraction` of half the box, or a molecule that cannot be made whole.
    """
    tree = bond_tree(frames[0], mol, names)
    mol_mass = np.bincount(mol, weights=masses)
    out = np.empty((len(frames), len(mol_mass), 3))
    for k, frame in enumerate(frames):
        cell = frame.cell.array
        whole = make_whole(frame.positions, cell, tree)
        centre = np.stack([np.bincount(mol, weights=masses * whole[:, d]) / mol_mass
                           for d in range(3)], axis=1)
        if k == 0:
            out[0], last = centre, centre
            continue
        step = _nearest_image_A(centre - last, cell)
        _check_step(step, cell, k, names, max_step_fraction)
        out[k], last = out[k - 1] + step, centre
    return out


def _check_step(step_A: np.ndarray, cell: np.ndarray, k: int, names: Sequence[str],
                max_step_fraction: float) -> None:
    """UnwrapError if a centre moved more than `max_step_fraction` of half the box."""
    half_width_A = 0.5 / np.linalg.norm(np.linalg.inv(cell).T, axis=1).max()
    length = np.linalg.norm(step_A, axis=1)
    m = int(np.argmax(length))
    if length[m] > max_step_fraction * half_width_A:
        raise UnwrapError(
            f"molecule {m} ({names[m]}) moves {length[m]:.3g} Å between frames {k - 1} and "
            f"{k}, more than {max_step_fraction:g} × half the box ({half_width_A:.3g} Å): "
            "whether it crossed the boundary cannot be told. Save frames more often")
