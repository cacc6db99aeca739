"""The `ionmix` command: one subcommand per pipeline stage. Thin: parsing and printing only.

User errors (bad spec, bad input files) print one line naming the culprit and exit with
status 2; no traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ionmix import design
from ionmix.config import ConfigError

app = typer.Typer(
    help="Machine-learned potentials for ionic liquids and their mixtures that transfer "
    "across compositions (Goodwin et al., JPCL 2024, as a tool).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

def _user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean "the user's input is wrong", reported without a traceback.

    Imported lazily so that `ionmix plan` does not pay for OpenMM and torch imports.
    """
    from ionmix.build import BuildError
    from ionmix.chemistry import IonLibraryError
    from ionmix.classical import ClassicalSystemError
    from ionmix.data import DatasetError
    from ionmix.sample import SamplingError

    return (design.DesignError, ConfigError, IonLibraryError, BuildError,
            ClassicalSystemError, DatasetError, SamplingError)


USER_ERRORS: tuple[type[Exception], ...] = (design.DesignError, ConfigError)


def fail(exc: Exception) -> typer.Exit:
    """Print a user error and return the Exit to raise (status 2)."""
    err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


@app.callback()
def _root() -> None:
    """ionmix: plan compositions, build and sample IL boxes, label, train, test transfer."""


def _fmt_comp(comp: dict[str, float]) -> str:
    return ", ".join(f"{u} {x:g}" for u, x in comp.items() if x)


@app.command()
def plan(
    spec: Annotated[Path, typer.Argument(help="Mixture spec (TOML) with species and units tables, "
                                         "optional training and candidates tables.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    max_condition: Annotated[float, typer.Option(
        help="Largest condition number accepted for the recommended set.")] = (
        design.DEFAULT_MAX_CONDITION),
) -> None:
    """How many compositions (C = N − M), and which, a model must be trained on."""
    try:
        result = design.plan(design.load_spec(spec), max_condition=max_condition)
    except USER_ERRORS as exc:
        raise fail(exc) from None
    if as_json:
        print(json.dumps(result, indent=2))
        return
    _print_plan(result, spec)


def _print_plan(result: dict, spec: Path) -> None:
    species = result["species"]
    console.rule(f"[bold]ionmix plan[/] — {spec}")
    t = Table(title="Mixture", show_header=True)
    t.add_column("unit")
    t.add_column("formula")
    for unit, content in result["units"].items():
        t.add_row(unit, " + ".join(f"{n}×{s}" if n != 1 else s for s, n in content.items()))
    console.print(t)
    charged = ", ".join(f"{s}({q:+d})" for s, q in zip(species, result["charges"], strict=True))
    console.print(
        f"species N = {result['n_species']} ({charged}), "
        f"constraints M = {result['n_constraints']}  →  "
        f"[bold green]at least C = {result['min_compositions']} distinct compositions[/]"
    )
    if result["undetermined_directions"]:
        t = Table(title="Per-species energy directions no training set can fix")
        for s in species:
            t.add_column(s, justify="right")
        for row in result["undetermined_directions"]:
            t.add_row(*(f"{v:+.3f}" for v in row))
        console.print(t)
        console.print(
            "Adding c × (a row above) to the per-species energies changes no energy the "
            "mixture can reach: these are fixed only by convention (isolated-atom energies)."
        )
    else:
        console.print("Every per-species energy is identifiable from C compositions.")
    console.print("Determined by ≥ C compositions: " + "; ".join(result["determined_combinations"]))
    tr = result["training"]
    if tr is not None:
        verdict = "[green]sufficient[/]" if tr["sufficient"] else "[red]insufficient[/]"
        cond = tr["condition_number"]
        console.print(
            f"\nProposed training set: {' | '.join(_fmt_comp(c) for c in tr['compositions'])}"
            f"\n  rank {tr['rank']} of {result['min_compositions']} → {verdict}"
            + (f", condition number {cond:.1f}" if cond is not None else "")
        )
        t = Table(title="Energy identifiable at each candidate test composition")
        t.add_column("composition")
        t.add_column("identifiable", justify="center")
        for row in tr["identifiable"]:
            t.add_row(_fmt_comp(row["composition"]), "yes" if row["identifiable"] else "[red]no[/]")
        console.print(t)
    cond = result["recommended_condition_number"]
    console.print(
        f"\n[bold]Recommended training set[/] (max–min mixing entropy, then best conditioned; "
        f"{result['n_candidates']} candidates): "
        + " | ".join(_fmt_comp(c) for c in result["recommended"])
        + (f"  (condition number {cond:.1f})" if math.isfinite(cond) else "")
    )


