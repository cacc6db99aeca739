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

from ionmix.io import atomic_write_text
from ionmix.resume import check_same_settings

from .data import DataFileSummary, file_manifest, read_frames, validate_frames
from .energy import per_type_energy_shifts
from .errors import TrainConfigError, TrainRunError
from .presets import build_config, config_to_yaml, get_preset

CONFIG_NAME = "config"
MARKER_NAME = "ionmix_train.json"
MANIFEST_NAME = "data_manifest.json"
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
    env = dict(os.environ, HYDRA_FULL_ERROR="1")
    if num_threads is not None:
        env.update(OMP_NUM_THREADS=str(num_threads), MKL_NUM_THREADS=str(num_threads))
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
    progress: Callable[[str], None] | None = print,
    num_threads: int | None = None,
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
        progress: called with one line per finished epoch (and a few status lines);
            None for silence.
        num_threads: CPU threads for torch in nequip-train (OMP_NUM_THREADS); None keeps
            the environment's setting. On a shared machine 1 avoids the large slowdown of
            oversubscribed OpenMP threads.

    Returns:
        TrainResult (also stored as ``RUN_DIR/ionmix_train.json``).

    Raises:
        TrainConfigError: unknown preset/override key, invalid override value, energy
            shifts not matching type names, or a run directory holding a different run.
        TrainDataError: bad data (names the file, frame and species/label/box at fault).
        TrainRunError: nequip-train or nequip-package failed (with their log tail).
    """
    say = progress if progress is not None else (lambda line: None)
    p = get_preset(preset)
    run_dir = Path(run_dir).resolve()
    type_names = [str(t) for t in type_names]
    overrides = dict(overrides or {})

    # 1. overrides are checked before any data is read (cheap, fails fast)
    skeleton = build_config(
        p, train_file=train_file, val_file=val_file, test_file=test_file,
        type_names=type_names, per_type_energy_shifts_eV={t: 0.0 for t in type_names},
        seed=seed, run_dir=run_dir, train_val_counts=(1, 1), overrides=overrides,
    )
    cutoff_radius_A = float(skeleton["cutoff_radius"])
    uses_stress = float(skeleton["loss_coeffs"].get("stress", 0.0)) > 0

    # 2. data
    files = {"train": train_file, "val": val_file, "test": test_file}
    frames: dict[str, list] = {}
    summaries: dict[str, DataFileSummary] = {}
    for role, path in files.items():
        if path is None:
            continue
        frames[role] = read_frames(path, role)
        summaries[role] = validate_frames(
            frames[role], Path(path).resolve(), role, type_names, cutoff_radius_A,
            require_stress=uses_stress,
        )
    train_val_counts = None
    if val_file is None:
        n = summaries["train"].n_frames
        n_val = max(1, round(n * p.val_fraction))
        if n - n_val < 1:
            raise TrainConfigError(
                f"train file {train_file} has {n} frame(s): too few to split off validation "
                f"frames (val_fraction {p.val_fraction:g}); give a val_file"
            )
        train_val_counts = (n - n_val, n_val)

    # 3. energy reference
    if isinstance(energy_shifts, str):
        energy_mode = energy_shifts
        shifts = per_type_energy_shifts(energy_shifts, type_names, frames=frames["train"])
    else:
        energy_mode = "explicit"
        shifts = {str(k): float(v) for k, v in energy_shifts.items()}

    # 4. config
    config = build_config(
        p, train_file=train_file, val_file=val_file, test_file=test_file,
        type_names=type_names, per_type_energy_shifts_eV=shifts, seed=seed, run_dir=run_dir,
        train_val_counts=train_val_counts,
        test_has_stress=summaries["test"].all_have_stress, overrides=overrides,
    )
    final_shifts = config["training_module"]["model"]["per_type_energy_shifts"]
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
    config_text = config_to_yaml(config, header)
    config_sha = hashlib.sha256(config_text.encode()).hexdigest()

    manifest = {
        "preset": p.name,
        "backend": p.backend,
        "seed": int(seed),
        "overrides": {k: v for k, v in overrides.items()},
        "type_names": type_names,
        "energy_reference": {"mode": energy_mode, "per_type_energy_shifts_eV": final_shifts},
        "files": {role: file_manifest(summaries[role], frames[role]) for role in frames},
        "split": (
            None if train_val_counts is None
            else {"from": "train", "n_train": train_val_counts[0], "n_val": train_val_counts[1],
                  "seed": int(seed)}
        ),
        "versions": _versions(),
    }

    # 5. run directory: reuse only for the same run
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / f"{CONFIG_NAME}.yaml"
    manifest_path = run_dir / MANIFEST_NAME
    marker_path = run_dir / MARKER_NAME
    package_path = run_dir / PACKAGE_NAME
    best_ckpt, last_ckpt = run_dir / "best.ckpt", run_dir / "last.ckpt"
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
    if marker_path.is_file() and (package_path.is_file() or not package):
        done = TrainResult.from_json(json.loads(marker_path.read_text()))
        stamp = run_dir / TRAIN_STAMP_NAME
        if stamp.is_file() and json.loads(stamp.read_text()).get("config_sha256") == config_sha:
            say(f"{run_dir}: already trained, nothing to do")
            return done

    atomic_write_text(config_path, config_text)
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1) + "\n")

    # 6. train (or resume)
    stamp_path = run_dir / TRAIN_STAMP_NAME
    trained = (
        stamp_path.is_file()
        and json.loads(stamp_path.read_text()).get("config_sha256") == config_sha
        and best_ckpt.is_file()
    )
    resumed = False
    train_wall_s = 0.0
    if not trained:
        for stale in (marker_path, stamp_path, package_path):
            stale.unlink(missing_ok=True)
        cmd = [_script("nequip-train"), "-cp", str(run_dir), "-cn", CONFIG_NAME]
        if last_ckpt.is_file():
            resumed = True
            cmd.append(f"++ckpt_path={last_ckpt}")
            say(f"resuming from {last_ckpt}")
            # Lightning's CSVLogger starts metrics.csv afresh: keep the earlier segment
            if (run_dir / METRICS_CSV).is_file():
                n_parts = len(_metrics_parts(run_dir))
                os.replace(run_dir / METRICS_CSV, run_dir / f"{METRICS_CSV}.part{n_parts}")
        else:
            for stale in (*_metrics_parts(run_dir), run_dir / METRICS_CSV, best_ckpt):
                stale.unlink(missing_ok=True)
        max_epochs = int(config["max_epochs"])
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
        if "TEST RUN END" not in output or not best_ckpt.is_file() or not read_test_metrics(
            run_dir
        ):
            tail = "\n".join(output.splitlines()[-15:])
            raise TrainRunError(
                f"nequip-train in {run_dir} stopped before finishing its test run; call "
                f"run_training again to resume from last.ckpt. Last lines:\n{tail}"
            )
        atomic_write_text(stamp_path, json.dumps({"config_sha256": config_sha}) + "\n")
    elif marker_path.is_file():
        train_wall_s = float(json.loads(marker_path.read_text()).get("train_wall_s", 0.0))

    # 7. package
    package_wall_s = 0.0
    if package and not package_path.is_file():
        tmp = run_dir / f".partial-{PACKAGE_NAME}"
        tmp.unlink(missing_ok=True)
        t0 = time.perf_counter()
        _run_subprocess(
            [_script("nequip-package"), "build", str(best_ckpt), str(tmp)],
            run_dir, run_dir / "nequip-package.log", "nequip-package", None, num_threads,
        )
        package_wall_s = time.perf_counter() - t0
        os.replace(tmp, package_path)

    metrics = read_test_metrics(run_dir)
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        say(f"warning: non-finite test metrics {bad}")
    result = TrainResult(
        run_dir=run_dir,
        config_path=config_path,
        manifest_path=manifest_path,
        checkpoint_path=best_ckpt,
        last_checkpoint_path=last_ckpt,
        package_path=package_path if package else None,
        metrics=metrics,
        train_wall_s=train_wall_s,
        package_wall_s=package_wall_s,
        resumed=resumed,
    )
    atomic_write_text(marker_path, json.dumps(result.to_json(), indent=1) + "\n")
    say(
        "done: test E MAE "
        f"{metrics.get('energy_mae_meV_per_atom', float('nan')):.4g} meV/atom, "
        f"F MAE {metrics.get('force_mae_meV_per_A', float('nan')):.4g} meV/Å"
    )
    return result
