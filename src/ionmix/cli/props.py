"""`ionmix props`: density vs temperature, compressibility, Tait fits, transport and
structure of a trajectory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ionmix.cli._common import (
    CompiledOpt,
    CompositionOpt,
    ModelOpt,
    SampledAtOpt,
    StructureArg,
    app,
    console,
    err_console,
    floats,
    md_settings,
    out_folder,
    positive,
    progress_bar,
    run_property_study,
)
from ionmix.config import ConfigError

props_app = typer.Typer(
    help="Liquid properties from MD: density vs temperature, compressibility (pressure "
    "ramp + Tait fit), Tait fits of your own V(P) tables, transport (diffusion, "
    "conductivity, Onsager coefficients, transference numbers) and structure (RDFs, "
    "coordination) of a trajectory.", no_args_is_help=True)
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
    out: Annotated[Path, typer.Option(
        callback=out_folder, help="Study folder (one MD run per temperature).")],
    temperatures: Annotated[str, typer.Option(
        help="Comma-separated temperatures (K).")] = "300,325,350,375",
    steps: Annotated[int, typer.Option(
        min=1, help="MD steps per temperature (equilibration, detected automatically, included)."
    )] = 20000,
    pressure_bar: Annotated[float, typer.Option("--pressure-bar", "-P")] = 1.0,
    timestep_fs: Annotated[float, typer.Option("--timestep-fs", callback=positive)] = 0.5,
    log_every: Annotated[int, typer.Option(min=1, help="Steps between samples.")] = 10,
    equilibration_fraction: Annotated[float, typer.Option(
        min=0.0, max=0.5,
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
    sampled_at_K: SampledAtOpt = None,
    seed: Annotated[int, typer.Option()] = 0,
    compiled: CompiledOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Density vs temperature from NPT MD: means with correlation-aware errors, dρ/dT and
    α_P, and a figure (OUT/density.png) with the teacher and experiment when given.
    Resumable."""
    from ionmix.properties.studies import density_study

    temps = floats(temperatures, "--temperatures")
    if not temps or not all(0 < t <= 10000 for t in temps):
        raise ConfigError(f"--temperatures {temperatures!r}: give one or more temperatures, "
                          "each in (0, 10000] K")
    settings = md_settings("ionmix props density", ensemble="npt",
                            temperature_K=temps[0] if temps else 300.0,
                            pressure_bar=pressure_bar, n_steps=steps, timestep_fs=timestep_fs,
                            log_interval_steps=log_every,
                            trajectory_interval_steps=max(log_every, 100 // log_every * log_every),
                            seed=seed)
    if engine not in ("ase", "openmm") or (engine == "openmm" and model != "classical"):
        raise ConfigError(f"--engine {engine}: use ase, or openmm with --model classical")
    result = run_property_study(
        "density", structure, model, composition, lambda atoms, loaded, progress:
        density_study(atoms, loaded.calc, temps, settings, out, engine=engine,
                      classical_teacher=loaded.teacher, model_id=loaded.model_id,
                      model_teachers=loaded.teachers,
                      equilibration_fraction=equilibration_fraction,
                      teacher=teacher, experiment=experiment,
                      label="classical (OpenMM)" if engine == "openmm"
                      else Path(model).name, progress=progress), out=out,
        sampled_at_K=sampled_at_K, compiled=compiled)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
        raise typer.Exit(3 if result.blew_up else 0)
    t = Table(title=f"Density at {pressure_bar:g} bar ({out / 'density.png'})")
    for col in ("T (K)", "ρ (g/cm³)", "± std. error", "samples", "drift (σ)"):
        t.add_column(col)
    for r in result.points:
        t.add_row(f"{r['temperature_K']:g}", f"{r['density_g_cm3']:.4f}",
                  f"{r['density_err_g_cm3']:.4f}", str(r["n_samples"]),
                  f"{r['drift_sigma']:.1f}")
    console.print(t)
    if result.fit is not None:
        f = result.fit
        console.print(f"dρ/dT = {f['slope_g_cm3_per_K']:.3e} ± {f['slope_err']:.1e} g cm⁻³ K⁻¹; "
                      f"α_P({f['reference_temperature_K']:g} K) = {f['alpha_P_per_K']:.3e} ± "
                      f"{f['alpha_P_err']:.1e} K⁻¹", highlight=False)
    if result.drifting_runs:
        console.print(f"[yellow]still drifting (> 3σ between halves):[/] "
                      f"{', '.join(result.drifting_runs)}; run longer (same command, "
                      "larger --steps)")
    for failed in result.blew_up:
        err_console.print(f"[bold red]blew up at {failed['temperature_K']:g} K:[/] "
                          f"{escape(failed['reason'])}", highlight=False)
    if result.blew_up:
        raise typer.Exit(3)  # as `ionmix md`; every result above is written


@props_app.command("compare")
def props_compare(
    model_density: Annotated[Path, typer.Argument(
        help="The model's `props density` folder (or its density.json).")],
    out: Annotated[Path, typer.Option(
        callback=out_folder, help="Folder for comparison.md/.json/.png.")],
    teacher: Annotated[Path | None, typer.Option(
        help="The teacher's `props density` folder of the same temperatures.")] = None,
    experiment: Annotated[Path | None, typer.Option(
        help="CSV temperature_K,density_g_cm3[,kappa_T_per_Pa] of measurements.")] = None,
    validation: Annotated[Path | None, typer.Option(
        help="The model's `ionmix validate` folder (errors along its own trajectory).")] = None,
    train_run: Annotated[Path | None, typer.Option(
        "--train-run", help="The model's `ionmix train` folder (its test errors).")] = None,
    temperature_K: Annotated[float, typer.Option(
        "--temperature-K", callback=positive,
        help="Where ρ, α_P and κ_T are compared (K).")] = 300.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Model, teacher and experiment side by side (the paper's Figure 2 as a table): ρ,
    dρ/dT, α_P and κ_T (volume fluctuations), and the model's test errors next to its errors
    along its own NPT trajectory. Reads finished runs only."""
    from ionmix.properties.comparison import compare_properties

    result = compare_properties(model_density, teacher_density=teacher, experiment=experiment,
                                validation=validation, train_run=train_run,
                                temperature_K=temperature_K, out_dir=out)
    report = out / "comparison.md"
    if as_json:
        print(json.dumps(result, indent=2))
        return
    console.print(report.read_text(), highlight=False)
    console.print(f"Written: {report}, {out / 'comparison.png'}")


@props_app.command("compressibility")
def props_compressibility(
    structure: StructureArg,
    model: ModelOpt,
    out: Annotated[Path, typer.Option(
        callback=out_folder, help="Study folder (one MD run per pressure).")],
    temperature_K: Annotated[float, typer.Option(
        "--temperature-K", "-T", callback=positive)] = 300.0,
    pressures: Annotated[str | None, typer.Option(
        help="Comma-separated pressures (bar), increasing. Default: the paper's ramp, "
             "1 bar then --ramp-steps steps of --ramp-step-bar.")] = None,
    ramp_steps: Annotated[int, typer.Option(
        min=3, help="Number of pressure increments (the Tait fit needs ≥ 4 pressures).")] = 18,
    ramp_step_bar: Annotated[float, typer.Option(
        callback=positive, help="Pressure increment (bar).")] = 1000.0,
    steps: Annotated[int, typer.Option(
        min=1, help="MD steps per pressure (equilibration, detected automatically, included)."
    )] = 10000,
    first_stage_steps: Annotated[int | None, typer.Option(
        min=1, help="MD steps at the first pressure (default: --steps).")] = None,
    timestep_fs: Annotated[float, typer.Option("--timestep-fs", callback=positive)] = 0.5,
    log_every: Annotated[int, typer.Option(min=1, help="Steps between samples.")] = 10,
    composition: CompositionOpt = None,
    sampled_at_K: SampledAtOpt = None,
    seed: Annotated[int, typer.Option()] = 0,
    compiled: CompiledOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Isothermal compressibility: NPT along a pressure ramp, Tait fit of V(P), κ_T at the
    first pressure, and κ_T from volume fluctuations as a cross-check. Resumable."""
    from ionmix.properties.studies import compressibility_study

    ramp = (floats(pressures, "--pressures") if pressures is not None
            else [1.0] + [ramp_step_bar * k for k in range(1, ramp_steps + 1)])
    if len(ramp) < 4 or any(b <= a for a, b in zip(ramp, ramp[1:], strict=False)):
        raise ConfigError(f"--pressures {pressures!r}: the Tait fit needs ≥ 4 pressures, "
                          "increasing")
    settings = md_settings("ionmix props compressibility", ensemble="npt",
                            temperature_K=temperature_K, n_steps=steps,
                            timestep_fs=timestep_fs, log_interval_steps=log_every,
                            trajectory_interval_steps=max(log_every, 100 // log_every * log_every),
                            seed=seed)
    result = run_property_study(
        "ramp", structure, model, composition, lambda atoms, loaded, progress:
        compressibility_study(atoms, loaded.calc, settings, out, pressures_bar=ramp,
                              model_id=loaded.model_id, model_teachers=loaded.teachers,
                              first_stage_steps=first_stage_steps, progress=progress),
        out=out, sampled_at_K=sampled_at_K, compiled=compiled)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
        return
    t = Table(title=f"V(P) at {temperature_K:g} K ({out / 'compressibility.png'})")
    for col in ("P (bar)", "V (Å³)", "± std. error", "ρ (g/cm³)", "drift (σ)"):
        t.add_column(col)
    for r in result.points:
        t.add_row(f"{r['pressure_bar']:g}", f"{r['volume_A3']:.1f}", f"{r['volume_err_A3']:.1f}",
                  f"{r['density_g_cm3']:.4f}", f"{r['drift_sigma']:.1f}")
    console.print(t)
    console.print(f"[bold]κ_T (Tait, {ramp[0]:g} bar) = {result.kappa_T_per_Pa:.3e} ± "
                  f"{result.kappa_T_err_per_Pa:.1e} Pa⁻¹[/]; from volume fluctuations "
                  f"{result.kappa_T_fluctuation_per_Pa:.3e} ± "
                  f"{result.kappa_T_fluctuation_err_per_Pa:.1e} Pa⁻¹", highlight=False)


RunArg = Annotated[Path, typer.Argument(
    help="An `ionmix md` run folder (or the OpenMM teacher's, see benchmarks/"
         "bench_transport.py), a trajectory file, or a LAMMPS dump / GROMACS xtc/trr with "
         "--topology; wrapped positions are unwrapped.")]
MoleculesOpt = Annotated[str | None, typer.Option(
    help="For frames without molecule information: ION:COUNT,... in atom order, e.g. "
         "Li:1,EMIM:9,PF6:10 (library ions, or those of provenance.json beside the file).")]


TopologyOpt = Annotated[Path | None, typer.Option(
    help="For a LAMMPS dump (.lammpstrj/.dump) or GROMACS .xtc/.trr: the topology that "
         "holds its molecules (LAMMPS .data file, full atom style; GROMACS .tpr or .gro), read "
         "through MDAnalysis.")]
ResidueMapOpt = Annotated[str | None, typer.Option(
    help="With --topology: residue name → ion, e.g. EMI=EMIM,PF6=PF6 (names ionmix knows "
         "map to themselves).")]
IonsOpt = Annotated[str | None, typer.Option(
    help="With --topology: the ions to match nameless molecules (LAMMPS data files) to, "
         "e.g. Li,EMIM,PF6 (default: the ion library).")]


def _topology(topology: Path | None, residue_map: str | None, ions: str | None):
    """The `Topology` the options describe, or None without --topology."""
    from ionmix.properties.foreign import Topology, parse_residue_map

    if topology is None:
        if residue_map or ions:
            raise ConfigError("--residue-map and --ions go with --topology")
        return None
    names = tuple(n.strip() for n in ions.split(",") if n.strip()) if ions else None
    return Topology(topology, parse_residue_map(residue_map), names)


def _print_warnings(warnings: list[str]) -> None:
    for w in warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)


@props_app.command("summary")
def props_summary(
    run: RunArg,
    molecules: MoleculesOpt = None,
    topology: TopologyOpt = None,
    residue_map: ResidueMapOpt = None,
    ions: IonsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """What a trajectory holds (frames, time, molecules, box) and its density with its
    standard error (equilibration detected); any trajectory `props transport` reads."""
    from ionmix.properties.thermo import trajectory_summary

    result = trajectory_summary(run, molecules, _topology(topology, residue_map, ions))
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
        return
    span = "" if result.time_ps is None else f" over {result.time_ps:g} ps"
    box = "×".join(f"{x:.3g}" for x in result.cell_lengths_A)
    console.print(
        f"{result.n_frames} frames{span}; "
        f"{', '.join(f'{n} {c}' for n, c in result.molecules.items())}; box {box} Å"
        f"{' (NPT: mean)' if result.varying_cell else ''}; density "
        f"{result.density_g_cm3:.4f} ± {result.density_err_g_cm3:.4f} g/cm³", highlight=False)
    if result.drift_sigma > 3:
        console.print(f"[yellow]warning:[/] the density still drifts "
                      f"({result.drift_sigma:.1f} σ between halves)", highlight=False)


@props_app.command("transport")
def props_transport(
    run: RunArg,
    temperature_K: Annotated[float | None, typer.Option(
        "--temperature-K", "-T", callback=positive,
        help="Temperature (default: the run's md.json).")] = None,
    time_step_ps: Annotated[float | None, typer.Option(
        callback=positive, help="Time between frames, ps (default: the frames' time_ps).")] = None,
    formal_charges: Annotated[bool, typer.Option(
        "--formal-charges", help="Use the ions' integer charges, not × the recorded "
        "charge scale.")] = False,
    viscosity_Pa_s: Annotated[float | None, typer.Option(
        "--viscosity-Pa-s", callback=positive,
        help="Shear viscosity for the Yeh–Hummer correction of D "
        "(not applied without it).")] = None,
    segments: Annotated[int, typer.Option(
        min=2, help="Disjoint segments for the error bars; the fit window ends at half a "
             "segment.")] = 4,
    slope_tolerance: Annotated[float, typer.Option(
        callback=positive, help="Diffusive window: |log-log slope of the MSD − 1| allowed.")] = 0.2,
    molecules: MoleculesOpt = None,
    topology: TopologyOpt = None,
    residue_map: ResidueMapOpt = None,
    ions: IonsOpt = None,
    out: Annotated[Path | None, typer.Option(callback=out_folder,
        help="Folder for transport.json and msd.png (default: the run folder's "
             "transport/).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Self-diffusion per species (centre-of-mass MSD), ionic conductivity (Einstein–
    Helfand) next to Nernst–Einstein, Onsager coefficients L_ij (self and distinct,
    barycentric frame) and transference numbers, with standard errors; figure msd.png."""
    from ionmix.properties.transport import trajectory_path, transport_analysis

    if out is None:
        out = trajectory_path(run).parent / "transport"
    with progress_bar("transport", stderr=True) as update:
        result = transport_analysis(run, temperature_K=temperature_K,
                                    time_step_ps=time_step_ps, molecules=molecules,
                                    formal_charges=formal_charges, n_segments=segments,
                                    slope_tolerance=slope_tolerance,
                                    viscosity_Pa_s=viscosity_Pa_s, out_dir=out,
                                    progress=lambda k, n, what: update(description=what),
                                    topology=_topology(topology, residue_map, ions))
    data = result.to_json()
    if as_json:
        print(json.dumps(data, indent=2))
        return
    t = Table(title=f"Transport at {result.temperature_K:g} K over {result.run_length_ps:g} ps "
                    f"(fit {result.fit_window_ps[0]:g}–{result.fit_window_ps[1]:g} ps; "
                    f"{out / 'msd.png'})")
    for col in ("species", "N", "z (e)", "D (10⁻⁷ cm²/s)", "t (barycentric)"):
        t.add_column(col)
    for name, d in result.diffusion_cm2_per_s.items():
        tn = result.transference_number[name]
        t.add_row(name, str(result.n_molecules[name]), f"{result.charges_e[name]:+.3g}",
                  f"{d['value'] * 1e7:.3f} ± {d['error'] * 1e7:.3f}"
                  + ("" if d["diffusive"] else " (not diffusive)"),
                  "—" if tn["value"] is None else f"{tn['value']:.3f} ± {tn['error']:.3f}")
    console.print(t)
    s, ne, ratio = (result.conductivity_S_per_m, result.nernst_einstein_conductivity_S_per_m,
                    result.conductivity_ratio)
    ratio_text = ("—" if ratio["value"] is None
                  else f"{ratio['value']:.3f} ± {ratio['error']:.3f}")
    console.print(f"σ = {s['value']:.4g} ± {s['error']:.2g} S/m; Nernst–Einstein "
                  f"{ne['value']:.4g} ± {ne['error']:.2g} S/m; σ/σ_NE = {ratio_text}",
                  highlight=False)
    if not result.yeh_hummer["applied"]:
        console.print(f"Yeh–Hummer: {result.yeh_hummer['note']}", highlight=False)
    _print_warnings(result.warnings)


@props_app.command("structure")
def props_structure(
    run: RunArg,
    pairs: Annotated[str, typer.Option(
        help="Comma-separated pairs A-B; A, B = ELEMENT, ELEMENT@ION or @ION (molecular "
             "centre), e.g. 'Li-F@PF6,@EMIM-@PF6'.")] = "Li-F@PF6",
    r_max_A: Annotated[float | None, typer.Option(
        "--r-max-A", callback=positive,
        help="Largest distance (default: half the box, at most 12 Å).")] = None,
    bin_width_A: Annotated[float, typer.Option("--bin-width-A", callback=positive)] = 0.05,
    every: Annotated[int, typer.Option(min=1, help="Use every N-th frame.")] = 1,
    molecules: MoleculesOpt = None,
    topology: TopologyOpt = None,
    residue_map: ResidueMapOpt = None,
    ions: IonsOpt = None,
    out: Annotated[Path | None, typer.Option(callback=out_folder,
        help="Folder for structure.json and rdf.png (default: the run folder's "
             "structure/).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Intermolecular RDFs, running coordination numbers and first-shell coordination per
    ion (per frame and averaged, with block errors); figure rdf.png."""
    from ionmix.properties.structure import structure_analysis
    from ionmix.properties.transport import trajectory_path

    if out is None:
        out = trajectory_path(run).parent / "structure"
    names = [p.strip() for p in pairs.split(",") if p.strip()]
    if not names:
        raise ConfigError("--pairs: give at least one pair, e.g. Li-F@PF6")
    with progress_bar("structure", stderr=True):
        result = structure_analysis(run, names, r_max_A=r_max_A, bin_width_A=bin_width_A,
                                    molecules=molecules, every=every, out_dir=out,
                                    topology=_topology(topology, residue_map, ions))
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
        return
    t = Table(title=f"Structure over {result.n_frames} frames ({out / 'rdf.png'})")
    for col in ("pair", "first shell (Å)", "coordination", "distribution"):
        t.add_column(col)
    for name, p in result.pairs.items():
        c = p["first_shell_coordination"]
        t.add_row(name, "—" if p["first_shell_A"] is None else f"{p['first_shell_A']:.2f}",
                  "—" if c is None else f"{c['value']:.2f} ± {c['error']:.2f}",
                  "—" if c is None else ", ".join(
                      f"{k}: {v:.2f}" for k, v in sorted(c["distribution"].items(),
                                                         key=lambda kv: -kv[1])[:4]))
    console.print(t)
    _print_warnings(result.warnings)
