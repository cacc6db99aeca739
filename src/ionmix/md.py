"""Molecular dynamics with any ASE calculator: NVE, NVT and isotropic NPT, restartable.

Integrators are ASE's (no hand-written equations of motion):

* ``nve``: velocity Verlet (`ase.md.verlet.VelocityVerlet`).
* ``nvt``: Nosé–Hoover chain (`ase.md.nose_hoover_chain.NoseHooverChainNVT`).
* ``npt``: Martyna–Tobias–Klein isotropic barostat with Nosé–Hoover chains
  (`ase.md.nose_hoover_chain.IsotropicMTKNPT`), the integrator of Goodwin et al.'s NPT runs.

Defaults follow the paper: time step 0.5 fs, thermostat and barostat time constants of
1000 time steps (0.5 ps), 1 bar.

Files written to the run folder, incrementally (a crash loses at most the steps since the
last checkpoint, and those are recomputed identically on restart):

* ``thermo.csv``: one row every ``log_interval_steps``: step, time_ps, temperature_K,
  potential/kinetic/conserved energy (eV), volume_A3, density_g_cm3, pressure_bar
  (instantaneous, including the kinetic term; blank where the calculator gives no stress).
* ``trajectory.extxyz``: one frame every ``trajectory_interval_steps`` with the calculator's
  energy, forces and (when computed) stress, ``step`` and ``time_ps`` in the frame info
  (and a committee's ``max_force_deviation_eV_per_A``/``energy_std_eV`` when it gave them).
  Positions are *unwrapped* (as integrated), so diffusion can be read off directly. Per-atom
  ``mol_id``/``ion_name`` arrays and the ``molecules``/``charge_scale`` info of the input
  structure are carried so any frame can be relabelled by the classical teacher.
* ``checkpoint.json``: written atomically with every trajectory frame: positions, momenta,
  cell and the integrator's internal state (thermostat and barostat variables), plus the
  byte lengths of ``thermo.csv`` and ``trajectory.extxyz`` at that step. A restart truncates
  both files to those lengths and continues the same trajectory: with a deterministic
  calculator, the continued run is identical to one that was never interrupted.
* ``md.json``: settings, system, calculator, the starting structure's sha256, the
  minimisation (if any), status (``running``/``done``/``blew_up``), steps done and
  throughput.

**Minimisation before dynamics.** A structure that was never relaxed (a Packmol box sits
at tens of kbar, with atoms of neighbouring ions at 2 Å) is minimised first, on a fresh
start only (never on a restart): ASE's FIRE on the positions with the cell fixed, with the
same calculator, to a max force of ``MINIMISE_FMAX_EV_PER_A`` (0.5 eV/Å) or at most
``MINIMISE_MAX_STEPS`` (200) steps. ``MDSettings.minimise`` decides: ``None`` (auto, the
default) minimises a box packed by `ionmix.build.build_box`, known by the
``packmol_seed`` info it carries (MD frames and stored snapshots do not: they were
relaxed by dynamics, and minimising them would quench them); ``True`` always (any other
never-relaxed structure), ``False`` never. Auto does not judge by the forces: a learned
model's large forces on a sampled frame are its own error, which minimising with it would
hide (and would steer an active-learning walker away from where the model's dynamics
goes). The one exception is the loop's own: a walker whose teacher is not the classical
sampler asks for it (``WalkerSpec.minimise_start``), because the sampled frame is strained
for that teacher. Steps and max force before/after go to ``md.json`` and to `run_md`'s ``log``.

**Restarts** continue only the same run: the settings (all but ``n_steps``), the model
(its id) and the starting structure (sha256 of its atomic numbers, positions, cell,
periodicity and masses, and of its momenta when they are kept) must match what ``md.json``
recorded; otherwise `MDError` names what changed.

A run that leaves sane bounds (non-finite energy, temperature or volume; temperature above
``max_temperature_factor`` × target; volume outside a factor ``max_volume_ratio`` of the
starting volume; a covalent bond longer than ``max_bond_stretch`` × its starting length,
or two atoms bonded to a common atom closer than 1/``max_bond_stretch`` × their starting
distance)
stops with `MDBlowUp`, worded by what drives the dynamics: a learned model left the region
it can describe; with the classical force field the integration diverged (a smaller time
step, or a minimised and equilibrated start). Everything written up to the last good frame
is kept, and the state at the failure goes to ``blowup.extxyz`` for inspection. Running the
same folder again reports that blow-up (`MDBlowUp`) without stepping into it again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from ase import Atoms, units
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ionmix.chemistry.topology import COVALENT_BOND_FACTOR, carry_metadata
from ionmix.errors import InputError, RunError
from ionmix.files import atomic_write_json
from ionmix.progress import Progress
from ionmix.resume import check_same_settings
from ionmix.units import bar_to_ev_per_a3, density_g_per_cm3, ev_per_a3_to_bar

__all__ = [
    "ENSEMBLES",
    "MDBlowUp",
    "MDError",
    "MDResult",
    "MDSettings",
    "check_can_continue",
    "minimise_reason",
    "read_thermo",
    "run_md",
    "start_sha256",
]

ENSEMBLES = ("nve", "nvt", "npt")
THERMO_COLUMNS = ("step", "time_ps", "temperature_K", "potential_energy_eV",
                  "kinetic_energy_eV", "conserved_energy_eV", "volume_A3", "density_g_cm3",
                  "pressure_bar")
#: Settings that may change between a run and its restart (extending a run is allowed).
RESTART_MAY_CHANGE = ("n_steps",)
#: Frame info key that `ionmix.build.build_box` writes: a structure still carrying it is a
#: packed box that was never relaxed (MD frames and stored snapshots do not carry it).
PACKED_INFO = "packmol_seed"
#: FIRE stops at this max force (eV/Å): enough to remove the clashes that blow MD up; the
#: thermostat and barostat do the rest.
MINIMISE_FMAX_EV_PER_A = 0.5
#: ... or after this many steps (a few seconds for hundreds of atoms with the teacher).
MINIMISE_MAX_STEPS = 200


class MDError(InputError):
    """Settings, structure or calculator that cannot run; found before any step is taken."""


class MDBlowUp(RunError):
    """The trajectory left sane bounds (a learned model left the region it can describe, or
    the integration diverged); the data written so far is kept."""

    exit_code = 3


class MDSettings(BaseModel):
    """One MD run. Units are in the names; defaults are Goodwin et al.'s NPT settings.

    ``thermostat_time_steps`` and ``barostat_time_steps`` are ASE's ``tdamp``/``pdamp`` in
    units of the time step (1000 δt = 0.5 ps at 0.5 fs).
    """

    model_config = ConfigDict(extra="forbid")

    ensemble: Literal["nve", "nvt", "npt"] = "npt"
    temperature_K: float = Field(300.0, gt=0.0, le=1.0e4)
    pressure_bar: float = Field(1.0, ge=-1.0e4, le=1.0e6)
    timestep_fs: float = Field(0.5, gt=0.0, le=5.0)
    n_steps: int = Field(1000, ge=1)
    thermostat_time_steps: float = Field(1000.0, gt=0.0)
    barostat_time_steps: float = Field(1000.0, gt=0.0)
    log_interval_steps: int = Field(10, ge=1)
    trajectory_interval_steps: int = Field(100, ge=1)
    seed: int = Field(0, ge=0)
    #: "maxwell": draw Maxwell–Boltzmann velocities at temperature_K (seeded, zero total
    #: momentum); "keep": use the structure's momenta (e.g. a frame of an earlier run).
    initial_velocities: Literal["maxwell", "keep"] = "maxwell"
    max_temperature_factor: float = Field(5.0, gt=1.0)
    max_volume_ratio: float = Field(2.0, gt=1.0)
    #: a bond between non-metal atoms (within 1.25 × their covalent radii at the start)
    #: longer than this × its starting length, or the ends of a bond angle closer than
    #: 1/this × their starting distance, means the model broke a molecule (a learned
    #: student does this long before the temperature or volume notice); None: no check
    max_bond_stretch: float | None = Field(1.5, gt=1.0)
    #: minimise the starting structure before dynamics (fresh start only, never on a
    #: restart; module docstring): None = auto (a box packed by `ionmix build`, never
    #: relaxed: its ``packmol_seed`` info); True: always; False: never
    minimise: bool | None = None

    # "before": NaN and inf are named as such, not as failing the bounds below
    @field_validator("temperature_K", "pressure_bar", "timestep_fs", mode="before")
    @classmethod
    def _finite(cls, value):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @property
    def time_ps(self) -> float:
        """Length of the whole run, ps."""
        return self.n_steps * self.timestep_fs / 1000.0


@dataclass(frozen=True)
class MDResult:
    """Outcome of `run_md` (all paths inside ``out_dir``)."""

    out_dir: Path
    steps_done: int
    resumed_from_step: int
    wall_s: float
    steps_per_s: float
    thermo_path: Path
    trajectory_path: Path
    #: what the fresh start's minimisation did (``md.json``'s record), None if none ran
    minimisation: dict | None = None


def _describe(calc, model_id: str | None = None) -> str:
    """The model behind `calc`: its id when the caller gave one (`ionmix.models.load_model`'s
    ``LoadedModel.model_id``: file names and checksums, or the teacher key), else the
    calculator's class name."""
    return model_id or type(calc).__name__


