"""Trajectories ionmix did not write: a LAMMPS dump with its data file, or a GROMACS
.xtc/.trr with its .tpr/.gro, read through MDAnalysis into frames the property commands
take (`ionmix.properties.transport`, `ionmix.properties.structure`).

What comes from where:

* **molecules**: the topology's residues (GROMACS molecules; a LAMMPS data file's molecule
  IDs), each a contiguous run of atoms;
* **ion names**: a residue's name through `residue_map` (``{"EMI": "EMIM"}``; a name the
  ion set already knows maps to itself); a residue without a name (LAMMPS data files have
  none) is named by its chemical formula among the candidate ions (`ions`, else the
  residue map's ions, else the ion library) — one candidate must match;
* **masses** from the topology (what the simulation used, hydrogen mass repartitioning
  included; the element's standard mass where it has none, as in a .gro); **elements**
  from the topology or its atom names (MDAnalysis' guess) when they make up the ion's
  formula, else from the masses (the ion's element of the nearest standard mass);
* **charges**: when the topology has partial charges, each species' molecular charge over
  its formal charge is recorded as the frames' ``charge_scale`` (0.8 for a scaled-charge
  force field), so conductivities are those of the simulated model; it must be one scale
  for every species;
* **times**: from the file (GROMACS, in ps, as ``time_ps``). A LAMMPS dump holds step
  numbers, not times: its frames carry ``step``, and transport needs the time between
  saved frames (``--time-step-ps``; the steps must then be evenly spaced).

Frames that repeat a step (a LAMMPS restart appends steps it had already written) are
dropped but for the later copy, with a warning; frames out of order otherwise are an
error. Positions may be wrapped: the transport analysis unwraps them
(`ionmix.properties.unwrap`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from ionmix.chemistry.ionset import IonSet
from ionmix.chemistry.topology import attach_molecules
from ionmix.errors import InputError

__all__ = ["ForeignTrajectoryError", "Topology", "parse_residue_map", "read_foreign_trajectory"]

#: topology suffix → what MDAnalysis reads it as, and the trajectory suffixes it pairs with
_TOPOLOGIES = {".data": "DATA", ".tpr": "TPR", ".gro": "GRO"}
_TRAJECTORIES = {".lammpstrj": "LAMMPSDUMP", ".dump": "LAMMPSDUMP", ".xtc": "XTC",
                 ".trr": "TRR"}
#: a residue's molecular charge must be this close to scale × its formal charge, e
_CHARGE_TOLERANCE_E = 1e-3


class ForeignTrajectoryError(InputError):
    """A topology or trajectory from another engine that cannot be read as asked."""


@dataclass(frozen=True)
class Topology:
    """The topology that gives a foreign trajectory its molecules (module docstring).

    Attributes:
        path: a LAMMPS data file (.data), or a GROMACS .tpr/.gro.
        residue_map: residue name → ion name (names the library knows map to themselves).
        ions: candidate ions for residues without a name (LAMMPS data files).
    """

    path: Path
    residue_map: Mapping[str, str] = field(default_factory=dict)
    ions: tuple[str, ...] | None = None


def parse_residue_map(text: str | None) -> dict[str, str]:
    """``"EMI=EMIM,PF6=PF6"`` → ``{"EMI": "EMIM", "PF6": "PF6"}``; ForeignTrajectoryError
    naming a malformed entry."""
    if not text:
        return {}
    out = {}
    for entry in text.split(","):
        residue, sep, ion = (part.strip() for part in entry.partition("="))
        if not sep or not residue or not ion:
            raise ForeignTrajectoryError(f"--residue-map entry {entry!r}: give RESIDUE=ION, "
                                         "e.g. EMI=EMIM")
        out[residue] = ion
    return out


def read_foreign_trajectory(trajectory: str | os.PathLike, top: Topology,
                            warn: Callable[[str], None] | None = None) -> list[Atoms]:
    """Frames of `trajectory` with molecule information from `top` (module docstring).

    Returns ASE Atoms with positions (Å, as in the file: possibly wrapped), cell, the
    molecule arrays and ``molecules`` text, ``time_ps`` (GROMACS) or ``step`` (LAMMPS), the
    topology's masses and, when it has charges, ``charge_scale``. `warn` receives a line per
    dropped duplicate (default: `warnings.warn`). Raises ForeignTrajectoryError naming the
    file, residue or frame.
    """
    import MDAnalysis as mda

    trajectory, topology = Path(trajectory), Path(top.path)
    for path in (trajectory, topology):
        if not path.is_file():
            raise ForeignTrajectoryError(f"{path}: no such file")
    top_format = _format(topology, _TOPOLOGIES, "topology")
    traj_format = _format(trajectory, _TRAJECTORIES, "trajectory")
    kwargs = {"atom_style": "id resid type charge x y z"} if top_format == "DATA" else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MDAnalysis' notes on guessed attributes
            u = mda.Universe(str(topology), str(trajectory), topology_format=top_format,
                             format=traj_format, **kwargs)
    except (ValueError, OSError, EOFError) as exc:
        raise ForeignTrajectoryError(f"{trajectory} with {topology}: {exc}") from None
    names, mol = _molecules(u, top.residue_map, top.ions, topology)
    library = IonSet.library(sorted(set(names)))
    symbols = _elements(u, names, mol, library, topology)
    masses = _masses(u, symbols)
    runs = _runs(names)
    scale = _charge_scale(u, names, mol, library, topology)
    frames, steps = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a dump has no dt: its times are not used
        timesteps = [(ts.triclinic_dimensions.copy(), u.atoms.positions.astype(float),
                      int(ts.data["step"]) if traj_format == "LAMMPSDUMP" else float(ts.time))
                     for ts in u.trajectory]
    # one template with the molecules, masses and charge scale; each frame is a copy of it
    template = Atoms(symbols, pbc=True)
    template.set_masses(masses)
    attach_molecules(template, runs, {n: library[n].n_atoms for n, _ in runs})
    if scale is not None:
        template.info["charge_scale"] = scale
    for cell, positions, step in timesteps:
        atoms = template.copy()
        atoms.positions, atoms.cell = positions, cell
        steps.append(step)
        frames.append(atoms)
    frames, steps = _drop_repeats(frames, steps, trajectory, warn or warnings.warn)
    key = "step" if traj_format == "LAMMPSDUMP" else "time_ps"
    for frame, value in zip(frames, steps, strict=True):
        frame.info[key] = value
    return frames


def _format(path: Path, formats: Mapping[str, str], what: str) -> str:
    try:
        return formats[path.suffix.lower()]
    except KeyError:
        raise ForeignTrajectoryError(
            f"{path}: a {what} ionmix reads through MDAnalysis is one of "
            f"{', '.join(sorted(formats))}") from None


def _molecules(u, residue_map: Mapping[str, str], ions: Sequence[str] | None,
               topology: Path) -> tuple[list[str], np.ndarray]:
    """Ion name of each residue and the per-atom molecule index (residues contiguous)."""
    resindex = np.asarray(u.atoms.resindices)
    if np.any(np.diff(resindex) < 0) or len(np.unique(resindex)) != \
            1 + np.count_nonzero(np.diff(resindex)):
        raise ForeignTrajectoryError(f"{topology}: the atoms of a molecule are not "
                                     "contiguous; ionmix needs each molecule's atoms together")
    has_names = hasattr(u.residues, "resnames")
    candidates = list(ions or residue_map.values()) or None
    names = []
    for res in u.residues:
        if has_names:
            names.append(_named(str(res.resname), residue_map, topology))
        else:
            names.append(_matched(res, candidates, topology))
    return names, np.unique(resindex, return_inverse=True)[1]


def _named(resname: str, residue_map: Mapping[str, str], topology: Path) -> str:
    """The ion a residue name stands for: the map's entry, or the name when the library
    knows it."""
    from ionmix.chemistry.ions import load_ion

    try:
        return load_ion(residue_map.get(resname, resname)).name
    except InputError:
        raise ForeignTrajectoryError(
            f"{topology}: residue {resname!r} names no ion ionmix knows; map it with "
            f"--residue-map {resname}=ION (e.g. EMI=EMIM)") from None


def _matched(res, candidates: Sequence[str] | None, topology: Path) -> str:
    """The one candidate ion whose atom count and total mass match a nameless residue."""
    from ionmix.chemistry.ions import list_ions, load_ion

    names = candidates or list_ions()
    try:
        known = [load_ion(n) for n in names]
    except InputError as exc:
        raise ForeignTrajectoryError(f"--ions: {exc}") from None
    mass = float(res.atoms.masses.sum())
    hits = [ion.name for ion in known if ion.n_atoms == len(res.atoms)
            and abs(ion.mass_amu - mass) < 0.05 * mass]
    if len(hits) != 1:
        what = "no ion" if not hits else f"several ions ({', '.join(hits)})"
        raise ForeignTrajectoryError(
            f"{topology}: molecule {int(res.resid)} ({len(res.atoms)} atoms, {mass:.2f} u) "
            f"matches {what} among {', '.join(ion.name for ion in known)}; name the ions "
            "with --ions")
    return hits[0]


def _elements(u, names: Sequence[str], mol: np.ndarray, library: IonSet,
              topology: Path) -> list[str]:
    """Element of each atom: the topology's (or guessed from atom names by MDAnalysis)
    where a molecule's elements are its ion's formula, else the ion's element of the
    nearest standard mass; ForeignTrajectoryError naming a molecule neither fits."""
    from ase.data import atomic_masses, atomic_numbers

    if not hasattr(u.atoms, "elements"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                u.guess_TopologyAttrs(to_guess=["elements"])
            except (ValueError, KeyError, AttributeError):
                pass
    given = [str(e).capitalize() for e in getattr(u.atoms, "elements", [""] * len(mol))]
    masses = np.asarray(u.atoms.masses, dtype=float)
    out = list(given)
    for m, res in enumerate(u.residues):
        ion = library[names[m]]
        idx = res.atoms.indices
        if sorted(given[i] for i in idx) == sorted(ion.elements):
            continue
        allowed = sorted(set(ion.elements))
        by_mass = [min(allowed, key=lambda el: abs(atomic_masses[atomic_numbers[el]]
                                                    - masses[i])) for i in idx]
        if sorted(by_mass) != sorted(ion.elements):
            raise ForeignTrajectoryError(
                f"{topology}: molecule {m} ({names[m]}) holds atoms that are not "
                f"{ion.name}'s elements ({' '.join(ion.elements)}) by name or mass")
        for i, el in zip(idx, by_mass, strict=True):
            out[i] = el
    return out


def _masses(u, symbols: Sequence[str]) -> np.ndarray:
    """The topology's masses, u; the element's standard mass where it has none (0)."""
    from ase.data import atomic_masses, atomic_numbers

    masses = np.asarray(u.atoms.masses, dtype=float).copy()
    missing = ~(masses > 0)
    masses[missing] = [atomic_masses[atomic_numbers[symbols[i]]]
                       for i in np.flatnonzero(missing)]
    return masses


def _runs(names: Sequence[str]) -> list[tuple[str, int]]:
    runs: list[tuple[str, int]] = []
    for name in names:
        if runs and runs[-1][0] == name:
            runs[-1] = (name, runs[-1][1] + 1)
        else:
            runs.append((name, 1))
    return runs


def _charge_scale(u, names: Sequence[str], mol: np.ndarray, library: IonSet,
                  topology: Path) -> float | None:
    """The one factor between every molecule's charge in the topology and its ion's formal
    charge, or None when the topology has no charges."""
    if not hasattr(u.atoms, "charges"):
        return None
    charge = np.bincount(mol, weights=np.asarray(u.atoms.charges, dtype=float))
    scales = {round(q / library[n].charge, 6) for q, n in zip(charge, names, strict=True)
              if library[n].charge}
    if len(scales) != 1 or not all(
            abs(q - next(iter(scales)) * library[n].charge) < _CHARGE_TOLERANCE_E
            for q, n in zip(charge, names, strict=True)):
        raise ForeignTrajectoryError(
            f"{topology}: the molecules' charges are not one scale × their formal charges "
            f"(scales {sorted(scales)}); ionmix's conductivity needs one charge per species")
    return next(iter(scales))


def _drop_repeats(frames: list[Atoms], steps: list, path: Path,
                  warn: Callable[[str], None]) -> tuple[list[Atoms], list]:
    """Keep the later copy of a repeated step (a restart); refuse other disorder."""
    kept_frames, kept_steps = [], []
    for frame, step in zip(frames, steps, strict=True):
        if kept_steps and step <= kept_steps[-1]:
            if step not in kept_steps:
                raise ForeignTrajectoryError(
                    f"{path}: frame at step/time {step} follows {kept_steps[-1]}: the frames "
                    "are out of time order")
            cut = kept_steps.index(step)
            warn(f"{path}: steps {kept_steps[cut]}–{kept_steps[-1]} appear twice (a restart "
                 "appended them again); the later copies are kept")
            del kept_frames[cut:], kept_steps[cut:]
        kept_frames.append(frame)
        kept_steps.append(step)
    return kept_frames, kept_steps
