"""The DFT teacher: Quantum ESPRESSO's pw.x through ASE's `Espresso` calculator.

Defaults are the paper's (Goodwin et al. 2024): PBE + D3 (``vdw_corr = 'dft-d3'``), Γ only,
``ecutwfc`` 50 Ry, ``ecutrho`` 500 Ry, ``conv_thr`` 1e-10 Ry, forces and stress. Every other
pw.x input parameter can be set through ``extra_input`` (checked against pw.x's namelists,
so a misspelt name is an error, not silently dropped).

Pseudopotentials are named per element (``pseudopotentials``) and recorded by SHA-256
(``pseudo_sha256``, filled when the spec is resolved), so the spec key — stored with every
label — changes when a file's content changes, and a spec whose recorded checksum no longer
matches its file is refused. The directory, the pw.x command and the MPI launch are left
out of the key (`Teacher.key_ignores`): they do not change the labels.

Each calculation runs in its own directory (``uses_directory``: the labelling stage gives a
folder per frame); pw.x's input (``espresso.pwi``) and output (``espresso.pwo``) stay there.
A run that fails — including an SCF that does not converge, which pw.x 6.7 reports with
"convergence NOT achieved" and exit status 2 — raises `EspressoRunError` with the output's
tail, so the labelling stage records a failure and never a label.

Isolated-atom energies (`EspressoTeacher.isolated_atom_energy_eV`): one atom in a cubic box
of ``isolated_atom_box_A`` (default 30 Å, the paper's), spin-polarised with the ground-state
moment fixed (``tot_magnetization``, Hund's rule: `ground_state_moment`) and small Gaussian
smearing (``isolated_atom_input``), cached per (teacher key, element) in
``$IONMIX_CACHE/isolated-atoms/<key>.json``. pw.x needs memory in proportion to the box
volume (`isolated_atom_memory_GB`); a box that will not fit in this machine's available
memory is refused before pw.x starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

from ase import Atoms
from ase.data import atomic_numbers
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ionmix.chemistry.ionset import cache_dir
from ionmix.errors import RunError
from ionmix.files import atomic_write_json
from ionmix.teachers.base import Teacher, TeacherError, register

#: Smallest isolated-atom box (Å). What must fit in the box is the atom's electron density,
#: which for a neutral light atom has decayed to nothing within ~5 Å of the nucleus: the
#: box must be twice that so the atom does not overlap its periodic images. (D3's cutoff,
#: ~50 Å, is longer, but the D3 energy of an atom with its images is tiny and falls as
#: 1/L⁶: measured -6e-6 eV for N in a 15 Å box, so ~-6e-5 eV at 10 Å; pseudopotential
#: core radii, ≤ ~2.5 Å, are shorter.)
MIN_ISOLATED_BOX_A = 10.0

#: pw.x 6.7's "Estimated total dynamical RAM" of a spin-polarised single atom, in bytes per
#: Å³ of box and per Ry^1.5 of ecutrho (the dense FFT grid has V·ecutrho^1.5 points).
#: Measured here: O in 8 and 12 Å boxes at 250 and 500 Ry, 1 and 2 ranks: 109–110 (a 30 Å
#: box at 500 Ry needs ~33 GB, 20 Å ~10 GB, 15 Å ~4 GB — the total, shared by the ranks).
QE_ATOM_BYTES_PER_A3_RY1_5 = 110.0

#: 3d metals' ground-state spin moments (μB), which Hund's rule alone does not give.
_D_BLOCK_MOMENTS = {"Sc": 1, "Ti": 2, "V": 3, "Cr": 6, "Mn": 5, "Fe": 4, "Co": 3, "Ni": 2,
                    "Cu": 1, "Zn": 0}
_NOBLE_GAS_Z = (0, 2, 10, 18, 36, 54, 86, 118)

#: pw.x parameters the teacher sets from its own fields (so extra_input cannot hide them).
_MANAGED = {"input_dft", "vdw_corr", "ecutwfc", "ecutrho", "conv_thr", "mixing_beta",
            "electron_maxstep", "tot_charge", "pseudo_dir", "tprnfor", "tstress"}

OUTPUT_NAME = "espresso.pwo"  # ASE's EspressoTemplate file names
ERROR_NAME = "espresso.err"


class EspressoRunError(RunError):
    """pw.x failed (crash, non-converged SCF, unreadable output); names the run folder and
    carries the tail of pw.x's output."""