# --------------------------------------------------------------------------------------
# integrator state (for exact restarts)


def _make_dynamics(atoms: Atoms, s: MDSettings):
    dt = s.timestep_fs * units.fs
    if s.ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
    from ase.md.nose_hoover_chain import IsotropicMTKNPT, NoseHooverChainNVT

    if s.ensemble == "nvt":
        return NoseHooverChainNVT(atoms, timestep=dt, temperature_K=s.temperature_K,
                                  tdamp=s.thermostat_time_steps * dt)
    return IsotropicMTKNPT(atoms, timestep=dt, temperature_K=s.temperature_K,
                           pressure_au=float(bar_to_ev_per_a3(s.pressure_bar)),
                           tdamp=s.thermostat_time_steps * dt,
                           pdamp=s.barostat_time_steps * dt)


# The thermostat/barostat variables are private attributes of ASE's integrators (ASE has no
# public state API); tests/test_md.py checks bitwise restart continuity, so a change in ASE
# fails loudly there instead of silently breaking restarts.
_THERMOSTAT_KEYS = ("_eta", "_p_eta")
_BAROSTAT_KEYS = ("_xi", "_p_xi")


def _integrator_state(dyn) -> dict:
    state: dict = {}
    if hasattr(dyn, "_thermostat"):
        state["thermostat"] = {k: getattr(dyn._thermostat, k).tolist() for k in _THERMOSTAT_KEYS}
    if hasattr(dyn, "_barostat"):
        state["barostat"] = {k: getattr(dyn._barostat, k).tolist() for k in _BAROSTAT_KEYS}
        state["eps"] = float(dyn._eps)
        state["p_eps"] = float(dyn._p_eps)
        state["volume0"] = float(dyn._volume0)
        state["cell0"] = np.asarray(dyn._cell0).tolist()
    return state


