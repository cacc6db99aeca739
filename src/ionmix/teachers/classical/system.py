"""OpenMM systems for ionic-liquid boxes from the ion library's GROMACS topologies.

:func:`make_system` writes one self-contained GROMACS .top (``[ defaults ] 1 3 yes 0.5 0.5``,
the OPLS conventions: LJ with geometric combining rules for sigma and epsilon, 1-4 pairs
scaled by 0.5 for LJ and Coulomb; one merged ``[ atomtypes ]`` section; each ion's
``[ moleculetype ]``; ``[ molecules ]`` in box order), loads it with
``openmm.app.GromacsTopFile`` and then

- uses PME for electrostatics and an LJ cutoff with the long-range dispersion correction;
  LJ is switched smoothly to zero over the last ``lj_switch_width_A`` (default 1 Å) so that
  energy and forces are continuous at the cutoff: a plain truncation makes the energy jump
  whenever a pair crosses the cutoff, so energy labels would not match force labels and
  forces = -dE/dx would fail (``lj_switch_width_A=None`` gives the plain truncation of
  e.g. LAMMPS ``lj/cut``; OpenMM's dispersion correction accounts for the switch);
- scales charges by ``charge_scale`` (particle charges x s, exception charge products x s^2;
  GromacsTopFile already multiplies 1-4 charge products by fudgeQQ = 0.5, so nothing is
  scaled twice);
- uses no constraints (every atom moves and feels its full force, as MLIP labels need);
- makes every bonded term (and the 1-4 exceptions) periodic, so energies do not depend on
  whether molecules are wrapped into the box.

Units at this module's interface are ASE's (Å, eV); OpenMM's (nm, kJ/mol) stay inside.
"""

from __future__ import annotations

import functools
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u

from ionmix.chemistry.ions import AtomType, Ion, load_ion, parse_itp
from ionmix.errors import InputError
from ionmix.units import NM_IN_ANGSTROM

__all__ = [
    "ClassicalSystem",
    "ClassicalSystemError",
    "DEFAULT_CHARGE_SCALE",
    "DEFAULT_EWALD_ERROR_TOLERANCE",
    "MAX_DEFAULT_CUTOFF_A",
    "best_platform",
    "default_cutoff_A",
    "BONDED_FORCES",
    "keep_bonded_only",
    "keep_electrostatics_only",
    "make_context",
    "make_system",
    "make_system_for_atoms",
    "max_cutoff_A",
    "molecule_runs",
    "openmm_cell",
    "write_top",
]

#: Charge scaling factor of the paper's Li/[EMIM]/[PF6] runs.
DEFAULT_CHARGE_SCALE: float = 0.8
#: Relative PME error tolerance. 5e-5 keeps the RMS PME force error (~0.02 meV/Å) far below the
#: meV/Å level MLIP labels are compared at (measured in tests/test_classical.py).
DEFAULT_EWALD_ERROR_TOLERANCE: float = 5e-5
#: Largest default LJ/real-space cutoff, Å.
MAX_DEFAULT_CUTOFF_A: float = 12.0
#: Default width of the LJ switching region below the cutoff, Å.
DEFAULT_LJ_SWITCH_WIDTH_A: float = 1.0
#: The default cutoff is at most this fraction of the shortest box width: just under half,
#: leaving room for strain derivatives and small NPT box fluctuations.
DEFAULT_CUTOFF_BOX_FRACTION: float = 0.49


class ClassicalSystemError(InputError):
    """A classical system cannot be built as asked (cutoff, cell, ions, topology)."""


