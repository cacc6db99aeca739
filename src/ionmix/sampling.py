"""Classical sampling: packed box → minimise → NPT equilibration → production snapshots.

One *run* is one independent box (a replica) at one composition. Its snapshots are labelled
by the classical force field itself (the teacher: energy eV, forces eV/Å, stress eV/Å³ from
:class:`ionmix.teachers.classical.ClassicalCalculator`) and stored in the dataset store with their
metadata. Replica 0 is for training/validation, replica 1 for testing, as in the paper.

Protocol (defaults from the paper where it gives them; `SamplingConfig` documents each):

1. Packmol box at `initial_density_g_cm3` (kept whole, deterministic per seed).
2. Energy minimisation (OpenMM L-BFGS).
3. NPT equilibration: Langevin-middle thermostat + Monte Carlo barostat at
   `temperature_K`, `pressure_bar`, for at least `equilibration_ps` and until the density
   has plateaued (`stats.plateau_check`: the detected transient ends in the first half and
   the rest has no drift), at most `max_equilibration_ps` (default 5 × the minimum; if
   reached, a warning goes to the log, ``equilibration.json`` and `RunResult`). The box is
   then set to the mean volume of the settled part (molecule centres scaled, molecules
   kept rigid), so production starts at the equilibrium density rather than at one
   fluctuation of it.
4. Production: NVT with a Nosé–Hoover thermostat (default; the paper's protocol) or NPT
   (Langevin + barostat), a snapshot every `snapshot_interval_ps`.

Resumable: after each snapshot is stored, an OpenMM checkpoint and `progress.json` are
written atomically in the run folder. A restarted run loads the checkpoint and continues;
a snapshot already in the store (e.g. stored just before an interruption) is skipped, so
no snapshot is duplicated or lost.

The LJ/real-space cutoff is one value for the whole study, so the teacher is the same
energy function at every composition: by default min(12 Å, 0.49 × the smallest box edge
the study can reach), where the smallest edge is estimated at `max_density_g_cm3`
(default 2.6 g/cm³: salt-rich boxes such as pure Li[PF6] at 0.8 charges densify well
beyond the ionic liquid's 1.3–1.4 g/cm³). The settings that define the teacher and the
protocol are recorded in ``sample-config.json``; rerunning into the same folder with
different ones is refused, so one dataset never mixes two teachers.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
import openmm
import openmm.unit as u
from ase import Atoms

from ionmix import design
from ionmix.build import box_length_A, build_box
from ionmix.chemistry import load_ion, load_user_ion
from ionmix.chemistry.ionset import IonSet
from ionmix.chemistry.topology import (
    ION_NAME_ARRAY,
    MOL_ID_ARRAY,
    MOLECULES_INFO,
    encode_runs,
    molecules_of,
    rescale_molecules,
)
from ionmix.config import ConfigError, SampleConfig
from ionmix.dataset import DatasetStore, atomic_write_extxyz, composition_key
from ionmix.files import atomic_write_bytes, atomic_write_json
from ionmix.resume import check_same_settings
from ionmix.teachers import TeacherSpec, make_teacher, teacher_spec
from ionmix.teachers.classical import make_system_for_atoms, repartition_hydrogen_mass
from ionmix.teachers.classical.openmm_md import (
    OpenMMRunError,
    box_A,
    npt_context,
    nvt_context,
    positions_A,
    run_steps,
    settle_npt,
)
from ionmix.teachers.classical.system import MAX_DEFAULT_CUTOFF_A, ClassicalSystem
from ionmix.units import NM_IN_ANGSTROM, density_g_per_cm3

logger = logging.getLogger(__name__)


class SamplingError(OpenMMRunError):
    """A run could not continue (e.g. its box collapsed below twice the cutoff)."""


@dataclass(frozen=True)
class Run:
    """One independent box at one composition.

    Attributes:
        composition: unit → mole fraction.
        replica: 0 (train/val) or 1 (test), ...
        seed: packing/velocity/thermostat seed derived from the config seed and run_id.
        counts: ion name → number of ions (canonical library names, in unit order).
        run_id: stable, file-system-safe identifier (also the run folder's name).
    """

    composition: dict[str, float]
    replica: int
    seed: int
    counts: dict[str, int]
    run_id: str


@dataclass(frozen=True)
class SamplePlan:
    """Everything `ionmix sample` will do, resolved from a config before any work."""

    mixture: design.Mixture
    runs: list[Run]
    cutoff_A: float
    ions: IonSet
    teacher: TeacherSpec


def _run_id(composition: dict[str, float], temperature_K: float, replica: int) -> str:
    comp = "_".join(f"{u}-{x:.6g}" for u, x in composition.items())
    return f"{comp}_T{temperature_K:g}K_r{replica}"


def resolve_mixture(cfg: SampleConfig) -> tuple[design.Mixture, IonSet]:
    """Mixture over canonical ion names (charges from the ions) and the study's ion set."""
    user = {}
    for name, spec in cfg.mixture.user_ions.items():
        ion = load_user_ion(spec.itp, spec.coordinates, name=name)
        user[ion.name] = ion
    charges: dict[str, int] = {}
    units: dict[str, dict[str, int]] = {}
    for unit, content in cfg.mixture.units.items():
        units[unit] = {}
        for name, count in content.items():
            ion = load_ion(name, user)
            charges[ion.name] = ion.charge
            units[unit][ion.name] = units[unit].get(ion.name, 0) + count
    mixture = design.Mixture.from_dicts(charges, units)
    ions = IonSet({name: load_ion(name, user) for name in mixture.species})
    return mixture, ions


def plan_sampling(cfg: SampleConfig) -> SamplePlan:
    """Resolve compositions, counts, seeds and the study-wide cutoff (errors before work)."""
    mixture, ions = resolve_mixture(cfg)
    s = cfg.sampling
    runs = []
    smallest_edge_A = np.inf
    for comp in cfg.mixture.composition_list(mixture):
        n_units = cfg.mixture.n_units_for(mixture, comp)
        counts = mixture.species_counts(comp, n_units)
        counts = {k: v for k, v in counts.items() if v > 0}
        smallest_edge_A = min(smallest_edge_A,
                              box_length_A(counts, s.max_density_g_cm3, ions))
        for replica in range(s.replicas):
            run_id = _run_id(comp, s.temperature_K, replica)
            seed = (s.seed * 1_000_003 + zlib.crc32(run_id.encode())) % (2**31 - 1)
            runs.append(Run(comp, replica, seed, counts, run_id))
    max_cutoff = 0.49 * smallest_edge_A
    if s.cutoff_A is None:
        cutoff = min(MAX_DEFAULT_CUTOFF_A, max_cutoff)
    else:
        cutoff = s.cutoff_A
        if cutoff > max_cutoff:
            raise ConfigError(
                f"[sampling] cutoff_A = {cutoff} Å is longer than half the smallest box the "
                f"study can reach ({smallest_edge_A:.2f} Å edge at {s.max_density_g_cm3} g/cm³); "
                "use more ion pairs or a cutoff ≤ "
                f"{max_cutoff:.2f} Å"
            )
    return SamplePlan(mixture, runs, float(cutoff), ions,
                      _resolve_teacher(cfg, float(cutoff), ions))


def _resolve_teacher(cfg: SampleConfig, cutoff_A: float, ions: IonSet) -> TeacherSpec:
    """The study's teacher spec, with the mixture's charge scale, the study-wide cutoff and
    the ion set filled in (the classical labels depend on all three)."""
    raw = dict(cfg.teacher)
    if raw.get("kind", "classical") != "classical":
        raise ConfigError(f"[teacher] kind = {raw.get('kind')!r}: the sampler's MD and labels "
                          "use the classical force field; label its frames with another "
                          "teacher afterwards")
    given = raw.get("charge_scale")
    if given is not None and given != cfg.mixture.charge_scale:
        raise ConfigError(f"[teacher] charge_scale = {given} disagrees with [mixture] "
                          f"charge_scale = {cfg.mixture.charge_scale}; give it once")
    return teacher_spec({"kind": "classical", **raw}, "[teacher]",
                        charge_scale=cfg.mixture.charge_scale, cutoff_A=cutoff_A,
                        ion_set=ions.key)


# --------------------------------------------------------------------------------------
# file helpers


def _platform(name: str) -> openmm.Platform | None:
    return None if name == "auto" else openmm.Platform.getPlatformByName(name)


# --------------------------------------------------------------------------------------
# one run


def _equilibrate(csys: ClassicalSystem, atoms: Atoms, run: Run, cfg: SampleConfig,
                 platform: openmm.Platform | None, log: list[dict]) -> tuple[np.ndarray,
                                                                           np.ndarray, dict]:
    """Minimise and NPT-equilibrate until the density has plateaued (at least
    `equilibration_ps`, at most `equilibration_limit_ps`); return (positions Å, cubic cell
    Å) at the mean volume of the settled part, and the outcome (`openmm_md.settle_npt`
    without the series, plus ``warning``: None, or why the box may not have settled)."""
    s = cfg.sampling
    ctx = npt_context(csys, s.temperature_K, s.pressure_bar, s.timestep_fs,
                      s.thermostat_time_ps, s.barostat_interval_steps, run.seed, platform)
    ctx.setPositions(atoms.positions / NM_IN_ANGSTROM)
    if cfg.sampling.minimise:
        openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, 2000)
    ctx.setVelocitiesToTemperature(s.temperature_K * u.kelvin, run.seed)
    mass_amu = float(np.sum(csys.masses_amu))
    settle = settle_npt(ctx, mass_amu, s.equilibration_ps, s.equilibration_limit_ps,
                        s.timestep_fs, f"run {run.run_id}", _collapse_hint(csys),
                        SamplingError, on_sample=lambda row: log.append(
                            {"stage": "npt-equilibration", **row}))
    settle.pop("volumes_A3")
    settle["warning"] = None
    if not settle["settled"]:
        settle["warning"] = (
            f"run {run.run_id}: the NPT density had not plateaued after "
            f"{settle['time_ps']:g} ps (drift {settle['drift_sigma'] or 0:.1f} σ between the "
            f"halves of its last part); production starts from the mean volume after "
            f"{settle['settled_from_ps']:g} ps. Raise [sampling] max_equilibration_ps")
        logger.warning(settle["warning"])
    state = ctx.getState(getPositions=True)
    positions = positions_A(state)
    box = box_A(state)
    if settle["volume_A3"] is not None:
        factor = (settle["volume_A3"] / np.linalg.det(box)) ** (1.0 / 3.0)
        positions = rescale_molecules(positions, atoms.arrays[MOL_ID_ARRAY],
                                       np.asarray(csys.masses_amu), factor)
        box = box * factor
    return positions, box, settle


