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
from ionmix.properties.eos import EOSError

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
    from ionmix.dataset import DatasetError
    from ionmix.sampling import SamplingError
    from ionmix.teachers.classical import ClassicalSystemError

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
    from ionmix.sampling import plan_sampling

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
    from ionmix.sampling import plan_sampling
    from ionmix.sampling import sample as run_sampling

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
            from ionmix.dataset import DatasetStore

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
    for r in results:
        if r.equilibration_warning:
            console.print(f"[yellow]warning:[/] {r.equilibration_warning}", highlight=False)


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
    from ionmix.transferability import load_study_config, run_study

    try:
        cfg = load_study_config(study)
        from ionmix.config import SampleConfig
        from ionmix.dataset import DatasetStore
        from ionmix.sampling import plan_sampling

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
    from ionmix.dataset import parse_composition_key
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
            from ionmix.dataset import DatasetStore

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


@app.command()
def md(
    structure: Annotated[Path, typer.Argument(
        help="Starting structure: any ASE-readable file, or a dataset store (.db).")],
    model: Annotated[str, typer.Option(
        help="Trained model (.nequip.zip/.ckpt), or 'classical' for the OPLS teacher.")],
    out: Annotated[Path, typer.Option(help="Run folder (log, trajectory, checkpoint).")],
    ensemble: Annotated[str, typer.Option(help="npt, nvt or nve.")] = "npt",
    temperature_K: Annotated[float, typer.Option("--temperature-K", "-T")] = 300.0,
    pressure_bar: Annotated[float, typer.Option("--pressure-bar", "-P")] = 1.0,
    steps: Annotated[int, typer.Option(help="Number of time steps.")] = 2000,
    timestep_fs: Annotated[float, typer.Option("--timestep-fs")] = 0.5,
    log_every: Annotated[int, typer.Option(help="Steps between thermo.csv rows.")] = 10,
    trajectory_every: Annotated[int, typer.Option(
        help="Steps between trajectory frames (and checkpoints).")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the initial velocities.")] = 0,
    index: Annotated[int, typer.Option(help="Frame of a multi-frame structure file.")] = -1,
    composition: Annotated[str | None, typer.Option(
        help="With a .db: composition key, e.g. LiPF6=0.4,EMIMPF6=0.6.")] = None,
    float64: Annotated[bool, typer.Option(
        help="Evaluate the model in float64 (checkpoints, or models trained in float64).")
    ] = False,
) -> None:
    """NPT/NVT/NVE molecular dynamics with a trained model (or the classical teacher).

    Defaults are Goodwin et al.'s: 0.5 fs, Nosé–Hoover chain thermostat and MTK barostat
    with time constants of 1000 steps. Run the same command again to continue an
    interrupted run (or to extend it with a larger --steps).
    """
    from ionmix.md import run_md

    settings = _md_settings("ionmix md", ensemble=ensemble, temperature_K=temperature_K,
                            pressure_bar=pressure_bar, n_steps=steps, timestep_fs=timestep_fs,
                            log_interval_steps=log_every,
                            trajectory_interval_steps=trajectory_every, seed=seed)
    label = f"{settings.ensemble} {settings.temperature_K:g} K"
    result = _run_study("md", structure, model, composition, lambda atoms, calc, progress:
                        run_md(atoms, calc, settings, out,
                               progress=lambda k, n: progress(label, k, n)),
                        index=index, float64=float64)
    meta = json.loads((out / "md.json").read_text())
    rate = meta.get("steps_per_s")
    console.print(f"[green]{result.steps_done} steps[/] in {out} "
                  f"(resumed at {result.resumed_from_step}; "
                  + (f"{rate:.3g} steps/s, {meta['ns_per_day']:.3g} ns/day)" if rate else "done)"))


props_app = typer.Typer(
    help="Liquid properties from NPT MD: density vs temperature, compressibility (pressure "
    "ramp + Tait fit), and Tait fits of your own V(P) tables.", no_args_is_help=True)
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

    from ionmix.properties.eos import fit_tait, read_pv_table

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


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise fail(ConfigError(f"{what}: expected comma-separated numbers, got {text!r}")) from None


def _md_settings(source: str, **kw):
    """MDSettings from command-line values; a bad value ends the command naming the key."""
    from ionmix.config import parse_model
    from ionmix.md import MDSettings

    try:
        return parse_model(MDSettings, kw, source)
    except ConfigError as exc:
        raise fail(exc) from None


def _run_study(label: str, structure: Path, model: str, composition: str | None, study,
               index: int = -1, float64: bool = False):
    """Load the structure and calculator, then run ``study(atoms, calc, progress)`` under a
    rich progress bar (per MD run, per step; on stderr, so --json output stays clean); user
    errors and blow-ups end the command."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from ionmix.md import MDBlowUp, MDError, load_structure, make_calculator
    from ionmix.train import TrainConfigError

    try:
        atoms = load_structure(structure, index=index, composition=composition)
        calc = make_calculator(model, atoms, float64=float64)
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(), console=err_console) as bar:
            task = bar.add_task(label, total=None)

            def progress(name, k, n):
                bar.update(task, description=f"{label}: {name}", completed=k, total=n)

            return study(atoms, calc, progress)
    except (*_user_errors(), MDError, TrainConfigError, EOSError) as exc:
        raise fail(exc) from None
    except MDBlowUp as exc:
        err_console.print(f"[bold red]blew up:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=3) from None


StructureArg = Annotated[Path, typer.Argument(
    help="Starting structure: any ASE-readable file, or a dataset store (.db).")]
ModelOpt = Annotated[str, typer.Option(
    help="Trained model (.nequip.zip/.ckpt), or 'classical' for the OPLS teacher.")]
CompositionOpt = Annotated[str | None, typer.Option(
    help="With a .db: composition key, e.g. LiPF6=0.4,EMIMPF6=0.6.")]


@props_app.command("density")
def props_density(
    structure: StructureArg,
    model: ModelOpt,
    out: Annotated[Path, typer.Option(help="Study folder (one MD run per temperature).")],
    temperatures: Annotated[str, typer.Option(
        help="Comma-separated temperatures (K).")] = "300,325,350,375",
    steps: Annotated[int, typer.Option(
        help="MD steps per temperature (equilibration, detected automatically, included)."
    )] = 20000,
    pressure_bar: Annotated[float, typer.Option("--pressure-bar", "-P")] = 1.0,
    timestep_fs: Annotated[float, typer.Option("--timestep-fs")] = 0.5,
    log_every: Annotated[int, typer.Option(help="Steps between samples.")] = 10,
    equilibration_fraction: Annotated[float, typer.Option(
        help="Minimum leading share of each run discarded as equilibration (0-0.5); the "
             "automatic detection usually discards more.")] = 0.0,
    teacher: Annotated[Path | None, typer.Option(
        help="density.json of the same study run with the teacher, plotted along.")] = None,
    experiment: Annotated[Path | None, typer.Option(
        help="CSV temperature_K,density_g_cm3 of measurements, plotted along.")] = None,
    engine: Annotated[str, typer.Option(
        help="ase (any model; MTK NPT) or openmm (only with --model classical: the teacher "
             "natively in OpenMM, ~100x faster).")] = "ase",
    composition: CompositionOpt = None,
    seed: Annotated[int, typer.Option()] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Density vs temperature from NPT MD: means with correlation-aware errors, dρ/dT and
    α_P, and a figure (OUT/density.png) with the teacher and experiment when given.
    Resumable."""
    from ionmix.properties.studies import density_study

    temps = _floats(temperatures, "--temperatures")
    settings = _md_settings("ionmix props density", ensemble="npt",
                            temperature_K=temps[0] if temps else 300.0,
                            pressure_bar=pressure_bar, n_steps=steps, timestep_fs=timestep_fs,
                            log_interval_steps=log_every,
                            trajectory_interval_steps=max(log_every, 100 // log_every * log_every),
                            seed=seed)
    if engine not in ("ase", "openmm") or (engine == "openmm" and model != "classical"):
        raise fail(ConfigError(f"--engine {engine}: use ase, or openmm with --model classical"))
    from ionmix.properties.studies import OPENMM_CLASSICAL

    result = _run_study("density", structure, model, composition, lambda atoms, calc, progress:
                        density_study(atoms, OPENMM_CLASSICAL if engine == "openmm" else calc,
                                      temps, settings, out,
                                      equilibration_fraction=equilibration_fraction,
                                      teacher=teacher, experiment=experiment,
                                      label="classical (OpenMM)" if engine == "openmm"
                                      else Path(model).name, progress=progress))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    t = Table(title=f"Density at {pressure_bar:g} bar ({out / 'density.png'})")
    for col in ("T (K)", "ρ (g/cm³)", "± std. error", "samples", "drift (σ)"):
        t.add_column(col)
    for r in result["points"]:
        t.add_row(f"{r['temperature_K']:g}", f"{r['density_g_cm3']:.4f}",
                  f"{r['density_err_g_cm3']:.4f}", str(r["n_samples"]),
                  f"{r['drift_sigma']:.1f}")
    console.print(t)
    if "fit" in result:
        f = result["fit"]
        console.print(f"dρ/dT = {f['slope_g_cm3_per_K']:.3e} ± {f['slope_err']:.1e} g cm⁻³ K⁻¹; "
                      f"α_P({f['reference_temperature_K']:g} K) = {f['alpha_P_per_K']:.3e} ± "
                      f"{f['alpha_P_err']:.1e} K⁻¹", highlight=False)
    if result["drifting_runs"]:
        console.print(f"[yellow]still drifting (> 3σ between halves):[/] "
                      f"{', '.join(result['drifting_runs'])}; run longer (same command, "
                      "larger --steps)")


@props_app.command("compressibility")
def props_compressibility(
    structure: StructureArg,
    model: ModelOpt,
    out: Annotated[Path, typer.Option(help="Study folder (one MD run per pressure).")],
    temperature_K: Annotated[float, typer.Option("--temperature-K", "-T")] = 300.0,
    pressures: Annotated[str | None, typer.Option(
        help="Comma-separated pressures (bar), increasing. Default: the paper's ramp, "
             "1 bar then --ramp-steps steps of --ramp-step-bar.")] = None,
    ramp_steps: Annotated[int, typer.Option(help="Number of pressure increments.")] = 18,
    ramp_step_bar: Annotated[float, typer.Option(help="Pressure increment (bar).")] = 1000.0,
    steps: Annotated[int, typer.Option(
        help="MD steps per pressure (equilibration, detected automatically, included)."
    )] = 10000,
    first_stage_steps: Annotated[int | None, typer.Option(
        help="MD steps at the first pressure (default: --steps).")] = None,
    timestep_fs: Annotated[float, typer.Option("--timestep-fs")] = 0.5,
    log_every: Annotated[int, typer.Option(help="Steps between samples.")] = 10,
    composition: CompositionOpt = None,
    seed: Annotated[int, typer.Option()] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Isothermal compressibility: NPT along a pressure ramp, Tait fit of V(P), κ_T at the
    first pressure, and κ_T from volume fluctuations as a cross-check. Resumable."""
    from ionmix.properties.studies import compressibility_study

    ramp = (_floats(pressures, "--pressures") if pressures is not None
            else [1.0] + [ramp_step_bar * k for k in range(1, ramp_steps + 1)])
    settings = _md_settings("ionmix props compressibility", ensemble="npt",
                            temperature_K=temperature_K, n_steps=steps,
                            timestep_fs=timestep_fs, log_interval_steps=log_every,
                            trajectory_interval_steps=max(log_every, 100 // log_every * log_every),
                            seed=seed)
    result = _run_study("ramp", structure, model, composition, lambda atoms, calc, progress:
                        compressibility_study(atoms, calc, settings, out, pressures_bar=ramp,
                                              first_stage_steps=first_stage_steps,
                                              progress=progress))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    t = Table(title=f"V(P) at {temperature_K:g} K ({out / 'compressibility.png'})")
    for col in ("P (bar)", "V (Å³)", "± std. error", "ρ (g/cm³)", "drift (σ)"):
        t.add_column(col)
    for r in result["points"]:
        t.add_row(f"{r['pressure_bar']:g}", f"{r['volume_A3']:.1f}", f"{r['volume_err_A3']:.1f}",
                  f"{r['density_g_cm3']:.4f}", f"{r['drift_sigma']:.1f}")
    console.print(t)
    console.print(f"[bold]κ_T (Tait, {ramp[0]:g} bar) = {result['kappa_T_per_Pa']:.3e} ± "
                  f"{result['kappa_T_err_per_Pa']:.1e} Pa⁻¹[/]; from volume fluctuations "
                  f"{result['kappa_T_fluctuation_per_Pa']:.3e} ± "
                  f"{result['kappa_T_fluctuation_err_per_Pa']:.1e} Pa⁻¹", highlight=False)


@app.command()
def validate(
    trajectory: Annotated[Path, typer.Argument(
        help="An `ionmix md` run folder or its trajectory.extxyz.")],
    teacher: Annotated[str, typer.Option(
        help="'classical' (the OPLS teacher) or a reference model file.")] = "classical",
    frames: Annotated[int, typer.Option(help="Frames to relabel, equally spaced.")] = 10,
    out: Annotated[Path | None, typer.Option(
        help="Output folder (default: RUN/validate).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check a model along its own MD trajectory against the teacher (Figure 2c–e): force
    parity per element, energy along the trajectory, energy parity, numbers as JSON."""
    import ase.io

    from ionmix.md import MDError, make_calculator
    from ionmix.properties.validate import validate_trajectory
    from ionmix.train import TrainConfigError

    run_dir = trajectory if trajectory.is_dir() else trajectory.parent
    out = out or run_dir / "validate"
    try:
        traj = trajectory / "trajectory.extxyz" if trajectory.is_dir() else trajectory
        if not traj.exists():
            raise MDError(f"no trajectory at {traj}")
        first = ase.io.read(traj, 0)
        calc = make_calculator(teacher, first)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress

        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), console=err_console) as bar:
            task = bar.add_task("teacher labels", total=frames)
            result = validate_trajectory(traj, calc, out, n_frames=frames,
                                         progress=lambda k, n: bar.update(task, completed=k,
                                                                          total=n))
    except (*_user_errors(), MDError, TrainConfigError) as exc:
        raise fail(exc) from None
    if as_json:
        print(json.dumps(result, indent=2))
        return
    per_el = " ".join(f"{k} {v['mae_meV_per_A']:.0f}"
                      for k, v in result["force_by_element"].items())
    console.print(
        f"{result['n_frames']} frames vs {teacher}: energy MAE "
        f"{result['energy_mae_meV_per_atom']:.2f} meV/atom (offset "
        f"{result['energy_mean_offset_meV_per_atom']:+.2f}), force MAE "
        f"{result['force_mae_meV_per_A']:.1f} meV/Å ({per_el}); figure {out / 'validate.png'}",
        highlight=False)


@app.command("export-lammps")
def export_lammps(
    structure: StructureArg,
    model: Annotated[Path, typer.Option(help="Trained model (.nequip.zip or .ckpt).")],
    out: Annotated[Path, typer.Option(
        help="Job folder (system.data, in.lammps, README.txt), created.")],
    index: Annotated[int, typer.Option(help="Frame of a multi-frame structure file.")] = -1,
    composition: CompositionOpt = None,
    ensemble: Annotated[str, typer.Option(help="npt, nvt or nve.")] = "npt",
    temperature_K: Annotated[float, typer.Option("--temperature-K", "-T")] = 300.0,
    pressure_bar: Annotated[float, typer.Option("--pressure-bar", "-P")] = 1.0,
    timestep_fs: Annotated[float, typer.Option("--timestep-fs")] = 0.5,
    steps: Annotated[int, typer.Option(help="Number of time steps.")] = 20000,
    pair_style: Annotated[str | None, typer.Option(
        help="allegro or nequip; default: read from the model.")] = None,
) -> None:
    """Write a LAMMPS job (pair_nequip_allegro) for a structure and a trained model.

    LAMMPS needs the model compiled with nequip-compile on the machine that runs it: the
    command is in in.lammps and README.txt (printed below). Thermostat and barostat time
    constants are 1000 time steps, as in `ionmix md`.
    """
    from ionmix.export.lammps import LammpsExportError, write_lammps_inputs
    from ionmix.md import MDError, load_structure

    try:
        atoms = load_structure(structure, index=index, composition=composition)
        paths = write_lammps_inputs(
            atoms, model, out, ensemble=ensemble, temperature_K=temperature_K,
            pressure_bar=pressure_bar, timestep_fs=timestep_fs, n_steps=steps,
            pair_style=pair_style)
    except (*_user_errors(), LammpsExportError, MDError) as exc:
        raise fail(exc) from None
    console.print(f"[green]wrote[/] {paths['data']}, {paths['input']}", highlight=False)
    console.print(paths["readme"].read_text(), highlight=False, soft_wrap=True, markup=False)


def main() -> None:  # pragma: no cover - console-script entry point
    app()