@app.command()
def ions() -> None:
    """List the ions shipped in the library (name, charge, formula, aliases, source)."""
    from ionmix.chemistry import list_ions, load_ion

    t = Table(title="Ion library (unscaled charges; scaled at system build)")
    for col in ("name", "charge", "formula", "atoms", "aliases", "source"):
        t.add_column(col)
    for name in list_ions():
        ion = load_ion(name)
        t.add_row(ion.name, f"{ion.charge:+d}", ion.formula, str(ion.n_atoms),
                  ", ".join(ion.aliases), ion.source.splitlines()[0] if ion.source else "")
    console.print(t)


@app.command()
def build(
    config: Annotated[Path, typer.Argument(
        help="Sampling config (TOML) with mixture and sampling tables.")],
    out: Annotated[Path, typer.Option(help="Output folder for the boxes.")] = Path("boxes"),
) -> None:
    """Pack one box per composition and replica with Packmol (extxyz + PDB), no MD."""
    import ase.io

    from ionmix.build import build_box
    from ionmix.config import load_sample_config
    from ionmix.sample import plan_sampling

    try:
        cfg = load_sample_config(config)
        plan = plan_sampling(cfg)
        out.mkdir(parents=True, exist_ok=True)
        for run in plan.runs:
            atoms = build_box(run.counts, density_g_cm3=cfg.sampling.initial_density_g_cm3,
                              seed=run.seed, ions=plan.ions)
            ase.io.write(out / f"{run.run_id}.extxyz", atoms, format="extxyz")
            ase.io.write(out / f"{run.run_id}.pdb", atoms, format="proteindatabank")
            counts = ", ".join(f"{n} {k}" for k, n in run.counts.items())
            console.print(f"{run.run_id}: {len(atoms)} atoms ({counts}), "
                          f"edge {atoms.cell.lengths()[0]:.2f} Å")
    except _user_errors() as exc:
        raise fail(exc) from None
    console.print(f"[green]wrote {2 * len(plan.runs)} files to {out}[/]")


