"""Export a structure and a trained model as a ready-to-run LAMMPS job (pair_nequip_allegro).

For users with LAMMPS built with the ``pair_nequip_allegro`` plugin
(https://github.com/mir-group/pair_nequip_allegro), matching nequip 0.19. Nothing here runs
LAMMPS or compiles the model: `write_lammps_inputs` writes, into one folder,

* ``system.data``: the structure as a LAMMPS data file (``units metal``,
  ``atom_style atomic``), written by ASE (`ase.io.lammpsdata.write_lammps_data`), with one
  atom type per model type name, in the model's order, and their masses (g/mol);
* ``in.lammps``: an input script for NVE, NVT or isotropic NPT (Nosé–Hoover, LAMMPS
  ``fix nve|nvt|npt``) with the model as ``pair_style allegro`` or ``pair_style nequip``;
* ``README.txt``: how to compile the model and run the job.

LAMMPS cannot read a packaged model (``*.nequip.zip``) or a checkpoint (``*.ckpt``); it
needs a *compiled* model made by ``nequip-compile`` on the machine that runs LAMMPS (the
compiled file is specific to its torch version and device). ``in.lammps`` names that file
in ``pair_coeff`` and gives the command that makes it, in a comment at the top:

    nequip-compile MODEL model.nequip.pt2 --mode aotinductor --device cuda|cpu \\
        --target pair_allegro|pair_nequip

(``--mode torchscript`` with a ``.nequip.pth`` output is the alternative, but only for
torch < 2.10; nequip refuses it on newer torch.) Sources: the nequip docs
(integrations/lammps/pair_styles), the allegro docs (guide/lammps) and the
pair_nequip_allegro README and ``pair_nequip_allegro.cpp``.

Conventions, LAMMPS ``units metal``: Å, eV, ps, bar, g/mol, K. Our models are trained on
eV and Å, so no conversion of the model is involved.

Frame: a general triclinic ASE cell is rotated by ASE into LAMMPS's restricted triclinic
frame (a along x, b in the xy plane). Distances, the volume and the energy are unchanged;
positions, forces and the cell in LAMMPS's output are in the rotated frame.

The student's baseline (`ionmix.models.baseline`, ``baseline.json`` beside the model) goes
into the job too. `write_lammps_inputs` reads the record first (missing or altered:
`BaselineError`, before anything is written). ``none`` and ``zbl`` (ZBL is compiled into
the network) keep the atomic job above. A Coulomb part (``coulomb``, ``coulomb+zbl``) maps
one to one onto LAMMPS:

* point charges (the ion set's partial charges × the baseline's charge scale, e) →
  ``atom_style full``: each atom's charge in system.data, and its molecule id
  (``mol_id + 1``);
* each ion's bond graph (the .itp's ``[ bonds ]``) → the ``Bonds`` of system.data (one
  bond type, ``bond_style zero``: no energy; they only define 1-2/1-3/1-4 neighbours);
* exclusions (1-2 and 1-3 pairs excluded, 1-4 pairs × 0.5, all other pairs in full) →
  ``special_bonds lj 1.0 1.0 1.0 coul 0.0 0.0 0.5``;
* PME with an RMS force error target ``force_accuracy_eV_per_A`` → ``coul/long`` (real
  space, cutoff `DEFAULT_COUL_CUTOFF_A` Å) plus ``kspace_style pppm`` with the same target
  as LAMMPS' relative force accuracy (relative to the force between two unit charges 1 Å
  apart, 14.40 eV/Å);
* network + baseline → ``pair_style hybrid/overlay allegro|nequip coul/long RC`` with
  ``pair_coeff * * allegro|nequip <compiled model> <types>`` and ``pair_coeff * * coul/long``.

Why ``lj 1.0 1.0 1.0``: LAMMPS drops a 1-2/1-3/1-4 pair from the neighbour list only when
both its lj and coul weights are 0; with lj weights 1 every pair stays in the list (flagged
as special), and pair_nequip_allegro strips the flags (``j &= NEIGHMASK``) and never reads
the weights, so the network sees every pair within its cutoff, as in training. Only
``coul/long`` applies the coul weights. (No ``pair_modify pair ... special`` is needed.)

LAMMPS finds 1-2, 1-3 and 1-4 neighbours from the bonds, by shortest bond path (an atom
in a ring that is both 1-3 and 1-4 is 1-3); OpenMM's exceptions come from the same bonds
plus the .itp's ``[ pairs ]`` (and ``[ exclusions ]``). `check_coulomb_exclusions` compares,
for every pair of atoms of every ion, the weight the baseline's OpenMM System gives it
with the weight LAMMPS would, and refuses an ion where they differ (e.g. a ``[ pairs ]``
line for a pair that is not 1-4 in the bond graph): a baseline this exporter cannot
express.
"""

from __future__ import annotations

import inspect
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from ionmix.errors import InputError
from ionmix.files import atomic_write_text, read_frames
from ionmix.units import COULOMB_CONSTANT_EV_A

if TYPE_CHECKING:
    from ionmix.dataset.provenance import Provenance
    from ionmix.models.baseline import Baseline

__all__ = [
    "DEFAULT_COUL_CUTOFF_A",
    "ENSEMBLES",
    "PAIR_STYLES",
    "LammpsExportError",
    "check_coulomb_exclusions",
    "compile_command",
    "compiled_model_name",
    "model_pair_style",
    "model_type_names",
    "read_structure",
    "write_lammps_inputs",
    "write_lammps_inputs_for",
]

ENSEMBLES = ("nve", "nvt", "npt")
#: pair styles of pair_nequip_allegro: ``allegro`` (strictly local, MPI/Kokkos) and
#: ``nequip`` (message passing, one MPI rank only).
PAIR_STYLES = ("allegro", "nequip")

DATA_FILE = "system.data"
INPUT_FILE = "in.lammps"
README_FILE = "README.txt"
TRAJECTORY_FILE = "trajectory.lammpstrj"
FINAL_DATA_FILE = "final.data"