def _restore_integrator(dyn, state: dict) -> None:
    for key in _THERMOSTAT_KEYS:
        if "thermostat" in state:
            setattr(dyn._thermostat, key, np.array(state["thermostat"][key], dtype=float))
    if "barostat" in state:
        for key in _BAROSTAT_KEYS:
            setattr(dyn._barostat, key, np.array(state["barostat"][key], dtype=float))
        dyn._eps = float(state["eps"])
        dyn._p_eps = float(state["p_eps"])
        dyn._volume0 = float(state["volume0"])
        dyn._cell0 = np.array(state["cell0"], dtype=float)
    if hasattr(dyn, "_q"):
        dyn._q = dyn.atoms.get_positions()
        dyn._p = dyn.atoms.get_momenta()


def _conserved_energy_eV(dyn) -> float:
    if hasattr(dyn, "get_conserved_energy"):
        return float(dyn.get_conserved_energy())
    return float(dyn.atoms.get_potential_energy() + dyn.atoms.get_kinetic_energy())


# --------------------------------------------------------------------------------------
# checks before any work


def check_inputs(atoms: Atoms, calc, settings: MDSettings, model_id: str | None = None) -> None:
    """Raise MDError for a structure/calculator/settings combination that cannot run."""
    if len(atoms) == 0:
        raise MDError("the structure has no atoms")
    if settings.ensemble == "npt":
        if not np.all(atoms.pbc) or atoms.cell.rank != 3:
            raise MDError("NPT needs a periodic structure with a full 3-D cell")
        if "stress" not in getattr(calc, "implemented_properties", ()):
            raise MDError(f"NPT needs stress, and the calculator {_describe(calc, model_id)} "
                          "does not compute it; use --ensemble nvt, or a model that predicts "
                          "stress")
    if atoms.constraints:
        raise MDError("the structure has constraints; ASE's Nosé–Hoover/MTK integrators "
                      "do not support them")
    if settings.trajectory_interval_steps % settings.log_interval_steps:
        raise MDError(f"trajectory_interval_steps ({settings.trajectory_interval_steps}) must "
                      f"be a multiple of log_interval_steps ({settings.log_interval_steps})")


def _first_evaluation(atoms: Atoms, settings: MDSettings, model_id: str | None) -> None:
    """Evaluate the starting structure; stress-less NPT and non-finite output fail here."""
    from ase.calculators.calculator import PropertyNotImplementedError

    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    if settings.ensemble == "npt":
        try:
            stress = atoms.get_stress()
        except (PropertyNotImplementedError, KeyError, NotImplementedError):
            raise MDError(f"NPT needs stress, and the calculator "
                          f"{_describe(atoms.calc, model_id)} did not return one for this "
                          "structure (was the model trained with stress?); use --ensemble "
                          "nvt") from None
        if not np.all(np.isfinite(stress)):
            raise MDError("the calculator's stress on the starting structure is not finite")
    if not np.isfinite(energy) or not np.all(np.isfinite(forces)):
        raise MDError("the calculator's energy or forces on the starting structure are not "
                      "finite")


# --------------------------------------------------------------------------------------
# the run


#: Scalar results a calculator may give beside energy, forces and stress that a trajectory
#: frame keeps in its info: a committee's spread at that step (`ionmix.models.committee`),
#: which the learning loop's selection then reads instead of running the committee again.
TRAJECTORY_INFO_RESULTS = ("max_force_deviation_eV_per_A", "energy_std_eV")


def _snapshot(atoms: Atoms, step: int, time_ps: float) -> Atoms:
    """A copy of `atoms` with the calculator's results attached, for the trajectory."""
    from ase.calculators.singlepoint import SinglePointCalculator

    frame = carry_metadata(atoms, Atoms(atoms.get_chemical_symbols(),
                                        positions=atoms.get_positions(),
                                        cell=atoms.cell.array, pbc=atoms.pbc))
    frame.info["step"] = step
    frame.info["time_ps"] = time_ps
    results = atoms.calc.results if atoms.calc is not None else {}
    frame.calc = SinglePointCalculator(frame, **{k: results[k] for k in
                                                 ("energy", "forces", "stress") if k in results})
    frame.info.update({k: float(results[k]) for k in TRAJECTORY_INFO_RESULTS if k in results})
    return frame


