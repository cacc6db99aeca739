"""`ionmix learn`: generations of train → explore → select → label → retrain.

Generation g (folder ``gen-<g>/``):

1. **data**: training frames = the initial frames (classical sampling, `n_train` per
   composition from replica 0) plus every frame labelled by earlier generations; validation
   from replica 0, test from replica 1 (the independent box).
2. **committee**: K models with different seeds, trained as Dask tasks.
3. **explore**: the walkers (`ionmix.active.explore`) with the committee.
4. **select**: trust window on the max force deviation, farthest-point thinning, capped
   (frames above the window's top too when the teacher is cheap: `label_above_hi`); each
   chosen frame with the reason it was chosen.
5. **label**: the study's teacher labels the selection (labelling stage: resumable, failures
   recorded); the frames go to the store with task ``active-learning``, their generation
   and walker.
6. **summary**: ``summary.json`` (frames added, committee test MAEs, accurate/candidate/
   failed shares, block-averaged density per NPT walker with its error and its comparison
   with the previous generation's, walker stop reasons, the teacher's largest force on
   the labelled frames by why they were selected).

Every step leaves its result on disk and is skipped when found: a killed run resumes at
the step it was in (half-trained models resume training; a half-labelled selection labels
only what is missing). The loop stops when the accurate share reaches
`converged_accurate_share` (dpgen: 0.9) *and* every NPT walker's block-averaged density
agrees with the previous generation's within 2 combined standard errors (a walker too short
for 2 blocks is no evidence), or when `max_generations` is spent; `report.md`'s "Stopped:"
line says which, with the densities and errors compared.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ase.io
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ionmix.active.explore import WalkerSpec, read_candidates, run_walker, start_indices
from ionmix.active.select import TrustWindow, select
from ionmix.cluster import dask_client
from ionmix.config import StudyTables
from ionmix.dataset import (
    DatasetStore,
    atomic_write_extxyz,
    composition_key,
    split_by_replica,
    split_counts,
)
from ionmix.errors import InputError
from ionmix.files import atomic_write_json
from ionmix.models.baseline import BaselineName


class LearnSettings(BaseModel):
    """The ``[learn]`` table (units in names; defaults and why in docs/active-learning.md).

    Attributes:
        committee: models per generation (≥ 2; 4 by default, as dpgen).
        preset, overrides: training preset (with stress, for NPT) and nequip overrides.
        baseline: the physics under the networks (`ionmix.models.baseline`): none,
            coulomb, zbl, coulomb+zbl, wall, coulomb+wall, bonded, coulomb+bonded,
            coulomb+wall+bonded or coulomb+wall+bonded+tail (the default: docs/benchmarks.md
            "Baselines", "What moves whole molecules" and "What a 4.5-Å network cannot
            see"); each frame's baseline labels are computed once
            (``OUT/baseline-cache.sqlite``) for every member and generation.
        fine_tune_epochs: None: every generation trains from random weights; N: after
            the first, model k fine-tunes from the previous generation's model k for N
            epochs (on all the data so far). The one training setting a rerun may
            change; it applies from the next generation not yet trained.
        fine_tune_overrides: nequip overrides for the fine-tuning generations only, on
            top of ``overrides`` (needs fine_tune_epochs): e.g. a per-atom energy weighted
            1000:1 with the forces, MACE's second (SWA) stage, after a first generation
            trained from random weights on the preset's balance (docs/active-learning.md).
        n_train, n_val, n_test: initial frames per composition (replicas 0, 0, 1).
        max_generations: generation budget.
        trust_lo_eV_per_A, trust_hi_eV_per_A: trust window on the max force deviation;
            None: set from the committee itself, generation by generation: lo = the 95th
            percentile of its max force deviation on its own test frames (frames it is
            known to describe), hi = 3 × lo.
        max_new_frames: selection cap per generation.
        label_above_hi: frames above hi are selectable too (still thinned and capped):
            true, false or "auto" (true for the cheap teachers, `CHEAP_TEACHERS`).
        converged_accurate_share: stop when this share of explored frames is accurate
            and every NPT walker's block-averaged density agrees with the previous
            generation's (`compare_densities`).
        density_window_fraction: NPT walkers stop when ρ leaves ρ₀ × (1 ± this), ρ₀ the
            mean density of the initial training frames: the classical sampler's, which
            is the teacher's own only for the classical teacher (another teacher's
            liquid may need a wider window to reach its density).
        explore: the walkers.
        compiled_walkers: the MD walkers evaluate the members' AOTInductor-compiled forms
            (`ionmix.models.network.compiled_network`): compiled once per member before a
            generation's walkers start (0.5-4 min each on CPU) and kept beside its
            package; ~1.4-1.6x faster walker steps on CPU (docs/benchmarks.md, "A compiled
            network"). The same functions to ~3e-7 eV. May change between runs; a
            generation keeps the form its exploration began with (`_walker_form`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    committee: int = Field(4, ge=2)
    preset: str = "cpu-tiny-allegro-npt"
    baseline: BaselineName = "coulomb+wall+bonded+tail"
    overrides: dict[str, Any] = Field(default_factory=dict)
    fine_tune_epochs: int | None = Field(None, ge=1)
    fine_tune_overrides: dict[str, Any] = Field(default_factory=dict)
    n_train: int = Field(100, ge=1)
    n_val: int = Field(10, ge=1)
    n_test: int = Field(10, ge=1)
    max_generations: int = Field(4, ge=1)
    trust_lo_eV_per_A: float | None = Field(None, gt=0.0)
    trust_hi_eV_per_A: float | None = Field(None, gt=0.0)
    max_new_frames: int = Field(20, ge=1)
    label_above_hi: bool | Literal["auto"] = "auto"
    converged_accurate_share: float = Field(0.9, gt=0.0, le=1.0)
    density_window_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    explore: list[WalkerSpec] = Field(default_factory=lambda: [WalkerSpec()])
    compiled_walkers: bool = False
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _window(self):
        lo, hi = self.trust_lo_eV_per_A, self.trust_hi_eV_per_A
        if lo is not None and hi is not None:
            TrustWindow(lo, hi)  # raises naming both levels
        if self.fine_tune_overrides and self.fine_tune_epochs is None:
            raise ValueError("fine_tune_overrides apply to fine-tuning generations only: "
                             "set fine_tune_epochs too")
        return self

    def training_overrides(self, fine_tune_epochs: int | None) -> dict[str, Any]:
        """nequip overrides of a generation: from random weights (`fine_tune_epochs`
        None) ``overrides``; fine-tuning, those with ``fine_tune_overrides`` on top and
        its epochs."""
        if fine_tune_epochs is None:
            return dict(self.overrides)
        return {**self.overrides, **self.fine_tune_overrides, "max_epochs": fine_tune_epochs}


#: Teachers cheap enough to label frames above the trust window's top ("auto").
CHEAP_TEACHERS = ("classical", "xtb")


class LearnConfig(StudyTables):
    """An ``ionmix learn`` config: mixture, initial sampling, teacher, cluster, loop."""

    learn: LearnSettings = LearnSettings()

    def label_above_hi(self) -> bool:
        """Whether frames above hi are selectable: ``[learn] label_above_hi``, with
        "auto" meaning "the teacher is one of `CHEAP_TEACHERS`" (a classical or xTB label
        costs seconds; a DFT label of a frame the committee has never seen may cost hours
        and fail to converge)."""
        if self.learn.label_above_hi == "auto":
            return self.teacher.get("kind", "classical") in CHEAP_TEACHERS
        return bool(self.learn.label_above_hi)


def load_learn_config(path) -> LearnConfig:
    """Read and validate a learn TOML (errors name the file and key)."""
    from ionmix.config import ConfigError, parse_model, read_toml
    from ionmix.errors import InputError
    from ionmix.train.run import check_options

    cfg = parse_model(LearnConfig, read_toml(path), str(path))
    s = cfg.learn
    try:  # a typo in [learn] overrides is caught here, not after the sampling
        check_options(s.preset, s.overrides, s.baseline)
    except InputError as exc:
        raise ConfigError(f"{path} [learn]: {exc}") from None
    if s.fine_tune_overrides:  # else the fine-tuning generations train with `overrides`
        try:
            check_options(s.preset, s.training_overrides(s.fine_tune_epochs), s.baseline)
        except InputError as exc:
            raise ConfigError(f"{path} [learn] fine_tune_overrides: {exc}") from None
    return cfg


@dataclass
class LearnResult:
    """What the loop did: per-generation summaries, why it stopped, where the report is."""

    generations: list[dict]
    stopped_because: str
    report_path: Path
    figure_path: Path


@dataclass
class _Context:
    cfg: LearnConfig
    out: Path
    store: DatasetStore
    teacher: Any
    compositions: list[str]
    type_names: list[str]
    shifts: dict[str, float]
    reference_density_g_cm3: float
    scheduler: str | None
    say: Callable[[str], None]


def _check_before_work(cfg: LearnConfig) -> None:
    from ionmix.teachers import make_teacher, teacher_spec
    from ionmix.train import get_preset

    preset = get_preset(cfg.learn.preset)
    spec = teacher_spec(cfg.teacher, "[teacher]")
    has_npt = any(w.kind in ("npt", "anneal") for w in cfg.learn.explore)
    if has_npt and not make_teacher(spec).provides_stress:
        raise InputError(f"[teacher] {spec.kind} gives no stress; NPT exploration needs it")
    if has_npt and not preset.uses_stress:
        raise InputError(f"[learn] preset {cfg.learn.preset!r} trains no stress; NPT "
                         "exploration needs it (e.g. cpu-tiny-allegro-npt)")
    if cfg.sampling.replicas < 2:
        raise InputError("[sampling] replicas must be ≥ 2: replica 1 is the test set")


def run_learning(cfg: LearnConfig, out_dir, scheduler: str | None = None,
                 say: Callable[[str], None] = print) -> LearnResult:
    """Run (or resume) the active-learning loop; see the module docstring."""
    ctx = _prepare(cfg, Path(out_dir).resolve(), scheduler, say)
    summaries: list[dict] = []
    stopped = f"generation budget spent ({cfg.learn.max_generations})"
    for g in range(cfg.learn.max_generations):
        summaries.append(_generation(ctx, g, summaries))
        why = _converged(cfg.learn, summaries)
        if why:
            stopped = why
            break
    else:
        comparison = summaries[-1].get("density_comparison")
        if comparison:
            stopped += f"; {describe_comparison(comparison)}"
    from ionmix.report.active import write_report

    report, figure = write_report(ctx.out, summaries, stopped, ctx.teacher.describe(),
                                  ctx.reference_density_g_cm3)
    return LearnResult(summaries, stopped, report, figure)


def _prepare(cfg: LearnConfig, out: Path, scheduler, say) -> _Context:
    """Sample the initial data (classical), label it with the teacher if another, and fix
    what every generation shares (type names, energy shifts, the initial frames' density)."""
    from ionmix.sampling import plan_sampling, sample

    _check_before_work(cfg)
    _check_same_loop(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / LOOP_CONFIG_NAME, cfg.model_dump(mode="json"))
    sample_cfg = cfg.sample_config()
    plan = plan_sampling(sample_cfg)
    say(f"sampling {len(plan.runs)} runs (classical) into {out / 'frames.db'}")
    sample(sample_cfg, out)
    store = DatasetStore(out / "frames.db")
    compositions = [composition_key(c) for c in cfg.mixture.composition_list(plan.mixture)]
    teacher = _initial_labels(cfg, plan, store, compositions, scheduler, say)
    frames = _initial_frames(cfg.learn, store, teacher.key, compositions)
    type_names = sorted({s for f in frames["train"] for s in f.get_chemical_symbols()})
    from ionmix.train.from_store import teacher_isolated_atom_energies

    shifts = teacher_isolated_atom_energies(store, teacher.key, type_names, frames["train"][0])
    rho = [f.get_masses().sum() / f.get_volume() for f in frames["train"]]
    from ionmix.units import A3_IN_CM3, AMU_IN_G

    return _Context(cfg, out, store, teacher, compositions, type_names, shifts,
                    float(np.mean(rho)) * AMU_IN_G / A3_IN_CM3, scheduler, say)


#: The loop's config as it ran (a rerun into the folder must be the same loop).
LOOP_CONFIG_NAME = "learn-config.json"
#: What a rerun may change: more generations (extending the loop), the epochs of the
#: generations not yet trained (`_fine_tune_epochs`), and where it runs.
LOOP_MAY_CHANGE = ("learn.max_generations", "learn.fine_tune_epochs", "learn.compiled_walkers",
                   "cluster")


def _check_same_loop(cfg: LearnConfig, out: Path) -> None:
    """ConfigError before any work when `out` holds a loop run with another config (bar
    `LOOP_MAY_CHANGE`): generations made with other settings are not continued."""
    from ionmix.config import ConfigError
    from ionmix.resume import check_same_settings

    path = out / LOOP_CONFIG_NAME
    old = json.loads(path.read_text()) if path.is_file() else None
    check_same_settings(old, cfg.model_dump(mode="json"), error=ConfigError,
                        may_change=LOOP_MAY_CHANGE, recorded_only=True,
                        what=f"{out} holds a learning loop with another config",
                        advice="use a new --out folder (only [learn] max_generations, "
                               "fine_tune_epochs, compiled_walkers and [cluster] may change "
                               "between runs)")


def _initial_labels(cfg, plan, store, compositions, scheduler, say):
    """The teacher spec; a non-classical teacher labels the initial frames first."""
    from ionmix.labelling.run import label_split_frames
    from ionmix.teachers import teacher_spec

    if cfg.classical_teacher:
        return plan.teacher
    spec = teacher_spec(cfg.teacher, "[teacher]")
    s = cfg.learn
    counts = split_counts(compositions, compositions, s.n_train, s.n_val, s.n_test)
    label_split_frames(store, plan.teacher.key, spec, counts, isolated_atoms=True,
                       cluster=cfg.cluster, scheduler=scheduler, say=say)
    return spec


def _initial_frames(s: LearnSettings, store: DatasetStore, teacher: str,
                    compositions: list[str]) -> dict[str, list]:
    """train/val (replica 0) and test (replica 1) frames of `teacher` for the compositions
    (`split_by_replica`; the first n_train of replica 0's frames train, the rest
    validate)."""
    split = split_by_replica(store, compositions, s.n_train, s.n_val, s.n_test, seed=None,
                             teacher=teacher)
    return {role: [f.atoms for f in getattr(split, role)] for role in ("train", "val", "test")}


# --------------------------------------------------------------------------------------
# one generation


def _generation(ctx: _Context, g: int, earlier: list[dict]) -> dict:
    gen = ctx.out / f"gen-{g:03d}"
    summary_path = gen / "summary.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    ctx.say(f"generation {g}: training a committee of {ctx.cfg.learn.committee}")
    wall_s: dict[str, float] = {}  # per step, for the loop's own overhead (docs)

    def timed(step: str, fn, *args):
        t0 = time.perf_counter()
        result = fn(*args)
        wall_s[step] = time.perf_counter() - t0
        return result

    files = timed("data", _write_data, ctx, gen, g)
    trained = timed("train", _train_committee, ctx, gen, g, files)
    window = _trust_window(ctx.cfg.learn, trained, files["test"], gen, ctx.store.provenance())
    ctx.say(f"generation {g}: exploring (trust window {window.lo_eV_per_A:.3f}–"
            f"{window.hi_eV_per_A:.3f} eV/Å)")
    walkers = timed("explore", _explore, ctx, gen, trained, window)
    selection = timed("select", _select, ctx, gen, trained, window, walkers)
    added = timed("label", _label_selection, ctx, gen, g, selection)
    summary = _summarise(g, trained, window, walkers, selection, added, files)
    summary["teacher_max_force_eV_per_A"] = _teacher_max_forces(ctx, g, selection)
    summary["density_comparison"] = (compare_densities(walkers, earlier[-1]["walkers"])
                                     if earlier else [])
    # a generation resumed mid-way times only what ran in its last call
    summary["wall_s"] = wall_s
    atomic_write_json(summary_path, summary)
    ctx.say(f"generation {g}: accurate {summary['accurate_share']:.2f}, candidate "
            f"{summary['candidate_share']:.2f}, failed {summary['failed_share']:.2f}; "
            f"{added} frames added")
    return summary


def _write_data(ctx: _Context, gen: Path, g: int) -> dict[str, str]:
    """train/val/test extxyz files of generation `g` (kept if already written)."""
    files = {k: gen / "data" / f"{k}.extxyz" for k in ("train", "val", "test")}
    if all(p.exists() for p in files.values()):
        return {k: str(v) for k, v in files.items()}
    frames = _initial_frames(ctx.cfg.learn, ctx.store, ctx.teacher.key, ctx.compositions)
    learned = [f.atoms for f in ctx.store.select(teacher=ctx.teacher.key,
                                                 task="active-learning")
               if int(f.info.get("generation", 10**9)) < g]
    for name, extra in (("train", learned), ("val", []), ("test", [])):
        atomic_write_extxyz(frames[name] + extra, files[name])
    return {k: str(v) for k, v in files.items()}


def _train_committee(ctx: _Context, gen: Path, g: int, files: dict[str, str]) -> list[dict]:
    """K models (seeds seed … seed + K − 1) as Dask tasks, from random weights or
    fine-tuned from the previous generation's; their TrainResult records."""
    from ionmix.train.run import PACKAGE_NAME
    from ionmix.train.tasks import train_recipe_task

    s = ctx.cfg.learn
    fine_tune = s.fine_tune_epochs is not None and g > 0
    overrides = s.training_overrides(_fine_tune_epochs(gen, s.fine_tune_epochs)
                                     if fine_tune else None)

    def initial(k: int) -> str | None:
        previous = ctx.out / f"gen-{g - 1:03d}" / "models" / f"model-{k}" / PACKAGE_NAME
        return str(previous) if fine_tune else None

    with dask_client(ctx.cfg.cluster, ctx.scheduler) as client:
        futures = [client.submit(train_recipe_task, files, ctx.type_names, s.preset,
                                 ctx.shifts, str(gen / "models" / f"model-{k}"), s.seed + k,
                                 overrides, None, initial(k), baseline=s.baseline,
                                 provenance=ctx.store.provenance(),
                                 baseline_cache=str(ctx.out / "baseline-cache.sqlite"),
                                 key=f"train-{gen.name}-{k}", pure=False)
                   for k in range(s.committee)]
        return client.gather(futures)


def _fine_tune_epochs(gen: Path, configured: int) -> int:
    """The epochs generation `gen` fine-tunes for: those it started training with (its
    first model's nequip config) once it has, else the configured ones. `fine_tune_epochs`
    may change between runs of a loop; it applies from the next untrained generation, and
    a generation whose committee explored with one training is never trained further."""
    import yaml

    started = gen / "models" / "model-0" / "config.yaml"
    if started.is_file():
        return int(yaml.safe_load(started.read_text())["max_epochs"])
    return configured


def _trust_window(s: LearnSettings, trained: list[dict], test_file: str,
                  gen: Path, provenance) -> TrustWindow:
    """The configured window, or one calibrated on the committee's own test frames (kept in
    ``trust_window.json``: a resumed generation explores and selects with the same one).

    The calibration uses the statistic the selection uses, the max over atoms of the force
    deviation, on frames the committee is known to describe (the independent replica):
    the mean error (test RMSE) would sit far below it, since the largest of ~200 atomic
    deviations is typically 3× their mean, and every frame would look like a candidate.
    """
    path = gen / "trust_window.json"
    if path.exists():
        saved = json.loads(path.read_text())
        return TrustWindow(saved["lo_eV_per_A"], saved["hi_eV_per_A"])
    record: dict[str, Any] = {}
    lo, hi = s.trust_lo_eV_per_A, s.trust_hi_eV_per_A
    if lo is None or hi is None:
        from ionmix.models import load_committee

        test_frames = ase.io.read(test_file, ":")
        committee = load_committee([t["package_path"] for t in trained], test_frames[0],
                                   provenance=provenance).calc
        deviations = [_max_deviation(committee, atoms) for atoms in test_frames]
        record["test_max_force_deviation_eV_per_A"] = deviations
        lo = lo or float(np.percentile(deviations, 95))
        hi = hi or 3.0 * lo
    window = TrustWindow(lo, hi)
    atomic_write_json(path, {"lo_eV_per_A": lo, "hi_eV_per_A": hi, **record})
    return window


def _max_deviation(committee, atoms) -> float:
    """The committee's max force deviation (eV/Å) on one frame."""
    work = atoms.copy()
    work.calc = committee
    work.get_potential_energy()
    return float(committee.results["max_force_deviation_eV_per_A"])


def _start_frames(ctx: _Context, frames: list) -> list:
    """Copies of the sampled `frames` (store Frames) as walker starting structures, with
    their molecule arrays."""
    from ionmix.chemistry.topology import with_molecule_arrays

    ions = ctx.store.provenance().ion_set(frames[-1].atoms)
    picked = [f.atoms.copy() for f in frames]
    for atoms in picked:
        atoms.calc = None
        with_molecule_arrays(atoms, ions)
    return picked


def _walker_jobs(ctx: _Context) -> list[tuple[str, WalkerSpec, list, int]]:
    """(folder name, spec, starting frames, velocity seed) of every walker.

    The frames are the first composition's replica-0 sampling in time order: a
    volume-scan rescales its last 8; copy k of an npt/anneal entry starts from frame
    `start_indices`[k] (the last one for copy 0, the others spread back to the middle of
    the run) with velocity seed k.
    """
    pool = ctx.store.select(ctx.compositions[0], replica=0, teacher=ctx.teacher.key)
    jobs = []
    for i, w in enumerate(ctx.cfg.learn.explore):
        if w.kind == "volume-scan":
            jobs.append((w.name(i), w, _start_frames(ctx, pool[-8:]), 0))
            continue
        starts = start_indices(len(pool), w.n_starts)
        for k, (name, index) in enumerate(zip(w.copy_names(i), starts, strict=True)):
            jobs.append((name, w, _start_frames(ctx, [pool[index]]), k))
    return jobs


def _explore(ctx: _Context, gen: Path, trained: list[dict], window: TrustWindow) -> dict:
    """Every walker as a Dask task; name → its walker.json record."""
    s = ctx.cfg.learn
    models = [t["package_path"] for t in trained]
    rho = ctx.reference_density_g_cm3
    density_window = (rho * (1 - s.density_window_fraction), rho * (1 + s.density_window_fraction))
    compiled = _walker_form(gen, s.compiled_walkers)
    if compiled:
        _compile_members(ctx, models)
    with dask_client(ctx.cfg.cluster, ctx.scheduler) as client:
        futures = {name: client.submit(
            run_walker, w.resolved(ctx.cfg.classical_teacher).model_dump(), start, models,
            str(gen / "explore" / name),
            (window.lo_eV_per_A, window.hi_eV_per_A), density_window,
            provenance=ctx.store.provenance(), velocity_seed=seed, compiled=compiled,
            key=f"walk-{gen.name}-{name}", pure=False)
            for name, w, start, seed in _walker_jobs(ctx)}
        return {name: fut.result() for name, fut in futures.items()}


#: Which form of the networks a generation's walkers run (``{"compiled": bool}``).
WALKER_FORM_NAME = "walker-form.json"


def _walker_form(gen: Path, configured: bool) -> bool:
    """Whether generation `gen`'s walkers run compiled networks: the form its exploration
    began with (``explore/walker-form.json``; an exploration begun before that record
    existed ran the packages), else `configured`, recorded now. A walker resumed in the
    other form would be refused by its MD restart check (another model id)."""
    explore = gen / "explore"
    path = explore / WALKER_FORM_NAME
    if path.is_file():
        return bool(json.loads(path.read_text())["compiled"])
    if explore.is_dir() and any(explore.iterdir()):
        return False
    explore.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"compiled": configured})
    return configured