def ground_state_moment(element: str) -> int:
    """Spin moment (μB, = unpaired electrons) of the free atom's ground state.

    Hund's rule for s- and p-block elements (H 1, Li 1, B 1, C 2, N 3, O 2, F 1, P 3, S 2,
    noble gases 0); a table for the 3d metals.

    Raises:
        TeacherError: an element neither covers (4d/5d metals, f block): set
            ``isolated_atom_moments`` in the teacher spec.
    """
    if element in _D_BLOCK_MOMENTS:
        return _D_BLOCK_MOMENTS[element]
    z = atomic_numbers.get(element)
    if z is None:
        raise TeacherError(f"unknown element {element!r}")
    core = max(n for n in _NOBLE_GAS_Z if n < z)
    k = z - core  # electrons beyond the noble-gas core
    period_d = {18: 10, 36: 10, 54: 24, 86: 24}.get(core, 0)  # d (and f) electrons before p
    if k <= 2:  # s block (and He)
        return k % 2
    n_p = k - 2 - period_d
    if n_p >= 1:
        return n_p if n_p <= 3 else 6 - n_p
    raise TeacherError(f"no ground-state moment known for {element}: set "
                       f"isolated_atom_moments = {{{element} = ...}} in the teacher spec")


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def default_pseudo_dir() -> str:
    """pw.x's own default: ``$ESPRESSO_PSEUDO``, else ``~/espresso/pseudo``."""
    return os.environ.get("ESPRESSO_PSEUDO", str(Path.home() / "espresso" / "pseudo"))


def _pw_section(key: str) -> str | None:
    """The pw.x namelist holding `key` (indexed keys like ``starting_magnetization(1)`` too),
    None for a name pw.x does not know."""
    from ase.io.espresso_namelist.keys import ALL_KEYS
    from ase.io.espresso_namelist.namelist import Namelist

    return Namelist.search_key(key.lower(), ALL_KEYS["pw"])


def _flat_input(data: dict[str, Any], what: str) -> dict[str, Any]:
    """pw.x parameters of a flat or nested (``{"system": {...}}``) dict, flattened; unknown
    names are refused (ASE would silently drop them)."""
    from ase.io.espresso_namelist.keys import ALL_KEYS

    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key.lower() in ALL_KEYS["pw"] and isinstance(value, dict):
            flat.update(_flat_input(value, what))
        elif _pw_section(key) is None:
            raise ValueError(f"{what}: {key!r} is not a pw.x input parameter")
        else:
            flat[key.lower()] = value
    return flat


