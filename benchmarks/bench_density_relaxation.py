"""How fast the teacher's density relaxes from where a student's NPT run starts (or from a
frame of the student's run), next to the students' own density series: is a student that
sits low after 5-10 ps wrong, or still on its way?

    .venv/bin/python benchmarks/bench_density_relaxation.py --store runs/learn-npt/frames.db \
        --composition LiPF6=0.4,EMIMPF6=0.6 --ps 100 --seeds 11 12 \
        --students runs/md100-g2m0 runs/md100-g2m1 --out runs/learn-npt/bench/relaxation

With ``--out LOOP/bench/relaxation`` the teacher's runs join `bench_learn.py`'s pooled
reference for that loop folder (`bench_learn.teacher_series`).

The teacher runs natively in OpenMM (`classical_npt_density`: Langevin 1 ps, Monte Carlo
barostat, the labels' force field) from the store's last frame of replica 0 (what `ionmix
md` starts from with ``--composition``), or from the last frame of ``--from-run``'s
trajectory. Written: OUT/teacher-s<seed>[-tau<T>ps].json (the Langevin time constant
``--thermostat-ps``, 1 ps by default; resumable: a finished seed is read back),
OUT/relaxation.json (1-ps block means of every series; the mean over each 10-ps window)
and OUT/relaxation.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def blocks(series: np.ndarray, interval_ps: float, block_ps: float) -> list[float]:
    """Means of consecutive `block_ps` blocks of a series sampled every `interval_ps`."""
    n = max(int(round(block_ps / interval_ps)), 1)
    return [float(series[i:i + n].mean()) for i in range(0, len(series) - n + 1, n)]


def student_series(run: Path) -> tuple[np.ndarray, float]:
    """(density g/cm³, sample interval ps) of an `ionmix md` run's thermo.csv."""
    from ionmix.md import read_thermo

    t = read_thermo(run / "thermo.csv")
    return np.asarray(t["density_g_cm3"]), float(t["time_ps"][1] - t["time_ps"][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--composition", required=True)
    parser.add_argument("--from-run", type=Path, help="start from this md run's last frame")
    parser.add_argument("--ps", type=float, default=100.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[11])
    parser.add_argument("--thermostat-ps", type=float, default=1.0,
                        help="the teacher's Langevin time constant (ps)")
    parser.add_argument("--students", type=Path, nargs="*", default=[])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from ionmix.dataset.provenance import load_provenance
    from ionmix.dataset.structures import load_structure
    from ionmix.teachers.classical.openmm_md import classical_npt_density
    from ionmix.units import density_g_per_cm3

    provenance = load_provenance(args.store)
    start = load_structure(args.store, composition=args.composition, replica=0)
    teacher = provenance.teacher(start, "classical")
    if args.from_run is not None:
        from ionmix.chemistry.topology import with_molecule_arrays
        from ionmix.files import read_frames

        frame = read_frames(args.from_run / "trajectory.extxyz", -1, what="trajectory")
        with_molecule_arrays(frame, provenance.ion_set(start))
        start = frame
    args.out.mkdir(parents=True, exist_ok=True)
    series = {}
    summary = {"start_density_g_cm3": density_g_per_cm3(start.get_masses().sum(),
                                                        start.get_volume())}
    for seed in args.seeds:
        tau = args.thermostat_ps
        path = args.out / (f"teacher-s{seed}.json" if tau == 1.0
                           else f"teacher-s{seed}-tau{tau:g}ps.json")
        if not path.exists():
            run = classical_npt_density(start, 300.0, 1.0, time_ps=args.ps, seed=seed,
                                        teacher=teacher, thermostat_time_ps=tau)
            path.write_text(json.dumps(run))
        run = json.loads(path.read_text())
        series[f"teacher, {tau:g}-ps thermostat, seed {seed}"] = (np.asarray(run["series"]),
                                                                  0.1)
    for run in args.students:
        series[f"student {run.name}"] = student_series(run)
    for name, (rho, dt) in series.items():
        one = blocks(rho, dt, 1.0)
        summary[name] = {"ps": len(rho) * dt, "blocks_1ps": [round(b, 4) for b in one],
                         "means_10ps": [round(float(np.mean(one[i:i + 10])), 4)
                                        for i in range(0, len(one), 10)]}
        print(name, summary[name]["means_10ps"], flush=True)
    name = "relaxation" if args.thermostat_ps == 1.0 else f"relaxation-tau{args.thermostat_ps:g}ps"
    (args.out / f"{name}.json").write_text(json.dumps(summary, indent=1))
    figure(series, args.out / f"{name}.png")


def figure(series: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (rho, dt) in series.items():
        one = blocks(rho, dt, 1.0)
        ax.plot(np.arange(len(one)) + 0.5, one, "o-" if "student" in name else "-",
                ms=3, label=name)
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("1-ps block density (g/cm³)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