def _compile_members(ctx: _Context, models: list[str]) -> None:
    """Each member's compiled form, made once before the walkers start (a kept one is
    reused; made by the walkers instead, two walkers would compile the same member)."""
    from ionmix.models.network import compiled_network

    for k, package in enumerate(models):
        t0 = time.perf_counter()
        compiled_network(package)
        ctx.say(f"  member {k}: compiled form ready ({time.perf_counter() - t0:.0f} s)")


def _select(ctx: _Context, gen: Path, trained, window: TrustWindow, walkers: dict) -> dict:
    """Committee deviations on every candidate frame → categories and the chosen frames
    (written to ``selection.extxyz`` with their walker)."""
    path = gen / "selection.json"
    if path.exists():
        return json.loads(path.read_text())
    from ionmix.models import load_committee

    frames, names = [], []
    for name in walkers:
        for atoms in read_candidates(gen / "explore" / name):
            frames.append(atoms)
            names.append(name)
    # a walker's frames carry the deviation its committee computed at that step (`ionmix.md`
    # keeps it in the trajectory): only the others (a volume scan's) are evaluated here
    deviations = [atoms.info.get("max_force_deviation_eV_per_A") for atoms in frames]
    missing = [i for i, d in enumerate(deviations) if d is None]
    if missing:
        committee = load_committee([t["package_path"] for t in trained], frames[missing[0]],
                                   provenance=ctx.store.provenance()).calc
        for i in missing:
            deviations[i] = _max_deviation(committee, frames[i])
    above_hi = ctx.cfg.label_above_hi()
    chosen = select(frames, deviations, window, ctx.cfg.learn.max_new_frames, above_hi)
    picked = []
    for i, reason in zip(chosen.chosen, chosen.reasons, strict=True):
        atoms = frames[i].copy()
        atoms.calc = None
        # what the frame is made of (and its charge scale, for a Coulomb baseline)
        atoms.info = {k: frames[i].info[k] for k in ("molecules", "ion_set", "composition",
                                                     "charge_scale") if k in frames[i].info}
        atoms.info.update(walker=names[i], label_id=f"{gen.name}/{names[i]}/{i}",
                          max_force_deviation_eV_per_A=float(deviations[i]),
                          selected_because=reason)
        picked.append(atoms)
    if picked:
        ase.io.write(gen / "selection.extxyz", picked)
    record = {"categories": chosen.categories, "walkers": names,
              "deviations_eV_per_A": [float(d) for d in deviations], "chosen": chosen.chosen,
              "label_above_hi": above_hi, "reasons": chosen.reasons,
              "label_ids": [f"{gen.name}/{names[i]}/{i}" for i in chosen.chosen]}
    atomic_write_json(path, record)
    return record


