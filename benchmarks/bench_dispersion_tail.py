"""How much of the classical teacher's energy lies beyond the student's cutoff, and does it
explain the students' lean toward larger boxes? (issue 22)

    .venv/bin/python benchmarks/bench_dispersion_tail.py --store runs/learn-npt/frames.db \
        --composition LiPF6=0.4,EMIMPF6=0.6 [--model M.nequip.zip ...] [--r-max-A 4.5]

The teacher's Lennard-Jones runs to its cutoff (here 5.44 Å, switched over its last 1 Å) and
adds OpenMM's long-range dispersion correction, a homogeneous-liquid tail ∝ 1/V. A network
of cutoff r_max sees neither the pairs beyond r_max nor the volume. Per sampled frame of the
composition (the teacher's NPT liquid), the tail is

    E_tail = E_LJ(teacher's cutoff and switch, with the correction) − E_LJ(r_max, plain, none)

(OpenMM, charges off: the Lennard-Jones alone; the 1-4 pairs cancel), split into the
correction and the pairs beyond r_max. Fitted across frames on the volume and a constant,
each part's slope (meV/Å³) is what a student must infer from its local environment; the part
it cannot infer is an energy error that falls with volume, which `bench_contact_energy.py`
measures as "per Å³". The same for the ``+tail`` baseline (`ionmix.models.tail`, the
homogeneous tail from r_max, K / V) and for what it leaves to the network (tail − K / V).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def lj_context(atoms, cutoff_A: float, switch_width_A: float | None, correction: bool):
    """An OpenMM context of the frame's molecules with the Lennard-Jones alone."""
    import openmm

    from ionmix.teachers.classical.system import make_system_for_atoms

    csys = make_system_for_atoms(atoms, charge_scale=1.0, cutoff_A=cutoff_A,
                                 lj_switch_width_A=switch_width_A)
    system = csys.system
    # OPLS's geometric combining rule puts the Lennard-Jones in a CustomNonbondedForce
    # (the NonbondedForce keeps the charges and the 1-4 exceptions): keep both, charges off
    kept = (openmm.NonbondedForce, openmm.CustomNonbondedForce)
    for k in reversed(range(system.getNumForces())):
        if not isinstance(system.getForce(k), kept):
            system.removeForce(k)
    for force in system.getForces():
        if isinstance(force, openmm.CustomNonbondedForce):
            force.setUseLongRangeCorrection(correction)
            continue
        force.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
        force.setUseDispersionCorrection(correction)
        for i in range(force.getNumParticles()):
            _, sigma, epsilon = force.getParticleParameters(i)
            force.setParticleParameters(i, 0.0, sigma, epsilon)
        for k in range(force.getNumExceptions()):
            i, j, _, sigma, epsilon = force.getExceptionParameters(k)
            force.setExceptionParameters(k, i, j, 0.0, sigma, epsilon)
    platform = openmm.Platform.getPlatformByName("CPU")
    return openmm.Context(system, openmm.VerletIntegrator(1e-3), platform,
                          {"Threads": "1"})


def lj_energy_eV(context, atoms) -> float:
    """The context's energy (eV) at the frame's positions and box."""
    import openmm.unit as u

    from ionmix.teachers.classical.system import openmm_cell

    box_A, rotation = openmm_cell(atoms.cell.array)
    context.setPeriodicBoxVectors(*(box_A / 10.0))
    context.setPositions((atoms.positions @ rotation) / 10.0)
    energy = context.getState(getEnergy=True).getPotentialEnergy()
    return energy.value_in_unit(u.kilojoule_per_mole) / 96.48533212


def fit(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares coefficients and their standard errors (frames as independent)."""
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    cov = np.linalg.inv(design.T @ design) * (residual @ residual) / (len(y) - len(coef))
    return coef, np.sqrt(np.diag(cov))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--composition", required=True)
    parser.add_argument("--r-max-A", type=float, default=4.5)
    args = parser.parse_args()

    from bench_contact_energy import teacher_frames

    from ionmix.dataset import DatasetStore
    from ionmix.models.tail import DispersionTail

    store = DatasetStore(args.store, must_exist=True)
    provenance = store.provenance()
    frames, ions = teacher_frames(store, args.composition)
    params = provenance.teacher_spec(frames[0]).params
    teacher = lj_context(frames[0], params["cutoff_A"], params.get("lj_switch_width_A"), True)
    local = lj_context(frames[0], args.r_max_A, None, False)
    no_corr = lj_context(frames[0], params["cutoff_A"], params.get("lj_switch_width_A"), False)
    full = np.array([lj_energy_eV(teacher, a) for a in frames])
    tail = full - np.array([lj_energy_eV(local, a) for a in frames])
    correction = full - np.array([lj_energy_eV(no_corr, a) for a in frames])
    volume = np.array([a.get_volume() for a in frames])
    baseline = DispersionTail(ions, args.r_max_A)  # the +tail baseline: K / V
    homogeneous = []
    for atoms in frames:
        atoms.calc = baseline
        homogeneous.append(atoms.get_potential_energy())
    homogeneous = np.array(homogeneous)
    slope = {}
    for name, y in (("tail", tail), ("dispersion correction", correction),
                     ("pairs beyond r_max", tail - correction),
                     ("the +tail baseline (K / V)", homogeneous),
                     ("tail - baseline (left to the network)", tail - homogeneous)):
        coef, se = fit(np.column_stack([volume, np.ones_like(volume)]), y)
        slope[name] = {"mean_meV_per_atom": float(1e3 * y.mean() / len(frames[0])),
                       "spread_meV_per_atom": float(1e3 * y.std() / len(frames[0])),
                       "slope_meV_per_A3": [round(1e3 * coef[0], 4), round(1e3 * se[0], 4)]}
    result = {"n_frames": len(frames), "teacher_cutoff_A": params["cutoff_A"],
              "teacher_lj_switch_width_A": params.get("lj_switch_width_A"),
              "r_max_A": args.r_max_A, "volume_mean_A3": float(volume.mean()),
              "volume_spread_A3": float(volume.std()), "tail": slope}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
