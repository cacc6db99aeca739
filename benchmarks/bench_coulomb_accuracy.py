"""What the Coulomb baseline's accuracy target costs: `CoulombPME` (torch-pme P3M, float64)
at several RMS force-accuracy targets on one box, timed side by side and compared with a
much tighter sum.

    .venv/bin/python benchmarks/bench_coulomb_accuracy.py --store runs/learn-tail/frames.db
    .venv/bin/python benchmarks/bench_coulomb_accuracy.py   # a freshly packed 188-atom box

The box is the store's last frame of replica 0, or (without --store) Li[PF6]/[EMIM][PF6] at
x = 0.4, 10 ion pairs (188 atoms), packed by Packmol at 1.54 g/cm³, charges x 0.8. Calls
alternate between the targets, on the same geometry rattled by 0.01 Å each round (a new
geometry, as in MD), so all see the same machine load. Reported per target: the PME
settings (cutoff, smearing, mesh points per edge), the median ms of one energy + forces +
stress call (one torch thread), and the largest differences from the reference target over
the rounds (eV, eV/Å, eV/Å³). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from bench_summed import bench_frame, positive_int


def _call(calc, atoms) -> tuple[float, tuple]:
    """(ms, (energy eV, forces eV/Å, stress eV/Å³)) of one call of `calc` on `atoms`."""
    calc.results, calc.atoms = {}, None  # ASE would answer a repeated geometry from its cache
    atoms.calc = calc
    t0 = time.perf_counter()
    out = (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
    return 1e3 * (time.perf_counter() - t0), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--accuracies", type=float, nargs="+",
                        default=[1e-5, 3e-5, 1e-4, 3e-4, 1e-3])
    parser.add_argument("--reference", type=float, default=1e-6,
                        help="the tight target the others are compared with (eV/Å)")
    parser.add_argument("--rounds", type=positive_int, default=20)
    args = parser.parse_args()

    import torch

    from ionmix.models.coulomb_pme import CoulombPME

    torch.set_num_threads(1)
    if min(args.reference, *args.accuracies) <= 0:
        parser.error("--accuracies and --reference must be > 0 (eV/Å)")
    from ionmix.errors import InputError

    try:  # a missing store: exit 2 naming it, not a traceback
        atoms, _ = bench_frame(args.store)
    except InputError as exc:
        parser.error(str(exc))
    charge_scale = float(atoms.info["charge_scale"])  # the labels' scale
    targets = [args.reference, *args.accuracies]
    calcs = {a: CoulombPME(charge_scale=charge_scale, force_accuracy_eV_per_A=a)
             for a in targets}
    rng = np.random.default_rng(0)
    times = {a: [] for a in targets}
    worst = {a: np.zeros(3) for a in args.accuracies}
    for round_ in range(args.rounds + 1):  # round 0 warms up (set-up, first allocation)
        work = atoms.copy()
        work.positions += rng.normal(scale=0.01, size=work.positions.shape)
        results = {}
        for a in targets:
            ms, results[a] = _call(calcs[a], work.copy())
            if round_:
                times[a].append(ms)
        ref_e, ref_f, ref_s = results[args.reference]
        for a in args.accuracies:
            e, f, s = results[a]
            worst[a] = np.maximum(worst[a], [abs(e - ref_e), np.abs(f - ref_f).max(),
                                             np.abs(s - ref_s).max()])
    report = {"n_atoms": len(atoms), "cell_A": np.diag(atoms.cell.array).round(3).tolist(),
              "rounds": args.rounds, "reference_eV_per_A": args.reference, "targets": []}
    for a in targets:
        settings = calcs[a].settings
        mesh = [int(2 ** np.ceil(np.log2(2 * length / settings.mesh_spacing_A + 1)))
                for length in atoms.cell.lengths()]
        row = {"force_accuracy_eV_per_A": a, "cutoff_A": round(settings.cutoff_A, 3),
               "smearing_A": round(settings.smearing_A, 3), "mesh": mesh,
               "median_ms": round(statistics.median(times[a]), 2)}
        if a in worst:
            row.update(max_energy_diff_eV=float(worst[a][0]),
                       max_force_diff_eV_per_A=float(worst[a][1]),
                       max_stress_diff_eV_per_A3=float(worst[a][2]))
        report["targets"].append(row)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