def _label_selection(ctx: _Context, gen: Path, g: int, selection: dict) -> int:
    """Label the chosen frames with the teacher (resumable); the number stored."""
    from ionmix.labelling import label_frames

    path = gen / "selection.extxyz"
    if not selection["chosen"] or not path.exists():
        return 0
    frames = ase.io.read(path, ":")
    for atoms in frames:
        atoms.info["generation"] = g
    label_frames(frames, ctx.store.provenance(), ctx.teacher, "single-point", ctx.store.url,
                 cluster=ctx.cfg.cluster, scheduler=ctx.scheduler, store_task="active-learning")
    return sum(1 for f in ctx.store.select(teacher=ctx.teacher.key, task="active-learning")
               if f.info.get("generation") == g)


def _teacher_max_forces(ctx: _Context, g: int, selection: dict) -> dict[str, list[float]]:
    """The teacher's largest atomic force (eV/Å) on each frame labelled in generation
    `g`, grouped by why it was selected ("candidate" / "above hi"): the size of what
    frames above hi bring into the loss, which nequip 0.19 cannot down-weight per frame
    (docs/active-learning.md)."""
    why = dict(zip(selection.get("label_ids", []), selection.get("reasons", []), strict=True))
    out: dict[str, list[float]] = {"candidate": [], "above hi": []}
    for frame in ctx.store.select(teacher=ctx.teacher.key, task="active-learning"):
        reason = why.get(frame.info.get("source", ""))
        if frame.info.get("generation") != g or reason is None:
            continue
        group = "above hi" if reason.startswith("above hi") else "candidate"
        out[group].append(float(np.linalg.norm(frame.atoms.get_forces(), axis=1).max()))
    return out


