"""Issue 22: how well do students get the forces that move whole molecules?

A student's density follows the forces on whole molecules (net force and torque: only
intermolecular interactions make them), not the atom-force MAE that the stiff bonds and
angles dominate. This evaluates students and the classical teacher on the same frames
(the teacher's own liquid, by default) and reports, per student, the atom-force MAE and
`ionmix.metrics.molecule_force_errors` (net force and torque MAE, overall and by ion,
each against the teacher's mean magnitude).

``--beyond-A R`` adds the floor that a network of cutoff R cannot go below: the teacher's
Lennard-Jones net force on each molecule from pairs farther apart than R (its Coulomb is
the students' baseline, exact at every range).

    .venv/bin/python benchmarks/bench_molecule_forces.py \\
        --frames runs/teacher-ase-npt/trajectory.extxyz --every 2 --beyond-A 4.5 \\
        --model "loop gen 3, member 0=runs/learn-npt/gen-003/models/model-0/model.nequip.zip" \\
        --out runs/bench-capacity/molecule-forces.json

Each ``--model`` is ``LABEL=PACKAGE``. The frames need molecule information and a
provenance.json (or store) beside them that names the teacher. Results: ``--out`` (JSON)
and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np


def frames_with_molecules(path: Path, every: int):
    """The frames (every `every`-th), their provenance, and molecule arrays on each."""
    from ionmix.chemistry.topology import with_molecule_arrays
    from ionmix.dataset.provenance import load_provenance
    from ionmix.files import read_frames

    frames = read_frames(path, f"::{every}", what="frames")
    provenance = load_provenance(path)
    ions = provenance.ion_set(frames[0])
    for atoms in frames:
        with_molecule_arrays(atoms, ions)
    return frames, provenance


def forces_of(calc, frames) -> np.ndarray:
    """Forces of `calc` on each frame, shape (n_frames, n_atoms, 3), eV/Å."""
    out = []
    for atoms in frames:
        work = atoms.copy()
        work.calc = calc
        out.append(work.get_forces())
    return np.array(out)


def errors(pred: np.ndarray, ref: np.ndarray, frames) -> dict:
    """Atom-force MAE and the molecules' net-force/torque errors, meV units."""
    from ionmix.metrics import force_errors_meV_per_A, molecule_force_errors

    first = frames[0]
    symbols = np.tile(first.get_chemical_symbols(), len(frames))
    return {"force_mae_meV_per_A": force_errors_meV_per_A(pred.reshape(-1, 3),
                                                           ref.reshape(-1, 3),
                                                           symbols)["force_mae_meV_per_A"],
            "force_reference_mean_abs_meV_per_A": float(1e3 * np.abs(ref).mean()),
            **molecule_force_errors(pred, ref, first.arrays["mol_id"],
                                    first.arrays["ion_name"],
                                    np.array([f.positions for f in frames]),
                                    np.array([f.cell.array for f in frames]),
                                    first.get_masses())}


