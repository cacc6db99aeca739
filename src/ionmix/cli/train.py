"""`ionmix train`, `ionmix evaluate` and `ionmix transfer` (the Figure-1 study)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ionmix.cli._common import (
    app,
    console,
    err_console,
    out_folder,
    progress_bar,
    say_to,
)
from ionmix.config import ConfigError
from ionmix.train.presets import PRESETS


@app.command()
def transfer(
    study: Annotated[Path, typer.Argument(help="Study config (TOML) with mixture, sampling and "
                                          "study tables.")],
    out: Annotated[Path, typer.Option(
        callback=out_folder, help="Study folder; rerun to resume or extend.")] = Path(
        "runs/transfer"),
    scheduler: Annotated[str | None, typer.Option(
        help="Address of an existing Dask scheduler (e.g. tcp://host:8786); default: a "
        "LocalCluster on this machine.")] = None,
    workers: Annotated[int | None, typer.Option(min=1,
        help="LocalCluster workers (default: one per core, at most one per recipe).")] = None,
) -> None:
    """The transferability study: sample, train one model per recipe, test everywhere.

    Writes metrics.json/.csv, transferability.png (the paper's Figure 1), the per-species
    energy analysis and report.md into OUT. Stages already on disk are reused.
    """
    from ionmix.dataset import DatasetStore
    from ionmix.transferability import load_study_config, run_study, sampled_runs

    cfg = load_study_config(study)
    runs = sampled_runs(cfg)
    done = 0
    if (out / "frames.db").exists():
        store = DatasetStore(out / "frames.db")
        done = sum(store.count(run_id=r.run_id) for r in runs)
    with progress_bar("sampling", total=len(runs) * cfg.sampling.n_snapshots,
                      completed=done) as update:
        result = run_study(cfg, out, scheduler=scheduler, n_workers=workers,
                           say=say_to(update.console),
                           # the runs go side by side: one count for all of them
                           on_snapshot=lambda run, k: update(advance=1))
    if result.failed:
        err_console.print(f"[yellow]{len(result.failed)} recipe(s) failed: "
                          f"{', '.join(result.failed)}[/]")
    console.print(f"[bold green]report:[/] {result.report_path}")
    console.print(f"[bold green]figure:[/] {result.figure_path}")


def _parse_overrides(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--override {item!r} must look like key=value")
        out[key] = yaml.safe_load(value)
    return out


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="Dataset store (path or ASE database URL).")],
    composition: Annotated[list[str], typer.Option(
        help="Training composition, e.g. LiPF6=0.4,EMIMPF6=0.6 (repeat for several).")],
    out: Annotated[Path, typer.Option(
        callback=out_folder, help="Run folder (config, checkpoints, package).")],
    preset: Annotated[str, typer.Option(help="Preset name: " + ", ".join(PRESETS) + ".")] =
        "cpu-tiny-nequip",
    n_train: Annotated[int, typer.Option(min=1, help="Training frames per composition.")] = 40,
    n_val: Annotated[int, typer.Option(min=1, help="Validation frames per composition.")] = 5,
    n_test: Annotated[int, typer.Option(
        min=1, help="Test frames per composition (replica 1).")] = 20,
    energy_reference: Annotated[str, typer.Option(
        help="isolated-atoms (the teacher's isolated-atom energies), fit or mean.")] =
        "isolated-atoms",
    teacher: Annotated[str | None, typer.Option(
        help="Teacher key of the labels to train on (only needed when the store holds "
        "several teachers' labels).")] = None,
    override: Annotated[list[str] | None, typer.Option(
        help="Config override key=value (nequip config path), e.g. max_epochs=20.")] = None,
    seed: Annotated[int, typer.Option(
        min=0, help="Seed for split, initialisation, shuffling.")] = 0,
    initial_model: Annotated[Path | None, typer.Option(
        help="Fine-tune: start from this packaged model (.nequip.zip) instead of random "
        "weights.")] = None,
    baseline: Annotated[str, typer.Option(
        help="Physics under the network: none, coulomb (the frames' charges, PME), zbl "
        "(nequip's ZBL on every pair), wall (ZBL between molecules only, off by 1.6 Å), "
        "coulomb+zbl, coulomb+wall, bonded (the force field's bonds, angles and torsions), "
        "coulomb+bonded, coulomb+wall+bonded, coulomb+wall+bonded+tail (with the force "
        "field's Lennard-Jones beyond the network's cutoff, K/V; the default: "
        "docs/models.md), bonded-fit or "
        "coulomb+wall+bonded-fit (bonds and angles refitted to the teacher's forces on the "
        "training frames: for xTB or DFT). Recorded beside the model."
    )] = "coulomb+wall+bonded+tail",
) -> None:
    """Train a NequIP or Allegro model on a dataset selection with nequip-train; package it.

    The run folder holds a nequip config you can re-run unchanged with
    `nequip-train -cp OUT -cn config`. Rerun the same command to resume.
    """
    from ionmix.dataset import parse_composition_key
    from ionmix.train import train_from_store

    comps = [parse_composition_key(c) for c in composition]
    result = train_from_store(
        dataset, comps, n_train=n_train, n_val=n_val, n_test=n_test, preset=preset,
        run_dir=out, energy_reference=energy_reference,
        overrides=_parse_overrides(override or []), seed=seed, teacher=teacher,
        initial_model=initial_model, baseline=baseline,
        say=say_to(console))
    m = result.metrics
    console.print(f"[green]model:[/] {result.package_path}")
    console.print(f"test energy MAE {m.get('energy_mae_meV_per_atom', float('nan')):.2f} "
                  f"meV/atom, force MAE {m.get('force_mae_meV_per_A', float('nan')):.1f} meV/Å")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="Packaged model (.nequip.zip) or checkpoint.")],
    data: Annotated[Path, typer.Option(help="Labelled frames: extxyz/any ASE file, or a "
                                       "dataset store (.db).")],
    replica: Annotated[int | None, typer.Option(min=0,
        help="With a dataset store: only this replica (e.g. 1, the test replica).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Energy MAE (meV/atom), force MAE (meV/Å, per element) and stress MAE per composition,
    recomputed from the saved model."""
    from ionmix.dataset import DatasetStore, frames_from
    from ionmix.train import TrainDataError
    from ionmix.train import evaluate as run_evaluate

    frames = []
    if data.suffix != ".db" or DatasetStore(data, must_exist=True).compositions():
        frames, _ = frames_from(data, replica=replica, what="data")
    if not frames:
        which = f" of replica {replica}" if replica is not None else ""
        raise TrainDataError(f"no frames{which} in {data}")
    group = "composition" if all("composition" in a.info for a in frames) else None
    result = run_evaluate(model, frames, group_by=group)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
        return
    t = Table(title=f"{model.name} on {data}")
    for col in ("group", "frames", "energy MAE meV/atom", "force MAE meV/Å",
                "per element", "stress MAE meV/Å³"):
        t.add_column(col)
    rows = [("all", result)] + sorted((result.groups or {}).items())
    for name, m in rows:
        stress = m.stress_mae_meV_per_A3
        t.add_row(name, str(m.n_frames), f"{m.energy_mae_meV_per_atom:.2f}",
                  f"{m.force_mae_meV_per_A:.1f}",
                  " ".join(f"{k} {v:.0f}" for k, v in m.force_mae_meV_per_A_by_element.items()),
                  f"{stress:.3f}" if stress is not None else "-")
    console.print(t)