def _collapse_hint(csys: ClassicalSystem) -> str:
    return (f"Cutoff {csys.cutoff_A:.2f} Å: if the box got denser than [sampling] "
            "max_density_g_cm3 allows for this cutoff, raise max_density_g_cm3 (shorter "
            "default cutoff), set a shorter cutoff_A, or use more ion pairs")


def _step(ctx: openmm.Context, n_steps: int, run: Run, csys: ClassicalSystem) -> None:
    """Integrate, turning OpenMM's box/NaN failures into an error that names the run."""
    run_steps(ctx, n_steps, f"run {run.run_id}", _collapse_hint(csys), SamplingError)


def _production_context(csys: ClassicalSystem, run: Run, cfg: SampleConfig,
                        platform: openmm.Platform | None) -> openmm.Context:
    s = cfg.sampling
    if s.production_ensemble == "nvt":
        return nvt_context(csys, s.temperature_K, s.timestep_fs, s.thermostat_time_ps,
                           run.seed + 1, platform)
    return npt_context(csys, s.temperature_K, s.pressure_bar, s.timestep_fs,
                       s.thermostat_time_ps, s.barostat_interval_steps, run.seed + 1, platform)


@dataclass(frozen=True)
class RunResult:
    """What one run produced: stored snapshot indices and where its files are."""

    run_id: str
    run_dir: Path
    n_frames: int
    resumed_from: int
    mean_density_g_cm3: float | None
    #: None, or why the run's box may not have settled before production
    equilibration_warning: str | None = None