@dataclass(frozen=True)
class ClassicalSystem:
    """An OpenMM System for a box of ions plus what produced it.

    Attributes:
        system: the OpenMM System (kJ/mol, nm inside).
        topology: the matching OpenMM Topology.
        molecules: ordered runs ``((ion_name, count), ...)``: the atom order of the system.
        ions: the Ion of every name in ``molecules``.
        elements: element symbol per atom, length n_atoms.
        masses_amu: mass per atom, length n_atoms.
        charge_scale: factor applied to every partial charge.
        cutoff_A: real-space (PME) and LJ cutoff, Å.
        ewald_error_tolerance: PME relative error tolerance.
        lj_switch_width_A: LJ switching width below the cutoff, Å (None: plain truncation).
        top_text: the generated GROMACS .top, for the record.
    """

    system: openmm.System
    topology: app.Topology
    molecules: tuple[tuple[str, int], ...]
    ions: Mapping[str, Ion]
    elements: tuple[str, ...]
    masses_amu: tuple[float, ...]
    charge_scale: float
    cutoff_A: float
    ewald_error_tolerance: float
    lj_switch_width_A: float | None
    top_text: str

    @property
    def n_atoms(self) -> int:
        """Number of particles."""
        return self.system.getNumParticles()

    def charges_e(self) -> np.ndarray:
        """Scaled partial charges as used by the system, shape (n_atoms,), e."""
        nb = _nonbonded_force(self.system)
        return np.array(
            [
                nb.getParticleParameters(i)[0].value_in_unit(u.elementary_charge)
                for i in range(nb.getNumParticles())
            ]
        )


def _nonbonded_force(system: openmm.System) -> openmm.NonbondedForce:
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            return force
    raise ClassicalSystemError("the system has no NonbondedForce")


# --------------------------------------------------------------------------------------
# molecules and cells


def molecule_runs(
    molecules: Mapping[str, int] | Sequence[tuple[str, int]],
    ions: Mapping[str, Ion] | None = None,
) -> tuple[tuple[str, int], ...]:
    """Normalise a composition to ordered runs ``((ion_name, count), ...)``.

    Accepts a mapping ``{name: count}`` (its order is the atom order, as in ``build_box``)
    or a sequence of ``(name, count)`` runs (for interleaved orders). Names may be aliases
    and are replaced by the ion's library name; zero counts are dropped, adjacent runs of
    the same ion merged. Negative counts or an empty composition raise.
    """
    items = list(molecules.items()) if isinstance(molecules, Mapping) else list(molecules)
    runs: list[tuple[str, int]] = []
    for name, count in items:
        if int(count) != count or count < 0:
            raise ClassicalSystemError(
                f"count of {name} must be a non-negative integer, got {count}"
            )
        if count == 0:
            continue
        canonical = load_ion(name, ions).name
        if runs and runs[-1][0] == canonical:
            runs[-1] = (canonical, runs[-1][1] + int(count))
        else:
            runs.append((canonical, int(count)))
    if not runs:
        raise ClassicalSystemError(f"empty composition {molecules!r}")
    return tuple(runs)


def _as_cell(cell_A) -> np.ndarray:
    """Cell as a 3x3 array of row vectors (Å) from a scalar, 3 lengths, or a 3x3 matrix."""
    c = np.asarray(cell_A, dtype=float)
    if c.ndim == 0:
        c = np.eye(3) * c
    elif c.shape == (3,):
        c = np.diag(c)
    if c.shape != (3, 3) or abs(np.linalg.det(c)) < 1e-9:
        raise ClassicalSystemError(f"cell must be a non-singular 3x3 matrix, got {cell_A!r}")
    return c


def openmm_cell(cell_A) -> tuple[np.ndarray, np.ndarray]:
    """Rotate and reduce a cell into OpenMM's form.

    Returns ``(box_A, rotation)``: ``box_A`` (3x3, rows a, b, c, Å) is lower triangular with
    positive diagonal and reduced (``a_x >= 2|b_x|``, ``a_x >= 2|c_x|``, ``b_y >= 2|c_y|``), as
    OpenMM requires; ``rotation`` (3x3, a proper rotation) maps row-vector positions into
    that frame: ``positions_openmm = positions @ rotation``. Forces map back with
    ``forces @ rotation.T`` and stress with ``rotation @ stress @ rotation.T``. A left-handed
    cell is first made right-handed by flipping its third vector (the same lattice).
    """
    c = _as_cell(cell_A)
    if np.linalg.det(c) < 0:
        c = c * np.array([[1.0], [1.0], [-1.0]])
    if c[0, 1] == 0 and c[0, 2] == 0 and c[1, 2] == 0 and np.all(np.diag(c) > 0):
        rotation = np.eye(3)
        box = c.copy()
    else:
        q, r = np.linalg.qr(c.T)
        rotation = q * np.sign(np.diag(r))
        box = c @ rotation
        box[0, 1:] = 0.0
        box[1, 2] = 0.0
    a, b, cc = box
    cc = cc - b * np.round(cc[1] / b[1])
    cc = cc - a * np.round(cc[0] / a[0])
    b = b - a * np.round(b[0] / a[0])
    return np.array([a, b, cc]), rotation


