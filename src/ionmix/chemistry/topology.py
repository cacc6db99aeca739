"""The one convention for molecule information carried by frames.

Every frame ionmix writes (a built box, a sampled snapshot, an MD frame, a labelled frame)
orders its atoms molecule by molecule, each molecule in its ion template's order. Which
molecules those are is carried two ways that always agree:

* per-atom arrays ``mol_id`` (int, 0, 1, 2, … in atom order) and ``ion_name`` (str), kept by
  extxyz files;
* ``atoms.info["molecules"]``, the ordered runs as text, e.g. ``"Li:2,PF6:4,EMIM:2"``, kept
  by the dataset store (an ASE database keeps no custom per-atom arrays).

`molecules_of` reads either; `attach_molecules` writes both. Nothing else in ionmix parses
the text or the arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ase import Atoms

from ionmix.errors import InputError

#: Per-atom array holding the 0-based molecule index.
MOL_ID_ARRAY: str = "mol_id"
#: Per-atom array holding the ion name of the atom's molecule.
ION_NAME_ARRAY: str = "ion_name"
#: ``atoms.info`` key holding the ordered runs as text.
MOLECULES_INFO: str = "molecules"

Runs = tuple[tuple[str, int], ...]

#: Two atoms closer than this × the sum of their covalent radii (ASE's natural cutoffs)
#: count as bonded where a frame's bonds must be guessed from its geometry. ASE's usual
#: 1.1 is too tight for a thermal liquid: in a 40-ps classical run at 350 K, 3.5 % of the
#: frames of a 3-EMIM box held a C–H bond beyond 1.1 × (1.177 Å), the longest at 1.137 ×
#: (a C–H's thermal spread there is σ ≈ 0.03 Å). The closest atoms that are not bonded
#: were 1–3 pairs of the imidazolium ring, at ≥ 1.36 × (C···C), and no two atoms of
#: different molecules came within 1.8 ×; 1.25 sits midway.
COVALENT_BOND_FACTOR: float = 1.25


class TopologyError(InputError):
    """A frame's molecule information is missing or inconsistent."""


def encode_runs(runs: Sequence[tuple[str, int]] | Mapping[str, int]) -> str:
    """``[("Li", 2), ("PF6", 4)]`` (or ``{"Li": 2, "PF6": 4}``) → ``"Li:2,PF6:4"``."""
    items = runs.items() if isinstance(runs, Mapping) else runs
    return ",".join(f"{name}:{int(n)}" for name, n in items if int(n))


def decode_runs(text: str) -> Runs:
    """``"Li:2,PF6:4"`` → ``(("Li", 2), ("PF6", 4))``; raises TopologyError on bad text."""
    runs = []
    for part in str(text).split(","):
        name, sep, count = part.partition(":")
        if not sep or not name or not count.strip().isdigit():
            raise TopologyError(f"molecules {text!r}: expected 'ION:COUNT,...', got {part!r}")
        runs.append((name.strip(), int(count)))
    return tuple(runs)


def _runs_from_arrays(atoms: Atoms) -> Runs:
    mol = np.asarray(atoms.arrays[MOL_ID_ARRAY])
    names = np.asarray(atoms.arrays[ION_NAME_ARRAY])
    if len(mol) == 0:
        raise TopologyError("the structure has no atoms")
    starts = np.flatnonzero(np.diff(mol) != 0) + 1
    if mol[0] != 0 or np.any(np.diff(mol) < 0) or np.any(np.diff(mol[np.r_[0, starts]]) != 1):
        raise TopologyError("mol_id must be 0, 1, 2, ... with each molecule's atoms contiguous")
    runs: list[tuple[str, int]] = []
    for start in np.r_[0, starts]:
        name = str(names[start])
        if runs and runs[-1][0] == name:
            runs[-1] = (name, runs[-1][1] + 1)
        else:
            runs.append((name, 1))
    return tuple(runs)


#: Frame info keys a frame derived from another (an MD snapshot, a rescaled box) carries
#: over: what its relabelling needs (molecules, teacher, ion set, charge scale).
CARRIED_INFO = ("molecules", "charge_scale", "cutoff_A", "composition", "counts", "teacher",
                "ion_set")
CARRIED_ARRAYS = ("mol_id", "ion_name")


