"""`ionmix md`, `ionmix validate` and `ionmix export-lammps`.

Every option is checked before any work, and a bad value is refused (exit status 2) with
the option named as it is typed (``--steps``, not the setting ``n_steps``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ionmix.cli._common import (
    CompiledOpt,
    CompositionOpt,
    ModelOpt,
    SampledAtOpt,
    StructureArg,
    app,
    console,
    err_console,
    load_with_provenance,
    out_folder,
    progress_bar,
    say_to,
    write_provenance,
)
from ionmix.errors import InputError

#: `ionmix.md.MDSettings` fields → the options that set them, for error messages.
OPTION_OF_SETTING = {
    "ensemble": "--ensemble", "temperature_K": "--temperature-K",
    "pressure_bar": "--pressure-bar", "timestep_fs": "--timestep-fs", "n_steps": "--steps",
    "log_interval_steps": "--log-every", "trajectory_interval_steps": "--trajectory-every",
    "seed": "--seed", "max_bond_stretch": "--max-bond-stretch", "minimise": "--minimise",
}


def checked_settings(command: str, **values):
    """`MDSettings` from option values; InputError naming every bad option as typed."""
    from pydantic import ValidationError

    from ionmix.md import MDSettings

    try:
        return MDSettings(**values)
    except ValidationError as exc:
        raise InputError(f"{command}: " + "; ".join(
            _option_error(e) for e in exc.errors())) from None


def _option_error(error: dict) -> str:
    """One pydantic error as "--option VALUE: why"."""
    field = str(error["loc"][0]) if error["loc"] else ""
    why = error["msg"].removeprefix("Value error, ")
    return f"{OPTION_OF_SETTING.get(field, field)} {error['input']!r}: {why[:1].lower()}{why[1:]}"


@app.command()
def md(
    structure: StructureArg,
    model: ModelOpt,
    out: Annotated[Path, typer.Option(
        callback=out_folder, help="Run folder (log, trajectory, checkpoint).")],
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
    composition: CompositionOpt = None,
    sampled_at_K: SampledAtOpt = None,
    float64: Annotated[bool, typer.Option(
        help="Evaluate the model in float64 (checkpoints, or models trained in float64).")
    ] = False,
    compiled: CompiledOpt = False,
    max_bond_stretch: Annotated[float, typer.Option(
        help="Stop (exit status 3) when a covalent bond is longer than this × its starting "
        "length, or two atoms bonded to a common atom come closer than 1/this × their "
        "starting distance (an angle collapsed): the model broke a molecule. 0 turns the "
        "check off (reactive chemistry).")
    ] = 1.5,
    minimise: Annotated[bool | None, typer.Option(
        "--minimise/--no-minimise",
        help="Minimise the starting structure before dynamics (FIRE, cell fixed, to a max "
        "force of 0.5 eV/Å or 200 steps, with the same model; never on a restart). Default: "
        "only a box packed by `ionmix build` (known by its packmol_seed info; never "
        "relaxed). Pass --minimise for any other structure that was never relaxed.")
    ] = None,
) -> None:
    """NPT/NVT/NVE molecular dynamics with a trained model (or the classical teacher).

    Defaults are Goodwin et al.'s: 0.5 fs, Nosé–Hoover chain thermostat and MTK barostat
    with time constants of 1000 steps. A box from `ionmix build` is minimised first (see
    --minimise). Run the same command again to continue an interrupted run (or to extend
    it with a larger --steps); a different starting structure, model or setting is refused.
    """
    from ionmix.chemistry.topology import has_molecules, with_molecule_arrays
    from ionmix.dataset.provenance import ProvenanceError
    from ionmix.md import check_can_continue, run_md
    from ionmix.models import load_model

    settings = checked_settings(
        "ionmix md", ensemble=ensemble, temperature_K=temperature_K,
        pressure_bar=pressure_bar, n_steps=steps, timestep_fs=timestep_fs,
        log_interval_steps=log_every, trajectory_interval_steps=trajectory_every, seed=seed,
        max_bond_stretch=max_bond_stretch or None, minimise=minimise)
    if trajectory_every % log_every:
        raise InputError(f"ionmix md: --trajectory-every {trajectory_every} must be a "
                         f"multiple of --log-every {log_every}")
    atoms, provenance = load_with_provenance(structure, None, index, composition,
                                             sampled_at_K)
    if has_molecules(atoms):  # the trajectory's frames then carry them atom by atom
        try:
            with_molecule_arrays(atoms, provenance.ion_set(atoms))
        except ProvenanceError:
            pass  # ions no record describes: a network runs without them (not validate's
            # molecule forces)
    loaded = load_model(model, atoms, provenance=provenance, float64=float64,
                        compiled=compiled)
    # the same network in another precision gives another trajectory: part of the id a
    # restart compares
    model_id = loaded.model_id + (" (float64)" if float64 and model != "classical" else "")
    check_can_continue(out, atoms, settings, model_id)  # before anything in OUT changes
    write_provenance(out, atoms, provenance)
    label = f"md: {settings.ensemble} {settings.temperature_K:g} K"
    with progress_bar(label, stderr=True) as update:
        result = run_md(atoms, loaded.calc, settings, out,
                        progress=lambda k, n, _: update(completed=k, total=n),
                        log=say_to(update.console), model_id=model_id,
                        model_teachers=loaded.teachers)
    meta = json.loads((out / "md.json").read_text())
    rate = meta.get("steps_per_s")
    console.print(f"[green]{result.steps_done} steps[/] in {out} "
                  f"(resumed at {result.resumed_from_step}; "
                  + (f"{rate:.3g} steps/s, {meta['ns_per_day']:.3g} ns/day)" if rate else "done)"))


@app.command()
def validate(
    trajectory: Annotated[Path, typer.Argument(
        help="An `ionmix md` run folder or its trajectory.extxyz.")],
    teacher: Annotated[str | None, typer.Option(
        help="The teacher to compare with: a kind ('classical', 'xtb'), or a reference "
        "model file. Default: the teacher whose labels trained the run's model (recorded in "
        "its md.json); for a run that does not record it, the teacher of its start frame "
        "(provenance.json).")] = None,
    frames: Annotated[int, typer.Option(help="Frames to relabel, equally spaced.")] = 10,
    out: Annotated[Path | None, typer.Option(
        callback=out_folder, help="Output folder (default: RUN/validate).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check a model along its own MD trajectory against the teacher (Figure 2c–e): force
    parity per element, energy along the trajectory, energy parity, configurational
    pressure (atomic and molecular virial), the molecules' net-force and torque errors
    (frames with molecules), and with the classical teacher its energy by force-field term
    (which terms the model's run strains), numbers as JSON."""
    from ionmix.dataset.provenance import load_provenance
    from ionmix.files import read_frames
    from ionmix.models import load_model
    from ionmix.properties.validate import validate_trajectory

    if frames < 2:
        raise InputError(f"ionmix validate: --frames {frames}: at least 2 frames are "
                         "needed for a comparison")
    run_dir = trajectory if trajectory.is_dir() else trajectory.parent
    out = out or out_folder(run_dir / "validate")  # the default is checked here
    traj = trajectory / "trajectory.extxyz" if trajectory.is_dir() else trajectory
    first = read_frames(traj, 0, what="trajectory")
    provenance = load_provenance(traj)
    if teacher is not None and Path(teacher).is_file():
        calc = load_model(teacher, first, provenance=provenance).calc
    else:
        spec = teacher if teacher is not None else _model_teacher(run_dir, first, provenance)
        chosen = provenance.teacher(first, spec)
        calc, teacher = chosen.calculator(first), chosen.describe()
    with progress_bar("teacher labels", total=frames, stderr=True) as update:
        result = validate_trajectory(traj, calc, out, n_frames=frames,
                                     progress=lambda k, n, _: update(completed=k, total=n))
    if as_json:
        print(json.dumps({"teacher": teacher, **result.to_json()}, indent=2))
        return
    per_el = " ".join(f"{k} {v['mae_meV_per_A']:.0f}"
                      for k, v in result.force_by_element.items())
    pressure = "" if result.pressure_n_frames is None else (
        f"; configurational pressure {result.pressure_mean_difference_bar:+.0f} ± "
        f"{result.pressure_mean_difference_sem_bar:.0f} bar above the teacher's (MAE "
        f"{result.pressure_mae_bar:.0f} bar)")
    if result.molecular_pressure_mean_difference_bar is not None:
        pressure += (f", molecular virial {result.molecular_pressure_mean_difference_bar:+.0f}"
                     f" ± {result.molecular_pressure_mean_difference_sem_bar:.0f} bar")
    console.print(
        f"{result.n_frames} frames vs {teacher}: energy MAE "
        f"{result.energy_mae_meV_per_atom:.2f} meV/atom (offset "
        f"{result.energy_mean_offset_meV_per_atom:+.2f}), force MAE "
        f"{result.force_mae_meV_per_A:.1f} meV/Å ({per_el}){_molecules_line(result)}"
        f"{pressure}{_terms_line(result)}; "
        f"figure {out / 'validate.png'}", highlight=False)