class EspressoParams(BaseModel):
    """pw.x settings; defaults are the paper's (units in names or in pw.x's: Ry, e).

    Attributes:
        input_dft: exchange–correlation functional (pw.x ``input_dft``).
        vdw_corr: dispersion correction (``'dft-d3'``; None for none).
        kpts: Monkhorst–Pack grid; None: Γ only with pw.x's Γ tricks (half the memory).
        ecutwfc / ecutrho: plane-wave cutoffs (Ry) of the wavefunctions / density.
        conv_thr: SCF convergence threshold (Ry).
        mixing_beta: SCF mixing factor. electron_maxstep: SCF iterations before the run
            counts as failed.
        tot_charge: total charge every frame must have (e).
        pseudo_dir: folder of the pseudopotential files (default: ``$ESPRESSO_PSEUDO`` or
            ``~/espresso/pseudo``); stored as an absolute path, not part of the key.
        pseudopotentials: element → file name in pseudo_dir.
        pseudo_sha256: file name → SHA-256, filled from pseudo_dir when the spec is
            resolved; a recorded value that no longer matches the file is refused.
        command: the pw.x executable (and options), e.g. ``"pw.x -nk 2"``.
        mpi_ranks: MPI ranks; 1 runs pw.x without a launcher.
        mpi_launcher: launcher with ``{n}`` for the rank count (``"srun -n {n}"`` on SLURM).
        extra_input: any other pw.x parameter, flat (``{"nbnd": 200}``) or by namelist.
        isolated_atom_box_A: edge of the cubic box of isolated-atom energies (Å, ≥ 10).
        isolated_atom_moments: element → spin moment (μB) overriding Hund's rule.
        isolated_atom_input: pw.x parameters added for isolated atoms (their occupations).
    """

    model_config = ConfigDict(extra="forbid")

    input_dft: str = "PBE"
    vdw_corr: str | None = "dft-d3"
    kpts: tuple[int, int, int] | None = None
    ecutwfc: float = Field(50.0, gt=0.0)
    ecutrho: float = Field(500.0, gt=0.0)
    conv_thr: float = Field(1e-10, gt=0.0)
    mixing_beta: float = Field(0.7, gt=0.0, le=1.0)
    electron_maxstep: int = Field(100, ge=1)
    tot_charge: int = 0
    pseudo_dir: str | None = None
    pseudopotentials: dict[str, str] = Field(default_factory=dict)
    pseudo_sha256: dict[str, str] = Field(default_factory=dict)
    command: str = "pw.x"
    mpi_ranks: int = Field(1, ge=1)
    mpi_launcher: str = "mpirun -np {n}"
    extra_input: dict[str, Any] = Field(default_factory=dict)
    isolated_atom_box_A: float = Field(30.0, ge=MIN_ISOLATED_BOX_A, description=(
        "twice the ~5 Å over which a neutral atom's density decays; see MIN_ISOLATED_BOX_A"))
    isolated_atom_moments: dict[str, int] = Field(default_factory=dict)
    isolated_atom_input: dict[str, Any] = Field(default_factory=lambda: {
        "occupations": "smearing", "smearing": "gaussian", "degauss": 0.005})

    @field_validator("pseudopotentials")
    @classmethod
    def _known_elements(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(atomic_numbers))
        if unknown:
            raise ValueError(f"not element symbols: {unknown}")
        return value

    @field_validator("extra_input", "isolated_atom_input")
    @classmethod
    def _pw_parameters(cls, value: dict[str, Any], info) -> dict[str, Any]:
        flat = _flat_input(value, info.field_name)
        managed = sorted(set(flat) & _MANAGED)
        if managed:
            raise ValueError(f"{managed}: set these as the teacher's own parameters, not in "
                             f"{info.field_name}")
        return flat

    @model_validator(mode="after")
    def _resolve_pseudopotentials(self) -> EspressoParams:
        """Absolute pseudo_dir; SHA-256 of every named file present there, checked against
        any recorded value (a missing file is `EspressoTeacher.check_frame`'s error)."""
        self.pseudo_dir = str(Path(self.pseudo_dir or default_pseudo_dir()).expanduser()
                              .absolute())
        files = set(self.pseudopotentials.values())
        stray = sorted(set(self.pseudo_sha256) - files)
        if stray:
            raise ValueError(f"pseudo_sha256 names {stray}, which no element uses")
        sums = dict(self.pseudo_sha256)
        for name in sorted(files):
            path = Path(self.pseudo_dir) / name
            if not path.is_file():
                continue
            actual = sha256_of(path)
            if sums.get(name, actual) != actual:
                raise ValueError(f"pseudopotential {path} has changed since this spec was "
                                 f"recorded (sha256 {actual[:12]}…, recorded "
                                 f"{sums[name][:12]}…): labels made with it would not be "
                                 "those of this teacher key")
            sums[name] = actual
        self.pseudo_sha256 = dict(sorted(sums.items()))
        return self


def isolated_atom_memory_GB(box_A: float, ecutrho_Ry: float) -> float:
    """pw.x's total memory (GB, all ranks together) for one spin-polarised atom in a cubic
    box of edge `box_A` (Å) at `ecutrho_Ry` (Ry): `QE_ATOM_BYTES_PER_A3_RY1_5` × V ×
    ecutrho^1.5."""
    return QE_ATOM_BYTES_PER_A3_RY1_5 * box_A**3 * ecutrho_Ry**1.5 / 1e9


def available_memory_GB() -> float | None:
    """This machine's ``MemAvailable`` (GB), None where /proc/meminfo is unreadable."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        return None
    return None


def output_tail(directory: str | Path, n_lines: int = 40) -> str:
    """The last `n_lines` of pw.x's output (and its stderr) in `directory`."""
    parts = []
    for name in (OUTPUT_NAME, ERROR_NAME):
        path = Path(directory) / name
        if path.is_file():
            lines = path.read_text(errors="replace").rstrip().splitlines()[-n_lines:]
            if lines:
                parts.append(f"--- last lines of {path} ---\n" + "\n".join(lines))
    return "\n".join(parts) or f"(no pw.x output in {directory})"