def max_cutoff_A(cell_A) -> float:
    """Largest cutoff OpenMM accepts for this cell: half its shortest reduced box width, Å."""
    box, _ = openmm_cell(cell_A)
    return 0.5 * float(np.min(np.diag(box)))


def default_cutoff_A(cell_A) -> float:
    """Default cutoff: min(12 Å, 0.49 x the shortest box width), Å."""
    box, _ = openmm_cell(cell_A)
    return min(MAX_DEFAULT_CUTOFF_A, DEFAULT_CUTOFF_BOX_FRACTION * float(np.min(np.diag(box))))


def _check_cutoff(cutoff_A: float, cell_A) -> None:
    limit = max_cutoff_A(cell_A)
    if cutoff_A > limit:
        raise ClassicalSystemError(
            f"cutoff_A = {cutoff_A:.4g} Å exceeds half the shortest box width: {limit:.4g} Å "
            f"(shortest width {2 * limit:.4g} Å); use a smaller cutoff or a bigger box"
        )
    if cutoff_A <= 0:
        raise ClassicalSystemError(f"cutoff_A must be positive, got {cutoff_A}")


# --------------------------------------------------------------------------------------
# the .top file


def _format_atomtype(at: AtomType) -> str:
    z = at.atomic_number if at.atomic_number is not None else 0
    return (
        f"  {at.name:<8s} {z:4d} {at.mass_amu:10.4f} {at.charge_e:9.4f}  {at.ptype}  "
        f"{at.sigma_nm:.8g}  {at.epsilon_kj_per_mol:.8g}"
    )


def write_top(
    runs: Sequence[tuple[str, int]],
    ions: Mapping[str, Ion],
    path: str | Path,
    *,
    title: str = "ionmix system",
) -> str:
    """Write a self-contained GROMACS .top for ``runs`` and return its text.

    The ions' ``[ atomtypes ]`` are merged into one section (GROMACS requires all atom types
    before the first moleculetype); a type defined by two ions with different element,
    sigma or epsilon raises :class:`ClassicalSystemError` naming both files. Atom types
    whose charge or mass differ but LJ agrees are merged (``[ atoms ]`` gives charge and
    mass per atom, so the type's values are not used).
    """
    merged: dict[str, tuple[AtomType, Path]] = {}
    bodies: list[str] = []
    molecule_names: dict[str, str] = {}
    for name in dict.fromkeys(n for n, _ in runs):
        ion = ions[name]
        itp = parse_itp(ion.itp_path)
        if itp.molecule_name in molecule_names and molecule_names[itp.molecule_name] != name:
            raise ClassicalSystemError(
                f"ions {molecule_names[itp.molecule_name]} and {name} both use moleculetype name "
                f"{itp.molecule_name!r} ({ion.itp_path}); rename one"
            )
        molecule_names[itp.molecule_name] = name
        for tname, at in itp.atomtypes.items():
            if tname in merged:
                other, other_path = merged[tname]
                same = (
                    other.atomic_number == at.atomic_number
                    and np.isclose(other.sigma_nm, at.sigma_nm, rtol=1e-9, atol=0)
                    and np.isclose(
                        other.epsilon_kj_per_mol, at.epsilon_kj_per_mol, rtol=1e-9, atol=0
                    )
                )
                if not same:
                    raise ClassicalSystemError(
                        f"atom type {tname!r} is defined differently in {other_path} "
                        f"(Z={other.atomic_number}, sigma={other.sigma_nm} nm, "
                        f"epsilon={other.epsilon_kj_per_mol} kJ/mol) and in {itp.path} "
                        f"(Z={at.atomic_number}, sigma={at.sigma_nm} nm, "
                        f"epsilon={at.epsilon_kj_per_mol} kJ/mol); rename the type in one ion"
                    )
            else:
                merged[tname] = (at, itp.path)
        bodies.append(f"; ---- {name}: from {itp.path}\n{itp.body_text}")
    lines = [
        f"; {title}: generated by ionmix.teachers.classical.write_top",
        "[ defaults ]",
        "; nbfunc  comb-rule  gen-pairs  fudgeLJ  fudgeQQ   (OPLS)",
        "  1       3          yes        0.5      0.5",
        "",
        "[ atomtypes ]",
        "; name  at.num  mass  charge  ptype  sigma(nm)  epsilon(kJ/mol)",
        *(_format_atomtype(at) for at, _ in merged.values()),
        "",
        *bodies,
        "[ system ]",
        title,
        "",
        "[ molecules ]",
        *(f"{ions[name].molecule_name}  {count}" for name, count in runs),
        "",
    ]
    text = "\n".join(lines)
    Path(path).write_text(text)
    return text


