"""Transport and structure of the classical teacher: Li[PF6]/[EMIM][PF6] at two Li-salt
fractions, charges × 0.8, run natively in OpenMM (`ionmix.teachers.classical.transport_run`) and
analysed with `ionmix.properties.transport` / `.structure` (the code behind
`ionmix props transport` / `structure`).

Stage ``run`` builds each box (Packmol), equilibrates it at constant pressure and writes an
NVT production trajectory (unwrapped, a frame every ``--frame-ps``) into ``OUT/x_<x>/``;
stage ``analyse`` computes D per species, σ (Einstein–Helfand) and Nernst–Einstein, the
Onsager matrix and t_Li, and the Li–F(PF6) RDF, writing ``OUT/bench-transport.json`` and
the figures.

Both compositions side by side (one OpenMM thread each) take ~25 min on 2 CPU cores;
results and the 400 K comparison are in docs/benchmarks.md.

Usage: python benchmarks/bench_transport.py run --out runs/bench-transport [--x 0.1]
           [--temperature-K 600 --prod-ps 1000]
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
    from ionmix.teachers.classical.transport_run import (
        TransportRunSettings,
        classical_transport_run,
    )

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


def _summary(t) -> dict:
    """The benchmark's headline numbers of one transport result."""
    d = t.diffusion_cm2_per_s
    return {
        "D_1e-7_cm2_per_s": {n: [d[n]["value"] * 1e7, d[n]["error"] * 1e7, d[n]["diffusive"],
                                 round(d[n]["loglog_slope"], 2)] for n in d},
        "sigma_S_per_m": [t.conductivity_S_per_m["value"], t.conductivity_S_per_m["error"]],
        "sigma_NE_S_per_m": [t.nernst_einstein_conductivity_S_per_m["value"],
                             t.nernst_einstein_conductivity_S_per_m["error"]],
        "ratio": [t.conductivity_ratio["value"], t.conductivity_ratio["error"]],
        "t_Li": [t.transference_number["Li"]["value"], t.transference_number["Li"]["error"]],
        "fit_window_ps": t.fit_window_ps, "run_length_ps": t.run_length_ps,
        "box_A": t.cell_lengths_A[0], "warnings": len(t.warnings)}


def stage_analyse(args) -> None:
    from ionmix.properties.structure import structure_analysis
    from ionmix.properties.transport import transport_analysis

    results = {}
    for x in args.x:
        run = args.out / f"x_{x:g}"
        md = json.loads((run / "md.json").read_text())
        entry = {"run": {k: md.get(k) for k in ("box_A", "wall_s", "ns_per_day",
                                                "mean_temperature_K", "n_atoms", "molecules",
                                                "settings")}}
        for n_seg in args.segments:
            t = transport_analysis(run, n_segments=n_seg,
                                   out_dir=args.out / f"analysis_x_{x:g}_seg{n_seg}")
            entry[f"transport_{n_seg}_segments"] = t.to_json()
            print(f"x = {x:g}, {n_seg} segments:", json.dumps(_summary(t)), flush=True)
        s = structure_analysis(run, pairs=["Li-F@PF6", "Li-P@PF6", "@EMIM-@PF6"],
                               out_dir=args.out / f"analysis_x_{x:g}")
        entry["structure"] = {p: {k: v for k, v in e.items() if k not in (
            "r_A", "g", "coordination", "per_frame_coordination")} for p, e in s.pairs.items()}
        print(f"x = {x:g} structure:", json.dumps(entry["structure"]), flush=True)
        results[f"{x:g}"] = entry
    (args.out / "bench-transport.json").write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=["run", "analyse"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--x", type=float, nargs="+", default=list(FRACTIONS))
    parser.add_argument("--pairs", type=int, default=10)
    # 600 K: diffusive from ~10 ps, so 1 ns gives a 4-segment estimate in ~25 min here; at
    # 400 K the diffusive regime starts beyond ~0.5 ns (runs of ≳ 4–8 ns needed)
    parser.add_argument("--temperature-K", type=float, default=600.0)
    parser.add_argument("--timestep-fs", type=float, default=2.0)
    parser.add_argument("--hydrogen-mass-amu", type=float, default=3.024)
    parser.add_argument("--equil-ps", type=float, default=100.0)
    parser.add_argument("--prod-ps", type=float, default=1000.0)
    parser.add_argument("--frame-ps", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--segments", type=int, nargs="+", default=[4, 2],
                        help="analyse: error segments (4: the default rule; 2: a window "
                             "twice as long, for runs too short for 4)")
    # a 10-pair box is ~13.5 Å wide at the teacher's density: the cutoff must stay below
    # half of it through the NPT fluctuations (PME handles the Coulomb tail, OpenMM's
    # dispersion correction the LJ tail)
    parser.add_argument("--cutoff-A", type=float, default=6.0)
    args = parser.parse_args()
    {"run": stage_run, "analyse": stage_analyse}[args.stage](args)


if __name__ == "__main__":
    main()
