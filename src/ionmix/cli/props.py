"""`ionmix props`: density vs temperature, compressibility, Tait fits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ionmix.cli._common import (
    CompositionOpt,
    ModelOpt,
    StructureArg,
    app,
    console,
    floats,
    md_settings,
    run_study,
)
from ionmix.config import ConfigError

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

    fit = fit_tait(*read_pv_table(table), reference_pressure_bar=reference_pressure_bar)
    if as_json:
        print(json.dumps(asdict(fit), indent=2))
        return
    console.print(
        f"Tait fit of {table} ({fit.n_points} points, P0 = {fit.reference_pressure_bar:g} bar): "
        f"V0 = {fit.V0_A3:.6g} ± {fit.V0_A3_err:.2g} Å³, B = {fit.B_bar:.5g} ± "
        f"{fit.B_bar_err:.2g} bar, C = {fit.C:.4g} ± {fit.C_err:.2g}\n"
        f"[bold]κ_T = {fit.kappa_T_per_Pa:.4g} ± {fit.kappa_T_per_Pa_err:.2g} Pa⁻¹[/] "
        f"(residual RMS {fit.residual_rms_A3:.3g} Å³)", highlight=False)


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

    temps = floats(temperatures, "--temperatures")
    settings = md_settings("ionmix props density", ensemble="npt",
                            temperature_K=temps[0] if temps else 300.0,
                            pressure_bar=pressure_bar, n_steps=steps, timestep_fs=timestep_fs,
                            log_interval_steps=log_every,
                            trajectory_interval_steps=max(log_every, 100 // log_every * log_every),
                            seed=seed)
    if engine not in ("ase", "openmm") or (engine == "openmm" and model != "classical"):
        raise ConfigError(f"--engine {engine}: use ase, or openmm with --model classical")
    result = run_study("density", structure, model, composition, lambda atoms, calc, progress:
                       density_study(atoms, calc, temps, settings, out, engine=engine,
                                     equilibration_fraction=equilibration_fraction,
                                     teacher=teacher, experiment=experiment,
                                     label="classical (OpenMM)" if engine == "openmm"
                                     else Path(model).name, progress=progress), out=out)
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

    ramp = (floats(pressures, "--pressures") if pressures is not None
            else [1.0] + [ramp_step_bar * k for k in range(1, ramp_steps + 1)])
    settings = md_settings("ionmix props compressibility", ensemble="npt",
                            temperature_K=temperature_K, n_steps=steps,
                            timestep_fs=timestep_fs, log_interval_steps=log_every,
                            trajectory_interval_steps=max(log_every, 100 // log_every * log_every),
                            seed=seed)
    result = run_study("ramp", structure, model, composition, lambda atoms, calc, progress:
                       compressibility_study(atoms, calc, settings, out, pressures_bar=ramp,
                                             first_stage_steps=first_stage_steps,
                                             progress=progress), out=out)
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