# --------------------------------------------------------------------------------------
# the system


def make_system(
    molecules: Mapping[str, int] | Sequence[tuple[str, int]],
    cell_A,
    *,
    charge_scale: float = DEFAULT_CHARGE_SCALE,
    cutoff_A: float | None = None,
    ewald_error_tolerance: float = DEFAULT_EWALD_ERROR_TOLERANCE,
    lj_switch_width_A: float | None = DEFAULT_LJ_SWITCH_WIDTH_A,
    ions: Mapping[str, Ion] | None = None,
    electrostatics_only: bool = False,
    bonded_only: bool = False,
) -> ClassicalSystem:
    """Build the OpenMM System of a box of ions (see the module docstring for the physics).

    Args:
        molecules: ``{ion: count}`` in atom order, or ``[(ion, count), ...]`` runs.
        cell_A: box, Å: a scalar (cube), 3 lengths, or a 3x3 matrix of row vectors. It sets
            the default box (and so the PME grid); a calculator may change it later.
        charge_scale: factor on every partial charge (0.8 in the paper for Li/EMIM/PF6).
        cutoff_A: real-space and LJ cutoff, Å. Default ``min(12, 0.49 * shortest width)``.
            A value above half the shortest box width raises, naming both numbers.
        ewald_error_tolerance: PME relative error tolerance.
        lj_switch_width_A: LJ switching region below the cutoff, Å (None: plain truncation).
        ions: extra ions by name (e.g. from ``load_user_ion``), looked up before the library.
        electrostatics_only: keep only the scaled point charges' PME electrostatics, with
            the force field's exclusions (see `keep_electrostatics_only`): the Coulomb
            baseline under a learned student.
        bonded_only: keep only the bonded terms (`keep_bonded_only`): the bonded baseline
            under a learned student.
    """
    if electrostatics_only and bonded_only:
        raise ClassicalSystemError("electrostatics_only and bonded_only exclude each other")
    if not charge_scale > 0:
        raise ClassicalSystemError(f"charge_scale must be positive, got {charge_scale}")
    runs = molecule_runs(molecules, ions)
    ion_map = {name: load_ion(name, ions) for name, _ in runs}
    if cutoff_A is None:
        cutoff_A = default_cutoff_A(cell_A)
    _check_cutoff(cutoff_A, cell_A)
    switch_distance = None
    if lj_switch_width_A is not None:
        if not 0 < lj_switch_width_A < cutoff_A:
            raise ClassicalSystemError(
                f"lj_switch_width_A = {lj_switch_width_A} Å must be positive and below "
                f"cutoff_A = {cutoff_A:.4g} Å"
            )
        switch_distance = (cutoff_A - lj_switch_width_A) / NM_IN_ANGSTROM * u.nanometer
    box_A, _ = openmm_cell(cell_A)
    box_nm = [openmm.Vec3(*row) for row in box_A / NM_IN_ANGSTROM] * u.nanometer

    with tempfile.TemporaryDirectory(prefix="ionmix-top-") as tmp:
        top_path = Path(tmp) / "system.top"
        top_text = write_top(runs, ion_map, top_path)
        with warnings.catch_warnings():
            # GromacsTopFile iterates over open(file) without closing it (OpenMM 8.6); the
            # file is ours and is closed when the loop ends: silence the ResourceWarning.
            warnings.simplefilter("ignore", ResourceWarning)
            gro = app.GromacsTopFile(str(top_path), periodicBoxVectors=box_nm, includeDir=tmp)
    system = gro.createSystem(
        nonbondedMethod=app.PME,
        nonbondedCutoff=cutoff_A / NM_IN_ANGSTROM * u.nanometer,
        constraints=None,
        rigidWater=False,
        ewaldErrorTolerance=ewald_error_tolerance,
        removeCMMotion=True,
        useDispersionCorrection=True,
        switchDistance=switch_distance,
    )
    scale_charges(system, charge_scale)
    if electrostatics_only:
        keep_electrostatics_only(system)
    if bonded_only:
        keep_bonded_only(system)
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            force.setExceptionsUsePeriodicBoundaryConditions(True)
        elif not isinstance(force, openmm.CustomNonbondedForce | openmm.CMMotionRemover):
            force.setUsesPeriodicBoundaryConditions(True)

    elements: list[str] = []
    masses: list[float] = []
    for name, count in runs:
        elements.extend(ion_map[name].elements * count)
        masses.extend(ion_map[name].masses * count)
    if len(elements) != system.getNumParticles():  # pragma: no cover - consistency guard
        raise ClassicalSystemError("internal error: atom count differs from the ion templates")
    return ClassicalSystem(
        system=system,
        topology=gro.topology,
        molecules=runs,
        ions=ion_map,
        elements=tuple(elements),
        masses_amu=tuple(masses),
        charge_scale=float(charge_scale),
        cutoff_A=float(cutoff_A),
        ewald_error_tolerance=float(ewald_error_tolerance),
        lj_switch_width_A=None if lj_switch_width_A is None else float(lj_switch_width_A),
        top_text=top_text,
    )