#: compiled-model suffixes that pair_nequip_allegro accepts, and the nequip-compile mode
#: that makes each (the pair style picks the loader from the suffix).
AOTI_SUFFIX = ".nequip.pt2"
TORCHSCRIPT_SUFFIX = ".nequip.pth"
_MODEL_SUFFIXES = (".nequip.zip", ".ckpt")

#: real-space cutoff of ``coul/long`` for a Coulomb baseline, Å (PPPM's accuracy, not this
#: cutoff, sets the error; LAMMPS accepts a cutoff above half the box)
DEFAULT_COUL_CUTOFF_A = 10.0
#: LAMMPS ``special_bonds coul`` weights of pairs 1, 2 and 3 bonds apart (1-2, 1-3, 1-4):
#: the Coulomb baseline's exclusions (`ionmix.models.baseline.EXCLUSIONS`)
SPECIAL_COUL_WEIGHTS = (0.0, 0.0, 0.5)
#: neighbour cutoff of ``pair_style zero`` standing in for the network (``zero_network``), Å
ZERO_NETWORK_CUTOFF_A = 5.0
#: an exclusion weight of OpenMM and of LAMMPS agree within this
_WEIGHT_MATCH = 1e-6


class LammpsExportError(InputError):
    """The structure, model or settings cannot be exported to LAMMPS (message names which)."""


# --------------------------------------------------------------------------------------
# model inspection
# --------------------------------------------------------------------------------------


def _strip_package_prefix(module_name: str) -> str:
    # Classes of a model loaded from a .nequip.zip (torch.package) live in modules named
    # "<torch_package_0>.allegro.nn...."; the same model from a checkpoint in "allegro.nn...".
    return re.sub(r"^<torch_package_\d+>\.", "", module_name)


def _model_family(model) -> str | None:
    """``"allegro"``, ``"nequip"`` or None (unknown), from the classes of the model's modules.

    A nequip GraphModel keeps no record of the architecture in its metadata, but its
    submodules are instances of the architecture's classes: Allegro models contain
    ``allegro.nn`` modules, NequIP GNN models nequip's ``convnetlayer`` ones. This works for
    packages and checkpoints alike, wherever the file was copied to.
    """
    modules = {_strip_package_prefix(type(m).__module__) for m in model.modules()}
    if any(name == "allegro" or name.startswith("allegro.") for name in modules):
        return "allegro"
    if "nequip.nn.convnetlayer" in modules:
        return "nequip"
    return None


def _check_model_file(model: str | Path) -> Path:
    path = Path(model)
    if not path.is_file():
        raise LammpsExportError(f"model file not found: {path}")
    if not path.name.endswith(_MODEL_SUFFIXES):
        raise LammpsExportError(
            f"model file {path} is neither a packaged model (*.nequip.zip) nor a checkpoint "
            "(*.ckpt); nequip-compile needs one of those"
        )
    return path


def _read_baseline(path: Path) -> Baseline:
    """The model's `Baseline` from the ``baseline.json`` beside it (BaselineError naming the
    file when missing or altered; a package's record must name its sha256)."""
    from ionmix.files import file_sha256
    from ionmix.models.baseline import read_record

    return read_record(path, file_sha256(path) if path.name.endswith(".nequip.zip") else None)


def _load_model(path: Path):
    from ionmix.models import load_calculator

    return load_calculator(path).model


def model_type_names(model) -> list[str]:
    """The type names of a loaded nequip GraphModel, in the model's type order.

    Args:
        model: a nequip GraphModel (e.g. ``load_calculator(path).model``).

    Returns:
        e.g. ``["C", "F", "H", "Li", "N", "P"]``: model type 0, 1, ...
    """
    try:
        return str(model.metadata["type_names"]).split()
    except KeyError:
        raise LammpsExportError("the model's metadata has no 'type_names'") from None


def model_pair_style(model) -> str | None:
    """``"allegro"`` or ``"nequip"``: the LAMMPS pair style for a loaded model; None if the
    architecture is neither (pass ``pair_style`` explicitly then)."""
    return _model_family(model)


def compiled_model_name(model: str | Path, suffix: str = AOTI_SUFFIX) -> str:
    """File name for the compiled model: the model file's stem plus `suffix`.

    ``model.nequip.zip`` → ``model.nequip.pt2``; ``best.ckpt`` → ``best.nequip.pt2``.
    Whitespace is replaced by ``_`` so that the name is one word in ``pair_coeff``.
    """
    name = Path(model).name
    for known in _MODEL_SUFFIXES:
        if name.endswith(known):
            name = name[: -len(known)]
            break
    return re.sub(r"\s+", "_", name) + suffix


def compile_command(model: str | Path, compiled_name: str, pair_style: str,
                    device: str = "cuda") -> str:
    """The ``nequip-compile`` command (one shell line) that makes `compiled_name`.

    Args:
        model: the packaged model or checkpoint (written as an absolute path, so the command
            can be run from the output folder).
        compiled_name: output file; ``*.nequip.pt2`` (AOTInductor, ``--target
            pair_<pair_style>``) or ``*.nequip.pth`` (TorchScript, torch < 2.10 only).
        pair_style: ``"allegro"`` or ``"nequip"``.
        device: ``"cuda"`` or ``"cpu"``: where LAMMPS will evaluate the model.
    """
    model_arg = shlex.quote(str(Path(model).resolve()))
    if compiled_name.endswith(AOTI_SUFFIX):
        # --target fixes the exported inputs/outputs to those the pair style passes (Allegro
        # needs no cell or edge_cell_shift, NequIP does): the two targets are not
        # interchangeable.
        return (f"nequip-compile {model_arg} {shlex.quote(compiled_name)} --mode aotinductor "
                f"--device {device} --target pair_{pair_style}")
    if compiled_name.endswith(TORCHSCRIPT_SUFFIX):
        return (f"nequip-compile {model_arg} {shlex.quote(compiled_name)} --mode torchscript "
                f"--device {device}")
    raise LammpsExportError(
        f"compiled model name {compiled_name!r} must end with {AOTI_SUFFIX} (AOTInductor) or "
        f"{TORCHSCRIPT_SUFFIX} (TorchScript): pair_nequip_allegro accepts only those"
    )