def lj_beyond(frames, teacher_calc, cutoff_A: float) -> np.ndarray:
    """The teacher's Lennard-Jones forces from pairs farther apart than `cutoff_A`, shape
    (n_frames, n_atoms, 3), eV/Å: its CustomNonbondedForce (switch and exclusions as in
    the teacher) with the energy multiplied by step(r − cutoff), no tail correction."""
    import openmm
    import openmm.unit as u

    from ionmix.chemistry.topology import molecules_of
    from ionmix.teachers.classical.system import make_system, openmm_cell
    from ionmix.units import kj_per_mol_nm_to_ev_per_angstrom

    c = teacher_calc
    csys = make_system(molecules_of(frames[0]), frames[0].cell.array,
                       charge_scale=c.charge_scale, cutoff_A=c.cutoff_A,
                       ewald_error_tolerance=c.ewald_error_tolerance,
                       lj_switch_width_A=c.lj_switch_width_A, ions=c.ions)
    lj = next(f for f in csys.system.getForces() if isinstance(f, openmm.CustomNonbondedForce))
    far = copy.deepcopy(lj)
    first, *rest = far.getEnergyFunction().split(";")
    far.setEnergyFunction(";".join([f"step(r-{cutoff_A / 10})*({first})", *rest]))  # nm
    far.setUseLongRangeCorrection(False)  # a constant force-free term of the volume
    system = openmm.System()
    for i in range(csys.system.getNumParticles()):
        system.addParticle(csys.system.getParticleMass(i))
    system.addForce(far)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("CPU"))
    out = []
    for atoms in frames:
        box, rotation = openmm_cell(atoms.cell.array)
        context.setPeriodicBoxVectors(*[openmm.Vec3(*row) * 0.1 for row in box])
        context.setPositions(atoms.positions @ rotation * 0.1)
        f = context.getState(getForces=True).getForces(asNumpy=True)
        f = kj_per_mol_nm_to_ev_per_angstrom(f.value_in_unit(u.kilojoule_per_mole / u.nanometer))
        out.append(f @ rotation.T)  # back to the frame's axes
    return np.array(out)


def _cell(mae: float | None, scale: float | None) -> str:
    """'MAE (MAE as % of the teacher's scale)', or – where there is none."""
    return "–" if mae is None else f"{mae:.0f} ({100 * mae / scale:.0f} %)"


def markdown(rows: dict) -> str:
    def pct(m, kind):
        if kind == "force":
            return _cell(m["net_force_mae_meV_per_A"], m["net_force_reference_mean_abs_meV_per_A"])
        return _cell(m["torque_mae_meV"], m["torque_reference_mean_abs_meV"])

    head = ("| model | atom-force MAE, meV/Å (% of mean) | net force MAE, meV/Å (%) | "
            "torque MAE, meV (%) | net force by ion (%) |\n|---|---|---|---|---|\n")
    lines = []
    for label, r in rows.items():
        atom = _cell(r["force_mae_meV_per_A"], r["force_reference_mean_abs_meV_per_A"])
        by_ion = ", ".join(f"{ion} {pct(m, 'force')}" for ion, m in r["by_ion"].items())
        lines.append(f"| {label} | {atom} | {pct(r, 'force')} | {pct(r, 'torque')} | {by_ion} |")
    return head + "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=Path, required=True,
                   help="frames with molecules, a provenance.json beside them")
    p.add_argument("--every", type=int, default=1, help="take every N-th frame")
    p.add_argument("--model", action="append", default=[], metavar="LABEL=PACKAGE")
    p.add_argument("--beyond-A", type=float, default=None,
                   help="also the teacher's LJ from pairs beyond this distance (Å)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    models = dict(m.split("=", 1) for m in args.model if "=" in m)
    if len(models) != len(args.model) or args.every < 1:
        p.error("--model takes LABEL=PACKAGE; --every must be ≥ 1")
    for label, package in models.items():
        if not Path(package).is_file():
            p.error(f"--model {label}={package}: no such file")
    from ionmix.models import load_model

    frames, provenance = frames_with_molecules(args.frames, args.every)
    teacher = provenance.teacher(frames[0], "classical").calculator(frames[0])
    ref = forces_of(teacher, frames)
    rows = {}
    for label, package in models.items():
        t0 = time.perf_counter()
        calc = load_model(package, frames[0], provenance=provenance).calc
        rows[label] = errors(forces_of(calc, frames), ref, frames)
        rows[label]["wall_s"] = time.perf_counter() - t0
    if args.beyond_A is not None:  # what a network of that cutoff cannot see: ref − far
        rows[f"teacher without LJ beyond {args.beyond_A:g} Å"] = errors(
            ref - lj_beyond(frames, teacher, args.beyond_A), ref, frames)
    result = {"frames": str(args.frames), "n_frames": len(frames), "every": args.every,
              "models": models, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()
