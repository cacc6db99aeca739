"""Ion library: force-field topologies (GROMACS .itp) and coordinate templates of ions.

Each shipped ion lives in a folder ``src/ionmix/chemistry/library/<NAME>/`` holding

- ``<NAME>.itp``: a self-contained GROMACS topology: its own ``[ atomtypes ]`` section, then
  ``[ moleculetype ]``, ``[ atoms ]``, ``[ bonds ]``, ``[ pairs ]``, ``[ angles ]``,
  ``[ dihedrals ]``. Every bonded term carries explicit parameters; charges are the
  *unscaled* published ones (charge scaling is applied when a system is built). Units are
  GROMACS': nm, kJ/mol, degrees, e, amu.
- ``<NAME>.pdb`` (or ``.xyz``): a 3D geometry with the atoms in the order of ``[ atoms ]``.
- ``ion.toml``: metadata (name, aliases, integer charge, formula, file names, source, notes).

Users add an ion by writing the same three files in a folder of their own and calling
:func:`load_user_ion`, which checks them as strictly as the shipped ones
(:func:`validate_ion_files`). Every problem raises :class:`IonLibraryError` naming the file,
the ion and the atom, type or line at fault.
"""

from __future__ import annotations

import functools
import tomllib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase.data import atomic_masses, chemical_symbols

from ionmix.errors import InputError

__all__ = [
    "AtomType",
    "Ion",
    "IonLibraryError",
    "ItpAtom",
    "ItpTopology",
    "LIBRARY_DIR",
    "hill_formula",
    "list_ions",
    "load_ion",
    "load_ion_folder",
    "load_user_ion",
    "one_four_pairs",
    "proper_torsions",
    "parse_itp",
    "read_coordinates",
    "validate_ion_files",
]

#: Folder holding the shipped ions, one sub-folder per ion.
LIBRARY_DIR: Path = Path(__file__).resolve().parent / "library"

#: Largest |net charge - nearest integer| accepted, in e.
CHARGE_TOLERANCE_E: float = 1e-3
#: Largest |itp mass - standard atomic mass| accepted when the itp gives no atomic number.
MASS_TOLERANCE_AMU: float = 0.1
#: Largest |bond length in the template - r0| accepted, in Å.
BOND_LENGTH_TOLERANCE_A: float = 0.25

# [ section ]: number of parameters each supported function type needs (GROMACS manual,
# table "Details of [ moleculetype ] directives"; the subset OpenMM's GromacsTopFile reads).
_BOND_PARAMS = {"1": 2, "2": 2}
_ANGLE_PARAMS = {"1": 2, "2": 2, "5": 4}
_DIHEDRAL_PARAMS = {"1": 3, "2": 2, "3": 6, "4": 3, "5": 4, "9": 3}
_SUPPORTED_SECTIONS = (
    "atomtypes",
    "moleculetype",
    "atoms",
    "bonds",
    "pairs",
    "angles",
    "dihedrals",
    "exclusions",
)


class IonLibraryError(InputError):
    """An ion file is missing, malformed or inconsistent, or an ion name is unknown."""


@dataclass(frozen=True)
class AtomType:
    """One line of ``[ atomtypes ]``: LJ parameters in GROMACS units (nm, kJ/mol)."""

    name: str
    atomic_number: int | None
    mass_amu: float
    charge_e: float
    ptype: str
    sigma_nm: float
    epsilon_kj_per_mol: float


@dataclass(frozen=True)
class ItpAtom:
    """One line of ``[ atoms ]`` (``index`` is 1-based, as in the file)."""

    index: int
    type: str
    residue: str
    name: str
    charge_e: float
    mass_amu: float


@dataclass(frozen=True)
class ItpTopology:
    """Parsed content of a single-molecule .itp file.

    Index tuples are 1-based, as written in the file; ``*_params`` hold each term's
    parameters in GROMACS units (bonds: b0 nm, kb kJ/mol/nm^2; angles: theta0 deg,
    k kJ/mol/rad^2; dihedrals: as the function type ``dihedral_functs[i]`` defines, e.g.
    Fourier C1..C4 kJ/mol for type 5). ``atomtypes`` maps type name to :class:`AtomType`;
    ``body_text`` is the file text without its ``[ atomtypes ]`` section, ready to be
    included in a merged .top.
    """

    path: Path
    atomtypes: dict[str, AtomType]
    molecule_name: str
    nrexcl: int
    atoms: tuple[ItpAtom, ...]
    bonds: tuple[tuple[int, int], ...]
    bond_params: tuple[tuple[float, ...], ...]
    pairs: tuple[tuple[int, int], ...]
    angles: tuple[tuple[int, int, int], ...]
    angle_params: tuple[tuple[float, ...], ...]
    dihedrals: tuple[tuple[int, int, int, int], ...]
    dihedral_functs: tuple[str, ...]
    dihedral_params: tuple[tuple[float, ...], ...]
    body_text: str

    @property
    def net_charge_e(self) -> float:
        """Sum of the partial charges in ``[ atoms ]`` (e)."""
        return float(sum(a.charge_e for a in self.atoms))