def _summarise(g, trained, window, walkers, selection, added, files) -> dict:
    categories = selection["categories"]
    n = max(len(categories), 1)
    metrics = [t["metrics"] for t in trained]
    reasons = selection.get("reasons", [])
    return {
        "generation": g,
        "n_train_frames": len(ase.io.read(files["train"], ":")),
        "frames_added": added,
        "frames_added_by_walker": {name: sum(1 for i in selection["chosen"]
                                             if selection["walkers"][i] == name)
                                   for name in walkers},
        "frames_selected": len(selection["chosen"]),
        "label_above_hi": selection.get("label_above_hi", False),
        "frames_selected_above_hi": sum(1 for r in reasons if r.startswith("above hi")),
        "trust_lo_eV_per_A": window.lo_eV_per_A, "trust_hi_eV_per_A": window.hi_eV_per_A,
        "accurate_share": categories.count("accurate") / n,
        "candidate_share": categories.count("candidate") / n,
        "failed_share": categories.count("failed") / n,
        "n_explored": len(categories),
        "committee_test_energy_mae_meV_per_atom": [m.get("energy_mae_meV_per_atom")
                                                    for m in metrics],
        "committee_test_force_mae_meV_per_A": [m.get("force_mae_meV_per_A") for m in metrics],
        "committee_epochs": [m.get("epochs") for m in metrics],
        "walkers": walkers,
    }