@app.command()
def sample(
    config: Annotated[Path, typer.Argument(
        help="Sampling config (TOML) with mixture and sampling tables.")],
    out: Annotated[Path, typer.Option(help="Study folder (runs, logs, checkpoints).")] = Path(
        "runs/sample"),
    dataset: Annotated[str | None, typer.Option(
        help="ASE database URL or path for the frames (default OUT/frames.db).")] = None,
) -> None:
    """Build, equilibrate and sample every composition × replica; store labelled frames.

    Resumable: run the same command again after an interruption and it continues from the
    last stored snapshot of each run.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from ionmix.config import load_sample_config
    from ionmix.sample import plan_sampling
    from ionmix.sample import sample as run_sampling

    try:
        cfg = load_sample_config(config)
        plan = plan_sampling(cfg)
        total = len(plan.runs) * cfg.sampling.n_snapshots
        console.print(f"{len(plan.runs)} runs × {cfg.sampling.n_snapshots} snapshots, "
                      f"cutoff {plan.cutoff_A:.2f} Å, charges × {cfg.mixture.charge_scale}")
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task("sampling", total=total)
            store_path = dataset or str(out / "frames.db")
            from ionmix.data import DatasetStore

            done = sum(len(DatasetStore(store_path).frame_indices(r.run_id)) for r in plan.runs)
            bar.update(task, completed=done)

            def tick(run, k):
                bar.update(task, advance=1, description=run.run_id)

            results = run_sampling(cfg, out, dataset, on_snapshot=tick)
    except _user_errors() as exc:
        raise fail(exc) from None
    t = Table(title=f"Sampled into {dataset or out / 'frames.db'}")
    for col in ("run", "frames", "resumed at", "mean density g/cm³"):
        t.add_column(col)
    for r in results:
        rho = f"{r.mean_density_g_cm3:.4f}" if r.mean_density_g_cm3 else "-"
        t.add_row(r.run_id, str(r.n_frames), str(r.resumed_from), rho)
    console.print(t)


@app.command()
def transfer(
    study: Annotated[Path, typer.Argument(help="Study config (TOML) with mixture, sampling and "
                                          "study tables.")],
    out: Annotated[Path, typer.Option(help="Study folder; rerun to resume or extend.")] = Path(
        "runs/transfer"),
    scheduler: Annotated[str | None, typer.Option(
        help="Address of an existing Dask scheduler (e.g. tcp://host:8786); default: a "
        "LocalCluster on this machine.")] = None,
    workers: Annotated[int | None, typer.Option(
        help="LocalCluster workers (default: cores // 4, at least 1).")] = None,
) -> None:
    """The transferability study: sample, train one model per recipe, test everywhere.

    Writes metrics.json/.csv, transferability.png (the paper's Figure 1), the per-species
    energy analysis and report.md into OUT. Stages already on disk are reused.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from ionmix.train import TrainConfigError, TrainDataError
    from ionmix.transfer import load_study_config, run_study

    try:
        cfg = load_study_config(study)
        from ionmix.config import SampleConfig
        from ionmix.data import DatasetStore
        from ionmix.sample import plan_sampling

        runs = plan_sampling(SampleConfig(mixture=cfg.mixture, sampling=cfg.sampling)).runs
        done = 0
        if (out / "frames.db").exists():
            store = DatasetStore(out / "frames.db")
            done = sum(len(store.frame_indices(r.run_id)) for r in runs)
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task("sampling", total=len(runs) * cfg.sampling.n_snapshots,
                                completed=done)

            def tick(run, k):
                bar.update(task, advance=1, description=f"sampling {run.run_id}")

            result = run_study(cfg, out, scheduler=scheduler, n_workers=workers,
                               say=lambda line: bar.console.print(line, highlight=False),
                               on_snapshot=tick)
    except (*_user_errors(), TrainConfigError, TrainDataError) as exc:
        raise fail(exc) from None
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
            raise design.DesignError(f"override {item!r} must look like key=value")
        out[key] = yaml.safe_load(value)
    return out


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="Dataset store (path or ASE database URL).")],
    composition: Annotated[list[str], typer.Option(
        help="Training composition, e.g. LiPF6=0.4,EMIMPF6=0.6 (repeat for several).")],
    out: Annotated[Path, typer.Option(help="Run folder (config, checkpoints, package).")],
    preset: Annotated[str, typer.Option(help="Preset name (see --list-presets).")] =
        "cpu-tiny-nequip",
    n_train: Annotated[int, typer.Option(help="Training frames per composition.")] = 40,
    n_val: Annotated[int, typer.Option(help="Validation frames per composition.")] = 5,
    n_test: Annotated[int, typer.Option(help="Test frames per composition (replica 1).")] = 20,
    energy_reference: Annotated[str, typer.Option(
        help="isolated-atoms (0 eV per element for the classical teacher), fit or mean.")] =
        "isolated-atoms",
    override: Annotated[list[str] | None, typer.Option(
        help="Config override key=value (nequip config path), e.g. max_epochs=20.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for split, initialisation, shuffling.")] = 0,
) -> None:
    """Train a NequIP or Allegro model on a dataset selection with nequip-train; package it.

    The run folder holds a nequip config you can re-run unchanged with
    `nequip-train -cp OUT -cn config`. Rerun the same command to resume.
    """
    from ionmix.data import parse_composition_key
    from ionmix.train import TrainConfigError, TrainDataError, TrainRunError, train_from_store

    try:
        comps = [parse_composition_key(c) for c in composition]
        result = train_from_store(
            dataset, comps, n_train=n_train, n_val=n_val, n_test=n_test, preset=preset,
            run_dir=out, energy_reference=energy_reference,
            overrides=_parse_overrides(override or []), seed=seed,
            progress=lambda line: console.print(line, highlight=False))
    except (*_user_errors(), TrainConfigError, TrainDataError, TrainRunError) as exc:
        raise fail(exc) from None
    m = result.metrics
    console.print(f"[green]model:[/] {result.package_path}")
    console.print(f"test energy MAE {m.get('energy_mae_meV_per_atom', float('nan')):.2f} "
                  f"meV/atom, force MAE {m.get('force_mae_meV_per_A', float('nan')):.1f} meV/Å")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="Packaged model (.nequip.zip) or checkpoint.")],
    data: Annotated[Path, typer.Option(help="Labelled frames: extxyz/any ASE file, or a "
                                       "dataset store (.db).")],
    replica: Annotated[int | None, typer.Option(
        help="With a dataset store: only this replica (e.g. 1, the test replica).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Energy MAE (meV/atom), force MAE (meV/Å, per element) and stress MAE per composition,
    recomputed from the saved model."""
    from ionmix.train import TrainDataError
    from ionmix.train import evaluate as run_evaluate

    try:
        if data.suffix == ".db":
            from ionmix.data import DatasetStore

            frames = [f.atoms for f in DatasetStore(data).select(replica=replica)]
        else:
            import ase.io

            frames = ase.io.read(data, ":")
        if not frames:
            raise TrainDataError(f"no frames selected from {data}")
        group = "composition" if all("composition" in a.info for a in frames) else None
        result = run_evaluate(model, frames, group_by=group)
    except (*_user_errors(), TrainDataError, OSError) as exc:
        raise fail(exc) from None
    if as_json:
        print(json.dumps(result, indent=2))
        return
    t = Table(title=f"{model.name} on {data}")
    for col in ("group", "frames", "energy MAE meV/atom", "force MAE meV/Å",
                "per element", "stress MAE meV/Å³"):
        t.add_column(col)
    rows = [("all", result)] + sorted(result.get("groups", {}).items())
    for name, m in rows:
        stress = m.get("stress_mae_meV_per_A3")
        t.add_row(name, str(m["n_frames"]), f"{m['energy_mae_meV_per_atom']:.2f}",
                  f"{m['force_mae_meV_per_A']:.1f}",
                  " ".join(f"{k} {v:.0f}" for k, v in m["force_mae_meV_per_A_by_element"].items()),
                  f"{stress:.3f}" if stress is not None else "-")
    console.print(t)


props_app = typer.Typer(help="Liquid properties: equation of state (more to come).",
                        no_args_is_help=True)
app.add_typer(props_app, name="props")


@props_app.command("eos")
def props_eos(
    table: Annotated[Path, typer.Argument(help="CSV with columns pressure_bar, volume_A3.")],
    reference_pressure_bar: Annotated[float | None, typer.Option(
        help="P0 where V0 and kappa_T are reported (default: lowest pressure).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Fit the Tait equation V = V0 [1 − C ln(1 + (P − P0)/B)] to a V(P) table and report
    the isothermal compressibility κ_T = C/B at P0 (for LAMMPS or experimental data too)."""
    from dataclasses import asdict

    from ionmix.properties import EOSError, fit_tait, read_pv_table

    try:
        fit = fit_tait(*read_pv_table(table), reference_pressure_bar=reference_pressure_bar)
    except EOSError as exc:
        raise fail(exc) from None
    if as_json:
        print(json.dumps(asdict(fit), indent=2))
        return
    console.print(
        f"Tait fit of {table} ({fit.n_points} points, P0 = {fit.reference_pressure_bar:g} bar): "
        f"V0 = {fit.V0_A3:.6g} ± {fit.V0_A3_err:.2g} Å³, B = {fit.B_bar:.5g} ± "
        f"{fit.B_bar_err:.2g} bar, C = {fit.C:.4g} ± {fit.C_err:.2g}\n"
        f"[bold]κ_T = {fit.kappa_T_per_Pa:.4g} ± {fit.kappa_T_per_Pa_err:.2g} Pa⁻¹[/] "
        f"(residual RMS {fit.residual_rms_A3:.3g} Å³)", highlight=False)


def main() -> None:  # pragma: no cover - console-script entry point
    app()
