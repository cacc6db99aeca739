"""The transferability study (the paper's Figure 1): train per recipe, test everywhere.

A study config (TOML) is a sampling config plus a ``[study]`` table:

```toml
[mixture]   # as for `ionmix sample`
[sampling]  # as for `ionmix sample`
[study]
recipes = [[0.5], [0.0, 0.1], [0.0, 0.1, 0.2], [0.0, 1.0], [0.4, 0.6], "recommended"]
n_train = 16        # frames per training composition (replica 0)
n_val = 4           # validation frames per training composition (replica 0)
n_test = 10         # test frames per composition (replica 1, the independent box)
preset = "cpu-tiny-nequip"
energy_reference = "isolated-atoms"   # or "fit" or "mean"
```

A recipe is a list of training compositions: numbers are mole fractions of the first unit
of a two-unit mixture (the paper's Li-salt fraction), tables are full compositions, and
``"recommended"`` is the set `ionmix plan` recommends.

Stages, each reusing what is on disk (so an interrupted or extended study picks up where
it stopped): sample → export splits → train one model per recipe → evaluate every model
on every composition's test frames → metrics, figures, report. Trainings and
evaluations of different recipes are independent Dask tasks; a recipe that fails is
reported and does not stop the others.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ase.io
import numpy as np
from pydantic import Field

from ionmix import design
from ionmix.cluster import dask_client
from ionmix.config import (
    ConfigError,
    SampleConfig,
    StudyTables,
    _Strict,
    parse_model,
    read_toml,
)
from ionmix.dataset import (
    DatasetStore,
    atomic_write_extxyz,
    composition_key,
    run_frames,
    split_by_replica,
    split_counts,
)
from ionmix.files import atomic_write_text
from ionmix.models.baseline import BaselineName
from ionmix.train.tasks import evaluate_recipe_task, train_recipe_task

#: The paper's Figure 1 rows, as Li-salt fractions.
PAPER_RECIPES: list[Any] = [[0.5], [0.0, 0.1], [0.0, 0.1, 0.2], [0.0, 1.0], [0.4, 0.6]]



class StudySettings(_Strict):
    """The ``[study]`` table."""

    recipes: list[list[float | dict[str, float]] | Literal["recommended"]] = Field(
        default_factory=lambda: [list(r) for r in PAPER_RECIPES])
    n_train: int = Field(16, gt=0, description="training frames per training composition")
    n_val: int = Field(4, gt=0, description="validation frames per training composition")
    n_test: int = Field(10, gt=0, description="test frames per composition (replica 1)")
    preset: str = "cpu-tiny-nequip"
    baseline: BaselineName = "none"
    energy_reference: Literal["isolated-atoms", "fit", "mean"] = "isolated-atoms"
    isolated_atom_energies_eV: dict[str, float] | None = Field(
        None, description="element → eV; default: the teacher's own isolated-atom energies")
    overrides: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(0, ge=0)


class StudyConfig(StudyTables):
    """A study config file: mixture, sampling protocol, teacher, cluster and study settings."""

    study: StudySettings = StudySettings()


def sample_config(cfg: StudyConfig) -> SampleConfig:
    """The sampling part of a study config (`StudyTables.sample_config`)."""
    return cfg.sample_config()


def load_study_config(path: str | Path) -> StudyConfig:
    """Read and validate a study TOML (errors name the file and key), its training
    preset, overrides and baseline included: a typo there is caught before the sampling."""
    from ionmix.errors import InputError
    from ionmix.train.run import check_options

    data = read_toml(path)
    if "study" not in data:
        raise ConfigError(f"{path}: no [study] table; a transfer study needs [mixture], "
                          "[sampling] and [study] (a sampling config goes to `ionmix sample`)")
    cfg = parse_model(StudyConfig, data, str(path))
    try:
        check_options(cfg.study.preset, cfg.study.overrides, cfg.study.baseline)
    except InputError as exc:
        raise ConfigError(f"{path} [study]: {exc}") from None
    return cfg


@dataclass(frozen=True)
class Recipe:
    """A set of training compositions with a stable, readable name."""

    name: str
    compositions: list[dict[str, float]]


def resolve_recipes(cfg: StudyConfig, mixture: design.Mixture,
                    compositions: list[dict[str, float]]) -> list[Recipe]:
    """Recipes as explicit compositions, each one of the study's sampled compositions."""
    known = {composition_key(c): c for c in compositions}
    recipes, names = [], set()
    for i, raw in enumerate(cfg.study.recipes):
        if raw == "recommended":
            comps = design.recommend(mixture, compositions)
            label = "recommended"
        else:
            if not raw:
                raise ConfigError(f"[study] recipes[{i}] is empty")
            comps = []
            for item in raw:
                if isinstance(item, int | float):
                    if len(mixture.units) != 2:
                        raise ConfigError(
                            f"[study] recipes[{i}]: a bare number ({item}) is a fraction of "
                            f"the first unit and needs a two-unit mixture; use tables")
                    comp = {mixture.units[0]: float(item),
                            mixture.units[1]: round(1.0 - float(item), 12)}
                else:
                    comp = {u: float(item.get(u, 0.0)) for u in mixture.units}
                comps.append(comp)
            label = None
        for comp in comps:
            if composition_key(comp) not in known:
                raise ConfigError(
                    f"[study] recipes[{i}]: composition {comp} is not among the sampled "
                    "compositions ("
                    + ", ".join(mixture.fraction_label(c) for c in compositions) + ")")
        comps = [known[composition_key(c)] for c in comps]
        name = "x=" + "+".join(mixture.fraction_label(c) for c in comps)
        members = frozenset(composition_key(c) for c in comps)
        if members in names:
            if label:  # "recommended" equals a listed recipe: train it once
                continue
            raise ConfigError(f"[study] recipes[{i}] repeats recipe {name}")
        if label:
            name = f"{label}({name[2:]})"
        names.add(members)
        recipes.append(Recipe(name, comps))
    if not recipes:
        raise ConfigError("[study] recipes is empty")
    return recipes


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in name)


