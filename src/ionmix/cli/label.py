"""`ionmix label`: label frames with a teacher (classical, xtb, espresso) by task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ionmix.cli._common import app, console, floats, progress_bar

#: Arguments of `ionmix.labelling.label` and fields of `TaskOptions` → the option that sets
#: them, so an error names what the user typed (``--steps``, not ``n_steps``).
OPTION_NAMES = {"task": "--task", "n_frames": "--frames", "replica": "--replica",
                "n_steps": "--steps", "timestep_fs": "--timestep-fs",
                "temperature_K": "--temperature-K", "every": "--every",
                "relax_steps": "--relax-steps", "scales": "--scales", "out_store": "--out"}


def _teacher_and_cluster(teacher: str, config: Path | None):
    """The teacher spec (kind `teacher`, parameters from the config's [teacher] table) and
    the config's [cluster] table."""
    from ionmix.cluster import ClusterConfig
    from ionmix.config import ConfigError, parse_model, read_toml
    from ionmix.teachers import TEACHER_KINDS, TeacherError, teacher_spec

    if teacher not in TEACHER_KINDS:  # named here: with a config, the spec names the file
        raise TeacherError(f"--teacher {teacher!r} is not a teacher kind; choose one of "
                           f"{', '.join(sorted(TEACHER_KINDS))}")
    data = read_toml(config) if config is not None else {}
    unknown = set(data) - {"teacher", "cluster"}
    if unknown:
        raise ConfigError(f"{config}: unknown table(s) {sorted(unknown)}; allowed: teacher, "
                          "cluster")
    table = dict(data.get("teacher", {}))
    if table.get("kind", teacher) != teacher:
        raise ConfigError(f"{config}: [teacher] kind = {table['kind']!r} but --teacher is "
                          f"{teacher!r}")
    table["kind"] = teacher
    spec = teacher_spec(table, f"{config} [teacher]" if config else "--teacher")
    cluster = parse_model(ClusterConfig, data.get("cluster", {}), f"{config} [cluster]")
    return spec, cluster


@app.command()
def label(
    input_path: Annotated[Path, typer.Argument(
        metavar="INPUT", help="A dataset store (.db) or any ASE-readable file of frames.")],
    teacher: Annotated[str, typer.Option(help="Teacher kind: classical, xtb or espresso.")],
    task: Annotated[str, typer.Option(
        help="single-point, aimd, relax, volume-scan or isolated-atoms.")],
    out: Annotated[Path, typer.Option(help="Dataset store receiving the labels (may be "
                                      "INPUT itself).")],
    teacher_config: Annotated[Path | None, typer.Option(
        help="TOML with a [teacher] table (the kind's parameters) and optionally [cluster] "
        "(local or SLURM; see docs/labelling.md).")] = None,
    composition: Annotated[str | None, typer.Option(
        help="With a store: only this composition key.")] = None,
    frames: Annotated[int | None, typer.Option(
        help="Equally spaced frames per composition, ≥ 1 (default: all).")] = None,
    replica: Annotated[int | None, typer.Option(
        help="With a store: only this replica (from 0).")] = None,
    steps: Annotated[int, typer.Option(help="aimd: MD steps (≥ 1).")] = 50,
    timestep_fs: Annotated[float, typer.Option(
        "--timestep-fs", help="aimd: time step (fs, > 0).")] = 1.0,
    temperature_K: Annotated[float | None, typer.Option(
        "--temperature-K", help="aimd: target (K, > 0; default: each frame's).")] = None,
    every: Annotated[int, typer.Option(
        help="aimd: store every n-th step (1 to --steps).")] = 1,
    relax_steps: Annotated[int, typer.Option(
        help="relax: optimiser steps stored, the frame included (≥ 1).")] = 10,
    scales: Annotated[str, typer.Option(
        help="volume-scan: linear scale factors (> 0) of the molecule centres and cell.")] =
        "0.96,0.98,1.0,1.02,1.04",
    scheduler: Annotated[str | None, typer.Option(
        help="Address of an existing Dask scheduler (overrides [cluster]).")] = None,
    retry_failed: Annotated[bool, typer.Option(help="Label frames that failed before.")] =
        False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Label frames with a teacher: single points, short AIMD, relaxations, volume scans or
    isolated-atom energies, as Dask tasks; resumable (stored labels are never redone).

    Every option is checked before anything is read, written or started. A store keeps one
    set of task options per teacher and task: rerunning into it with other options (say
    --steps 20 after --steps 10) is refused, naming them; label into another --out store.

    A frame the teacher fails on (no SCF convergence, a crash) is recorded with its reason
    and output, never stored as a label, and skipped by reruns of the same job (teacher,
    task, options, store) unless --retry-failed.
    """
    from dataclasses import asdict

    from ionmix.labelling import (
        TaskOptions,
        check_input,
        check_selection,
        check_task,
        check_task_options,
    )
    from ionmix.labelling import label as run_label

    check_task(task, OPTION_NAMES)
    check_selection(frames, replica, OPTION_NAMES)
    values = {"n_steps": steps, "timestep_fs": timestep_fs, "temperature_K": temperature_K,
              "every": every, "relax_steps": relax_steps,
              "scales": tuple(floats(scales, "--scales"))}
    check_task_options(values, OPTION_NAMES)
    options = TaskOptions(**values)
    spec, cluster = _teacher_and_cluster(teacher, teacher_config)
    check_input(input_path)
    with progress_bar(f"{task} ({spec.key})", stderr=True) as update:
        summary = run_label(input_path, spec, task, out, composition=composition,
                            n_frames=frames, replica=replica, options=options,
                            cluster=cluster, scheduler=scheduler, retry_failed=retry_failed,
                            option_names=OPTION_NAMES,
                            progress=lambda k, n, what: update(completed=k, total=n,
                                                               description=what))
    if as_json:
        print(json.dumps(asdict(summary), indent=2))
        return
    _report(summary, spec, out)


def _report(summary, spec, out: Path) -> None:
    """The summary line, then one line per failed frame (this run's, then those skipped
    because they failed before) and where their tracebacks or engine output are."""
    def say(text: str) -> None:  # soft_wrap: a long reason stays on its frame's line
        console.print(text, highlight=False, soft_wrap=True)

    say(escape(f"{spec.describe()}: {summary.labelled} labelled ({summary.n_labels} labels), "
               f"{summary.failed} failed, {summary.skipped} skipped, {summary.wall_s:.0f} s "
               f"→ {out}"))
    for sid, reason in summary.failures.items():
        say(f"[yellow]failed[/] {escape(sid)}: {escape(reason)}")
    for sid, reason in summary.failed_before.items():
        say(f"[yellow]skipped[/] {escape(sid)}: failed before ({escape(reason)}); "
            "--retry-failed tries it again")
    if summary.failures or summary.failed_before:
        say(escape(f"reasons, tracebacks and engine output: {summary.workdir}/failures.json "
                   "and failures/"))
