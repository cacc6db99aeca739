"""Does the classical teacher's NPT density depend on the Langevin friction?

The sampler runs NPT with a 0.1-ps thermostat (friction 10/ps); `classical_npt_density`
(the teacher's reference density of `bench_learn.py --stage teacher`) with 1 ps (1/ps).
From the same settled frame of a learning loop (replica 0's last), this runs
`classical_npt_density` (LangevinMiddle, 1 fs, Monte Carlo barostat every 25 steps, 300 K,
1 bar, the labels' force field) with one thermostat time, and writes its density series and 50-ps
block means. A friction-free equilibrium density is the same for both: a difference
beyond the block scatter would be the integrator's (flexible C–H at 1 fs), not the
force field's.

    .venv/bin/python benchmarks/bench_teacher_thermostat.py --run runs/learn-npt \
        --thermostat-ps 0.1 --ps 300        # and --thermostat-ps 1.0

Results: ``RUN/bench/teacher-thermostat-<t>ps-seed<s>.json`` (written at the end).

``--summary`` instead gathers every teacher NPT density series of the loop folder (the
sampler's replicas after 100 ps, `bench_learn.py --stage teacher`'s 1-ns run, these runs)
and prints, per run, its mean and standard error, and for all of them together the
spread of 100-ps window means: how far one 100-ps run of the teacher itself lands from
the teacher's mean.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import bench_learn
import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="an `ionmix learn` folder")
    p.add_argument("--thermostat-ps", type=float, default=None)
    p.add_argument("--ps", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--block-ps", type=float, default=50.0)
    p.add_argument("--summary", action="store_true", help="summarise the runs done")
    args = p.parse_args()
    if not (args.run / "frames.db").is_file():
        p.error(f"--run {args.run}: no frames.db there")
    if args.summary:
        summary(args.run)
        return
    if args.thermostat_ps is None or args.thermostat_ps <= 0 or args.block_ps <= 0 \
            or args.ps < 2 * args.block_ps:
        p.error("--thermostat-ps and --block-ps must be > 0 and --ps ≥ 2 × --block-ps")

    from ionmix.teachers.classical.openmm_md import classical_npt_density
    from ionmix.units import A3_IN_CM3, AMU_IN_G

    atoms = bench_learn.start_frame(args.run)
    t0 = time.perf_counter()
    run = classical_npt_density(atoms, 300.0, 1.0, time_ps=args.ps, seed=args.seed,
                                teacher=bench_learn.classical_teacher(args.run, atoms),
                                thermostat_time_ps=args.thermostat_ps)
    series = run["series"]  # a density every 0.1 ps
    per_block = int(round(args.block_ps / 0.1))
    blocks = np.asarray(series[: len(series) // per_block * per_block]).reshape(-1, per_block)
    result = {"thermostat_time_ps": args.thermostat_ps, "time_ps": args.ps, "seed": args.seed,
              "start_density_g_cm3": atoms.get_masses().sum() * AMU_IN_G
              / (atoms.get_volume() * A3_IN_CM3),
              "density_g_cm3": run["density_g_cm3"], "density_err_g_cm3": run["density_err_g_cm3"],
              "block_ps": args.block_ps,
              "block_means_g_cm3": [round(float(b), 5) for b in blocks.mean(axis=1)],
              "wall_s": time.perf_counter() - t0, "series_g_cm3": series}
    out = args.run / "bench" / f"teacher-thermostat-{args.thermostat_ps:g}ps-seed{args.seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result))
    print(json.dumps({k: v for k, v in result.items() if k != "series_g_cm3"}))


def summary(run: Path, window_ps: float = 100.0) -> None:
    from ionmix.stats import mean_and_error

    series = bench_learn.teacher_series(run)
    windows = []
    for name, rho in series.items():
        mean, err, _ = mean_and_error(rho)
        n = int(round(window_ps / 0.1))
        means = rho[: rho.size // n * n].reshape(-1, n).mean(axis=1)
        windows.extend(means)
        print(f"{name}: {mean:.4f} ± {err:.4f} g/cm³; {window_ps:g}-ps windows "
              + ", ".join(f"{m:.3f}" for m in means))
    windows = np.asarray(windows)
    grand = windows.mean()
    print(f"all {windows.size} windows of {window_ps:g} ps: mean {grand:.4f}, spread "
          f"{windows.std(ddof=1):.4f} g/cm³ ({100 * windows.std(ddof=1) / grand:.2f} %), "
          f"{np.mean(np.abs(windows / grand - 1) <= 0.01):.0%} within 1 % of the mean")
    pooled = bench_learn.pooled_teacher_density(run, series)
    print(f"the {pooled['n_runs']} runs' means pooled: {pooled['density_g_cm3']:.4f} ± "
          f"{pooled['density_err_g_cm3']:.4f} g/cm³ (their spread "
          f"{pooled['run_spread_g_cm3']:.4f})")


if __name__ == "__main__":
    main()