def _observables(dyn, atoms: Atoms, mass_amu: float, step: int, dt_fs: float) -> dict:
    volume = atoms.get_volume() if atoms.cell.rank == 3 else float("nan")
    pressure = ""
    stress = atoms.calc.results.get("stress") if atoms.calc is not None else None
    if stress is not None and atoms.cell.rank == 3:
        # instantaneous pressure with the ideal-gas (kinetic) term, as the barostat sees it
        kinetic = atoms.get_momenta() ** 2 / atoms.get_masses()[:, None]
        pressure = float(ev_per_a3_to_bar(-np.mean(stress[:3]) + kinetic.sum() / (3.0 * volume)))
    return {
        "step": step,
        "time_ps": step * dt_fs / 1000.0,
        "temperature_K": atoms.get_temperature(),
        "potential_energy_eV": float(atoms.get_potential_energy()),
        "kinetic_energy_eV": float(atoms.get_kinetic_energy()),
        "conserved_energy_eV": _conserved_energy_eV(dyn),
        "volume_A3": volume,
        "density_g_cm3": density_g_per_cm3(mass_amu, volume) if volume == volume else "",
        "pressure_bar": pressure,
    }


def _out_of_bounds(row: dict, settings: MDSettings, volume0_A3: float) -> str | None:
    """Why this thermo row means the run blew up, or None."""
    for key in ("potential_energy_eV", "temperature_K", "volume_A3"):
        value = row[key]
        if key == "volume_A3" and not np.isfinite(volume0_A3):
            continue
        if not np.isfinite(value):
            return f"{key} is {value}"
    t_max = settings.max_temperature_factor * settings.temperature_K
    if row["temperature_K"] > t_max:
        return (f"temperature {row['temperature_K']:.4g} K exceeds "
                f"{settings.max_temperature_factor:g} × {settings.temperature_K:g} K")
    if np.isfinite(volume0_A3):
        ratio = row["volume_A3"] / volume0_A3
        if not 1.0 / settings.max_volume_ratio <= ratio <= settings.max_volume_ratio:
            return (f"volume {row['volume_A3']:.6g} Å³ is {ratio:.3g} × the starting "
                    f"{volume0_A3:.6g} Å³ (limit: a factor {settings.max_volume_ratio:g})")
    return None


#: elements whose close contacts count as covalent bonds (metal ions such as Li⁺ are
#: left out: their contacts with anions come and go in a liquid)
NON_METALS = frozenset("H B C N O F Si P S Cl As Se Br Te I".split())