@dataclass(frozen=True)
class Ion:
    """An ion of the library: where its files are and what they contain.

    Attributes hold per-atom tuples in the order of the .itp ``[ atoms ]`` section (which is
    also the order of the coordinate template). Charges are unscaled (e); masses in amu.
    """

    name: str
    charge: int
    formula: str
    itp_path: Path
    coords_path: Path
    molecule_name: str
    atom_names: tuple[str, ...]
    atom_types: tuple[str, ...]
    elements: tuple[str, ...]
    masses: tuple[float, ...]
    partial_charges: tuple[float, ...]
    aliases: tuple[str, ...] = ()
    source: str = ""
    notes: str = ""

    @property
    def n_atoms(self) -> int:
        """Number of atoms in one ion."""
        return len(self.atom_names)

    @property
    def mass_amu(self) -> float:
        """Mass of one ion (amu = g/mol)."""
        return float(sum(self.masses))

    def template_positions(self) -> np.ndarray:
        """Template coordinates, shape (n_atoms, 3), in Å, centred on the centre of mass."""
        _, positions = read_coordinates(self.coords_path)
        masses = np.asarray(self.masses)
        com = masses @ positions / masses.sum()
        return positions - com

    def topology(self) -> ItpTopology:
        """The parsed .itp file."""
        return parse_itp(self.itp_path)


# --------------------------------------------------------------------------------------
# .itp parsing