def compare_densities(walkers: dict, before: dict) -> list[dict]:
    """Each NPT walker's block-averaged density against the same walker's in the previous
    generation (`walkers`, `before`: name → walker.json record).

    Returns one entry per NPT walker: ``walker``, ``density_g_cm3`` and
    ``density_err_g_cm3`` (now), ``before_g_cm3`` and ``before_err_g_cm3``,
    ``n_blocks`` (now, before), ``difference_g_cm3``, ``combined_err_g_cm3``
    (sqrt(err² + err_before²)) and ``agree`` (|difference| ≤ 2 × combined error); a walker
    without a block density in either generation (stopped early, or < 2 blocks) has
    ``agree`` False and a ``note``: it is no evidence of a converged density.
    """
    out = []
    for name, now in walkers.items():
        if now.get("kind") != "npt":
            continue
        old = before.get(name, {})
        entry: dict[str, Any] = {"walker": name, "n_blocks": [now.get("density_n_blocks", 0),
                                                              old.get("density_n_blocks", 0)]}
        missing = [f"{label}: {w.get('density_note') or w.get('reason') or 'no block density'}"
                   for label, w in (("now", now), ("previous generation", old))
                   if not _has_block_density(w)]
        if missing:
            out.append({**entry, "agree": False, "note": "; ".join(missing)})
            continue
        diff = now["density_g_cm3"] - old["density_g_cm3"]
        err = float(np.hypot(now["density_err_g_cm3"], old["density_err_g_cm3"]))
        out.append({**entry, "density_g_cm3": now["density_g_cm3"],
                    "density_err_g_cm3": now["density_err_g_cm3"],
                    "before_g_cm3": old["density_g_cm3"],
                    "before_err_g_cm3": old["density_err_g_cm3"],
                    "difference_g_cm3": diff, "combined_err_g_cm3": err,
                    "agree": bool(abs(diff) <= 2 * err)})
    return out