def covalent_bonds(atoms: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, length_A) of the bonds of `atoms`: pairs of non-metal atoms closer than
    `COVALENT_BOND_FACTOR` (1.25) × the sum of their covalent radii, each pair once."""
    from ase.neighborlist import natural_cutoffs, neighbor_list

    if len(atoms) < 2:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    i, j, d = neighbor_list("ijd", atoms, natural_cutoffs(atoms, mult=COVALENT_BOND_FACTOR))
    symbols = np.array(atoms.get_chemical_symbols())
    keep = (i < j) & np.isin(symbols[i], list(NON_METALS)) & np.isin(symbols[j],
                                                                    list(NON_METALS))
    return i[keep], j[keep], d[keep]


def covalent_geometry(atoms: Atoms) -> tuple[tuple, tuple]:
    """The structure's molecules as the MD guard checks them: its `covalent_bonds` (i, j,
    length_A) and the ends of its bond angles (i, k, centre, distance_A): every pair of
    atoms bonded to a common atom, once, with their distance in `atoms`."""
    bonds = covalent_bonds(atoms)
    neighbours: dict[int, list[int]] = {}
    for a, b in zip(bonds[0].tolist(), bonds[1].tolist(), strict=True):
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    ends = np.array([(min(a, c), max(a, c), centre) for centre, near in neighbours.items()
                     for n, a in enumerate(near) for c in near[n + 1:]], dtype=int)
    ends = ends.reshape(-1, 3)
    angles = (ends[:, 0], ends[:, 1], ends[:, 2], _distances_A(atoms, ends[:, 0], ends[:, 1]))
    return bonds, angles


def _distances_A(atoms: Atoms, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """|r_j − r_i| (Å) pair by pair, nearest image in a periodic cell; shape (n_pairs,)."""
    if not len(i):
        return np.zeros(0)
    if atoms.cell.rank == 3:
        return atoms.get_distances(i, j, mic=True)
    return np.linalg.norm(atoms.positions[i] - atoms.positions[j], axis=1)


def _broken_bond(atoms: Atoms, geometry, max_stretch: float) -> str | None:
    """Why the structure counts as broken, or None: a bond of `covalent_geometry` stretched
    beyond `max_stretch` × its starting length, or an angle collapsed, its two ends closer
    than 1/`max_stretch` × their starting distance (a learned student can fold the two H
    of a CH₂ onto each other, 0.8 Å apart, with every bond intact: issue 22)."""
    (i, j, d0), (a, c, centre, r0) = geometry
    symbols = atoms.symbols  # indexed only to word a failure
    if len(i):
        ratio = _distances_A(atoms, i, j) / d0
        worst = int(np.argmax(ratio))
        if ratio[worst] > max_stretch:
            return (f"the {symbols[i[worst]]}{i[worst]}–{symbols[j[worst]]}{j[worst]} bond "
                    f"is {ratio[worst]:.3g} × its starting {d0[worst]:.3g} Å (limit "
                    f"{max_stretch:g}×): a molecule broke")
    if len(a):
        ratio = _distances_A(atoms, a, c) / r0
        worst = int(np.argmin(ratio))
        if ratio[worst] < 1.0 / max_stretch:
            return (f"the {symbols[a[worst]]}{a[worst]}–{symbols[centre[worst]]}"
                    f"{centre[worst]}–{symbols[c[worst]]}{c[worst]} angle collapsed: its "
                    f"ends are {ratio[worst]:.3g} × their starting {r0[worst]:.3g} Å apart "
                    f"(limit 1/{max_stretch:g}): a molecule folded onto itself")
    return None


def _format_row(row: dict) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(
        [row[c] if isinstance(row[c], str) else f"{row[c]:.10g}" for c in THERMO_COLUMNS])
    return buf.getvalue()


def start_sha256(atoms: Atoms, settings: MDSettings) -> str:
    """sha256 (hex) of what the dynamics starts from: atomic numbers, positions (Å), cell
    (Å), periodicity, masses (amu), and the momenta when the run keeps them
    (``initial_velocities="keep"``; drawn velocities depend on the seed, a setting). A
    restart must be given the same starting structure."""
    parts = [np.asarray(atoms.numbers, dtype=np.int64), atoms.get_positions(),
             atoms.cell.array, np.asarray(atoms.pbc, dtype=bool), atoms.get_masses()]
    if settings.initial_velocities == "keep":
        parts.append(atoms.get_momenta())
    digest = hashlib.sha256()
    for part in parts:
        digest.update(np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()


def read_record(path: Path) -> dict:
    """The ``md.json`` record of an earlier call ({} for a new run folder); MDError naming
    the file when it is not a JSON object (damaged, or not ionmix's)."""
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise MDError(f"{path}: not a readable md.json ({exc})") from None
    if not isinstance(record, dict):
        raise MDError(f"{path}: not an md.json record (a JSON object expected)")
    return record


def check_can_continue(out_dir: str | os.PathLike, atoms: Atoms, settings: MDSettings,
                       model_id: str | None = None) -> None:
    """Raise before anything is written if `run_md` would refuse to continue the run in
    `out_dir` (MDError: other settings, model or starting structure) or reports its earlier
    blow-up (MDBlowUp). Nothing to check for a new folder."""
    out = Path(out_dir)
    _check_can_continue(out, read_record(out / "md.json"), settings, model_id,
                        start_sha256(atoms, settings), atoms)


def _check_can_continue(out: Path, record: dict, settings: MDSettings, model: str | None,
                        start_sha: str, atoms: Atoms) -> None:
    """Refuse to continue the run in `out` (its ``md.json`` `record`) with other settings,
    another model or another starting structure (MDError), and report a run that blew up
    before as blown up (MDBlowUp) rather than re-running it into the same blow-up from its
    last checkpoint. Keys a record of an older ionmix lacks are not compared."""
    advice = f"use another --out folder, or delete {out} to start over"
    check_same_settings(
        record.get("settings") if record else None, settings.model_dump(), error=MDError,
        may_change=RESTART_MAY_CHANGE, recorded_only=True,
        what=f"{out} holds a run with other settings", advice=advice)
    old_model = record.get("model_id")
    if old_model and model and old_model != model:
        raise MDError(f"{out} holds a run of the model {old_model}; this one is {model} "
                      f"(retrained, or another --float64?): {advice}")
    old_start = record.get("start_sha256")
    if old_start and old_start != start_sha:
        raise MDError(f"{out} holds a run that started from another structure "
                      f"({_start_difference(record, atoms, start_sha)}): {advice}")
    if record.get("status") == "blew_up":
        raise MDBlowUp(f"MD stopped at step {record.get('steps_done')}: "
                       f"{record.get('reason')} (in an earlier call; delete {out} "
                       "to run it again)")


def _start_difference(record: dict, atoms: Atoms, start_sha: str) -> str:
    """How `atoms` (sha256 `start_sha`) differs from the start that `record` describes."""
    old = (record.get("formula"), record.get("n_atoms"))
    new = (atoms.get_chemical_formula(), len(atoms))
    if old != new:
        return f"{old[0]}, {old[1]} atoms; this one is {new[0]}, {new[1]} atoms"
    return (f"{new[0]} too, but other positions, cell, masses or kept momenta: sha256 "
            f"{record['start_sha256'][:12]}…, this one {start_sha[:12]}…")


def run_md(atoms: Atoms, calc, settings: MDSettings, out_dir: str | os.PathLike,
           progress: Progress | None = None,
           log: Callable[[str], None] | None = None, model_id: str | None = None,
           model_teachers: Mapping[str, dict | None] | None = None) -> MDResult:
    """Run (or continue) MD of `atoms` with `calc`, writing into `out_dir`.

    Args:
        atoms: starting structure (not modified). When `out_dir` holds a checkpoint the run
            continues from there (with more steps if ``settings.n_steps`` grew), and
            `atoms` must be the structure it started from (compared by `start_sha256`).
        calc: any ASE calculator; for NPT it must give stress.
        settings: see `MDSettings` (``minimise``: the module docstring).
        out_dir: run folder (created).
        progress: called as ``progress(steps_done, n_steps, run folder's name)`` at every
            log step (`ionmix.progress.Progress`).
        log: called with one line when the starting structure is minimised (steps, max
            force before and after, eV/Å).
        model_id: what `calc` is (`ionmix.models.LoadedModel.model_id`): recorded in
            ``md.json``, and a restart with another id is refused. None: an unnamed
            calculator (its class name is recorded; restarts do not compare it).
        model_teachers: the teachers whose labels trained the model
            (`ionmix.models.LoadedModel.teachers`, key → spec record): recorded in
            ``md.json``, where ``ionmix validate`` finds the teacher to compare with.

    Raises:
        MDError: bad inputs (before any step), or a restart with changed settings, another
            model or another starting structure.
        MDBlowUp: the trajectory left sane bounds (data up to the last frame kept), now
            or in an earlier call.
    """
    out = Path(out_dir)
    record = read_record(out / "md.json")
    start_sha = start_sha256(atoms, settings)
    _check_can_continue(out, record, settings, model_id, start_sha, atoms)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.json"
    checkpoint = json.loads(ckpt_path.read_text()) if ckpt_path.exists() else None
    atoms, minimisation = _starting_state(atoms, calc, settings, checkpoint, ckpt_path,
                                          model_id)
    if checkpoint is not None:  # what the fresh start recorded (none for older records)
        start_sha, minimisation = record.get("start_sha256"), record.get("minimisation")
    elif minimisation is not None and log is not None:
        log(_describe_minimisation(minimisation))
    run = _open_run(out, atoms, calc, settings, checkpoint,
                    {"start_sha256": start_sha, "minimisation": minimisation}, model_id,
                    model_teachers)
    t0 = time.perf_counter()
    try:
        if checkpoint is None:
            run.record(0)
        run.integrate(progress)
    finally:
        run.close()
    return run.finish(time.perf_counter() - t0)


def _starting_state(atoms: Atoms, calc, settings: MDSettings, checkpoint: dict | None,
                    ckpt_path: Path, model_id: str | None) -> tuple[Atoms, dict | None]:
    """A copy of `atoms` at the checkpoint's state (if any), checked, with `calc` attached
    and evaluated, and on a fresh start minimised (when `minimise_reason` says so) and with
    initial velocities drawn; with the minimisation's record (None: not minimised)."""
    atoms = atoms.copy()
    if checkpoint is not None:
        state = checkpoint["atoms"]
        if len(state["positions"]) != len(atoms):
            raise MDError(f"{ckpt_path} is a run of {len(state['positions'])} atoms; the "
                          f"structure given has {len(atoms)}")
        atoms.set_cell(state["cell"], scale_atoms=False)
        atoms.set_positions(state["positions"])
        atoms.set_momenta(state["momenta"])
    check_inputs(atoms, calc, settings, model_id)
    atoms.calc = calc
    _first_evaluation(atoms, settings, model_id)
    minimisation = None
    if checkpoint is None:
        why = minimise_reason(atoms, settings)
        if why is not None:
            minimisation = _minimise(atoms, settings, why, model_id)
            _first_evaluation(atoms, settings, model_id)  # the stress at the new positions (NPT)
        if settings.initial_velocities == "maxwell":
            _thermalize(atoms, settings)
    return atoms, minimisation


# --------------------------------------------------------------------------------------
# minimisation of a never-relaxed start


def _max_force(atoms: Atoms) -> float:
    """Largest force on an atom, eV/Å (NaN when a force is not finite)."""
    return float(np.max(np.linalg.norm(atoms.get_forces(), axis=1)))


def minimise_reason(atoms: Atoms, settings: MDSettings) -> str | None:
    """Why the starting structure is minimised before dynamics, or None when it is not
    (the rule: `MDSettings.minimise` and the module docstring)."""
    if settings.minimise is not None:
        return "asked for" if settings.minimise else None
    if PACKED_INFO in atoms.info:
        return "a packed box that was never relaxed"
    return None


def _minimise(atoms: Atoms, settings: MDSettings, why: str, model_id: str | None) -> dict:
    """Relax the positions of `atoms` in place (cell fixed) with ASE's FIRE on its own
    calculator, to MINIMISE_FMAX_EV_PER_A or MINIMISE_MAX_STEPS steps; the record for
    ``md.json`` (steps, max force before/after in eV/Å). MDBlowUp if the calculator's
    output turns non-finite or a covalent bond breaks on the way (a learned model can pull
    atoms apart where it has no data)."""
    from ase.optimize import FIRE

    geometry = covalent_geometry(atoms) if settings.max_bond_stretch else None
    before = _max_force(atoms)
    optimizer = FIRE(atoms, logfile=None)
    converged = bool(optimizer.run(fmax=MINIMISE_FMAX_EV_PER_A, steps=MINIMISE_MAX_STEPS))
    after = _max_force(atoms)
    if not np.isfinite(after) or not np.isfinite(atoms.get_potential_energy()):
        raise MDBlowUp(f"minimising the starting structure ({why}) gave a non-finite energy "
                       f"or force after {optimizer.nsteps} steps. "
                       f"{_blow_up_cause(atoms.calc, model_id)}.")
    broken = geometry is not None and _broken_bond(atoms, geometry,
                                                   settings.max_bond_stretch)
    if broken:
        raise MDBlowUp(f"minimising the starting structure ({why}): {broken}. "
                       f"{_blow_up_cause(atoms.calc, model_id)}.")
    return {"reason": why, "optimizer": "FIRE", "steps": int(optimizer.nsteps),
            "converged": converged, "max_force_before_eV_per_A": before,
            "max_force_after_eV_per_A": after}


def _describe_minimisation(record: dict) -> str:
    """One line for the console: why, steps, and max force before → after."""
    line = (f"minimised the starting structure ({record['reason']}): {record['steps']} "
            f"{record['optimizer']} steps, max force {record['max_force_before_eV_per_A']:.3g}"
            f" → {record['max_force_after_eV_per_A']:.3g} eV/Å")
    if not record["converged"]:
        line += (f" (not yet {MINIMISE_FMAX_EV_PER_A:g} eV/Å after {MINIMISE_MAX_STEPS} "
                 "steps; the dynamics starts from there)")
    return line


def _blow_up_cause(calc, model_id: str | None) -> str:
    """What a blow-up means with `calc` driving the dynamics, and what to try."""
    # the classical teacher (OpenMM's force field) is defined everywhere: it has no
    # training region to leave, so a blow-up is the integrator diverging (checked by
    # module to avoid importing OpenMM here)
    if type(calc).__module__.startswith("ionmix.teachers."):
        return ("With the classical force field this means the integration diverged (the "
                "force field has no training region to leave): try a smaller time step "
                "(--timestep-fs), or minimise (--minimise) and equilibrate the starting "
                "structure first")
    if model_id is not None:  # a learned model (ionmix.models.load_model)
        return "The model left the region it can describe"
    return (f"The dynamics with {_describe(calc)} diverged: a time step too large, a "
            "starting structure that was never relaxed, or a calculator outside its range")


def _thermalize(atoms: Atoms, settings: MDSettings) -> None:
    """Maxwell–Boltzmann momenta at the target temperature, without net drift (seeded)."""
    from ase.md import velocitydistribution as vd

    rng = np.random.default_rng(settings.seed)
    if hasattr(vd, "thermalize_momenta"):  # ASE ≥ 3.29; the older name is deprecated
        vd.thermalize_momenta(atoms, settings.temperature_K, rng=rng)
    else:  # pragma: no cover - ASE < 3.29
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=settings.temperature_K,
                                        rng=rng)
    vd.Stationary(atoms)


