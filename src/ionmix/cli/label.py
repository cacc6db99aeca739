"""`ionmix label`: label frames with a teacher (classical, xtb, espresso) by task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ionmix.cli._common import app, console, floats, progress_bar


def _teacher_and_cluster(teacher: str, config: Path | None):
    """The teacher spec (kind `teacher`, parameters from the config's [teacher] table) and
    the config's [cluster] table."""
    from ionmix.cluster import ClusterConfig
    from ionmix.config import ConfigError, parse_model, read_toml
    from ionmix.teachers import teacher_spec

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
        help="Equally spaced frames per composition (default: all).")] = None,
    replica: Annotated[int | None, typer.Option(help="With a store: only this replica.")] = None,
    steps: Annotated[int, typer.Option(help="aimd: MD steps.")] = 50,
    timestep_fs: Annotated[float, typer.Option("--timestep-fs", help="aimd: time step.")] = 1.0,
    temperature_K: Annotated[float | None, typer.Option(
        "--temperature-K", help="aimd: target (default: each frame's).")] = None,
    every: Annotated[int, typer.Option(help="aimd: store every n-th step.")] = 1,
    relax_steps: Annotated[int, typer.Option(help="relax: optimiser steps stored.")] = 10,
    scales: Annotated[str, typer.Option(
        help="volume-scan: linear scale factors of the molecule centres and cell.")] =
        "0.96,0.98,1.0,1.02,1.04",
    scheduler: Annotated[str | None, typer.Option(
        help="Address of an existing Dask scheduler (overrides [cluster]).")] = None,
    retry_failed: Annotated[bool, typer.Option(help="Label frames that failed before.")] =
        False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Label frames with a teacher: single points, short AIMD, relaxations, volume scans or
    isolated-atom energies, as Dask tasks; resumable (stored labels are never redone).

    A frame the teacher fails on (no SCF convergence, a crash) is recorded with its reason
    and output, never stored as a label.
    """
    from dataclasses import asdict

    from ionmix.labelling import TaskOptions
    from ionmix.labelling import label as run_label

    spec, cluster = _teacher_and_cluster(teacher, teacher_config)
    options = TaskOptions(n_steps=steps, timestep_fs=timestep_fs, temperature_K=temperature_K,
                          every=every, relax_steps=relax_steps,
                          scales=tuple(floats(scales, "--scales")))
    with progress_bar(f"{task} ({spec.key})", stderr=True) as update:
        summary = run_label(input_path, spec, task, out, composition=composition,
                            n_frames=frames, replica=replica, options=options,
                            cluster=cluster, scheduler=scheduler, retry_failed=retry_failed,
                            progress=lambda k, n, what: update(completed=k, total=n,
                                                               description=what))
    if as_json:
        print(json.dumps(asdict(summary), indent=2))
        return
    console.print(f"{spec.describe()}: {summary.labelled} labelled ({summary.n_labels} "
                  f"labels), {summary.failed} failed, {summary.skipped} skipped, "
                  f"{summary.wall_s:.0f} s → {out}", highlight=False)
    for sid, reason in list(summary.failures.items())[:10]:
        console.print(f"[yellow]failed[/] {sid}: {reason}", highlight=False, markup=False)