def carry_metadata(source: Atoms, target: Atoms) -> Atoms:
    """Copy the per-atom molecule arrays and the teacher-relevant info of `source` onto
    `target` (same atoms, in the same order; `CARRIED_ARRAYS`, `CARRIED_INFO`); returns
    `target`."""
    for key in CARRIED_ARRAYS:
        if key in source.arrays:
            target.arrays[key] = source.arrays[key].copy()
    for key in CARRIED_INFO:
        if key in source.info:
            target.info[key] = source.info[key]
    return target


def has_molecules(atoms: Atoms) -> bool:
    """True if the frame carries molecule information in either form."""
    return MOLECULES_INFO in atoms.info or (
        MOL_ID_ARRAY in atoms.arrays and ION_NAME_ARRAY in atoms.arrays)


def molecules_of(atoms: Atoms) -> Runs:
    """The ordered ``(ion name, count)`` runs of a frame, from its arrays or its info.

    Raises TopologyError when the frame carries neither (e.g. a bare .xyz file).
    """
    if MOL_ID_ARRAY in atoms.arrays and ION_NAME_ARRAY in atoms.arrays:
        return _runs_from_arrays(atoms)
    if MOLECULES_INFO in atoms.info:
        return decode_runs(atoms.info[MOLECULES_INFO])
    raise TopologyError(
        "the structure carries no molecule information (per-atom arrays mol_id/ion_name or "
        "info 'molecules'); use a box from `ionmix build`, a dataset store, or an `ionmix md` "
        "trajectory")


def attach_molecules(atoms: Atoms, runs: Sequence[tuple[str, int]],
                     atoms_per_ion: Mapping[str, int]) -> Atoms:
    """Write `runs` onto `atoms` in both forms (arrays and info), in place; returns `atoms`.

    Args:
        runs: ordered ``(ion name, count)``.
        atoms_per_ion: ion name → atoms in one ion (checks the total against ``len(atoms)``).
    """
    mol_id, names = [], []
    k = 0
    for name, count in runs:
        for _ in range(int(count)):
            mol_id += [k] * atoms_per_ion[name]
            names += [name] * atoms_per_ion[name]
            k += 1
    if len(mol_id) != len(atoms):
        raise TopologyError(f"molecules {encode_runs(runs)} have {len(mol_id)} atoms, the "
                            f"structure has {len(atoms)}")
    atoms.arrays[MOL_ID_ARRAY] = np.array(mol_id, dtype=int)
    atoms.arrays[ION_NAME_ARRAY] = np.array(names, dtype="<U16")
    atoms.info[MOLECULES_INFO] = encode_runs(runs)
    return atoms


def with_molecule_arrays(atoms: Atoms, ions: Mapping[str, Any]) -> Atoms:
    """`atoms` with per-atom ``mol_id``/``ion_name`` arrays written from its molecule runs
    (`molecules_of`), in place; returns `atoms`. A frame of a dataset store carries only
    the ``molecules`` info; what follows atoms and molecules (the molecules' net forces in
    `ionmix validate`, rigid rescaling) reads the arrays.

    Args:
        ions: ion name → ion with its ``n_atoms`` (an `IonSet`), for every ion of the runs.
    """
    runs = molecules_of(atoms)
    return attach_molecules(atoms, runs, {name: ions[name].n_atoms for name, _ in runs})


def rescale_molecules(positions_A: np.ndarray, mol_id: np.ndarray, masses: np.ndarray,
                       factor: float) -> np.ndarray:
    """Scale molecule centres of mass by `factor`, keeping each molecule rigid.

    positions_A: (n_atoms, 3) in Å; mol_id: (n_atoms,) molecule index; masses: (n_atoms,) in u.
    Returns new (n_atoms, 3) positions in Å.
    """
    out = positions_A.copy()
    for m in np.unique(mol_id):
        sel = mol_id == m
        com = (masses[sel, None] * positions_A[sel]).sum(0) / masses[sel].sum()
        out[sel] += (factor - 1.0) * com
    return out


def scaled_frame(atoms: Atoms, scale: float, mol_id: np.ndarray | None = None) -> Atoms:
    """A copy of `atoms` (no calculator) with its cell and molecule centres of mass
    scaled by `scale` (lengths), each molecule rigid: a point of a volume scan.

    mol_id: (n_atoms,) molecule index; default ``atoms.arrays[MOL_ID_ARRAY]``.
    """
    mol_id = atoms.arrays[MOL_ID_ARRAY] if mol_id is None else mol_id
    scaled = atoms.copy()
    scaled.calc = None
    scaled.positions = rescale_molecules(atoms.positions, mol_id, atoms.get_masses(), scale)
    scaled.set_cell(atoms.cell.array * scale)
    return scaled
