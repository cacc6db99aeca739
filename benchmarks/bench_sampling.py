"""Sampling speed: `ionmix sample` production vs a bare OpenMM loop, same system, one run.

Both sides integrate the same System (Li[PF6]/[EMIM][PF6], 20 ion pairs, x = 0.5 unless
given) with the same Nosé–Hoover integrator on the same platform. The ionmix side is the
production phase of `ionmix.sampling.sample_run`: integration plus, at every snapshot,
labelling by the classical teacher (energy, forces, finite-difference stress), the dataset
insert and the checkpoint. Its rate is measured between the first and last snapshot.

Usage: .venv/bin/python benchmarks/bench_sampling.py [--x 0.5] [--interval-ps 2] [--frames 6]
"""

from __future__ import annotations

import argparse
import json
import platform as pyplatform
import tempfile
import time
from pathlib import Path

import openmm
import openmm.unit as u

from ionmix.build import build_box
from ionmix.config import SampleConfig, parse_model
from ionmix.dataset import DatasetStore
from ionmix.sampling import plan_sampling, sample_run
from ionmix.teachers.classical import make_context, make_system_for_atoms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--x", type=float, default=0.5)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--interval-ps", type=float, default=2.0)
    parser.add_argument("--frames", type=int, default=6)
    args = parser.parse_args()
    cfg = parse_model(SampleConfig, {
        "mixture": {"units": {"LiPF6": {"Li": 1, "PF6": 1}, "EMIMPF6": {"EMIM": 1, "PF6": 1}},
                    "compositions": [{"LiPF6": args.x, "EMIMPF6": round(1 - args.x, 9)}],
                    "n_ion_pairs": args.pairs},
        "sampling": {"equilibration_ps": 2.0, "max_equilibration_ps": 2.0,
                     "production_ps": args.interval_ps * args.frames,
                     "snapshot_interval_ps": args.interval_ps, "replicas": 1,
                     "platform": "CPU"}}, "bench")
    plan = plan_sampling(cfg)
    run = plan.runs[0]
    s = cfg.sampling
    steps = int(round(args.interval_ps * 1000 / s.timestep_fs)) * (args.frames - 1)

    # Bare OpenMM: the same System and integrator, a plain step loop.
    atoms = build_box(run.counts, density_g_cm3=s.initial_density_g_cm3, seed=run.seed,
                      ions=plan.ions)
    csys = make_system_for_atoms(atoms, charge_scale=cfg.mixture.charge_scale,
                                 cutoff_A=plan.cutoff_A, ions=plan.ions)
    integrator = openmm.NoseHooverIntegrator(s.temperature_K * u.kelvin,
                                             1 / (s.thermostat_time_ps * u.picosecond),
                                             s.timestep_fs * u.femtosecond)
    ctx = make_context(csys, integrator, "CPU")
    ctx.setPositions(atoms.positions / 10)
    openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, 500)
    ctx.setVelocitiesToTemperature(s.temperature_K * u.kelvin, 1)
    integrator.step(500)  # warm-up
    t0 = time.perf_counter()
    integrator.step(steps)
    bare_steps_per_s = steps / (time.perf_counter() - t0)
    del ctx

    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = DatasetStore(Path(tmp) / "frames.db")
        sample_run(run, cfg, plan, Path(tmp), store,
                   on_snapshot=lambda r, k: stamps.append(time.perf_counter()))
    ionmix_steps_per_s = steps / (stamps[-1] - stamps[0])

    n_atoms = len(atoms)
    out = {
        "system": f"Li/EMIM/PF6 x={args.x}, {args.pairs} ion pairs, {n_atoms} atoms",
        "cutoff_A": plan.cutoff_A,
        "snapshot_interval_ps": args.interval_ps,
        "bare_openmm_steps_per_s": bare_steps_per_s,
        "ionmix_sample_steps_per_s": ionmix_steps_per_s,
        "ratio_ionmix_over_bare": ionmix_steps_per_s / bare_steps_per_s,
        "bare_ns_per_day": bare_steps_per_s * s.timestep_fs * 86400 / 1e6,
        "ionmix_ns_per_day": ionmix_steps_per_s * s.timestep_fs * 86400 / 1e6,
        "machine": pyplatform.machine(), "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