def _has_block_density(walker: dict) -> bool:
    """A block-averaged density from ≥ 2 blocks (records from before block averaging, or
    too short a walker, have none)."""
    return "density_g_cm3" in walker and walker.get("density_n_blocks", 0) >= 2


def describe_comparison(entries: list[dict]) -> str:
    """The density comparison in words, for ``report.md``'s "Stopped:" line."""
    if not entries:
        return "no NPT walker density compared"
    parts = []
    for e in entries:
        if "note" in e:
            parts.append(f"{e['walker']}: no evidence ({e['note']})")
            continue
        parts.append(f"{e['walker']}: {e['density_g_cm3']:.4f} ± {e['density_err_g_cm3']:.4f} "
                     f"vs {e['before_g_cm3']:.4f} ± {e['before_err_g_cm3']:.4f} g/cm³ "
                     f"({e['n_blocks'][0]} and {e['n_blocks'][1]} blocks), "
                     f"{'agree' if e['agree'] else 'differ'}")
    return ("block-averaged NPT densities, now vs the previous generation (within 2 "
            "combined errors?): " + "; ".join(parts))


def _converged(s: LearnSettings, summaries: list[dict]) -> str:
    """Why the loop may stop now ('' if it should go on): the accurate share reached
    `converged_accurate_share` and every NPT walker's block density agrees with the
    previous generation's (`compare_densities`)."""
    last = summaries[-1]
    if last["accurate_share"] < s.converged_accurate_share or len(summaries) < 2:
        return ""
    entries = compare_densities(last["walkers"], summaries[-2]["walkers"])
    if not all(e["agree"] for e in entries):
        return ""
    return (f"converged: accurate share {last['accurate_share']:.2f} ≥ "
            f"{s.converged_accurate_share}; {describe_comparison(entries)}")