# --------------------------------------------------------------------------------------
# the study


@dataclass(frozen=True)
class StudyResult:
    """Where a study's outputs are, and its headline numbers."""

    out_dir: Path
    metrics: list[dict[str, Any]]
    failed: dict[str, str]
    report_path: Path
    figure_path: Path


def _training_threads(client, scheduler: str | None) -> int | None:
    """Torch threads per training: this machine's cores shared by its local workers (None
    on an external scheduler: the workers' own setting)."""
    if scheduler:
        return None
    return max(1, (os.cpu_count() or 1) // max(1, len(client.scheduler_info()["workers"])))


def frames_needed(s: StudySettings, recipes: list[Recipe],
                  compositions: list[dict[str, float]]) -> dict[tuple[str, int], int]:
    """(composition key, replica) → frames the study's splits take from that run: n_train +
    n_val from replica 0 of every composition a recipe trains on, n_test from replica 1 of
    every composition (`ionmix.dataset.split_counts`). Runs not listed are neither sampled
    nor labelled."""
    trained = [composition_key(c) for recipe in recipes for c in recipe.compositions]
    return split_counts(trained, [composition_key(c) for c in compositions], s.n_train,
                        s.n_val, s.n_test)


def sampled_runs(cfg: StudyConfig) -> list:
    """The sampling runs (`ionmix.sampling.Run`) the study samples: those `frames_needed`
    lists."""
    from ionmix.sampling import plan_sampling

    plan = plan_sampling(sample_config(cfg))
    compositions = cfg.mixture.composition_list(plan.mixture)
    return _runs_needed(plan.runs, frames_needed(
        cfg.study, resolve_recipes(cfg, plan.mixture, compositions), compositions))


def _runs_needed(runs: list, needed: dict[tuple[str, int], int]) -> list:
    return [run for run in runs if (composition_key(run.composition), run.replica) in needed]


def _study_teacher(cfg: StudyConfig, plan, out: Path, compositions, recipes,
                   scheduler: str | None, say: Callable[[str], None]):
    """The teacher whose labels the models learn. The classical one labels every snapshot
    as it is sampled; another [teacher] (xtb, espresso) labels exactly the frames the
    splits use (train/val from replica 0, test from replica 1), through the labelling
    stage (resumable; a frame it fails on is reported and left out)."""
    from ionmix.labelling.run import label_split_frames
    from ionmix.teachers import teacher_spec

    if cfg.classical_teacher:
        return plan.teacher
    spec = teacher_spec(cfg.teacher, "[teacher]")
    s = cfg.study
    label_split_frames(DatasetStore(out / "frames.db"), plan.teacher.key, spec,
                       frames_needed(cfg.study, recipes, compositions),
                       # the teacher's own isolated-atom references, as Dask tasks too
                       isolated_atoms=(s.energy_reference == "isolated-atoms"
                                       and not s.isolated_atom_energies_eV),
                       cluster=cfg.cluster, scheduler=scheduler, say=say)
    return spec


def run_study(cfg: StudyConfig, out_dir: str | Path, scheduler: str | None = None,
              n_workers: int | None = None,
              say: Callable[[str], None] = print,
              on_snapshot: Callable[[Any, int], None] | None = None) -> StudyResult:
    """Run (or resume) the whole study; see the module docstring.

    Args:
        cfg: validated study config.
        out_dir: study folder (created).
        scheduler: address of an existing Dask scheduler (e.g. ``tcp://host:8786``);
            default: a LocalCluster sized to this machine.
        n_workers: LocalCluster workers (default: one per core, at most one per recipe).
        say: where progress lines go.
        on_snapshot: sampling progress callback (see `ionmix.sampling.sample_run`).
    """
    from ionmix.sampling import plan_sampling, sample

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sample_cfg = sample_config(cfg)
    plan = plan_sampling(sample_cfg)
    compositions = cfg.mixture.composition_list(plan.mixture)
    recipes = resolve_recipes(cfg, plan.mixture, compositions)
    _check_study_settings(cfg)
    atomic_write_text(out / "study-config.json",
                       json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n")
    s = cfg.study

    # 1. sampling: the runs the splits use, side by side
    # (from this plan: the CLI's progress bar plans once more through `sampled_runs`)
    runs = {run.run_id for run in _runs_needed(plan.runs,
                                               frames_needed(s, recipes, compositions))}
    say(f"sampling {len(runs)} runs (replica 1 of {len(compositions)} compositions, replica "
        f"0 of the {len(runs) - len(compositions)} that recipes train on)")
    sample(sample_cfg, out, on_snapshot=on_snapshot, only=lambda run: run.run_id in runs)
    teacher_spec = _study_teacher(cfg, plan, out, compositions, recipes, scheduler, say)
    store = DatasetStore(out / "frames.db")
    provenance = store.provenance()

    # 2. splits: per-composition test files; per-recipe train/val files
    teacher = teacher_spec.key
    test_files = _write_test_files(store, compositions, out / "data", s.n_test, teacher)
    # beside the split files: they are inputs to label, md, evaluate like any store frame
    provenance.write(out / "data")
    type_names = sorted({sym for key in test_files for sym in
                         _symbols_of(test_files[key])})
    shifts = _energy_shifts(s, store, teacher, type_names)
    train_files = _write_recipe_splits(store, recipes, out / "data", s, teacher)

    # 3-4. train and evaluate on Dask: one recipe per core, up to one per recipe (measured
    # on 2 cores: two 1-thread trainings side by side beat one 2-thread training after
    # another by 23 %; small models do not use a second thread well), the cores split
    # between the workers; the largest training first, so that the last to finish is short
    cluster = cfg.cluster.model_copy(update={"workers": n_workers or cfg.cluster.workers})
    with dask_client(cluster, scheduler,
                     default_workers=min(len(recipes), os.cpu_count() or 1)) as client:
        threads = _training_threads(client, scheduler)
        say(f"training {len(recipes)} recipes on {len(client.scheduler_info()['workers'])} "
            f"Dask worker(s) × {threads or 'their'} torch thread(s) ({s.preset}, energy "
            f"reference {s.energy_reference})")
        largest_first = sorted(recipes, key=lambda r: -_atoms_in(train_files[r.name]["train"]))
        trainings = {
            recipe.name: client.submit(
                train_recipe_task, train_files[recipe.name], type_names, s.preset, shifts,
                str(out / "models" / _safe(recipe.name)), s.seed, s.overrides, threads,
                baseline=s.baseline, provenance=provenance,
                baseline_cache=str(out / "models" / "baseline-cache.sqlite"),
                key=f"train-{_safe(recipe.name)}", pure=False,
                priority=len(recipes) - rank)
            for rank, recipe in enumerate(largest_first)}
        evaluations, failed = _evaluate_trained(
            client, trainings, test_files, out / "models",
            {name: ion.n_atoms for name, ion in plan.ions.items()}, provenance, say)

    # 5. metrics, figures, report
    from ionmix.report.transferability import write_outputs

    metrics = metrics_table(recipes, compositions, evaluations)
    analysis = species_analysis(plan.mixture, recipes, evaluations, store, compositions)
    fig, report = write_outputs(out, cfg, plan.mixture, recipes, compositions, metrics,
                                analysis, failed, teacher=teacher_spec.describe())
    return StudyResult(out, metrics, failed, report, fig)


def _atoms_in(path: str) -> int:
    """Atoms summed over the frames of an extxyz file (the work of a training epoch)."""
    return sum(len(atoms) for atoms in ase.io.iread(path))


def _check_study_settings(cfg: StudyConfig) -> None:
    """ConfigError, before any work, for too few replicas or snapshots or an unknown
    preset."""
    from ionmix.train import get_preset

    if cfg.sampling.replicas < 2:
        raise ConfigError("[sampling] replicas must be ≥ 2: replica 1 is the test set")
    s = cfg.study
    need = s.n_train + s.n_val
    if cfg.sampling.n_snapshots < max(need, s.n_test):
        raise ConfigError(
            f"[study] needs {max(need, s.n_test)} snapshots per run (n_train + n_val = "
            f"{need}, n_test = {s.n_test}) but [sampling] gives {cfg.sampling.n_snapshots}")
    get_preset(s.preset)


def _write_test_files(store: DatasetStore, compositions: list[dict[str, float]],
                      data_dir: Path, n_test: int, teacher: str) -> dict[str, str]:
    """Composition key → test file (`n_test` equally spaced replica-1 frames; kept if
    already written)."""
    test_files: dict[str, str] = {}
    for comp in compositions:
        key = composition_key(comp)
        path = data_dir / f"test_{_safe(key)}.extxyz"
        if not path.exists():
            frames = run_frames(store, key, 1, n_test, teacher)
            atomic_write_extxyz(frames, path)
        test_files[key] = str(path)
    return test_files


def _energy_shifts(s: StudySettings, store: DatasetStore, teacher: str,
                   type_names: list[str]) -> dict[str, float] | str:
    """Per-type energy shifts (eV): isolated-atom energies (given, or the teacher's own),
    or the mode name ``"fit"``/``"mean"`` for the training to compute."""
    from ionmix.train.from_store import teacher_isolated_atom_energies

    if s.energy_reference != "isolated-atoms":
        return s.energy_reference
    iso = s.isolated_atom_energies_eV or teacher_isolated_atom_energies(
        store, teacher, type_names, store.select(teacher=teacher)[0].atoms)
    missing = set(type_names) - set(iso)
    if missing:
        raise ConfigError(f"[study] isolated_atom_energies_eV lacks {sorted(missing)}")
    return {t: float(iso[t]) for t in type_names}


def _write_recipe_splits(store: DatasetStore, recipes: list[Recipe], data_dir: Path,
                         s: StudySettings, teacher: str) -> dict[str, dict[str, str]]:
    """Recipe name → its train/val/test files (split by replica; kept when a rerun selects
    the same frames, refused when it selects others for a recipe already trained)."""
    from ionmix.train.from_store import write_split

    train_files = {}
    for recipe in recipes:
        split = split_by_replica(store, recipe.compositions, s.n_train, s.n_val, s.n_test,
                                 seed=s.seed, teacher=teacher)
        files = write_split({"train": split.train, "val": split.val, "test": split.test},
                            data_dir / _safe(recipe.name),
                            data_dir.parent / "models" / _safe(recipe.name))
        train_files[recipe.name] = {k: str(v) for k, v in files.items()}
    return train_files


#: Seconds between the study's lines on its trainings' epochs (a log shows they are alive).
TRAINING_PROGRESS_INTERVAL_S = 30.0


def _evaluate_trained(client, trainings: dict[str, Any], test_files: dict[str, str],
                      models_dir: Path, atoms_per_ion: dict[str, int], provenance,
                      say: Callable[[str], None]) -> tuple[dict[str, dict], dict[str, str]]:
    """Wait for the recipes' trainings and evaluate each model on Dask as soon as it is
    trained; every `TRAINING_PROGRESS_INTERVAL_S`, one line of epochs done per recipe.
    Return (evaluations, failures) by recipe name. A failure is reported and does not stop
    the other recipes."""
    from dask.distributed import wait

    failed: dict[str, str] = {}
    eval_futures = {}
    pending = dict(trainings)
    start = last_line = time.monotonic()
    while pending:
        try:
            wait(list(pending.values()), timeout=5.0, return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass
        for name in [n for n, f in pending.items() if f.done()]:
            future = pending.pop(name)
            try:
                res = future.result()
            except Exception as exc:  # noqa: BLE001 - one failing recipe must not stop others
                failed[name] = f"training failed: {type(exc).__name__}: {exc}"
                say(f"[{name}] {failed[name]}")
                continue
            say(f"[{name}] trained ({res['metrics'].get('epochs', '?')} epochs, "
                f"{res['train_wall_s']:.0f} s)")
            eval_futures[name] = client.submit(
                evaluate_recipe_task, res["package_path"], test_files,
                str(models_dir / _safe(name) / "evaluation.json"), atoms_per_ion, provenance,
                key=f"evaluate-{_safe(name)}", pure=False)
        if pending and time.monotonic() - last_line >= TRAINING_PROGRESS_INTERVAL_S:
            last_line = time.monotonic()
            say(_training_progress_line(pending, models_dir, last_line - start))
    evaluations: dict[str, dict] = {}
    for name, future in eval_futures.items():
        try:
            evaluations[name] = future.result()
        except Exception as exc:  # noqa: BLE001
            failed[name] = f"evaluation failed: {type(exc).__name__}: {exc}"
            say(f"[{name}] {failed[name]}")
            (models_dir / _safe(name) / "evaluation-error.txt").write_text(
                traceback.format_exc())
    return evaluations, failed


def _training_progress_line(pending: dict[str, Any], models_dir: Path,
                            elapsed_s: float) -> str:
    """"training: x=0.5 12 epochs, x=0+1 waiting, …, 1m30s elapsed" for the recipes still
    training (epochs read from each run's metrics.csv)."""
    from ionmix.train.run import epochs_done

    parts = []
    for name in pending:
        done = epochs_done(models_dir / _safe(name))
        parts.append(f"{name} {done} epochs" if done else f"{name} waiting")
    minutes, seconds = divmod(int(elapsed_s), 60)
    return f"training: {', '.join(parts)}, {minutes}m{seconds:02d}s elapsed"


def _symbols_of(path: str) -> set[str]:
    from ionmix.files import read_frames

    frames = read_frames(path, ":", what="test")
    return {s for atoms in frames for s in atoms.get_chemical_symbols()}


def metrics_table(recipes: list[Recipe], compositions: list[dict[str, float]],
                  evaluations: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per recipe × test composition (recipes that failed are left out)."""
    rows = []
    for recipe in recipes:
        ev = evaluations.get(recipe.name)
        if ev is None:
            continue
        trained = {composition_key(c) for c in recipe.compositions}
        for comp in compositions:
            key = composition_key(comp)
            m = ev["by_composition"][key]
            rows.append({
                "recipe": recipe.name, "test_composition": key,
                "in_training_set": key in trained,
                "energy_mae_meV_per_atom": m["energy_mae_meV_per_atom"],
                "force_mae_meV_per_A": m["force_mae_meV_per_A"],
                "force_mae_meV_per_A_by_element": m["force_mae_meV_per_A_by_element"],
                "n_frames": m["n_frames"], "n_atoms": m["n_atoms"]})
    return rows


def species_analysis(mixture: design.Mixture, recipes: list[Recipe],
                     evaluations: dict[str, dict], store: DatasetStore,
                     compositions: list[dict[str, float]]) -> dict[str, Any]:
    """Per-species energies each model implies, fitted on its predictions at every
    test composition with the identifiable-subspace fit; the teacher's from its labels.

    Returns {"species", "combinations": [text...], "models": {name: {text: [value, se]}},
    "teacher": {...}, "undetermined": [[...]]} (values in eV).
    """
    species = list(mixture.species)

    def fit(records: list[dict], key: str) -> dict[str, list[float]]:
        counts = np.array([_counts_from_molecules(r["molecules"], species) for r in records])
        energies = np.array([r[key] for r in records])
        f = design.fit_species_energies(counts, energies, species)
        return {text: [value, err] for text, value, err in f.determined_values()}

    undetermined = mixture.undetermined_directions()
    out: dict[str, Any] = {"species": species, "models": {}, "teacher": None,
                           "undetermined": [list(v) for v in undetermined],
                           "model_ion_energies_eV": {}, "undetermined_projection_eV": {}}
    records_any = None
    for name, ev in evaluations.items():
        records = [r for r in ev["frames"] if r["molecules"]]
        if not records:
            continue
        records_any = records
        out["models"][name] = fit(records, "energy_pred_eV")
        per_ion = [r["ion_energy_pred_eV"] for r in records if "ion_energy_pred_eV" in r]
        if per_ion:
            mu = {sp: float(np.mean([d[sp] for d in per_ion if sp in d])) for sp in species
                  if any(sp in d for d in per_ion)}
            out["model_ion_energies_eV"][name] = mu
            if len(mu) == len(species):
                vec = np.array([mu[sp] for sp in species])
                out["undetermined_projection_eV"][name] = [float(v @ vec) for v in undetermined]
    if records_any is not None:
        out["teacher"] = fit(records_any, "energy_ref_eV")
    out["combinations"] = list(out["teacher"] or {})
    return out


def _counts_from_molecules(text: str, species: list[str]) -> list[int]:
    counts = dict.fromkeys(species, 0)
    for part in text.split(","):
        name, _, n = part.partition(":")
        counts[name] = counts.get(name, 0) + int(n)
    return [counts[s] for s in species]