def _model_teacher(run_dir: Path, first, provenance):
    """The teacher a run is validated against by default: the one whose labels trained its
    model (``md.json``'s ``model_teachers``), not the one that labelled its start frame (an
    xTB student started from the classical sampler's frames is compared with xTB). A run
    that does not record it (an older ionmix, another program, a model copied without its
    manifest) gets its start frame's teacher, said on stderr. InputError when the model
    was trained on several teachers' labels, or on one whose record was not kept and that
    is not the start frame's: which to use is then the user's choice (--teacher)."""
    from ionmix.md import read_record

    md_json = run_dir / "md.json"
    teachers = read_record(md_json).get("model_teachers")
    start_key = first.info.get("teacher")
    if teachers is not None and not isinstance(teachers, dict):
        raise InputError(f"ionmix validate: {md_json}: model_teachers must map teacher keys "
                         f"to their records, not {type(teachers).__name__}")
    if not teachers:
        err_console.print(f"[yellow]note:[/] {md_json} does not record the teacher the model "
                      "was trained on; comparing with the start frame's teacher (choose "
                      "another with --teacher)", highlight=False, soft_wrap=True)
        return None
    if len(teachers) > 1:
        raise InputError(f"ionmix validate: the model of {run_dir} was trained on the labels "
                         f"of several teachers ({', '.join(sorted(teachers))}, {md_json}: "
                         "model_teachers); choose one with --teacher")
    key, record = next(iter(teachers.items()))
    if record is not None:
        return record
    if key == start_key:
        return None
    raise InputError(f"ionmix validate: the model of {run_dir} was trained on the labels of "
                     f"teacher {key} ({md_json}: model_teachers), whose record was not kept, "
                     f"and the run started from a frame of {start_key}; name the teacher "
                     "with --teacher")