def _number(text: str, path: Path, lineno: int, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise IonLibraryError(
            f"{path}:{lineno}: {what}: expected a number, found {text!r}"
        ) from None


def _index(text: str, path: Path, lineno: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise IonLibraryError(f"{path}:{lineno}: expected an atom index, found {text!r}") from None


def _parse_atomtype(fields: list[str], path: Path, lineno: int) -> AtomType:
    """Read an ``[ atomtypes ]`` line in any of the layouts OpenMM accepts.

    ``name [bonded_type] [at.num] mass charge ptype sigma epsilon``.
    """
    if len(fields) < 6:
        raise IonLibraryError(
            f"{path}:{lineno}: [ atomtypes ] line needs at least 6 fields "
            "(name [at.num] mass charge ptype sigma epsilon)"
        )
    atomic_number: str | None = None
    if len(fields[3]) == 1 and fields[3].isalpha():
        name, mass, charge, ptype, sigma, eps = fields[:6]
    elif len(fields) >= 7 and len(fields[4]) == 1 and fields[4].isalpha():
        if fields[1][0].isalpha():  # bonded type given, atomic number missing
            name, _, mass, charge, ptype, sigma, eps = fields[:7]
        else:
            name, atomic_number, mass, charge, ptype, sigma, eps = fields[:7]
    elif len(fields) >= 8:
        name, _, atomic_number, mass, charge, ptype, sigma, eps = fields[:8]
    else:
        raise IonLibraryError(f"{path}:{lineno}: cannot read [ atomtypes ] line {fields}")
    z = None
    if atomic_number is not None:
        z = int(_number(atomic_number, path, lineno, f"atom type {name} atomic number"))
    return AtomType(
        name=name,
        atomic_number=z,
        mass_amu=_number(mass, path, lineno, f"atom type {name} mass"),
        charge_e=_number(charge, path, lineno, f"atom type {name} charge"),
        ptype=ptype,
        sigma_nm=_number(sigma, path, lineno, f"atom type {name} sigma"),
        epsilon_kj_per_mol=_number(eps, path, lineno, f"atom type {name} epsilon"),
    )


def _check_params(
    fields: list[str], n_atoms: int, table: dict[str, int], section: str, path: Path, lineno: int
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Atom indices and explicit parameters of a bonded line; errors name the line."""
    if len(fields) < n_atoms + 1:
        raise IonLibraryError(f"{path}:{lineno}: [ {section} ] line too short: {' '.join(fields)}")
    atoms = tuple(_index(f, path, lineno) for f in fields[:n_atoms])
    funct = fields[n_atoms]
    if funct not in table:
        raise IonLibraryError(
            f"{path}:{lineno}: [ {section} ] function type {funct} for atoms {atoms} is not "
            f"supported (supported: {', '.join(table)})"
        )
    params = fields[n_atoms + 1 :]
    if len(params) < table[funct]:
        raise IonLibraryError(
            f"{path}:{lineno}: [ {section} ] term for atoms {atoms} (function type {funct}) has "
            f"{len(params)} parameters, needs {table[funct]}: ion files must give every bonded "
            "parameter explicitly (no [ bondtypes ]-style lookups)"
        )
    values = tuple(
        _number(p, path, lineno, f"[ {section} ] parameter") for p in params[: table[funct]]
    )
    return atoms, values


@dataclass
class _ItpTerms:
    """Bonded terms as read from an .itp (1-based indices, parameters in GROMACS units)."""

    bonds: list[tuple[int, int]] = field(default_factory=list)
    bond_params: list[tuple[float, ...]] = field(default_factory=list)
    pairs: list[tuple[int, int]] = field(default_factory=list)
    angles: list[tuple[int, int, int]] = field(default_factory=list)
    angle_params: list[tuple[float, ...]] = field(default_factory=list)
    dihedrals: list[tuple[int, int, int, int]] = field(default_factory=list)
    dihedral_functs: list[str] = field(default_factory=list)
    dihedral_params: list[tuple[float, ...]] = field(default_factory=list)

    def add(self, section: str, fields: list[str], path: Path, lineno: int) -> None:
        """Add one line of a ``[ bonds ]``/``[ pairs ]``/``[ angles ]``/``[ dihedrals ]``
        section (``[ exclusions ]`` lines are kept verbatim in the body text only)."""
        if section == "bonds":
            idx, params = _check_params(fields, 2, _BOND_PARAMS, "bonds", path, lineno)
            self.bonds.append((idx[0], idx[1]))
            self.bond_params.append(params)
        elif section == "pairs":
            idx, _ = _check_params(fields, 2, {"1": 0}, "pairs", path, lineno)
            self.pairs.append((idx[0], idx[1]))
        elif section == "angles":
            idx, params = _check_params(fields, 3, _ANGLE_PARAMS, "angles", path, lineno)
            self.angles.append((idx[0], idx[1], idx[2]))
            self.angle_params.append(params)
        elif section == "dihedrals":
            idx, params = _check_params(fields, 4, _DIHEDRAL_PARAMS, "dihedrals", path, lineno)
            self.dihedrals.append((idx[0], idx[1], idx[2], idx[3]))
            self.dihedral_functs.append(fields[4])
            self.dihedral_params.append(params)


@dataclass
class _ItpScan:
    """What one pass over an .itp's lines collects, before the atoms are resolved."""

    atomtypes: dict[str, AtomType] = field(default_factory=dict)
    molecule: tuple[str, int] | None = None  # (name, nrexcl)
    raw_atoms: list[tuple[int, list[str]]] = field(default_factory=list)  # (lineno, fields)
    terms: _ItpTerms = field(default_factory=_ItpTerms)
    body: list[str] = field(default_factory=list)  # the lines outside [ atomtypes ]


@functools.lru_cache(maxsize=256)
def _parse_itp_cached(path: Path, mtime_ns: int) -> ItpTopology:
    del mtime_ns  # part of the cache key only
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise IonLibraryError(f"{path}: cannot read the .itp file ({exc})") from None
    scan = _scan_itp(lines, path)
    if scan.molecule is None:
        raise IonLibraryError(f"{path}: no [ moleculetype ] section")
    molecule_name, nrexcl = scan.molecule
    atoms = _resolve_atoms(scan.raw_atoms, scan.atomtypes, molecule_name, path)
    terms = scan.terms
    _check_term_atoms(terms, len(atoms), molecule_name, path)
    return ItpTopology(
        path=path,
        atomtypes=scan.atomtypes,
        molecule_name=molecule_name,
        nrexcl=nrexcl,
        atoms=atoms,
        bonds=tuple(terms.bonds),
        bond_params=tuple(terms.bond_params),
        pairs=tuple(terms.pairs),
        angles=tuple(terms.angles),
        angle_params=tuple(terms.angle_params),
        dihedrals=tuple(terms.dihedrals),
        dihedral_functs=tuple(terms.dihedral_functs),
        dihedral_params=tuple(terms.dihedral_params),
        body_text="\n".join(scan.body) + "\n",
    )


def _scan_itp(lines: list[str], path: Path) -> _ItpScan:
    """Read the .itp's lines section by section, checking the syntax of each line."""
    scan = _ItpScan()
    section: str | None = None
    for lineno, raw in enumerate(lines, start=1):
        line = raw.split(";", 1)[0].strip()
        if line.startswith("#"):
            raise IonLibraryError(
                f"{path}:{lineno}: preprocessor directive {line.split()[0]!r} is not supported "
                "in ion files; write the parameters out explicitly"
            )
        if line.startswith("["):
            section = _section_header(line, raw, scan.molecule is not None, path, lineno)
            if section != "atomtypes":
                scan.body.append(raw)
            continue
        if section != "atomtypes":
            scan.body.append(raw)
        if not line:
            continue
        if section is None:
            raise IonLibraryError(f"{path}:{lineno}: data before any [ section ]: {raw!r}")
        fields = line.split()
        if section == "atomtypes":
            _add_atomtype(scan.atomtypes, _parse_atomtype(fields, path, lineno), path, lineno)
        elif section == "moleculetype":
            if scan.molecule is not None or len(fields) < 2:
                raise IonLibraryError(
                    f"{path}:{lineno}: [ moleculetype ] needs exactly one line 'name nrexcl'"
                )
            scan.molecule = (fields[0], int(_number(fields[1], path, lineno, "nrexcl")))
        elif scan.molecule is None:
            raise IonLibraryError(f"{path}:{lineno}: [ {section} ] before [ moleculetype ]")
        elif section == "atoms":
            if len(fields) < 6:
                raise IonLibraryError(
                    f"{path}:{lineno}: [ atoms ] line needs 'nr type resnr residue atom cgnr "
                    "[charge [mass]]'"
                )
            scan.raw_atoms.append((lineno, fields))
        else:
            scan.terms.add(section, fields, path, lineno)
    return scan


def _section_header(line: str, raw: str, have_molecule: bool, path: Path, lineno: int) -> str:
    """The (lower-case) name of the section a ``[ name ]`` line opens, if supported."""
    if not line.endswith("]"):
        raise IonLibraryError(f"{path}:{lineno}: malformed section header {raw!r}")
    section = line[1:-1].strip().lower()
    if section not in _SUPPORTED_SECTIONS:
        raise IonLibraryError(
            f"{path}:{lineno}: section [ {section} ] is not supported in an ion file "
            f"(supported: {', '.join(_SUPPORTED_SECTIONS)})"
        )
    if section == "moleculetype" and have_molecule:
        raise IonLibraryError(
            f"{path}:{lineno}: a second [ moleculetype ]; an ion file holds one molecule"
        )
    return section


def _add_atomtype(atomtypes: dict[str, AtomType], at: AtomType, path: Path,
                  lineno: int) -> None:
    """Add `at`; a repeated name must repeat the same values."""
    if at.name in atomtypes and atomtypes[at.name] != at:
        raise IonLibraryError(
            f"{path}:{lineno}: atom type {at.name} defined twice with different values"
        )
    atomtypes[at.name] = at


def _resolve_atoms(
    raw_atoms: list[tuple[int, list[str]]], atomtypes: Mapping[str, AtomType], ion: str,
    path: Path,
) -> tuple[ItpAtom, ...]:
    """``[ atoms ]`` lines as ItpAtoms: types looked up, charge and mass defaulting to the
    type's; checks the atoms are numbered 1..n in order."""
    atoms: list[ItpAtom] = []
    for lineno, fields in raw_atoms:
        nr = _index(fields[0], path, lineno)
        type_name, residue, name = fields[1], fields[3], fields[4]
        if type_name not in atomtypes:
            raise IonLibraryError(
                f"{path}:{lineno}: ion {ion}: atom {nr} ({name}) has type {type_name!r}, "
                "which is not defined in this file's [ atomtypes ] section "
                f"(defined: {', '.join(atomtypes) or 'none'})"
            )
        at = atomtypes[type_name]
        charge = (
            _number(fields[6], path, lineno, f"atom {nr} charge")
            if len(fields) > 6
            else at.charge_e
        )
        mass = (
            _number(fields[7], path, lineno, f"atom {nr} mass") if len(fields) > 7 else at.mass_amu
        )
        atoms.append(ItpAtom(nr, type_name, residue, name, charge, mass))
    if not atoms:
        raise IonLibraryError(f"{path}: ion {ion}: no [ atoms ]")
    for expected, atom in enumerate(atoms, start=1):
        if atom.index != expected:
            raise IonLibraryError(
                f"{path}: ion {ion}: [ atoms ] must be numbered 1..n in order; "
                f"found {atom.index} ({atom.name}) where {expected} was expected"
            )
    return tuple(atoms)


def _check_term_atoms(terms: _ItpTerms, n: int, ion: str, path: Path) -> None:
    """Every bonded term refers to atoms 1..n."""
    for section, indices in (
        ("bonds", terms.bonds),
        ("pairs", terms.pairs),
        ("angles", terms.angles),
        ("dihedrals", terms.dihedrals),
    ):
        for term in indices:
            if any(i < 1 or i > n for i in term):
                raise IonLibraryError(
                    f"{path}: ion {ion}: [ {section} ] term {term} refers to an atom "
                    f"outside 1..{n}"
                )


def parse_itp(path: str | Path) -> ItpTopology:
    """Parse a single-molecule GROMACS .itp file (see the module docstring for the layout).

    Checks the syntax, that every atom type used is defined in the file, that atoms are
    numbered 1..n, and that every bonded term has explicit parameters of a supported
    function type. Chemistry checks (charge, 1-4 pairs, coordinates) are in
    :func:`validate_ion_files`.
    """
    p = Path(path).resolve()
    if not p.is_file():
        raise IonLibraryError(f"{p}: .itp file not found")
    return _parse_itp_cached(p, p.stat().st_mtime_ns)


# --------------------------------------------------------------------------------------
# coordinates and chemistry helpers


def read_coordinates(path: str | Path) -> tuple[tuple[str, ...], np.ndarray]:
    """Read a coordinate template (.pdb or .xyz): element symbols and positions (n, 3) in Å."""
    from ase.io import read

    p = Path(path)
    if not p.is_file():
        raise IonLibraryError(f"{p}: coordinate file not found")
    suffix = p.suffix.lower()
    if suffix not in (".pdb", ".xyz"):
        raise IonLibraryError(f"{p}: coordinate file must be .pdb or .xyz, not {suffix!r}")
    try:
        atoms = read(p, format="proteindatabank" if suffix == ".pdb" else "xyz")
    except Exception as exc:  # ASE raises a variety of types on malformed files
        raise IonLibraryError(f"{p}: cannot read coordinates ({exc})") from None
    return tuple(atoms.get_chemical_symbols()), np.asarray(atoms.get_positions(), dtype=float)


def hill_formula(elements: Iterable[str]) -> str:
    """Chemical formula in Hill order (C, H, then alphabetical; alphabetical without C)."""
    counts: dict[str, int] = {}
    for e in elements:
        counts[e] = counts.get(e, 0) + 1
    order = sorted(counts)
    if "C" in counts:
        order = ["C"] + (["H"] if "H" in counts else []) + [e for e in order if e not in "CH"]
    return "".join(e + (str(counts[e]) if counts[e] > 1 else "") for e in order)


def _neighbours(n_atoms: int, bonds: Iterable[tuple[int, int]]) -> list[set[int]]:
    """Adjacency lists (0-based) from 1-based bonds."""
    nb: list[set[int]] = [set() for _ in range(n_atoms)]
    for i, j in bonds:
        nb[i - 1].add(j - 1)
        nb[j - 1].add(i - 1)
    return nb


def _graph_distances(n_atoms: int, bonds: Iterable[tuple[int, int]]) -> np.ndarray:
    """Bond-count distances between atoms, shape (n, n); -1 where not connected."""
    nb = _neighbours(n_atoms, bonds)
    dist = -np.ones((n_atoms, n_atoms), dtype=int)
    for start in range(n_atoms):
        dist[start, start] = 0
        queue = deque([start])
        while queue:
            i = queue.popleft()
            for j in nb[i]:
                if dist[start, j] < 0:
                    dist[start, j] = dist[start, i] + 1
                    queue.append(j)
    return dist


def one_four_pairs(n_atoms: int, bonds: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """1-4 pairs (1-based, i < j): atoms whose shortest bond path has exactly 3 bonds.

    Pairs that are also 1-2 or 1-3 through another path (small rings) are not 1-4 pairs,
    as in GROMACS' pdb2gmx.
    """
    dist = _graph_distances(n_atoms, bonds)
    return [
        (i + 1, j + 1) for i in range(n_atoms) for j in range(i + 1, n_atoms) if dist[i, j] == 3
    ]


def _element_of(atom: ItpAtom, at: AtomType, path: Path, ion: str) -> str:
    """Element symbol of an itp atom from its type's atomic number, else from its mass."""
    if at.atomic_number is not None:
        if not 0 < at.atomic_number < len(chemical_symbols):
            raise IonLibraryError(
                f"{path}: ion {ion}: atom type {at.name} has atomic number {at.atomic_number}"
            )
        return chemical_symbols[at.atomic_number]
    z = int(np.argmin(np.abs(atomic_masses[1:] - atom.mass_amu))) + 1
    if abs(atomic_masses[z] - atom.mass_amu) > MASS_TOLERANCE_AMU:
        raise IonLibraryError(
            f"{path}: ion {ion}: atom {atom.index} ({atom.name}, type {at.name}) has mass "
            f"{atom.mass_amu} amu, which matches no element; give the atomic number in "
            "[ atomtypes ] (name at.num mass charge ptype sigma epsilon)"
        )
    return chemical_symbols[z]


def validate_ion_files(
    itp_path: str | Path,
    coords_path: str | Path,
    name: str | None = None,
    *,
    expected_charge: int | None = None,
    expected_formula: str | None = None,
    aliases: Iterable[str] = (),
    source: str = "",
    notes: str = "",
) -> Ion:
    """Check an ion's .itp and coordinate files against each other and return the :class:`Ion`.

    Checks (each failure raises :class:`IonLibraryError` naming the file, ion and culprit):

    - the .itp parses, defines every atom type it uses, and every bond, angle and dihedral
      has explicit parameters (:func:`parse_itp`);
    - ``nrexcl`` is 3 and ``[ pairs ]`` lists every 1-4 pair of the bond graph (OPLS scales
      1-4 interactions by 0.5; a missing pair would silently change the energy);
    - the molecule is connected by its bonds; every angle i-j-k has bonds i-j and j-k;
    - every proper torsion i-j-k-l of the bond graph has a ``[ dihedrals ]`` line (a
      missing torsion would silently drop that energy term; write zeros for a torsion the
      force field leaves without barrier);
    - the net charge is an integer within 1e-3 e (files hold unscaled charges);
    - the coordinate file has the same number of atoms with the same elements in order,
      and every bond length in it is within 0.25 Å of the bond's r0;
    - ``expected_charge`` / ``expected_formula`` (from ion.toml), when given, agree.
    """
    itp = parse_itp(itp_path)
    ion_name = name or itp.molecule_name
    label = f"{itp.path}: ion {ion_name}"
    _check_bond_graph(itp, label)
    _check_proper_dihedrals(itp, label)
    charge = _integer_charge(itp, label, expected_charge)
    elements = tuple(
        _element_of(a, itp.atomtypes[a.type], itp.path, ion_name) for a in itp.atoms)
    _check_coordinates(itp, elements, coords_path, label)
    formula = hill_formula(elements)
    if expected_formula is not None and expected_formula != formula:
        raise IonLibraryError(
            f"{label}: ion.toml says formula {expected_formula}, the files give {formula}"
        )
    return Ion(
        name=ion_name,
        charge=charge,
        formula=formula,
        itp_path=itp.path,
        coords_path=Path(coords_path).resolve(),
        molecule_name=itp.molecule_name,
        atom_names=tuple(a.name for a in itp.atoms),
        atom_types=tuple(a.type for a in itp.atoms),
        elements=elements,
        masses=tuple(a.mass_amu for a in itp.atoms),
        partial_charges=tuple(a.charge_e for a in itp.atoms),
        aliases=tuple(aliases),
        source=source,
        notes=notes,
    )


def _check_bond_graph(itp: ItpTopology, label: str) -> None:
    """OPLS exclusions (nrexcl 3, every 1-4 pair listed), one connected molecule, and
    angles along bonds; `label` starts each error message."""
    n = len(itp.atoms)
    if itp.nrexcl != 3:
        raise IonLibraryError(
            f"{label}: nrexcl is {itp.nrexcl}; ionmix uses OPLS conventions (nrexcl 3, 1-4 "
            "pairs listed in [ pairs ] and scaled by 0.5)"
        )
    if n > 1:
        dist = _graph_distances(n, itp.bonds)
        unreachable = [itp.atoms[j] for j in range(n) if dist[0, j] < 0]
        if unreachable:
            a = unreachable[0]
            raise IonLibraryError(
                f"{label}: atom {a.index} ({a.name}) is not bonded to the rest of the molecule"
            )
    bonded = {frozenset(b) for b in itp.bonds}
    for i, j, k in itp.angles:
        if frozenset((i, j)) not in bonded or frozenset((j, k)) not in bonded:
            names = "-".join(itp.atoms[x - 1].name for x in (i, j, k))
            raise IonLibraryError(
                f"{label}: angle {i}-{j}-{k} ({names}) is not along bonds i-j and j-k"
            )
    listed = {frozenset(p) for p in itp.pairs}
    for i, j in one_four_pairs(n, itp.bonds):
        if frozenset((i, j)) not in listed:
            a, b = itp.atoms[i - 1], itp.atoms[j - 1]
            raise IonLibraryError(
                f"{label}: 1-4 pair {i}-{j} ({a.name}-{b.name}) is missing from [ pairs ]; "
                "list every 1-4 pair (function type 1, no parameters: generated with "
                "fudgeLJ = fudgeQQ = 0.5) or GROMACS drops the 1-4 interactions"
            )


def proper_torsions(n_atoms: int, bonds: Iterable[tuple[int, int]]
                    ) -> list[tuple[int, int, int, int]]:
    """Every proper torsion i-j-k-l of the bond graph (1-based; bonds i-j, j-k, k-l; i != l),
    each once, in the order of the central bond j-k."""
    nb = _neighbours(n_atoms, bonds)
    torsions = []
    for j, k in sorted({tuple(sorted(b)) for b in bonds}):
        for i in sorted(nb[j - 1] - {k - 1}):
            for ll in sorted(nb[k - 1] - {j - 1}):
                if i != ll:  # i == l only in a three-membered ring
                    torsions.append((i + 1, j, k, ll + 1))
    return torsions


def _check_proper_dihedrals(itp: ItpTopology, label: str) -> None:
    """Every proper torsion of the bond graph has a ``[ dihedrals ]`` line (in either
    direction); impropers do not count. `label` starts the error message."""
    listed = set(itp.dihedrals) | {d[::-1] for d in itp.dihedrals}
    for torsion in proper_torsions(len(itp.atoms), itp.bonds):
        if torsion not in listed:
            atoms = [itp.atoms[x - 1] for x in torsion]
            raise IonLibraryError(
                f"{label}: dihedral {'-'.join(map(str, torsion))} "
                f"({'-'.join(a.name for a in atoms)}, types "
                f"{'-'.join(a.type for a in atoms)}) is missing from [ dihedrals ]: every "
                "proper torsion of the bond graph needs a line with explicit parameters "
                "(zeros where the force field has no barrier)"
            )


def _integer_charge(itp: ItpTopology, label: str, expected_charge: int | None) -> int:
    """The ion's net charge (e), which must be an integer (and `expected_charge` if given)."""
    net = itp.net_charge_e
    charge = round(net)
    if abs(net - charge) > CHARGE_TOLERANCE_E:
        raise IonLibraryError(
            f"{label}: net charge {net:.4f} e is not an integer (tolerance "
            f"{CHARGE_TOLERANCE_E} e); ion files hold unscaled charges, the scaling (e.g. 0.8) "
            "is applied when a system is built"
        )
    if expected_charge is not None and expected_charge != charge:
        raise IonLibraryError(
            f"{label}: ion.toml says charge {expected_charge}, the .itp sums to {net:.4f} e"
        )
    return charge


def _check_coordinates(itp: ItpTopology, elements: tuple[str, ...],
                       coords_path: str | Path, label: str) -> None:
    """The coordinate file has the .itp's atoms (same elements, same order), with every
    bond within BOND_LENGTH_TOLERANCE_A Å of its r0."""
    n = len(itp.atoms)
    coord_elements, positions = read_coordinates(coords_path)
    if len(coord_elements) != n:
        raise IonLibraryError(
            f"{label}: {coords_path} has {len(coord_elements)} atoms, the .itp has {n}"
        )
    for a, e_itp, e_xyz in zip(itp.atoms, elements, coord_elements, strict=True):
        if e_itp != e_xyz:
            raise IonLibraryError(
                f"{label}: atom {a.index} ({a.name}, type {a.type}) is {e_itp} in the .itp but "
                f"{e_xyz} in {coords_path}; atoms must be in the same order in both files"
            )
    for (i, j), params in zip(itp.bonds, itp.bond_params, strict=True):
        r0_A = params[0] * 10.0
        r_A = float(np.linalg.norm(positions[i - 1] - positions[j - 1]))
        if abs(r_A - r0_A) > BOND_LENGTH_TOLERANCE_A:
            a, b = itp.atoms[i - 1], itp.atoms[j - 1]
            raise IonLibraryError(
                f"{label}: bond {i}-{j} ({a.name}-{b.name}) is {r_A:.3f} Å long in "
                f"{coords_path} but r0 = {r0_A:.3f} Å in the .itp"
            )


# --------------------------------------------------------------------------------------
# the library


def _normalise(name: str) -> str:
    """Key for name lookup: case-insensitive, ignoring brackets, spaces and charge signs."""
    key = name.strip().lower()
    for ch in "[] ":
        key = key.replace(ch, "")
    return key.rstrip("+-")


_TOML_KEYS = {"name", "aliases", "charge", "formula", "itp", "coordinates", "source", "notes"}


def load_ion_folder(folder: str | Path) -> Ion:
    """Load an ion from a folder holding ``ion.toml``, the .itp and the coordinate file."""
    folder = Path(folder)
    toml_path = folder / "ion.toml"
    try:
        meta = tomllib.loads(toml_path.read_text())
    except OSError as exc:
        raise IonLibraryError(f"{toml_path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise IonLibraryError(f"{toml_path}: invalid TOML ({exc})") from None
    unknown = set(meta) - _TOML_KEYS
    if unknown:
        raise IonLibraryError(
            f"{toml_path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOML_KEYS)}"
        )
    for key in ("name", "charge", "itp", "coordinates"):
        if key not in meta:
            raise IonLibraryError(f"{toml_path}: missing key {key!r}")
    charge = meta["charge"]
    if not isinstance(charge, int) or isinstance(charge, bool):
        raise IonLibraryError(f"{toml_path}: charge must be an integer, got {charge!r}")
    return validate_ion_files(
        folder / meta["itp"],
        folder / meta["coordinates"],
        meta["name"],
        expected_charge=charge,
        expected_formula=meta.get("formula"),
        aliases=meta.get("aliases", ()),
        source=meta.get("source", ""),
        notes=meta.get("notes", ""),
    )


@functools.lru_cache(maxsize=1)
def _library() -> dict[str, Ion]:
    """All shipped ions by name, loaded and validated once."""
    ions: dict[str, Ion] = {}
    keys: dict[str, str] = {}
    for toml_path in sorted(LIBRARY_DIR.glob("*/ion.toml")):
        ion = load_ion_folder(toml_path.parent)
        for key in {_normalise(k) for k in (ion.name, *ion.aliases)}:
            if key in keys and keys[key] != ion.name:
                raise IonLibraryError(
                    f"{toml_path}: name/alias {key!r} of {ion.name} is also used by {keys[key]}"
                )
            keys[key] = ion.name
        ions[ion.name] = ion
    return ions


def list_ions() -> list[str]:
    """Names of the shipped ions, sorted."""
    return sorted(_library())


def load_ion(name: str, ions: Mapping[str, Ion] | None = None) -> Ion:
    """Look an ion up by name or alias (case-insensitive; brackets and charge signs ignored).

    ``ions`` (optional) holds extra ions, e.g. from :func:`load_user_ion`, looked up by
    their name before the shipped library. Unknown names raise :class:`IonLibraryError`
    listing the available names.
    """
    key = _normalise(name)
    for ion in (ions or {}).values():
        if key in {_normalise(k) for k in (ion.name, *ion.aliases)}:
            return ion
    for ion in _library().values():
        if key in {_normalise(k) for k in (ion.name, *ion.aliases)}:
            return ion
    available = sorted({*list_ions(), *(ions or {})})
    raise IonLibraryError(
        f"unknown ion {name!r}; available: {', '.join(available)} "
        "(or load your own with ionmix.chemistry.load_user_ion)"
    )


def load_user_ion(itp_path: str | Path, coords_path: str | Path, name: str | None = None) -> Ion:
    """Load and validate an ion from user files (a self-contained .itp and a .pdb/.xyz).

    ``name`` defaults to the .itp's moleculetype name. See :func:`validate_ion_files` for
    the checks. The returned :class:`Ion` can be passed to ``build_box``/``make_system``
    through their ``ions`` argument (a mapping name -> Ion).
    """
    return validate_ion_files(itp_path, coords_path, name, source=f"user files: {itp_path}")