def sample_run(run: Run, cfg: SampleConfig, plan: SamplePlan, out_dir: Path,
               store: DatasetStore,
               on_snapshot: Callable[[Run, int], None] | None = None) -> RunResult:
    """Sample one run into `store`, resuming from its checkpoint if one exists.

    Args:
        run: the run (from `plan_sampling`).
        cfg: the sampling config.
        plan: the resolved plan (cutoff, ions).
        out_dir: study folder; the run's files go to ``out_dir/sample/<run_id>/``.
        store: where labelled snapshots go.
        on_snapshot: called as ``on_snapshot(run, frame_index)`` after each stored frame
            (progress bars; an exception raised there interrupts the run cleanly).
    """
    s = cfg.sampling
    run_dir = Path(out_dir) / "sample" / run.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    progress_path = run_dir / "progress.json"
    checkpoint_path = run_dir / "production.chk"
    n_frames = s.n_snapshots
    progress = json.loads(progress_path.read_text()) if progress_path.exists() else {}
    if progress.get("next_frame", 0) >= n_frames and store.count(run_id=run.run_id) \
            >= n_frames:
        return RunResult(run.run_id, run_dir, n_frames, n_frames,
                         _stored_mean_density_g_cm3(store, run.run_id),
                         _equilibration_warning(run_dir))
    platform = _platform(s.platform)

    packed_path = run_dir / "packed.extxyz"
    if packed_path.exists():
        atoms = ase.io.read(packed_path)
    else:
        atoms = build_box(run.counts, density_g_cm3=s.initial_density_g_cm3, seed=run.seed,
                          ions=plan.ions)
        atomic_write_extxyz([atoms], packed_path)

    csys = make_system_for_atoms(atoms, charge_scale=cfg.mixture.charge_scale,
                                 cutoff_A=plan.cutoff_A, ions=plan.ions)
    if s.hydrogen_mass_amu is not None:
        # the MD's masses only: labels and densities use csys.masses_amu (physical)
        repartition_hydrogen_mass(csys.system, csys.elements, s.hydrogen_mass_amu)
    ctx = _production_context(csys, run, cfg, platform)
    resumed_from = 0
    log: list[dict] = []
    if checkpoint_path.exists() and progress.get("next_frame") is not None:
        ctx.loadCheckpoint(checkpoint_path.read_bytes())
        resumed_from = int(progress["next_frame"])
    else:
        positions, box, settle = _equilibrate(csys, atoms, run, cfg, platform, log)
        atomic_write_json(run_dir / "equilibration.json", settle)
        ctx.setPeriodicBoxVectors(*(openmm.Vec3(*row) for row in box / NM_IN_ANGSTROM))
        ctx.setPositions(positions / NM_IN_ANGSTROM)
        ctx.setVelocitiesToTemperature(s.temperature_K * u.kelvin, run.seed + 2)
        atomic_write_bytes(checkpoint_path, ctx.createCheckpoint())
        progress = {"next_frame": 0, "n_frames": n_frames}
        atomic_write_json(progress_path, progress)
        _write_log(run_dir / "equilibration.csv", log)

    teacher = make_teacher(plan.teacher, plan.ions,
                           platform=None if s.platform == "auto" else s.platform
                           ).calculator(atoms)
    steps_per_snapshot = int(round(s.snapshot_interval_ps * 1000.0 / s.timestep_fs))
    for k in range(resumed_from, n_frames):
        _step(ctx, steps_per_snapshot, run, csys)
        state = ctx.getState(getPositions=True, enforcePeriodicBox=False)
        frame = Atoms(atoms.get_chemical_symbols(), positions=positions_A(state),
                      cell=box_A(state), pbc=True)
        frame.arrays[MOL_ID_ARRAY] = atoms.arrays[MOL_ID_ARRAY]
        frame.arrays[ION_NAME_ARRAY] = atoms.arrays[ION_NAME_ARRAY]
        frame.info[MOLECULES_INFO] = encode_runs(molecules_of(atoms))
        frame.calc = teacher
        frame.get_potential_energy()
        frame.get_forces()
        frame.get_stress()
        meta = {"run_id": run.run_id, "frame_index": k,
                "composition": composition_key(run.composition),
                "temperature_K": s.temperature_K,
                "pressure_bar": s.pressure_bar if s.production_ensemble == "npt" else None,
                "replica": run.replica, "seed": run.seed,
                "time_ps": (k + 1) * s.snapshot_interval_ps, "teacher": plan.teacher.key,
                "task": "md", "ion_set": plan.ions.key,
                "charge_scale": cfg.mixture.charge_scale, "cutoff_A": plan.cutoff_A,
                "ensemble": s.production_ensemble}
        store.add_frames([frame], [meta], counts=run.counts, skip_existing=True)
        atomic_write_bytes(checkpoint_path, ctx.createCheckpoint())
        progress = {"next_frame": k + 1, "n_frames": n_frames}
        atomic_write_json(progress_path, progress)
        if on_snapshot is not None:
            on_snapshot(run, k)
    return RunResult(run.run_id, run_dir, n_frames, resumed_from,
                     _stored_mean_density_g_cm3(store, run.run_id),
                     _equilibration_warning(run_dir))