def _open_run(out: Path, atoms: Atoms, calc, settings: MDSettings,
              checkpoint: dict | None, start: dict, model_id: str | None,
              model_teachers: Mapping[str, dict | None] | None = None) -> _Run:
    """Make the integrator, set the output files to the checkpoint (or start them afresh),
    record the run as ``running`` in ``md.json`` (with `start`: the starting structure's
    sha256 and its minimisation) and open the files for appending."""
    dyn = _make_dynamics(atoms, settings)
    thermo_path, traj_path = out / "thermo.csv", out / "trajectory.extxyz"
    if checkpoint is not None:
        _restore_integrator(dyn, checkpoint["integrator"])
        first = int(checkpoint["step"])
        volume0 = float(checkpoint["volume0_A3"])
        # drop what was written after the checkpoint; it is recomputed identically
        for path, key in ((thermo_path, "thermo_bytes"), (traj_path, "trajectory_bytes")):
            with open(path, "r+b") as fh:
                fh.truncate(int(checkpoint[key]))
    else:
        first = 0
        volume0 = atoms.get_volume() if atoms.cell.rank == 3 else float("nan")
        thermo_path.write_text(",".join(THERMO_COLUMNS) + "\n")
        traj_path.write_bytes(b"")
    meta = {"settings": settings.model_dump(), "calculator": _describe(calc, model_id),
            "model_id": model_id,
            "model_teachers": None if model_teachers is None else dict(model_teachers),
            "n_atoms": len(atoms), "formula": atoms.get_chemical_formula(),
            "mass_amu": float(atoms.get_masses().sum()), **start, "status": "running",
            "steps_done": first, "resumed_from_step": first, "runtime": _runtime()}
    atomic_write_json(out / "md.json", meta)
    return _Run(out, atoms, dyn, settings, meta, first, volume0)