def scale_charges(system: openmm.System, scale: float) -> None:
    """Particle charges x scale, exception charge products x scale^2 (in place)."""
    nb = _nonbonded_force(system)
    for i in range(nb.getNumParticles()):
        q, sigma, eps = nb.getParticleParameters(i)
        nb.setParticleParameters(i, q * scale, sigma, eps)
    for k in range(nb.getNumExceptions()):
        i, j, qq, sigma, eps = nb.getExceptionParameters(k)
        nb.setExceptionParameters(k, i, j, qq * scale**2, sigma, eps)


def keep_electrostatics_only(system: openmm.System) -> None:
    """Reduce a force-field System to its electrostatics (in place).

    Every force but the NonbondedForce is removed (bonds, angles, torsions, the CM motion
    remover); LJ is switched off (every particle's and exception's epsilon set to 0, no
    dispersion correction). What is left is the scaled point charges summed by PME with the
    force field's own exclusions, as GROMACS' ``nrexcl = 3`` and ``[ pairs ]`` define them:
    pairs 1-2 and 1-3 bonds apart within a molecule are excluded, 1-4 pairs count with
    fudgeQQ = 0.5, every other pair (intermolecular, and intramolecular beyond 1-4) in full.
    """
    for index in reversed(range(system.getNumForces())):
        if not isinstance(system.getForce(index), openmm.NonbondedForce):
            system.removeForce(index)
    nb = _nonbonded_force(system)
    for i in range(nb.getNumParticles()):
        q, sigma, _ = nb.getParticleParameters(i)
        nb.setParticleParameters(i, q, sigma, 0.0)
    for k in range(nb.getNumExceptions()):
        i, j, qq, sigma, _ = nb.getExceptionParameters(k)
        nb.setExceptionParameters(k, i, j, qq, sigma, 0.0)
    nb.setUseDispersionCorrection(False)
    nb.setUseSwitchingFunction(False)


#: the force field's bonded terms, as OpenMM builds them from the .itp's [ bonds ],
#: [ angles ] and [ dihedrals ] (OPLS-AA: harmonic bonds and angles, Ryckaert–Bellemans
#: torsions)
BONDED_FORCES = (openmm.HarmonicBondForce, openmm.HarmonicAngleForce, openmm.RBTorsionForce)


def keep_bonded_only(system: openmm.System) -> None:
    """Reduce a force-field System to its bonded terms (`BONDED_FORCES`; in place): no
    electrostatics, no Lennard-Jones (not the 1-4 pairs either), no CM motion remover.
    Every term lies within one molecule."""
    for index in reversed(range(system.getNumForces())):
        if not isinstance(system.getForce(index), BONDED_FORCES):
            system.removeForce(index)