def _molecules_line(result) -> str:
    """The molecules' net-force and torque errors against the teacher's scale, or ''."""
    m = result.molecule_forces
    if not m:
        return ""
    force = m["net_force_mae_meV_per_A"]
    line = (f"; molecules' net force MAE {force:.0f} meV/Å "
            f"({100 * force / m['net_force_reference_mean_abs_meV_per_A']:.0f} % of the "
            "teacher's mean)")
    if m["torque_mae_meV"] is not None:
        line += f", torque {100 * m['torque_mae_meV'] / m['torque_reference_mean_abs_meV']:.0f} %"
    return line


def _terms_line(result) -> str:
    """The classical teacher's force-field terms that changed most along the run, or ''."""
    change = result.teacher_term_change_meV_per_atom
    if not change:
        return ""
    from ionmix.teachers.classical.terms import main_terms

    top = sorted(main_terms(change).items(), key=lambda kv: -abs(kv[1]))[:3]
    return ("; the teacher's terms, later half vs the first frame: "
            + ", ".join(f"{k} {v:+.1f}" for k, v in top) + " meV/atom")


@app.command("export-lammps")
def export_lammps(
    structure: StructureArg,
    model: Annotated[Path, typer.Option(help="Trained model (.nequip.zip or .ckpt).")],
    out: Annotated[Path, typer.Option(
        callback=out_folder, help="Job folder (system.data, in.lammps, README.txt), created.")],
    index: Annotated[int, typer.Option(help="Frame of a multi-frame structure file.")] = -1,
    composition: CompositionOpt = None,
    sampled_at_K: SampledAtOpt = None,
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
    constants are 1000 time steps, as in `ionmix md`, whose limits the options obey (and
    --pressure-bar must be ≥ 0).
    """
    from ionmix.dataset.provenance import load_provenance
    from ionmix.dataset.structures import load_structure
    from ionmix.export.lammps import PAIR_STYLES, write_lammps_inputs

    command = "ionmix export-lammps"
    checked_settings(command, ensemble=ensemble, temperature_K=temperature_K,
                     pressure_bar=pressure_bar, timestep_fs=timestep_fs, n_steps=steps)
    if pressure_bar < 0:  # write_lammps_inputs' rule: a barostat under tension is a sign error
        raise InputError(f"{command}: --pressure-bar {pressure_bar:g}: must be ≥ 0 (edit "
                         "in.lammps by hand if tension is meant)")
    if pair_style is not None and pair_style.lower() not in PAIR_STYLES:
        raise InputError(f"{command}: --pair-style {pair_style!r}: must be one of "
                         f"{', '.join(PAIR_STYLES)}")
    atoms = load_structure(structure, index=index, composition=composition,
                           sampled_at_K=sampled_at_K)
    paths = write_lammps_inputs(
        atoms, model, out, ensemble=ensemble, temperature_K=temperature_K,
        pressure_bar=pressure_bar, timestep_fs=timestep_fs, n_steps=steps,
        pair_style=pair_style, provenance=load_provenance(structure))
    console.print(f"[green]wrote[/] {paths['data']}, {paths['input']}", highlight=False)
    console.print(paths["readme"].read_text(), highlight=False, soft_wrap=True, markup=False)