def _runtime() -> dict:
    """The thread settings this call runs with (`ionmix.runtime.record`; not compared on
    a restart)."""
    from ionmix.runtime import record

    return record()


class _Run:
    """An MD run in progress: its integrator, open ``thermo.csv``/``trajectory.extxyz`` and
    ``md.json`` record. `start` is the step it (re)started from; `volume0` (Å³, NaN without
    a 3-D cell) the volume the blow-up check compares to."""

    def __init__(self, out: Path, atoms: Atoms, dyn, settings: MDSettings, meta: dict,
                 start: int, volume0: float):
        self.out, self.atoms, self.dyn, self.settings = out, atoms, dyn, settings
        self.meta, self.start, self.volume0 = meta, start, volume0
        self.geometry = covalent_geometry(atoms) if settings.max_bond_stretch else None
        self.mass_amu = float(meta["mass_amu"])
        self.thermo_path, self.traj_path = out / "thermo.csv", out / "trajectory.extxyz"
        self.thermo = open(self.thermo_path, "a", encoding="utf-8")
        self.traj = open(self.traj_path, "a", encoding="utf-8")

    def close(self) -> None:
        self.thermo.close()
        self.traj.close()

    def integrate(self, progress: Progress | None) -> None:
        """Steps ``start + 1 … n_steps``, logging and checkpointing at their intervals."""
        s = self.settings
        for step in range(self.start + 1, s.n_steps + 1):
            self._step(step)
            if not np.isfinite(self.atoms.calc.results.get("energy", 0.0)):
                self.record(step)  # names the quantity and keeps the failing frame
            if step % s.log_interval_steps == 0:
                self.record(step)
                if progress is not None:
                    progress(step, s.n_steps, self.out.name)
        if s.n_steps % s.trajectory_interval_steps and s.n_steps > self.start:
            self._write_last_frame()
        if progress is not None:
            progress(s.n_steps, s.n_steps, self.out.name)

    def _step(self, step: int) -> None:
        try:
            self.dyn.step()
        except Exception as exc:
            # a blown-up state often makes the calculator itself fail (NaN coordinates,
            # atoms on top of each other); report that as a blow-up, not a crash
            if np.all(np.isfinite(self.atoms.get_positions())) and np.all(
                    np.isfinite(self.atoms.get_momenta())):
                raise
            self._blow_up(step, f"non-finite positions or momenta "
                                f"({type(exc).__name__}: {exc})")

    def record(self, step: int) -> None:
        """Log a thermo row (stopping on a blow-up) and, at trajectory steps, a frame and
        a checkpoint."""
        row = _observables(self.dyn, self.atoms, self.mass_amu, step,
                           self.settings.timestep_fs)
        why = _out_of_bounds(row, self.settings, self.volume0) or (
            self.geometry is not None
            and _broken_bond(self.atoms, self.geometry, self.settings.max_bond_stretch))
        if why:
            self._blow_up(step, why)
        self.thermo.write(_format_row(row))
        if step % self.settings.trajectory_interval_steps == 0:
            self._write_frame(step)

    def _write_last_frame(self) -> None:
        # the last step always ends up in the trajectory and the checkpoint
        s = self.settings
        if s.n_steps % s.log_interval_steps:
            row = _observables(self.dyn, self.atoms, self.mass_amu, s.n_steps, s.timestep_fs)
            self.thermo.write(_format_row(row))
        self._write_frame(s.n_steps)

    def _write_frame(self, step: int) -> None:
        import ase.io

        time_ps = step * self.settings.timestep_fs / 1000.0
        ase.io.write(self.traj, _snapshot(self.atoms, step, time_ps), format="extxyz")
        self._save_checkpoint(step)

    def _save_checkpoint(self, step: int) -> None:
        self.thermo.flush()
        self.traj.flush()
        os.fsync(self.traj.fileno())
        atoms = self.atoms
        atomic_write_json(self.out / "checkpoint.json", {
            "step": step, "volume0_A3": self.volume0,
            "thermo_bytes": self.thermo.tell(), "trajectory_bytes": self.traj.tell(),
            "atoms": {"positions": atoms.get_positions().tolist(),
                      "momenta": atoms.get_momenta().tolist(),
                      "cell": atoms.cell.array.tolist()},
            "integrator": _integrator_state(self.dyn)})

    def _blow_up(self, step: int, why: str) -> None:
        import ase.io

        time_ps = step * self.settings.timestep_fs / 1000.0
        try:
            ase.io.write(self.out / "blowup.extxyz", _snapshot(self.atoms, step, time_ps),
                         format="extxyz")
        except Exception:  # noqa: BLE001 - the diagnosis file is best effort
            pass
        self.meta.update(status="blew_up", steps_done=step, reason=why)
        atomic_write_json(self.out / "md.json", self.meta)
        raise MDBlowUp(
            f"MD stopped at step {step} ({time_ps:.4g} ps): {why}. "
            f"{_blow_up_cause(self.atoms.calc, self.meta['model_id'])}. Data up to the last "
            "checkpoint is kept in "
            f"{self.out}; the failing structure is in blowup.extxyz")

    def finish(self, wall: float) -> MDResult:
        """Record the finished run and its throughput (`wall` in s) in ``md.json``."""
        s, start = self.settings, self.start
        n_done = max(s.n_steps - start, 0)
        self.meta.update(
            status="done", steps_done=s.n_steps, wall_s=wall,
            steps_per_s=n_done / wall if wall > 0 else None,
            atom_steps_per_s=n_done * len(self.atoms) / wall if wall > 0 else None,
            ns_per_day=(n_done * s.timestep_fs * 1e-6) / (wall / 86400.0) if wall > 0 else None)
        atomic_write_json(self.out / "md.json", self.meta)
        return MDResult(self.out, s.n_steps, start, wall,
                        n_done / wall if wall > 0 else float("nan"), self.thermo_path,
                        self.traj_path, self.meta.get("minimisation"))


def read_thermo(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``thermo.csv`` as column arrays (blank cells become NaN)."""
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    return {c: np.array([float(r[c]) if r[c] != "" else np.nan for r in rows])
            for c in THERMO_COLUMNS}