def read_structure(path: str | Path, index: int = -1) -> Atoms:
    """One frame of any ASE-readable file (positions Å), without its calculator.

    Raises:
        ReadError: no such file, or ASE cannot read frame `index` from it.
    """
    atoms = read_frames(path, index)
    atoms.calc = None
    return atoms


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------


def _finite(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise LammpsExportError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise LammpsExportError(f"{name} must be finite, got {value}")
    return value


def _positive(name: str, value: float) -> float:
    value = _finite(name, value)
    if value <= 0:
        raise LammpsExportError(f"{name} must be > 0, got {value:g}")
    return value


def _count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise LammpsExportError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_type_names(type_names: Sequence[str]) -> list[str]:
    names = [str(t) for t in type_names]
    if not names:
        raise LammpsExportError("the model has no type names")
    if len(set(names)) != len(names):
        raise LammpsExportError(f"type names repeat: {' '.join(names)}")
    # Masses come from the chemical symbol (ASE's table for species absent from the
    # structure), and ionmix models use chemical symbols as type names (identity map).
    not_elements = [t for t in names if t not in atomic_numbers]
    if not_elements:
        raise LammpsExportError(
            f"model type names {not_elements} are not chemical symbols; this export maps "
            "chemical species to type names one to one"
        )
    return names


def _check_atoms(atoms: Atoms, type_names: list[str], ensemble: str, model_label: str) -> None:
    if len(atoms) == 0:
        raise LammpsExportError("the structure has no atoms")
    missing = sorted(set(atoms.get_chemical_symbols()) - set(type_names))
    if missing:
        raise LammpsExportError(
            f"species {', '.join(missing)} of the structure are not among the type names of "
            f"{model_label} ({' '.join(type_names)})"
        )
    if not np.isfinite(atoms.positions).all():
        raise LammpsExportError("the structure has non-finite positions")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if ensemble == "npt" and not pbc.all():
        raise LammpsExportError(
            f"npt needs a structure periodic in x, y and z; this one has pbc={pbc.tolist()}"
        )
    # LAMMPS always needs a box (read_data reads it from the data file): a non-periodic
    # direction is shrink-wrapped, but the cell must still span 3D.
    if atoms.cell.rank < 3 or abs(atoms.cell.volume) < 1e-6:
        raise LammpsExportError(
            "the structure's cell does not span 3D (LAMMPS needs a box even for non-periodic "
            "directions); set one, e.g. atoms.center(vacuum=10.0)"
        )


# --------------------------------------------------------------------------------------
# the Coulomb baseline
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CoulombJob:
    """What system.data and in.lammps need for a Coulomb baseline.

    Attributes:
        baseline_key: `Baseline.key` (named in in.lammps and README.txt).
        charge_scale: factor on the ion set's partial charges.
        cutoff_A: ``coul/long`` real-space cutoff, Å.
        kspace_accuracy: PPPM relative force accuracy.
        mol_ids: LAMMPS molecule id per atom (1, 2, ...), shape (n_atoms,).
        charges_e: scaled charge per atom, e, shape (n_atoms,).
        bonds: bonded atom pairs, 0-based atom indices (i < j).
    """

    baseline_key: str
    charge_scale: float
    cutoff_A: float
    kspace_accuracy: float
    mol_ids: np.ndarray
    charges_e: np.ndarray
    bonds: tuple[tuple[int, int], ...]


def _lammps_coul_weights(n_atoms: int, bonds_1based: Sequence[tuple[int, int]]) -> np.ndarray:
    """(n, n) weights LAMMPS gives intramolecular Coulomb pairs: `SPECIAL_COUL_WEIGHTS` by
    shortest bond path (1, 2, 3 bonds), 1 beyond (and on the diagonal, unused)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import shortest_path

    weights = np.ones((n_atoms, n_atoms))
    if not bonds_1based:
        return weights
    i, j = (np.asarray(bonds_1based) - 1).T
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n_atoms, n_atoms))
    n_bonds = shortest_path(graph, directed=False, unweighted=True)
    for k, weight in enumerate(SPECIAL_COUL_WEIGHTS, start=1):
        weights[n_bonds == k] = weight
    return weights


def _openmm_coul_weights(name: str, ions: Mapping, charge_scale: float) -> np.ndarray:
    """(n, n) weights the baseline's OpenMM System gives the Coulomb pairs of one ion
    (exception charge product / product of the charges); NaN where a charge is 0 (any
    weight gives the same energy), 1 where OpenMM has no exception."""
    import openmm
    import openmm.unit as u

    from ionmix.teachers.classical.system import make_system

    # one molecule in a large box: only the System's exceptions are read
    csys = make_system([(name, 1)], 30.0, charge_scale=charge_scale, ions=ions,
                       electrostatics_only=True)
    nb = next(f for f in csys.system.getForces() if isinstance(f, openmm.NonbondedForce))
    q_e = np.array([nb.getParticleParameters(k)[0].value_in_unit(u.elementary_charge)
                    for k in range(nb.getNumParticles())])
    weights = np.ones((len(q_e), len(q_e)))
    for k in range(nb.getNumExceptions()):
        i, j, qq, _, _ = nb.getExceptionParameters(k)
        product = q_e[i] * q_e[j]
        weight = qq.value_in_unit(u.elementary_charge**2) / product if product else np.nan
        weights[i, j] = weights[j, i] = weight
    return weights


def check_coulomb_exclusions(baseline: Baseline, ions: Mapping, ion_names: Sequence[str]) -> None:
    """LammpsExportError unless LAMMPS (``special_bonds coul 0.0 0.0 0.5`` on each ion's bond
    graph) weighs every intramolecular Coulomb pair of every ion in `ion_names` as the
    Coulomb baseline's OpenMM System does (from the same bonds and the .itp's
    ``[ pairs ]``/``[ exclusions ]``).

    Args:
        baseline: the model's `Baseline` (with a Coulomb part).
        ions: the ion set (name → `Ion`).
        ion_names: the ions to check (those of the structure).
    """
    for name in ion_names:
        ion = ions[name]
        if ion.n_atoms < 2:
            continue
        bonds = ion.topology().bonds
        want = _lammps_coul_weights(ion.n_atoms, bonds)
        have = _openmm_coul_weights(name, ions, baseline.charge_scale)
        differ = np.isfinite(have) & (np.abs(have - want) > _WEIGHT_MATCH)
        if differ.any():
            i, j = (int(k) for k in np.argwhere(np.triu(differ))[0])
            raise LammpsExportError(
                f"ion {name}: the Coulomb baseline (key {baseline.key}) weighs the pair "
                f"{i + 1}-{j + 1} ({ion.atom_names[i]}-{ion.atom_names[j]}) by "
                f"{have[i, j]:g}, LAMMPS special_bonds on its bond graph would weigh it by "
                f"{want[i, j]:g} (1-2, 1-3 pairs: 0, 1-4: 0.5, others: 1; check the .itp's "
                "[ pairs ] and [ exclusions ]): a baseline the exporter cannot express")


def _molecule_arrays(atoms: Atoms, ions: Mapping, charge_scale: float):
    """(molecule id per atom (1, 2, ...), scaled charge per atom (e), bonds (0-based atom
    pairs, i < j)) of a structure whose molecules are ``molecules_of(atoms)``."""
    from ionmix.chemistry.topology import molecules_of

    symbols = atoms.get_chemical_symbols()
    mol_ids, charges, bonds = [], [], []
    start, molecule = 0, 0
    for name, count in molecules_of(atoms):
        ion = ions[name]
        ion_bonds = ion.topology().bonds
        for _ in range(count):
            molecule += 1
            if tuple(symbols[start:start + ion.n_atoms]) != ion.elements:
                raise LammpsExportError(
                    f"molecule {molecule} ({name}, atoms {start + 1}-{start + ion.n_atoms}): "
                    f"its elements differ from those of ion {name}'s template")
            mol_ids += [molecule] * ion.n_atoms
            charges += [q * charge_scale for q in ion.partial_charges]
            bonds += [(start + min(i, j) - 1, start + max(i, j) - 1) for i, j in ion_bonds]
            start += ion.n_atoms
    if start != len(atoms):
        raise LammpsExportError(f"the structure's molecules hold {start} atoms, the structure "
                                f"has {len(atoms)}")
    return np.array(mol_ids, dtype=int), np.array(charges), tuple(bonds)


def _coulomb_job(atoms: Atoms, baseline: Baseline | None, ions: Mapping | None, cutoff_A: float,
                 kspace_accuracy: float | None) -> _CoulombJob | None:
    """The Coulomb part of `baseline` for `atoms` (None when it has none), checked: a fully
    periodic structure whose molecules and ion set carry the baseline's charges, and
    exclusions LAMMPS can express."""
    if baseline is not None and baseline.tail:
        raise LammpsExportError(
            f"the model's baseline {baseline.key} has the force field's dispersion tail "
            f"beyond the network's cutoff (E = K / V from {baseline.tail_cutoff_A:g} Å), "
            "which this exporter does not write yet (LAMMPS' pair_modify tail belongs to a "
            "Lennard-Jones pair style and its own cutoff): a baseline the exporter cannot "
            "express")
    if baseline is not None and baseline.wall:
        raise LammpsExportError(
            f"the model's baseline {baseline.key} has an intermolecular wall (ZBL between "
            "atoms of different molecules, switched off by 1.6 Å), which LAMMPS cannot "
            "express (pair_style zbl acts on intramolecular pairs too): a baseline the "
            "exporter cannot express")
    if baseline is not None and baseline.bonded:
        raise LammpsExportError(
            f"the model's baseline {baseline.key} has the force field's bonded terms "
            "(harmonic bonds and angles, Ryckaert-Bellemans torsions), which this exporter "
            "does not write yet (LAMMPS would need bond_style harmonic, angle_style harmonic "
            "and dihedral_style nharmonic with the ions' parameters): a baseline the "
            "exporter cannot express")
    if baseline is None or not baseline.coulomb:
        return None
    from ionmix.chemistry.ionset import IonSet
    from ionmix.chemistry.topology import has_molecules, molecules_of

    cutoff_A = _positive("coul_cutoff_A", cutoff_A)
    if kspace_accuracy is None:  # LAMMPS' accuracy is relative to two unit charges at 1 Å
        kspace_accuracy = baseline.force_accuracy_eV_per_A / COULOMB_CONSTANT_EV_A
    kspace_accuracy = _positive("kspace_accuracy", kspace_accuracy)
    if not np.asarray(atoms.pbc, dtype=bool).all():
        raise LammpsExportError(
            f"the model's Coulomb baseline needs a structure periodic in x, y and z (PPPM); "
            f"this one has pbc={np.asarray(atoms.pbc, dtype=bool).tolist()}")
    if ions is None:  # library ions of the structure's molecules
        ions = IonSet.library({n for n, _ in molecules_of(atoms)} if has_molecules(atoms)
                              else ())
    baseline.check_structure(atoms, ions, "the structure")
    names = list(dict.fromkeys(name for name, _ in molecules_of(atoms)))
    check_coulomb_exclusions(baseline, ions, names)
    mol_ids, charges_e, bonds = _molecule_arrays(atoms, ions, baseline.charge_scale)
    return _CoulombJob(baseline.key, baseline.charge_scale, cutoff_A, kspace_accuracy,
                       mol_ids, charges_e, bonds)


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------


def _ase_bond_strings(n_atoms: int, bonds: Sequence[tuple[int, int]]) -> np.ndarray:
    """Bonds (0-based pairs i < j) as ASE's per-atom ``bonds`` array: ``"j(1),k(1)"`` on
    atom i for its bonds to j and k (bond type 1), ``"_"`` for none."""
    partners: list[list[str]] = [[] for _ in range(n_atoms)]
    for i, j in bonds:
        partners[i].append(f"{j}(1)")
    return np.array([",".join(p) or "_" for p in partners], dtype=object)


def _write_data_file(path: Path, atoms: Atoms, type_names: list[str],
                     coulomb: _CoulombJob | None = None) -> None:
    """``atom_style atomic``, or ``full`` (molecule ids, charges, bonds) with `coulomb`."""
    import io

    from ase.io.lammpsdata import write_lammps_data

    atoms = atoms.copy()
    # ASE prefers an existing per-atom "type" array (e.g. from a LAMMPS dump) over
    # `specorder`, which would break the type ↔ model-type-name mapping of pair_coeff.
    if "type" in atoms.arrays:
        del atoms.arrays["type"]
    if coulomb is not None:  # ASE's names for what atom_style full writes
        atoms.set_initial_charges(coulomb.charges_e)
        atoms.arrays["mol-id"] = coulomb.mol_ids
        atoms.arrays["bonds"] = _ase_bond_strings(len(atoms), coulomb.bonds)
    buffer = io.StringIO()  # written whole, then renamed into place (atomic)
    write_lammps_data(
        buffer, atoms,
        specorder=type_names,  # LAMMPS type i+1 = model type name i, all of them
        masses=True,           # so the input script needs no mass lines
        units="metal",
        atom_style="atomic" if coulomb is None else "full",
        bonds=coulomb is not None and bool(coulomb.bonds),
        # positions wrapped into the box, image flags keep the unwrapped trajectory
        # (LAMMPS would wrap on read anyway, but without image flags molecules that
        # straddle the boundary would lose their unwrapped coordinates, e.g. for MSD)
        write_image_flags=True,
        reduce_cell=False,  # keep the cell's shape: image flags refer to this cell
    )
    atomic_write_text(path, buffer.getvalue())


def _fmt(value: float) -> str:
    return f"{value:.10g}"


def _header_lines(*, pair_style: str, compiled_name: str,
                  source_model: str | Path | None) -> list[str]:
    lines = ["# LAMMPS input written by ionmix (ionmix.export.lammps.write_lammps_inputs)."]
    lines.append("# Needs LAMMPS built with pair_nequip_allegro "
                 "(https://github.com/mir-group/pair_nequip_allegro).")
    if source_model is not None:
        lines += [
            "#",
            "# Compile the model first, in this folder, on the machine that runs LAMMPS"
            " (same torch as LAMMPS links):",
            f"#   GPU: {compile_command(source_model, compiled_name, pair_style, 'cuda')}",
            f"#   CPU: {compile_command(source_model, compiled_name, pair_style, 'cpu')}",
        ]
    return lines + [
        "# Run: lmp -in in.lammps" + (
            "   (pair_style nequip: one MPI rank only)" if pair_style == "nequip" else
            "   (or mpirun -np N lmp -in in.lammps; Kokkos: see README.txt)"),
        "# Units metal: Å, eV, ps, bar, g/mol, K.",
        "",
    ]


def _pair_lines(*, type_names: list[str], pair_style: str, compiled_name: str,
                coulomb: _CoulombJob | None, zero_network: bool) -> list[str]:
    """The force field: the network alone, or network + Coulomb baseline (hybrid/overlay)."""
    # the network's pair_style arguments, and its pair_coeff arguments after "* *" (in the
    # hybrid, after its style name); pair_style zero takes a neighbour cutoff and no file
    style = f"zero {_fmt(ZERO_NETWORK_CUTOFF_A)}" if zero_network else pair_style
    coeff = "" if zero_network else f" {compiled_name} {' '.join(type_names)}"
    lines = [f"# LAMMPS atom types 1..{len(type_names)} = model type names, in this order"]
    if zero_network:
        lines.append(f"# pair_style zero stands in for the network ({pair_style}, "
                     f"{compiled_name}): this job computes no network energy")
    if coulomb is None:
        return lines + [f"pair_style      {style}", f"pair_coeff      * *{coeff}"]
    return lines + _coulomb_lines(coulomb, style, coeff)


def _coulomb_lines(coulomb: _CoulombJob, network_style: str, network_coeff: str) -> list[str]:
    """Network + the Coulomb baseline (see the module docstring for the mapping)."""
    weights = " ".join(repr(float(w)) for w in SPECIAL_COUL_WEIGHTS)  # "0.0 0.0 0.5"
    bond_lines = ["bond_style      zero",
                  "bond_coeff      *  # bonds define 1-2/1-3/1-4 neighbours only, no energy"]
    return [
        f"# + the model's Coulomb baseline ({coulomb.baseline_key}): charges in {DATA_FILE} "
        f"= partial charges x {_fmt(coulomb.charge_scale)};",
        "# within a molecule 1-2 and 1-3 pairs excluded, 1-4 pairs x 0.5, all others in "
        "full. The lj weights stay 1",
        "# so that the network sees every pair (only coul/long reads the coul weights).",
        f"special_bonds   lj 1.0 1.0 1.0 coul {weights}",
        *(bond_lines if coulomb.bonds else []),
        f"pair_style      hybrid/overlay {network_style} coul/long {_fmt(coulomb.cutoff_A)}",
        f"pair_coeff      * * {network_style.split()[0]}{network_coeff}",
        "pair_coeff      * * coul/long",
        f"kspace_style    pppm {_fmt(coulomb.kspace_accuracy)}  # relative force accuracy",
    ]


def _input_script(*, type_names: list[str], pair_style: str, compiled_name: str,
                  source_model: str | Path | None, pbc: Sequence[bool], ensemble: str,
                  temperature_K: float, pressure_bar: float, timestep_fs: float,
                  thermostat_time_steps: float, barostat_time_steps: float, n_steps: int,
                  thermo_interval_steps: int, dump_interval_steps: int, seed: int,
                  coulomb: _CoulombJob | None = None, zero_network: bool = False) -> str:
    timestep_ps = timestep_fs * 1e-3  # metal units: time in ps
    tdamp_ps = thermostat_time_steps * timestep_ps
    pdamp_ps = barostat_time_steps * timestep_ps
    boundary = " ".join("p" if p else "s" for p in pbc)
    # pair_nequip_allegro.cpp: "Pair style allegro requires newton pair on",
    # "Pair style nequip requires newton pair off".
    newton = "on" if pair_style == "allegro" else "off"
    species = " ".join(type_names)

    lines = _header_lines(pair_style=pair_style, compiled_name=compiled_name,
                          source_model=source_model)
    lines += [
        "units           metal",
        f"atom_style      {'atomic' if coulomb is None else 'full'}",
        f"boundary        {boundary}",
        f"newton          {newton}",
        "",
        f"read_data       {DATA_FILE}",
        "",
        *_pair_lines(type_names=type_names, pair_style=pair_style,
                     compiled_name=compiled_name, coulomb=coulomb, zero_network=zero_network),
        "",
        "neighbor        2.0 bin",
        "neigh_modify    every 1 delay 0 check yes",
        "",
        f"timestep        {_fmt(timestep_ps)}  # ps = {_fmt(timestep_fs)} fs",
        # LAMMPS wants a positive seed; seed 0 is a valid ionmix seed, hence + 1. "loop geom"
        # makes the velocities independent of the number of MPI ranks.
        f"velocity        all create {_fmt(temperature_K)} {seed + 1} "
        "dist gaussian mom yes rot no loop geom",
        "",
    ]
    if ensemble == "nve":
        lines.append("fix             integrate all nve")
    elif ensemble == "nvt":
        lines.append(f"# Tdamp = {_fmt(thermostat_time_steps)} time steps")
        lines.append(f"fix             integrate all nvt temp {_fmt(temperature_K)} "
                     f"{_fmt(temperature_K)} {_fmt(tdamp_ps)}")
    else:
        lines.append(f"# Tdamp = {_fmt(thermostat_time_steps)} time steps, "
                     f"Pdamp = {_fmt(barostat_time_steps)} time steps; pressure in bar")
        lines.append(f"fix             integrate all npt temp {_fmt(temperature_K)} "
                     f"{_fmt(temperature_K)} {_fmt(tdamp_ps)} iso {_fmt(pressure_bar)} "
                     f"{_fmt(pressure_bar)} {_fmt(pdamp_ps)}")
    lines += [
        "",
        "thermo_style    custom step time temp pe ke etotal press vol density",
        f"thermo          {thermo_interval_steps}",
        # element column: readers (ASE, OVITO) get the species, not just type numbers
        f"dump            traj all custom {dump_interval_steps} {TRAJECTORY_FILE} "
        "id type element x y z fx fy fz",
        f"dump_modify     traj sort id element {species}",
        "",
        f"run             {n_steps}",
        f"write_data      {FINAL_DATA_FILE} nocoeff",
        "",
    ]
    return "\n".join(lines)


def _readme_baseline(coulomb: _CoulombJob | None) -> str:
    if coulomb is None:
        return ""
    return (
        f"\nThe model's Coulomb baseline ({coulomb.baseline_key}) is part of the job: "
        "system.data\n"
        f"(atom_style full) holds the partial charges x {_fmt(coulomb.charge_scale)}, the "
        "molecule ids and\nthe bonds; in.lammps adds it to the network with pair_style "
        "hybrid/overlay ... coul/long,\nkspace_style pppm and special_bonds coul 0.0 0.0 0.5 "
        "(as the baseline's own PME sum).\n"
    )


def _readme(*, pair_style: str, compiled_name: str, source_model: str | Path | None,
            type_names: list[str], ensemble: str, n_atoms: int,
            coulomb: _CoulombJob | None = None) -> str:
    torchscript_name = compiled_name.replace(AOTI_SUFFIX, TORCHSCRIPT_SUFFIX)
    if source_model is not None:
        compile_lines = (
            f"  GPU: {compile_command(source_model, compiled_name, pair_style, 'cuda')}\n"
            f"  CPU: {compile_command(source_model, compiled_name, pair_style, 'cpu')}\n"
        )
    else:
        compile_lines = (f"  nequip-compile MODEL {compiled_name} --mode aotinductor "
                         f"--device cuda|cpu --target pair_{pair_style}\n")
    if pair_style == "allegro":
        run_lines = (
            "  lmp -in in.lammps\n"
            "  mpirun -np 4 lmp -in in.lammps                       (MPI is supported)\n"
            "  lmp -sf kk -k on g 1 -pk kokkos newton on neigh half -in in.lammps   "
            "(Kokkos, 1 GPU)\n"
        )
    else:
        run_lines = "  lmp -in in.lammps          (pair_style nequip runs on one MPI rank only)\n"
    return (
        f"LAMMPS job written by ionmix: {n_atoms} atoms, {ensemble.upper()}, "
        f"pair_style {pair_style}.\n"
        "\n"
        "Needs: LAMMPS (10 Sep 2025 or newer) built with pair_nequip_allegro\n"
        "(https://github.com/mir-group/pair_nequip_allegro) with -DNEQUIP_AOT_COMPILE=ON, linked\n"
        "to the same torch version as the nequip that compiles the model.\n"
        "\n"
        "1. Compile the model into this folder (LAMMPS cannot read .nequip.zip or .ckpt), on\n"
        f"   the machine that will run LAMMPS:\n{compile_lines}"
        "   Compiling a package (.nequip.zip) needs nothing else; compiling a checkpoint\n"
        "   (.ckpt) also needs its training data files at the paths recorded in it.\n"
        "   With torch < 2.10 a TorchScript model also works: --mode torchscript (no\n"
        f"   --target), output {torchscript_name}; change the pair_coeff line to match.\n"
        "\n"
        "2. Run, in this folder:\n"
        f"{run_lines}"
        "\n"
        "Files: system.data (structure; LAMMPS types 1.. = "
        f"{' '.join(type_names)}), in.lammps (input),\n"
        f"{TRAJECTORY_FILE} (dump: id type element x y z fx fy fz), {FINAL_DATA_FILE} "
        "(last state).\n"
        "Units metal: Å, eV, ps, bar, g/mol, K. A triclinic cell is rotated into LAMMPS's\n"
        "frame (a along x, b in the xy plane): positions and forces in the output are in\n"
        "that frame.\n"
        f"{_readme_baseline(coulomb)}"
    )


def write_lammps_inputs_for(
    atoms: Atoms,
    type_names: Sequence[str],
    pair_style: str,
    compiled_model: str,
    out_dir: str | Path,
    *,
    source_model: str | Path | None = None,
    ensemble: str = "npt",
    temperature_K: float = 300.0,
    pressure_bar: float = 1.0,
    timestep_fs: float = 0.5,
    thermostat_time_steps: float = 1000.0,
    barostat_time_steps: float = 1000.0,
    n_steps: int = 20000,
    thermo_interval_steps: int = 10,
    dump_interval_steps: int = 100,
    seed: int = 0,
    baseline: Baseline | None = None,
    ions: Mapping | None = None,
    coul_cutoff_A: float = DEFAULT_COUL_CUTOFF_A,
    kspace_accuracy: float | None = None,
    zero_network: bool = False,
) -> dict[str, Path]:
    """Write ``system.data``, ``in.lammps`` and ``README.txt`` given the model's facts.

    The lower-level half of `write_lammps_inputs`: no model is loaded (the baseline is
    given, not read from a record).

    Args:
        atoms: the structure (positions in Å, cell in Å). Its species must be among
            `type_names`. Fully periodic for ``npt``; a non-periodic direction becomes a
            shrink-wrapped (``s``) LAMMPS boundary, and the cell must still span 3D.
        type_names: the model's type names in model order (chemical symbols), e.g.
            ``["C", "F", "H", "Li", "N", "P"]``; LAMMPS atom type i+1 is ``type_names[i]``.
        pair_style: ``"allegro"`` or ``"nequip"``.
        compiled_model: file name of the compiled model that ``pair_coeff`` loads, relative
            to `out_dir` (where LAMMPS runs), ending in ``.nequip.pt2`` or ``.nequip.pth``.
        out_dir: output folder (created).
        source_model: the packaged model / checkpoint the compiled model is made from; used
            only to write the ``nequip-compile`` command into in.lammps and README.txt.
        ensemble: ``"nve"``, ``"nvt"`` or ``"npt"`` (isotropic).
        temperature_K: initial velocities (Gaussian, zero momentum) and thermostat target, K.
        pressure_bar: barostat target (npt), bar (the pressure unit of ``units metal``).
        timestep_fs: time step, fs (written in ps).
        thermostat_time_steps: thermostat damping time Tdamp, in time steps.
        barostat_time_steps: barostat damping time Pdamp, in time steps.
        n_steps: number of MD steps (0: a single-point evaluation).
        thermo_interval_steps: thermo output every this many steps.
        dump_interval_steps: trajectory frame every this many steps.
        seed: velocity seed (>= 0; LAMMPS gets seed + 1, as it needs a positive one).
        baseline: the model's `ionmix.models.baseline.Baseline`; None (as ``none``) or one
            without a Coulomb part gives the atomic job, one with a Coulomb part the job of
            the module docstring (``atom_style full``, ``hybrid/overlay ... coul/long``).
        ions: the structure's ion set (name → `Ion`; e.g. ``Provenance.ion_set(atoms)``)
            for a Coulomb baseline; None: library ions of its molecules.
        coul_cutoff_A: ``coul/long`` real-space cutoff, Å (Coulomb baseline only).
        kspace_accuracy: PPPM relative force accuracy (Coulomb baseline only); None: the
            baseline's ``force_accuracy_eV_per_A`` / 14.40 eV/Å.
        zero_network: write ``pair_style zero`` in place of the network, so that the job
            runs on a LAMMPS without pair_nequip_allegro and computes the baseline only
            (for tests and checks of the files).

    Returns:
        ``{"data": system.data, "input": in.lammps, "readme": README.txt}`` paths.

    Raises:
        LammpsExportError: unknown ensemble or pair style, species not in `type_names`,
            non-periodic structure for npt, non-physical temperature, pressure or time
            step, bad step counts or compiled model name; with a Coulomb baseline, a
            structure that is not fully periodic or whose molecules do not match their
            ions, and exclusions LAMMPS cannot express (`check_coulomb_exclusions`).
        BaselineError: a Coulomb baseline and a structure without molecule information,
            or with other charges or charge scale than the baseline's.
    """
    ensemble = str(ensemble).lower()
    if ensemble not in ENSEMBLES:
        raise LammpsExportError(f"ensemble must be one of {', '.join(ENSEMBLES)}, got {ensemble!r}")
    pair_style = str(pair_style).lower()
    if pair_style not in PAIR_STYLES:
        raise LammpsExportError(
            f"pair_style must be one of {', '.join(PAIR_STYLES)} (pair_nequip_allegro), "
            f"got {pair_style!r}"
        )
    if not compiled_model.endswith((AOTI_SUFFIX, TORCHSCRIPT_SUFFIX)) or re.search(
        r"\s", compiled_model
    ):
        raise LammpsExportError(
            f"compiled model name {compiled_model!r} must be one word ending in {AOTI_SUFFIX} "
            f"or {TORCHSCRIPT_SUFFIX} (pair_nequip_allegro accepts only those)"
        )
    temperature_K = _positive("temperature_K", temperature_K)
    pressure_bar = _finite("pressure_bar", pressure_bar)
    if pressure_bar < 0:
        # Liquids under tension cavitate; a barostat at negative pressure is almost surely
        # a sign error. Edit in.lammps by hand if it is meant.
        raise LammpsExportError(f"pressure_bar must be >= 0, got {pressure_bar:g}")
    timestep_fs = _positive("timestep_fs", timestep_fs)
    thermostat_time_steps = _positive("thermostat_time_steps", thermostat_time_steps)
    barostat_time_steps = _positive("barostat_time_steps", barostat_time_steps)
    n_steps = _count("n_steps", n_steps, 0)
    thermo_interval_steps = _count("thermo_interval_steps", thermo_interval_steps, 1)
    dump_interval_steps = _count("dump_interval_steps", dump_interval_steps, 1)
    seed = _count("seed", seed, 0)
    names = _check_type_names(type_names)
    model_label = f"model {source_model}" if source_model is not None else "the model"
    _check_atoms(atoms, names, ensemble, model_label)
    coulomb = _coulomb_job(atoms, baseline, ions, coul_cutoff_A, kspace_accuracy)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"data": out / DATA_FILE, "input": out / INPUT_FILE, "readme": out / README_FILE}
    _write_data_file(paths["data"], atoms, names, coulomb)
    atomic_write_text(paths["input"], _input_script(
        type_names=names, pair_style=pair_style, compiled_name=compiled_model,
        source_model=source_model, pbc=[bool(p) for p in atoms.pbc], ensemble=ensemble,
        temperature_K=temperature_K, pressure_bar=pressure_bar, timestep_fs=timestep_fs,
        thermostat_time_steps=thermostat_time_steps,
        barostat_time_steps=barostat_time_steps, n_steps=n_steps,
        thermo_interval_steps=thermo_interval_steps,
        dump_interval_steps=dump_interval_steps, seed=seed, coulomb=coulomb,
        zero_network=bool(zero_network),
    ))
    atomic_write_text(paths["readme"], _readme(
        pair_style=pair_style, compiled_name=compiled_model, source_model=source_model,
        type_names=names, ensemble=ensemble, n_atoms=len(atoms), coulomb=coulomb,
    ))
    return paths


def write_lammps_inputs(
    atoms: Atoms,
    model: str | Path,
    out_dir: str | Path,
    *,
    pair_style: str | None = None,
    provenance: Provenance | None = None,
    **run,
) -> dict[str, Path]:
    """Write a LAMMPS job (``system.data``, ``in.lammps``, ``README.txt``) for a trained model.

    The model's type names (LAMMPS atom types, in order) and architecture (Allegro →
    ``pair_style allegro``, NequIP → ``pair_style nequip``) are read from the model itself.
    ``pair_coeff`` names the compiled model ``<model stem>.nequip.pt2`` in `out_dir`, which
    the user makes with the ``nequip-compile`` command written into in.lammps and
    README.txt (AOTInductor; TorchScript is refused by nequip on torch >= 2.10).

    The model's baseline comes from the ``baseline.json`` beside it (`read_record`), read
    before anything is loaded or written; a Coulomb part goes into the job (see the module
    docstring).

    Args:
        atoms: the structure (Å); see `write_lammps_inputs_for`.
        model: a packaged model (``*.nequip.zip``) or a checkpoint (``*.ckpt``).
        out_dir: output folder (created); LAMMPS is run from it.
        pair_style: ``"allegro"`` or ``"nequip"``; None reads it from the model (an error
            if the architecture is neither).
        provenance: `ionmix.dataset.provenance.Provenance` of the structure's source: the
            ion set of a Coulomb baseline (default: none; library ions).
        run: the MD settings and Coulomb options of `write_lammps_inputs_for` (``ensemble``,
            ``temperature_K``, ``pressure_bar``, ``timestep_fs``, ``thermostat_time_steps``,
            ``barostat_time_steps``, ``n_steps``, ``thermo_interval_steps``,
            ``dump_interval_steps``, ``seed``, ``coul_cutoff_A``, ``kspace_accuracy``), with
            its defaults.

    Returns:
        ``{"data": ..., "input": ..., "readme": ...}`` paths.

    Raises:
        BaselineError: the model's ``baseline.json`` is missing, altered or written for
            another package (named), plus the structure checks of a Coulomb baseline.
        LammpsExportError: model file missing or of the wrong kind, architecture unknown
            and no `pair_style`, plus everything `write_lammps_inputs_for` raises.
    """
    path = _check_model_file(model)
    # cheap checks before the model is loaded (seconds); the rest follow in ..._for
    if pair_style is not None and str(pair_style).lower() not in PAIR_STYLES:
        raise LammpsExportError(
            f"pair_style must be one of {', '.join(PAIR_STYLES)} (pair_nequip_allegro), "
            f"got {pair_style!r}"
        )
    ensemble = run.get("ensemble", "npt")
    if str(ensemble).lower() not in ENSEMBLES:
        raise LammpsExportError(f"ensemble must be one of {', '.join(ENSEMBLES)}, got {ensemble!r}")
    unknown = set(run) - set(inspect.signature(write_lammps_inputs_for).parameters)
    if unknown:
        raise TypeError(f"write_lammps_inputs: unknown setting(s) {sorted(unknown)}")
    baseline = _read_baseline(path)
    ions = None
    if baseline.coulomb:  # the structure against the baseline, before the (slow) load
        from ionmix.dataset.provenance import Provenance

        ions = (provenance or Provenance()).ion_set(atoms)
        baseline.check_structure(atoms, ions, "the structure")
    loaded = _load_model(path)
    type_names = model_type_names(loaded)
    if pair_style is None:
        pair_style = model_pair_style(loaded)
        if pair_style is None:
            raise LammpsExportError(
                f"cannot tell whether {path} is an Allegro or a NequIP model; pass "
                "pair_style='allegro' or 'nequip'"
            )
    return write_lammps_inputs_for(
        atoms, type_names, pair_style, compiled_model_name(path), out_dir,
        source_model=path, baseline=baseline, ions=ions, **run)