def _stored_mean_density_g_cm3(store: DatasetStore, run_id: str) -> float | None:
    """Mean density (g/cm³) over every stored snapshot of the run, those of earlier,
    interrupted calls included (was: a resumed run reported its last snapshot's density
    as the mean); None where none is stored."""
    frames = store.select(run_id=run_id, task="md")
    if not frames:
        return None
    return float(np.mean([density_g_per_cm3(float(f.atoms.get_masses().sum()),
                                             f.atoms.get_volume()) for f in frames]))


def _equilibration_warning(run_dir: Path) -> str | None:
    path = run_dir / "equilibration.json"
    return json.loads(path.read_text()).get("warning") if path.exists() else None


def _write_log(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(rows[0])
    text = ",".join(keys) + "\n" + "".join(
        ",".join(str(r[k]) for k in keys) + "\n" for r in rows)
    atomic_write_bytes(path, text.encode())


#: Settings that define the teacher or the protocol: they may not change within a folder.
#: (Compositions may be added: that extends a study.)
_FIXED_SETTINGS = ("sampling", "resolved_cutoff_A", "mixture.charge_scale", "mixture.units",
                   "mixture.n_ion_pairs", "mixture.n_ions", "mixture.user_ions", "teacher_key")


def _check_same_teacher(path: Path, record: dict) -> None:
    """Refuse to add frames of another teacher or protocol to ``path.parent`` (ConfigError)."""
    old = json.loads(path.read_text()) if path.exists() else None
    # recorded_only: a folder written before a setting existed (teacher_key,
    # max_equilibration_ps) was sampled with that setting's default; it may be resumed
    check_same_settings(
        old, record, error=ConfigError, fixed=_FIXED_SETTINGS, recorded_only=True,
        what=f"{path.parent} was sampled with other settings",
        advice="one dataset must not mix teachers or protocols: use a new --out folder, or "
               "set the old values")


def sample(cfg: SampleConfig, out_dir: str | Path, dataset: str | None = None,
           on_snapshot: Callable[[Run, int], None] | None = None,
           only: Callable[[Run], bool] | None = None) -> list[RunResult]:
    """Sample every run of `cfg` (compositions × replicas) into one dataset store.

    Args:
        cfg: validated sampling config.
        out_dir: study folder (created).
        dataset: ASE database URL or path; default ``out_dir/frames.db``.
        on_snapshot: progress callback, see `sample_run`.
        only: optional filter selecting which runs to do.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_sampling(cfg)
    record = {**cfg.model_dump(mode="json"), "resolved_cutoff_A": plan.cutoff_A,
              "teacher_key": plan.teacher.key}
    _check_same_teacher(out_dir / "sample-config.json", record)
    from ionmix.runtime import SAMPLING_WORKER_ENV
    from ionmix.runtime import record as runtime_record

    # what the workers ran with (not compared on resume: the results do not depend on it)
    record["runtime"] = {**runtime_record(), "workers": SAMPLING_WORKER_ENV}
    atomic_write_json(out_dir / "sample-config.json", record)
    store = DatasetStore(dataset or out_dir / "frames.db")
    store.register(plan.teacher, plan.ions)
    runs = [run for run in plan.runs if only is None or only(run)]
    return _side_by_side(runs, cfg, plan, out_dir, store, on_snapshot)


#: Seconds between the client's looks at the store for new snapshots (progress).
_POLL_S = 1.0


def _side_by_side(runs: list[Run], cfg: SampleConfig, plan: SamplePlan, out_dir: Path,
                  store: DatasetStore, on_snapshot) -> list[RunResult]:
    """Every run as a Dask task on a LocalCluster of single-threaded workers (one per
    core, at most one per run), each writing its snapshots to the store (SQLite takes
    one writer at a time; a snapshot is one short transaction). `on_snapshot` is called
    here, in the caller's process, for every snapshot a worker stored."""
    from dask.distributed import wait

    from ionmix.cluster import ClusterConfig, dask_client
    from ionmix.runtime import SAMPLING_WORKER_ENV  # one OpenMM thread per run

    if not runs:
        return []
    workers = max(1, min(len(runs), os.cpu_count() or 1))
    seen = {run.run_id: store.count(run_id=run.run_id) for run in runs}
    with dask_client(ClusterConfig(workers=workers), env=SAMPLING_WORKER_ENV) as client:
        futures = [client.submit(_sample_task, run, cfg, plan, str(out_dir), store.url,
                                 key=f"sample-{run.run_id}", pure=False) for run in runs]
        while True:
            # the runs still going (a finished one would end every wait at once: a busy loop)
            pending = [f for f in futures if not f.done()]
            try:
                wait(pending, timeout=_POLL_S, return_when="FIRST_COMPLETED")
            except TimeoutError:  # the poll interval passed: report progress, wait again
                pass
            _report_snapshots(runs, store, seen, on_snapshot)
            failed = [f for f in futures if f.status == "error"]
            if failed:
                failed[0].result()  # raises the worker's error here
            if all(f.done() for f in futures):
                return [f.result() for f in futures]


def _sample_task(run: Run, cfg: SampleConfig, plan: SamplePlan, out_dir: str,
                 store_url: str) -> RunResult:
    """`sample_run` in a Dask worker (its own connection to the store)."""
    return sample_run(run, cfg, plan, Path(out_dir), DatasetStore(store_url))


def _report_snapshots(runs: list[Run], store: DatasetStore, seen: dict[str, int],
                      on_snapshot) -> None:
    """Call `on_snapshot(run, k)` for every snapshot stored since the last look (`seen`:
    snapshots per run at that look). Counts only: a run stores its snapshots in order, and
    counting is ~50× cheaper than reading the rows (which took most of a core every second
    with 18 runs)."""
    for run in runs:
        stored = store.count(run_id=run.run_id)
        for k in range(seen[run.run_id], stored):
            if on_snapshot is not None:
                on_snapshot(run, k)
        seen[run.run_id] = max(seen[run.run_id], stored)
