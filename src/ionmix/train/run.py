"""Run a NequIP/Allegro training with the nequip framework itself (``nequip-train``).

`run_training` validates the data, writes ``config.yaml`` and ``data_manifest.json`` into
the run directory, runs ``nequip-train -cp RUN_DIR -cn config`` in a subprocess, then
``nequip-package build best.ckpt model.nequip.zip``, and finally writes the marker
``ionmix_train.json`` (the `TrainResult`), last. Run-directory layout::

    config.yaml            the nequip config (re-run unchanged: nequip-train -cp RUN_DIR -cn config)
    data_manifest.json     per file: sha256, frame count, per-frame geometry sha256;
                           energy reference; preset; overrides; versions
    best.ckpt              lowest validation metric; used for the test run and packaging
    last.ckpt              latest epoch; used to resume
    metrics.csv            Lightning CSV log (train/val per epoch, test at the end)
    nequip-train.log       stdout/stderr of nequip-train (Hydra also writes train.log)
    model.nequip.zip       packaged model
    ionmix_train.json      marker, written last: the run finished

Calling `run_training` again with the same arguments returns the recorded result without
training. If ``last.ckpt`` exists but the run did not finish, training resumes from it
(``++ckpt_path=RUN_DIR/last.ckpt``). Raising ``max_epochs`` of a finished run continues it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from ionmix.errors import InputError
from ionmix.files import atomic_write_text, file_sha256
from ionmix.models.baseline import (
    Baseline,
    BaselineCache,
    baseline_for_frames,
    is_fitted,
    read_record,
    residual_frames,
    write_record,
    zbl_pair_potential,
)
from ionmix.models.network import MANIFEST_NAME
from ionmix.resume import check_same_settings

from .data import DataFileSummary, file_manifest, read_data_file, validate_frames
from .energy import per_type_energy_shifts
from .errors import TrainConfigError, TrainRunError
from .presets import Preset, build_config, config_to_yaml, get_preset

CONFIG_NAME = "config"
MARKER_NAME = "ionmix_train.json"
PACKAGE_NAME = "model.nequip.zip"
TRAIN_STAMP_NAME = ".train_complete.json"
METRICS_CSV = "metrics.csv"

#: Config keys that may differ when a run directory is reused (continue training).
_RESUMABLE_KEYS = ("max_epochs",)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of a finished training run.

    Attributes:
        run_dir: the run directory (absolute).
        config_path: ``config.yaml`` (nequip config, re-runnable as is).
        manifest_path: ``data_manifest.json``.
        checkpoint_path: ``best.ckpt`` (lowest validation metric; tested and packaged).
        last_checkpoint_path: ``last.ckpt`` (resume point).
        package_path: ``model.nequip.zip``, or None if packaging was not requested.
        metrics: test metrics: ``energy_mae_meV_per_atom``, ``force_mae_meV_per_A``,
            ``stress_mae_meV_per_A3`` (when stress was tested), plus nequip's own names
            (``test0_epoch/...``, eV units), ``epochs`` run and ``best_val_metric``.
        train_wall_s: wall time of nequip-train (s) in the call that trained.
        package_wall_s: wall time of nequip-package (s).
        resumed: training continued from an existing last.ckpt.
    """

    run_dir: Path
    config_path: Path
    manifest_path: Path
    checkpoint_path: Path
    last_checkpoint_path: Path
    package_path: Path | None
    metrics: dict[str, float]
    train_wall_s: float
    package_wall_s: float
    resumed: bool

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, Path):
                out[key] = str(value)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainResult:
        paths = {"run_dir", "config_path", "manifest_path", "checkpoint_path",
                 "last_checkpoint_path", "package_path"}
        kwargs = {k: (Path(v) if k in paths and v is not None else v) for k, v in data.items()}
        return cls(**kwargs)


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("ionmix", "nequip", "nequip-allegro", "torch", "ase", "lightning"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _script(name: str) -> str:
    """Path of a console script installed next to this Python (the venv's bin/)."""
    candidate = Path(sys.executable).with_name(name)
    if candidate.is_file():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise TrainRunError(f"cannot find the {name} command (is nequip installed?)")
    return found


def _metrics_parts(run_dir: Path) -> list[Path]:
    """Earlier segments of metrics.csv (set aside on resume), oldest first."""
    parts = list(run_dir.glob(f"{METRICS_CSV}.part*"))
    return sorted(parts, key=lambda p: int(p.name.rsplit("part", 1)[1]))


def read_metrics_csv(run_dir: str | Path) -> list[dict[str, float]]:
    """Rows of Lightning's ``metrics.csv`` (and of segments from before a resume), as
    dicts of floats with empty cells dropped, oldest first."""
    run_dir = Path(run_dir)
    rows = []
    for path in [*_metrics_parts(run_dir), run_dir / METRICS_CSV]:
        if not path.is_file():
            continue
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                rows.append({k: float(v) for k, v in row.items() if k and v not in ("", None)})
    return rows


def loss_curve(run_dir: str | Path, key: str = "train_loss_epoch/weighted_sum") -> list[float]:
    """Per-epoch values of a logged quantity (default: the epoch-mean training loss),
    ordered by epoch; an epoch logged twice (resumed mid-way) keeps its last value."""
    by_epoch: dict[int, float] = {}
    for row in read_metrics_csv(run_dir):
        if key in row:
            by_epoch[int(row.get("epoch", len(by_epoch)))] = row[key]
    return [by_epoch[e] for e in sorted(by_epoch)]


def read_test_metrics(run_dir: str | Path) -> dict[str, float]:
    """nequip's test metrics of the last test run (eV units) plus ionmix-named meV copies."""
    rows = read_metrics_csv(run_dir)
    tests = [r for r in rows if any(k.startswith("test0_epoch/") for k in r)]
    if not tests:
        return {}
    out = {k: v for k, v in tests[-1].items() if k.startswith("test0_epoch/")}
    names = {
        "test0_epoch/per_atom_energy_mae": "energy_mae_meV_per_atom",
        "test0_epoch/forces_mae": "force_mae_meV_per_A",
        "test0_epoch/stress_mae": "stress_mae_meV_per_A3",
    }
    for nequip_name, ionmix_name in names.items():
        if nequip_name in out:
            out[ionmix_name] = 1000.0 * out[nequip_name]
    vals = loss_curve(run_dir, "val0_epoch/weighted_sum")
    if vals:
        out["epochs"] = float(len(vals))
        out["best_val_metric"] = min(vals)
    return out


def epochs_done(run_dir: str | Path) -> int:
    """Validation epochs nequip-train has logged in `run_dir` so far (0: none, or no
    readable metrics.csv yet)."""
    try:
        return sum(1 for r in read_metrics_csv(Path(run_dir)) if "val0_epoch/weighted_sum" in r)
    except (OSError, ValueError, csv.Error):
        return 0


def _progress_lines(
    run_dir: Path, seen: int, max_epochs: int, elapsed_s: float
) -> tuple[int, list[str]]:
    """Lines for validation epochs logged since `seen` (tolerates half-written files);
    `elapsed_s` is the wall time since nequip-train started (±0.5 s polling)."""
    try:
        rows = [r for r in read_metrics_csv(run_dir) if "val0_epoch/weighted_sum" in r]
    except (OSError, ValueError, csv.Error):
        return seen, []
    lines = []
    for r in rows[seen:]:
        parts = [f"epoch {int(r.get('epoch', 0)) + 1}/{max_epochs} [{elapsed_s:.1f} s]"]
        if "val0_epoch/per_atom_energy_mae" in r:
            parts.append(f"val E MAE {1000 * r['val0_epoch/per_atom_energy_mae']:.4g} meV/atom")
        if "val0_epoch/forces_mae" in r:
            parts.append(f"F MAE {1000 * r['val0_epoch/forces_mae']:.4g} meV/Å")
        if "val0_epoch/stress_mae" in r:
            parts.append(f"S MAE {1000 * r['val0_epoch/stress_mae']:.4g} meV/Å³")
        lines.append(", ".join(parts))
    return len(rows), lines


def _dies_with_parent(cmd: list[str]) -> list[str]:
    """`cmd` wrapped so that Linux sends it SIGTERM when this process dies.

    Without it, a killed `ionmix train` (SIGTERM/SIGKILL run no Python cleanup) leaves an
    orphan nequip-train that keeps writing into the run folder, and corrupts the metrics
    file of the next run started there (seen in practice). util-linux's `setpriv
    --pdeathsig` sets PR_SET_PDEATHSIG and execs the command; unlike a preexec_fn it is
    safe in threaded parents (Dask workers). Unchanged where setpriv is missing.
    """
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", "--", *cmd] if setpriv else cmd


def _run_subprocess(
    cmd: list[str], cwd: Path, log_path: Path, what: str,
    poll: Callable[[], None] | None = None, num_threads: int | None = None,
) -> str:
    """Run `cmd`, appending its output to `log_path`; return that output."""
    from ionmix.runtime import subprocess_env

    # threads and allocator settings: decided in ionmix.runtime (no nanny trim threshold)
    env = subprocess_env(num_threads, HYDRA_FULL_ERROR="1")
    start = log_path.stat().st_size if log_path.is_file() else 0
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(_dies_with_parent(cmd), cwd=cwd, stdout=log,
                                stderr=subprocess.STDOUT, env=env)
        try:
            while proc.poll() is None:
                time.sleep(0.5)
                if poll is not None:
                    poll()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
    if poll is not None:
        poll()
    with open(log_path, errors="replace") as fh:
        fh.seek(start)
        output = fh.read()
    if proc.returncode != 0:
        tail = output.splitlines()[-40:]
        raise TrainRunError(
            f"{what} failed with exit code {proc.returncode}; last lines of {log_path}:\n"
            + "\n".join(tail)
        )
    return output


# --------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------


def _runtime_record(num_threads: int | None) -> dict:
    """What nequip-train runs with (`ionmix.runtime`): recorded, never compared on resume."""
    from ionmix.runtime import record

    out = record()
    if num_threads is not None:
        out["nequip_train_threads"] = num_threads
    return out


def check_options(preset: str, overrides: Mapping[str, Any] | None = None,
                  baseline: str = "none") -> None:
    """TrainConfigError / BaselineError for an unknown preset, override key or value, or
    baseline name: what a caller checks before writing anything for a run."""
    from ionmix.models.baseline import BASELINES, BaselineError

    p = get_preset(preset)
    if baseline not in BASELINES:
        raise BaselineError(f"unknown baseline {baseline!r}; one of {', '.join(BASELINES)}")
    build_config(p, train_file="train.extxyz", val_file="val.extxyz", test_file="test.extxyz",
                 type_names=["H"], per_type_energy_shifts_eV={"H": 0.0}, seed=0,
                 run_dir=Path("."), train_val_counts=(1, 1), overrides=dict(overrides or {}))


def run_training(
    train_file: str | Path,
    val_file: str | Path | None,
    test_file: str | Path,
    type_names: Sequence[str],
    *,
    preset: str,
    energy_shifts: Mapping[str, float] | str,
    run_dir: str | Path,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    package: bool = True,
    say: Callable[[str], None] | None = print,
    num_threads: int | None = None,
    initial_model: str | Path | None = None,
    baseline: str = "none",
    provenance=None,
    baseline_cache: str | Path | None = None,
    rebaseline: bool = False,
) -> TrainResult:
    """Train a NequIP or Allegro model with ``nequip-train`` and package it.

    Args:
        train_file: extxyz (any ASE-readable file) of training frames with energy (eV),
            forces (eV/Å) and, for stress presets, stress (eV/Å³).
        val_file: validation frames; None splits the training file by the preset's
            ``val_fraction`` (random, by `seed`).
        test_file: test frames, ideally from an independent replica; nequip's test run
            reports on them with the best checkpoint.
        type_names: chemical symbols the model knows, e.g. ["C", "F", "H", "Li", "N", "P"].
        preset: a name from `ionmix.train.PRESETS`.
        energy_shifts: per-type energy shifts (eV): a dict type → eV (e.g. from
            `per_type_energy_shifts("isolated-atoms", ...)`), or ``"fit"`` / ``"mean"`` to
            compute them from the training file (see `ionmix.train.energy`).
        run_dir: output directory (created); reuse it to resume or to get the result again.
        seed: seeds model initialisation, data split and shuffling.
        overrides: dotted-path config overrides (see `ionmix.train.presets`), e.g.
            ``{"max_epochs": 5, "training_module.model.num_layers": 2}``.
        package: build ``model.nequip.zip`` from ``best.ckpt``.
        say: called with one line per finished epoch (and a few status lines);
            None for silence.
        num_threads: CPU threads for torch in nequip-train (OMP_NUM_THREADS); None keeps
            the environment's setting. On a shared machine 1 avoids the large slowdown of
            oversubscribed OpenMP threads.
        initial_model: fine-tune: start from this packaged model (``*.nequip.zip``, same
            type names and architecture family) instead of random weights; the preset's
            optimiser, loss and epochs apply. The package must stay where it is (nequip
            records its path in the checkpoints).
        baseline: the physics under the network (`ionmix.models.baseline.BASELINES`):
            ``none``, ``coulomb`` (the frames' charges × their charge scale, PME; subtracted
            from the labels before training), ``zbl`` (nequip's ZBL pair term, compiled
            into the model), ``coulomb+zbl``, ``wall`` (a ZBL wall between molecules,
            subtracted like Coulomb), ``coulomb+wall``, the force field's bonded terms
            (``...bonded``, ``...bonded-fit``) or its dispersion tail beyond the network's
            cutoff (``...+tail``). Recorded in
            ``RUN_DIR/baseline.json`` beside the package. nequip's test metrics are on the
            residual labels, which equal those on the full labels (the baseline is exact on
            both sides).
        provenance: the frames' `Provenance` (their ion sets; default: none, library ions).
        baseline_cache: SQLite file of baseline labels per frame (default
            ``RUN_DIR/baseline-cache.sqlite``); share one between runs on the same frames
            (a committee) so each frame's baseline is computed once.
        rebaseline: with `initial_model`, allow it another baseline than `baseline`: its
            weights only start the new network (a warm start), whose residual labels
            differ; `energy_shifts` must then be this baseline's. Default: refused.

    Returns:
        TrainResult (also stored as ``RUN_DIR/ionmix_train.json``).

    Raises:
        TrainConfigError: unknown preset/override key, invalid override value, energy
            shifts not matching type names, or a run directory holding a different run.
        TrainDataError: bad data (names the file, frame and species/label/box at fault).
        TrainRunError: nequip-train or nequip-package failed (with their log tail).
    """
    say = say if say is not None else (lambda line: None)
    p = get_preset(preset)
    run_dir = Path(run_dir).resolve()
    type_names = [str(t) for t in type_names]
    overrides = dict(overrides or {})

    # overrides are checked before any data is read (cheap, fails fast)
    skeleton = build_config(
        p, train_file=train_file, val_file=val_file, test_file=test_file,
        type_names=type_names, per_type_energy_shifts_eV={t: 0.0 for t in type_names},
        seed=seed, run_dir=run_dir, train_val_counts=(1, 1), overrides=overrides,
    )
    frames, summaries = _read_data(
        {"train": train_file, "val": val_file, "test": test_file}, type_names,
        cutoff_radius_A=float(skeleton["cutoff_radius"]),
        uses_stress=float(skeleton["loss_coeffs"].get("stress", 0.0)) > 0,
    )
    teachers = _label_teachers(frames, provenance)  # before the residual replaces the frames
    cache_path = baseline_cache or run_dir / "baseline-cache.sqlite"
    under = _baseline(baseline, frames, provenance, initial_model, type_names,
                      BaselineCache(cache_path) if is_fitted(baseline) else None,
                      cutoff_radius_A=float(skeleton["cutoff_radius"]), rebaseline=rebaseline)
    if under.outside:
        residual = _residual_files(run_dir, under, frames, provenance, cache_path, say)
        train_file, val_file, test_file = (residual.get(r) for r in ("train", "val", "test"))
        frames = {r: read_data_file(f, r) for r, f in residual.items()}
    if under.zbl and initial_model is None:
        overrides = {"+training_module.model.pair_potential": zbl_pair_potential(type_names),
                     **overrides}
    train_val_counts = (
        _split_counts(summaries["train"].n_frames, p.val_fraction, train_file)
        if val_file is None else None
    )
    energy_mode, shifts = _energy_reference(energy_shifts, type_names, frames)
    config = build_config(
        p, train_file=train_file, val_file=val_file, test_file=test_file,
        type_names=type_names, per_type_energy_shifts_eV=shifts, seed=seed, run_dir=run_dir,
        train_val_counts=train_val_counts,
        test_has_stress=summaries["test"].all_have_stress, overrides=overrides,
    )
    if initial_model is not None:
        config = _fine_tune_from(config, initial_model)
    config_text = _config_text(config, p, run_dir, energy_mode, shifts, overrides)
    config_sha = hashlib.sha256(config_text.encode()).hexdigest()
    manifest = _manifest(p, seed, overrides, type_names, energy_mode, shifts, frames,
                         summaries, train_val_counts, initial_model)
    manifest["baseline"] = {"key": under.key, **under.to_json()}
    manifest["teachers"] = teachers
    manifest["runtime"] = _runtime_record(num_threads)

    # the run directory is reused only for the same run
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_same_run(run_dir, config, manifest)
    done = _finished_result(run_dir, package, config_sha)
    if done is not None:
        say(f"{run_dir}: already trained, nothing to do")
        return done
    atomic_write_text(run_dir / f"{CONFIG_NAME}.yaml", config_text)
    atomic_write_text(run_dir / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")

    resumed, train_wall_s = _train(run_dir, config_sha, p, int(config["max_epochs"]), say,
                                   num_threads)
    package_wall_s = 0.0
    if package and not (run_dir / PACKAGE_NAME).is_file():
        package_wall_s = _package(run_dir, num_threads)
    package_path = run_dir / PACKAGE_NAME
    write_record(run_dir, under, file_sha256(package_path) if package_path.is_file() else None)
    return _record_result(run_dir, package, train_wall_s, package_wall_s, resumed, say)


# --------------------------------------------------------------------------------------
# the steps of run_training
# --------------------------------------------------------------------------------------


def _read_data(
    files: Mapping[str, str | Path | None], type_names: list[str], cutoff_radius_A: float,
    uses_stress: bool,
) -> tuple[dict[str, list], dict[str, DataFileSummary]]:
    """Read and validate each given file (role → path; None skipped): frames and summaries
    by role."""
    frames: dict[str, list] = {}
    summaries: dict[str, DataFileSummary] = {}
    for role, path in files.items():
        if path is None:
            continue
        frames[role] = read_data_file(path, role)
        summaries[role] = validate_frames(
            frames[role], Path(path).resolve(), role, type_names, cutoff_radius_A,
            require_stress=uses_stress,
        )
    return frames, summaries


def _label_teachers(frames: dict[str, list], provenance) -> dict[str, dict | None]:
    """The teachers that labelled `frames` (every role), key → spec record (None when the
    frames' provenance does not record it): what the model will be validated against."""
    from ionmix.dataset.provenance import Provenance

    prov = provenance or Provenance()
    out: dict[str, dict | None] = {}
    for atoms in (a for role_frames in frames.values() for a in role_frames):
        key = atoms.info.get("teacher")
        if key is None or key in out:
            continue
        try:
            out[key] = prov.teacher_spec(atoms).record()
        except InputError:  # not recorded (or unreadable): the key alone is still known
            out[key] = None
    return out


def _baseline(name: str, frames: dict[str, list], provenance, initial_model,
              type_names: list[str], cache: BaselineCache | None = None,
              cutoff_radius_A: float | None = None, rebaseline: bool = False) -> Baseline:
    """The baseline `name` for these frames (checked before any work); a fine-tuned model
    keeps its parent's baseline, so `name` must be the one recorded beside the parent. A
    dispersion tail starts at the network's `cutoff_radius_A`."""
    from ionmix.dataset.provenance import Provenance

    prov = provenance or Provenance()
    every = [a for role in ("train", "val", "test") for a in frames.get(role, [])]
    beside = any(part in name for part in ("coulomb", "wall", "bonded", "tail"))
    ion_sets = [prov.ion_set(a) for a in every] if beside else [None] * len(every)
    parent = None if initial_model is None else read_record(_package_path(initial_model))
    # a bonded-fit baseline is fitted on the training frames (first in `every`), once: a
    # fine-tuned model keeps its parent's fit
    under = baseline_for_frames(name, every, ion_sets, "training frames",
                                fit_count=len(frames.get("train", [])), cache=cache,
                                bonded_parameters=None if parent is None or rebaseline
                                else parent.bonded_parameters, tail_cutoff_A=cutoff_radius_A)
    if under.zbl:
        zbl_pair_potential(type_names)
    if parent is not None and not rebaseline:
        if parent.key != under.key:
            raise TrainConfigError(f"initial model {initial_model} was trained with baseline "
                                   f"{parent.key}; fine-tuning it with {under.key} would mix two")
    return under


def _residual_files(run_dir: Path, under: Baseline, frames: dict[str, list], provenance,
                    cache_path: str | Path, say: Callable[[str], None]) -> dict[str, Path]:
    """The frames by role with the Coulomb baseline subtracted, written to
    ``RUN_DIR/residual/<role>.extxyz`` (each frame's baseline cached in `cache_path`)."""
    from ionmix.dataset.provenance import Provenance
    from ionmix.dataset.store import atomic_write_extxyz

    prov = provenance or Provenance()
    cache = BaselineCache(cache_path)
    out = {}
    for role, role_frames in frames.items():
        path = run_dir / "residual" / f"{role}.extxyz"
        say(f"baseline {under.key}: {len(role_frames)} {role} frames")
        residual = residual_frames(role_frames, under, [prov.ion_set(a) for a in role_frames],
                                   cache)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_extxyz(residual, path)
        out[role] = path
    return out


def _split_counts(n: int, val_fraction: float, train_file: str | Path) -> tuple[int, int]:
    """(n_train, n_val) for splitting validation frames off `n` training frames."""
    n_val = max(1, round(n * val_fraction))
    if n - n_val < 1:
        raise TrainConfigError(
            f"train file {train_file} has {n} frame(s): too few to split off validation "
            f"frames (val_fraction {val_fraction:g}); give a val_file"
        )
    return n - n_val, n_val


def _energy_reference(
    energy_shifts: Mapping[str, float] | str, type_names: list[str], frames: dict[str, list],
) -> tuple[str, dict[str, float]]:
    """(mode, per-type energy shifts in eV): computed for ``"fit"``/``"mean"``, else as
    given (mode ``"explicit"``); `frames` by role (the training frames are used)."""
    if isinstance(energy_shifts, str):
        return energy_shifts, per_type_energy_shifts(energy_shifts, type_names,
                                                     frames=frames["train"])
    return "explicit", {str(k): float(v) for k, v in energy_shifts.items()}


def _package_path(initial_model: str | Path) -> Path:
    """The absolute path of a fine-tuning package; TrainConfigError naming it if missing."""
    path = Path(initial_model).resolve()
    if not path.is_file() or not path.name.endswith(".nequip.zip"):
        raise TrainConfigError(f"initial model {path}: no such .nequip.zip package")
    return path


def _fine_tune_from(config: dict, initial_model: str | Path) -> dict:
    """`config` with its model built from the package `initial_model` (nequip's
    ``ModelFromPackage``: weights, architecture and energy shifts are the package's)."""
    path = _package_path(initial_model)
    module = {**config["training_module"],
              "model": {"_target_": "nequip.model.ModelFromPackage", "package_path": str(path)}}
    return {**config, "training_module": module}


def _config_text(config: dict, p: Preset, run_dir: Path, energy_mode: str,
                 final_shifts: Mapping[str, float], overrides: Mapping[str, Any]) -> str:
    """``config.yaml``'s text: the config under a header saying how to re-run it."""
    header = (
        f"nequip-framework config written by ionmix.train (preset {p.name}, backend "
        f"{p.backend}).\n"
        f"Re-run unchanged with:  nequip-train -cp {run_dir} -cn {CONFIG_NAME}\n"
        f"Resume with:            nequip-train -cp {run_dir} -cn {CONFIG_NAME} "
        f"++ckpt_path={run_dir / 'last.ckpt'}\n"
        f"Per-type energy shifts (eV/atom): mode '{energy_mode}': {final_shifts}\n"
        f"Overrides applied: {overrides if overrides else 'none'}\n"
        f"{p.description}"
    )
    return config_to_yaml(config, header)


def _manifest(
    p: Preset, seed: int, overrides: Mapping[str, Any], type_names: list[str],
    energy_mode: str, shifts: Mapping[str, float], frames: dict[str, list],
    summaries: dict[str, DataFileSummary], train_val_counts: tuple[int, int] | None,
    initial_model: str | Path | None,
) -> dict[str, Any]:
    """``data_manifest.json``'s content."""
    return {
        "preset": p.name,
        "backend": p.backend,
        "seed": int(seed),
        "overrides": {k: v for k, v in overrides.items()},
        "type_names": type_names,
        "energy_reference": {
            "mode": energy_mode,
            "per_type_energy_shifts_eV": dict(shifts),
        },
        "files": {role: file_manifest(summaries[role], frames[role]) for role in frames},
        "split": (
            None if train_val_counts is None
            else {"from": "train", "n_train": train_val_counts[0], "n_val": train_val_counts[1],
                  "seed": int(seed)}
        ),
        "initial_model": None if initial_model is None else str(Path(initial_model).resolve()),
        "versions": _versions(),
    }


def _check_same_run(run_dir: Path, config: dict, manifest: dict) -> None:
    """Refuse (TrainConfigError) a run directory that holds a run with another config (bar
    `_RESUMABLE_KEYS`) or other frames."""
    config_path = run_dir / f"{CONFIG_NAME}.yaml"
    manifest_path = run_dir / MANIFEST_NAME
    if config_path.is_file():
        import yaml

        check_same_settings(
            yaml.safe_load(config_path.read_text()), config, error=TrainConfigError,
            may_change=_RESUMABLE_KEYS,
            what=f"run directory {run_dir} holds a different run; its config differs",
            advice="use a new run_dir",
        )
    if manifest_path.is_file():
        old_files = json.loads(manifest_path.read_text()).get("files", {})
        for role, rec in manifest["files"].items():
            if role in old_files and old_files[role]["frames"] != rec["frames"]:
                raise TrainConfigError(
                    f"run directory {run_dir}: the {role} frames differ from those it was "
                    f"trained on ({rec['path']}); use a new run_dir"
                )


def _stamp_matches(run_dir: Path, config_sha: str) -> bool:
    """Whether nequip-train finished in `run_dir` with the config of hash `config_sha`."""
    stamp = run_dir / TRAIN_STAMP_NAME
    return stamp.is_file() and json.loads(stamp.read_text()).get("config_sha256") == config_sha


def _finished_result(run_dir: Path, package: bool, config_sha: str) -> TrainResult | None:
    """The recorded result when this exact run already finished (and was packaged if
    `package`), else None."""
    marker_path = run_dir / MARKER_NAME
    if marker_path.is_file() and ((run_dir / PACKAGE_NAME).is_file() or not package):
        done = TrainResult.from_json(json.loads(marker_path.read_text()))
        if _stamp_matches(run_dir, config_sha):
            return done
    return None


def _train(
    run_dir: Path, config_sha: str, p: Preset, max_epochs: int, say: Callable[[str], None],
    num_threads: int | None,
) -> tuple[bool, float]:
    """Run nequip-train (resuming from last.ckpt if there is one) unless this config is
    already trained; return (resumed, nequip-train wall time in s, the recorded one if it
    did not run)."""
    marker_path = run_dir / MARKER_NAME
    if _stamp_matches(run_dir, config_sha) and (run_dir / "best.ckpt").is_file():
        if marker_path.is_file():
            return False, float(json.loads(marker_path.read_text()).get("train_wall_s", 0.0))
        return False, 0.0
    for stale in (marker_path, run_dir / TRAIN_STAMP_NAME, run_dir / PACKAGE_NAME):
        stale.unlink(missing_ok=True)
    cmd, resumed = _train_command(run_dir, say)
    seen = [len([r for r in read_metrics_csv(run_dir) if "val0_epoch/weighted_sum" in r])]

    t0 = time.perf_counter()

    def poll() -> None:
        elapsed_s = time.perf_counter() - t0
        seen[0], lines = _progress_lines(run_dir, seen[0], max_epochs, elapsed_s)
        for line in lines:
            say(line)

    say(f"training {p.name} ({p.backend}) in {run_dir}")
    output = _run_subprocess(
        cmd, run_dir, run_dir / "nequip-train.log", "nequip-train", poll, num_threads
    )
    train_wall_s = time.perf_counter() - t0
    # Lightning exits 0 after SIGTERM (e.g. a preempted job): check the test stage ran
    if "TEST RUN END" not in output or not (run_dir / "best.ckpt").is_file() or not (
        read_test_metrics(run_dir)
    ):
        tail = "\n".join(output.splitlines()[-15:])
        raise TrainRunError(
            f"nequip-train in {run_dir} stopped before finishing its test run; call "
            f"run_training again to resume from last.ckpt. Last lines:\n{tail}"
        )
    atomic_write_text(run_dir / TRAIN_STAMP_NAME,
                      json.dumps({"config_sha256": config_sha}) + "\n")
    return resumed, train_wall_s


def _train_command(run_dir: Path, say: Callable[[str], None]) -> tuple[list[str], bool]:
    """The nequip-train command and whether it resumes from last.ckpt; sets earlier
    metrics aside (resume) or removes them (fresh start)."""
    last_ckpt = run_dir / "last.ckpt"
    cmd = [_script("nequip-train"), "-cp", str(run_dir), "-cn", CONFIG_NAME]
    if not last_ckpt.is_file():
        for stale in (*_metrics_parts(run_dir), run_dir / METRICS_CSV, run_dir / "best.ckpt"):
            stale.unlink(missing_ok=True)
        return cmd, False
    cmd.append(f"++ckpt_path={last_ckpt}")
    say(f"resuming from {last_ckpt}")
    # Lightning's CSVLogger starts metrics.csv afresh: keep the earlier segment
    if (run_dir / METRICS_CSV).is_file():
        n_parts = len(_metrics_parts(run_dir))
        os.replace(run_dir / METRICS_CSV, run_dir / f"{METRICS_CSV}.part{n_parts}")
    return cmd, True


def _package(run_dir: Path, num_threads: int | None) -> float:
    """Build ``model.nequip.zip`` from best.ckpt (atomically); return the wall time (s)."""
    tmp = run_dir / f".partial-{PACKAGE_NAME}"
    tmp.unlink(missing_ok=True)
    t0 = time.perf_counter()
    _run_subprocess(
        [_script("nequip-package"), "build", str(run_dir / "best.ckpt"), str(tmp)],
        run_dir, run_dir / "nequip-package.log", "nequip-package", None, num_threads,
    )
    package_wall_s = time.perf_counter() - t0
    os.replace(tmp, run_dir / PACKAGE_NAME)
    return package_wall_s


def _record_result(
    run_dir: Path, package: bool, train_wall_s: float, package_wall_s: float, resumed: bool,
    say: Callable[[str], None],
) -> TrainResult:
    """Read the test metrics and write the marker ``ionmix_train.json`` (last)."""
    metrics = read_test_metrics(run_dir)
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        say(f"warning: non-finite test metrics {bad}")
    result = TrainResult(
        run_dir=run_dir,
        config_path=run_dir / f"{CONFIG_NAME}.yaml",
        manifest_path=run_dir / MANIFEST_NAME,
        checkpoint_path=run_dir / "best.ckpt",
        last_checkpoint_path=run_dir / "last.ckpt",
        package_path=run_dir / PACKAGE_NAME if package else None,
        metrics=metrics,
        train_wall_s=train_wall_s,
        package_wall_s=package_wall_s,
        resumed=resumed,
    )
    atomic_write_text(run_dir / MARKER_NAME, json.dumps(result.to_json(), indent=1) + "\n")
    say(
        "done: test E MAE "
        f"{metrics.get('energy_mae_meV_per_atom', float('nan')):.4g} meV/atom, "
        f"F MAE {metrics.get('force_mae_meV_per_A', float('nan')):.4g} meV/Å"
    )
    return result