def repartition_hydrogen_mass(system: openmm.System, elements: Sequence[str],
                              hydrogen_mass_amu: float) -> None:
    """Give every H bonded to a heavy atom `hydrogen_mass_amu`, taking the difference from
    that atom (found through the bond terms), in place. Molecule masses are unchanged, and
    so is every configurational average (the Boltzmann distribution of positions does not
    depend on the masses); the fastest vibrations slow down, so a 2 fs step runs without
    constraints."""
    for force in system.getForces():
        if not isinstance(force, openmm.HarmonicBondForce):
            continue
        for k in range(force.getNumBonds()):
            i, j = force.getBondParameters(k)[:2]
            for h, heavy in ((i, j), (j, i)):
                if elements[h] == "H" and elements[heavy] != "H":
                    moved_amu = hydrogen_mass_amu - system.getParticleMass(h)._value
                    system.setParticleMass(h, hydrogen_mass_amu)
                    system.setParticleMass(heavy,
                                           system.getParticleMass(heavy)._value - moved_amu)


def make_system_for_atoms(atoms, **kwargs) -> ClassicalSystem:
    """:func:`make_system` for an ``ase.Atoms`` made by ``ionmix.build.build_box``.

    The composition comes from the per-atom arrays ``mol_id`` and ``ion_name``, the box from
    ``atoms.cell``; the elements are checked against the ion templates.
    """
    from ionmix.chemistry.topology import MOL_ID_ARRAY, molecules_of

    csys = make_system(molecules_of(atoms), atoms.cell.array, **kwargs)
    offsets = np.cumsum([0] + [count for _, count in csys.molecules[:-1]])
    expected_mol_id = np.concatenate(
        [
            offset + np.repeat(np.arange(count), csys.ions[name].n_atoms)
            for (name, count), offset in zip(csys.molecules, offsets, strict=True)
        ]
    )
    mol_id = np.asarray(atoms.arrays[MOL_ID_ARRAY])
    if len(mol_id) != len(expected_mol_id) or np.any(mol_id != expected_mol_id):
        raise ClassicalSystemError(
            f"atoms' molecules ({len(atoms)} atoms, mol_id) do not match the ion templates of "
            f"{csys.molecules} ({len(expected_mol_id)} atoms)"
        )
    symbols = atoms.get_chemical_symbols()
    for i, (have, want) in enumerate(zip(symbols, csys.elements, strict=True)):
        if have != want:
            raise ClassicalSystemError(
                f"atom {i} is {have} but the topology has {want} there; atom order must be "
                "molecule by molecule, as in the ion templates"
            )
    return csys


# --------------------------------------------------------------------------------------
# platforms and contexts


@functools.lru_cache(maxsize=1)
def _working_platforms() -> tuple[str, ...]:
    names = []
    for i in range(openmm.Platform.getNumPlatforms()):
        name = openmm.Platform.getPlatform(i).getName()
        if name in ("CUDA", "OpenCL", "HIP"):
            try:  # a plugin can load without a usable device; try a one-particle context
                system = openmm.System()
                system.addParticle(1.0)
                openmm.Context(
                    system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(name)
                )
            except Exception:  # any failure means "not usable here"
                continue
        names.append(name)
    return tuple(names)


def best_platform() -> openmm.Platform:
    """The fastest usable OpenMM platform here: CUDA if it works, else CPU, else Reference."""
    working = _working_platforms()
    for name in ("CUDA", "CPU", "Reference"):
        if name in working:
            return openmm.Platform.getPlatformByName(name)
    raise ClassicalSystemError(f"no usable OpenMM platform (found {working})")


def make_context(
    csys: ClassicalSystem,
    integrator: openmm.Integrator | None = None,
    platform: str | openmm.Platform | None = None,
    properties: Mapping[str, str] | None = None,
) -> openmm.Context:
    """An OpenMM Context for ``csys`` (default integrator: Verlet 1 fs, unused for energies).

    ``platform`` is a name ('Reference', 'CPU', 'CUDA', ...) or a Platform; default
    :func:`best_platform`. On CUDA/OpenCL the precision defaults to 'mixed' unless
    ``properties`` says otherwise.
    """
    if integrator is None:
        integrator = openmm.VerletIntegrator(1.0 * u.femtosecond)
    if platform is None:
        platform = best_platform()
    elif isinstance(platform, str):
        platform = openmm.Platform.getPlatformByName(platform)
    props = dict(properties or {})
    if platform.getName() in ("CUDA", "OpenCL", "HIP"):
        props.setdefault("Precision", "mixed")
    return openmm.Context(csys.system, integrator, platform, props)