def _failure_reason(directory: Path, exc: BaseException | None) -> str:
    """One line: what pw.x said went wrong (its own message where it printed one)."""
    path = directory / OUTPUT_NAME
    text = path.read_text(errors="replace") if path.is_file() else ""
    for line in text.splitlines():
        if "convergence NOT achieved" in line:
            return f"pw.x SCF did not converge ({line.strip()})"
    if "%%%%%" in text:  # pw.x's error banner: the message is the line after the first one
        lines = text.split("%%%%%", 1)[1].splitlines()
        message = next((ln.strip() for ln in lines[1:] if ln.strip()), "")
        return f"pw.x stopped: {message}"
    return f"pw.x failed: {type(exc).__name__}: {exc}" if exc else "pw.x failed"


def _espresso_class():
    """ASE's Espresso, raising `EspressoRunError` (with pw.x's output tail) on failure."""
    from ase.calculators.espresso import Espresso

    class CheckedEspresso(Espresso):
        def calculate(self, *args, **kwargs):
            directory = Path(self.directory)
            try:
                super().calculate(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any pw.x failure, with its output
                raise EspressoRunError(f"{_failure_reason(directory, exc)} in {directory}\n"
                                       f"{output_tail(directory)}") from exc
            # pw.x 6.7 exits with status 2 when the SCF does not converge; older versions
            # exit 0 and print forces of the unconverged density: never take those.
            if "convergence NOT achieved" in _read(directory / OUTPUT_NAME):
                raise EspressoRunError(f"{_failure_reason(directory, None)} in {directory}\n"
                                       f"{output_tail(directory)}")

    return CheckedEspresso


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


@register
class EspressoTeacher(Teacher):
    """Quantum ESPRESSO (pw.x) labels through ASE (see the module docstring)."""

    kind = "espresso"
    Params = EspressoParams
    provides_stress = True
    uses_directory = True
    key_ignores = frozenset({"pseudo_dir", "command", "mpi_ranks", "mpi_launcher"})

    # -- how pw.x is launched ---------------------------------------------------------------

    def argv(self) -> list[str]:
        """The command line before ``-in espresso.pwi``: launcher (if more than one rank)
        and pw.x; as root, mpirun is allowed to run through OpenMPI's environment switch."""
        pw = shlex.split(self.params.command)
        if self.params.mpi_ranks == 1:
            return pw
        launcher = shlex.split(self.params.mpi_launcher.format(n=self.params.mpi_ranks))
        as_root = ["env", "OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"] \
            if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        return [*as_root, *launcher, *pw]

    def profile(self):
        """ASE's EspressoProfile for `argv` and pseudo_dir."""
        from ase.calculators.espresso import EspressoProfile

        return EspressoProfile(command=shlex.join(self.argv()),
                               pseudo_dir=self.params.pseudo_dir)

    def _check_programs(self) -> None:
        programs = shlex.split(self.params.command)[:1]
        if self.params.mpi_ranks > 1:
            programs += shlex.split(self.params.mpi_launcher.format(n=1))[:1]
        for program in programs:
            if shutil.which(program) is None:
                raise TeacherError(
                    f"espresso teacher: {program!r} not found on PATH (install Quantum "
                    "ESPRESSO: apt-get install quantum-espresso; or set command / "
                    "mpi_launcher in the teacher spec)")

    # -- checks before any work ----------------------------------------------------------------

    def check_elements(self, elements) -> None:
        """Refuse elements without a pseudopotential file, a missing pseudo_dir or file, or
        a file whose checksum was not recorded."""
        folder = Path(self.params.pseudo_dir)
        if not folder.is_dir():
            raise TeacherError(f"espresso teacher: pseudo_dir {folder} does not exist (set "
                               "pseudo_dir, or generate files: ionmix pseudo generate)")
        for element in sorted(set(elements)):
            name = self.params.pseudopotentials.get(element)
            if name is None:
                raise TeacherError(
                    f"espresso teacher: no pseudopotential for element {element} (pseudo_dir "
                    f"{folder}); set pseudopotentials.{element} = '<file>.UPF'")
            if not (folder / name).is_file():
                raise TeacherError(f"espresso teacher: pseudopotential file {name} for "
                                   f"{element} is not in pseudo_dir {folder}")
            if name not in self.params.pseudo_sha256:
                raise TeacherError(f"espresso teacher: {name} appeared after the spec was "
                                   "resolved; resolve the spec again so its key records it")

    def check_frame(self, atoms: Atoms) -> None:
        """Refuse before any work: pw.x (or the launcher) not found, no periodic cell,
        pseudopotentials missing for an element of `atoms`, or a total charge (from the
        frame's ions) other than ``tot_charge``."""
        self._check_programs()
        if not all(atoms.pbc) or atoms.cell.volume <= 0.0:
            raise TeacherError("espresso teacher: pw.x needs a periodic cell; put molecules "
                               "in a box (atoms.set_cell(...), atoms.pbc = True)")
        self.check_elements(atoms.get_chemical_symbols())
        self.check_total_charge(atoms, self.params.tot_charge, "tot_charge")

    # -- calculators -------------------------------------------------------------------------

    def input_data(self, **extra: Any) -> dict[str, Any]:
        """pw.x parameters (flat; ASE sorts them into namelists): the teacher's fields, then
        ``extra_input``, then `extra`."""
        p = self.params
        data = {"tprnfor": True, "tstress": True, "outdir": ".", "input_dft": p.input_dft,
                "ecutwfc": p.ecutwfc, "ecutrho": p.ecutrho, "tot_charge": p.tot_charge,
                "conv_thr": p.conv_thr, "mixing_beta": p.mixing_beta,
                "electron_maxstep": p.electron_maxstep}
        if p.vdw_corr:
            data["vdw_corr"] = p.vdw_corr
        return {**data, **p.extra_input, **extra}

    def calculator(self, atoms: Atoms | None = None, directory: str | Path = ".",
                   **extra_input: Any):
        """ASE Espresso calculator running pw.x in `directory` (created if missing), for
        frames like `atoms` (checked first). `extra_input`: pw.x parameters for this
        calculator only (isolated atoms use it)."""
        if atoms is not None:
            self.check_frame(atoms)
        else:
            self._check_programs()
        Path(directory).mkdir(parents=True, exist_ok=True)
        return _espresso_class()(profile=self.profile(), directory=str(directory),
                                 pseudopotentials=dict(self.params.pseudopotentials),
                                 kpts=self.params.kpts,
                                 input_data=self.input_data(**extra_input))

    # -- isolated atoms ----------------------------------------------------------------------

    def isolated_atom_moment(self, element: str) -> int:
        """Spin moment (μB) of the isolated atom: the spec's override, else Hund's rule."""
        if element in self.params.isolated_atom_moments:
            return self.params.isolated_atom_moments[element]
        return ground_state_moment(element)

    def check_isolated_atom_memory(self, element: str) -> None:
        """Refuse an isolated-atom box pw.x will not fit in this machine's memory."""
        box_A = self.params.isolated_atom_box_A
        need_GB = isolated_atom_memory_GB(box_A, self.params.ecutrho)
        have_GB = available_memory_GB()
        if have_GB is not None and need_GB > have_GB:
            fits_A = (have_GB * 1e9 / (QE_ATOM_BYTES_PER_A3_RY1_5
                                      * self.params.ecutrho**1.5)) ** (1 / 3)
            raise TeacherError(
                f"espresso teacher: an isolated {element} atom in a {box_A:g} Å box at "
                f"ecutrho {self.params.ecutrho:g} Ry needs ~{need_GB:.0f} GB (pw.x, all ranks "
                f"together), but this machine has {have_GB:.0f} GB available: it will not "
                f"fit. Run it on a larger node, or set isolated_atom_box_A ≤ "
                f"{int(fits_A)} (a different teacher key)")

    def isolated_atom_energy_eV(self, element: str, directory: str | Path | None = None
                                ) -> float:
        """pw.x's energy (eV) of one `element` atom in the isolated-atom box, spin-polarised
        with its ground-state moment; cached per (teacher key, element). pw.x runs in
        `directory` (default: beside the cache)."""
        path = cache_dir() / "isolated-atoms" / f"{self.key}.json"
        cached = json.loads(path.read_text()) if path.exists() else {}
        if element in cached:
            return float(cached[element])
        self._check_programs()
        self.check_elements([element])
        self.check_isolated_atom_memory(element)
        box_A = self.params.isolated_atom_box_A
        atom = Atoms(element, positions=[[box_A / 2] * 3], cell=[box_A] * 3, pbc=True)
        moment = self.isolated_atom_moment(element)
        atom.set_initial_magnetic_moments([0.5 if moment else 0.0])  # → starting_magnetization
        workdir = directory or cache_dir() / "isolated-atoms" / f"{self.key}-{element}"
        atom.calc = self.calculator(None, workdir, nspin=2, tot_magnetization=moment,
                                    tot_charge=0, **self.params.isolated_atom_input)
        energy = float(atom.get_potential_energy())
        cached = {**(json.loads(path.read_text()) if path.exists() else {}), element: energy}
        atomic_write_json(path, cached)
        return energy
