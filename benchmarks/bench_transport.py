"""Transport and structure of the classical teacher: Li[PF6]/[EMIM][PF6] at two Li-salt
fractions, charges × 0.8, run natively in OpenMM (`ionmix.properties.teacher_md`) and
analysed with `ionmix.properties.transport` / `.structure` (the code behind
`ionmix props transport` / `structure`).

Stage ``run`` builds each box (Packmol), equilibrates it at constant pressure and writes an
NVT production trajectory (unwrapped, a frame every ``--frame-ps``) into ``OUT/x_<x>/``;
stage ``analyse`` computes D per species, σ (Einstein–Helfand) and Nernst–Einstein, the
Onsager matrix and t_Li, and the Li–F(PF6) RDF, writing ``OUT/bench-transport.json`` and
the figures.

Usage: python benchmarks/bench_transport.py run --out runs/bench-transport [--x 0.1]
       python benchmarks/bench_transport.py analyse --out runs/bench-transport
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

FRACTIONS = (0.1, 0.4)


def counts_for(x: float, n_pairs: int) -> dict[str, int]:
    """Ion counts of x Li[PF6] + (1 − x) [EMIM][PF6] with `n_pairs` ion pairs."""
    n_li = int(round(x * n_pairs))
    return {"Li": n_li, "EMIM": n_pairs - n_li, "PF6": n_pairs}


def stage_run(args) -> None:
    from ionmix.build import build_box
    from ionmix.properties.teacher_md import TransportRunSettings, classical_transport_run

    for x in args.x:
        out = args.out / f"x_{x:g}"
        atoms = build_box(counts_for(x, args.pairs), density_g_cm3=1.45, seed=args.seed)
        settings = TransportRunSettings(
            temperature_K=args.temperature_K, timestep_fs=args.timestep_fs,
            hydrogen_mass_amu=args.hydrogen_mass_amu, equilibration_ps=args.equil_ps,
            production_ps=args.prod_ps, frame_interval_ps=args.frame_ps, seed=args.seed,
            cutoff_A=args.cutoff_A)
        t0 = time.perf_counter()
        classical_transport_run(atoms, out, settings)
        print(f"x = {x:g}: {len(atoms)} atoms, {time.perf_counter() - t0:.0f} s", flush=True)


def stage_analyse(args) -> None:
    from dataclasses import asdict

    from ionmix.properties.structure import structure_analysis
    from ionmix.properties.transport import transport_analysis

    results = {}
    for x in args.x:
        run = args.out / f"x_{x:g}"
        t = transport_analysis(run)
        s = structure_analysis(run, pairs=["Li-F", "Li-P", "P-N"])
        md = json.loads((run / "md.json").read_text())
        results[f"{x:g}"] = {"transport": t.to_json(), "structure": s.to_json(),
                             "run": {k: md.get(k) for k in ("box_A", "wall_s", "ns_per_day",
                                                            "mean_temperature_K", "n_atoms",
                                                            "molecules", "settings")}}
        print(json.dumps(results[f"{x:g}"]["transport"], indent=1)[:3000], flush=True)
        del asdict
    (args.out / "bench-transport.json").write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=["run", "analyse"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--x", type=float, nargs="+", default=list(FRACTIONS))
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--temperature-K", type=float, default=400.0)
    parser.add_argument("--timestep-fs", type=float, default=2.0)
    parser.add_argument("--hydrogen-mass-amu", type=float, default=3.024)
    parser.add_argument("--equil-ps", type=float, default=100.0)
    parser.add_argument("--prod-ps", type=float, default=800.0)
    parser.add_argument("--frame-ps", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    # a 10-pair box is ~13.5 Å wide at the teacher's density: the cutoff must stay below
    # half of it through the NPT fluctuations (PME handles the Coulomb tail, OpenMM's
    # dispersion correction the LJ tail)
    parser.add_argument("--cutoff-A", type=float, default=6.0)
    args = parser.parse_args()
    {"run": stage_run, "analyse": stage_analyse}[args.stage](args)


if __name__ == "__main__":
    main()
