"""NPT densities at 1 bar with the classical force field, vs experiment.

Runs `ionmix.sampling` with NPT production (Monte Carlo barostat, Langevin thermostat) for
neat ionic liquids of the library and for Li[PF6]/[EMIM][PF6] vs Li-salt fraction. The
sampler equilibrates until the density has plateaued (at least --equil-ps, at most
--max-equil-ps); the reported density is `stats.series_summary` of the production frames
(automatic equilibration detection, error std·sqrt(g/N), drift between halves).

Usage: .venv/bin/python benchmarks/bench_density.py [--equil-ps 50] [--max-equil-ps 250]
       [--prod-ps 100] [--pairs 20] [--max-density 2.6] [--only neat|mixture]
       [--out bench-density.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ionmix.config import SampleConfig, parse_model
from ionmix.dataset import DatasetStore
from ionmix.sampling import plan_sampling, sample
from ionmix.stats import series_summary
from ionmix.units import density_g_per_cm3

#: Experimental densities at 298.15 K and 1 bar, g/cm³ (rounded literature values as
#: compiled in NIST ILThermo, e.g. Jacquemin et al., Green Chem. 2006, 8, 172; Tokuda et
#: al., J. Phys. Chem. B 2004, 108, 16593 and 2005, 109, 6103). Spread between sources
#: is about ±0.005 g/cm³.
EXPERIMENT_298K = {"BMIMPF6": 1.37, "BMIMBF4": 1.20, "EMIMBF4": 1.28}

NEAT = {
    "BMIMPF6": {"BMIM": 1, "PF6": 1},
    "BMIMBF4": {"BMIM": 1, "BF4": 1},
    "EMIMBF4": {"EMIM": 1, "BF4": 1},
}


def run_density(units, composition, temperature_K, charge_scale, args, tmp) -> dict:
    cfg = parse_model(SampleConfig, {
        "mixture": {"units": units, "compositions": [composition],
                    "n_ion_pairs": args.pairs, "charge_scale": charge_scale},
        "sampling": {"temperature_K": temperature_K, "equilibration_ps": args.equil_ps,
                     "max_equilibration_ps": max(args.max_equil_ps, args.equil_ps),
                     "max_density_g_cm3": args.max_density,
                     "production_ps": args.prod_ps, "snapshot_interval_ps": args.every_ps,
                     "production_ensemble": "npt", "replicas": 1,
                     "initial_density_g_cm3": 1.1}}, "bench")
    plan = plan_sampling(cfg)
    t0 = time.perf_counter()
    sample(cfg, tmp)
    wall = time.perf_counter() - t0
    frames = DatasetStore(Path(tmp) / "frames.db").select(run_id=plan.runs[0].run_id)
    mass = float(np.sum(frames[0].atoms.get_masses()))
    rho = [density_g_per_cm3(mass, f.atoms.get_volume()) for f in frames]
    summary = series_summary(rho)
    settle = json.loads((Path(tmp) / "sample" / plan.runs[0].run_id
                         / "equilibration.json").read_text())
    return {"density_g_cm3": summary["mean"], "se_g_cm3": summary["err"],
            "drift_sigma": summary["drift_sigma"], "n_effective": summary["n_effective"],
            "production_discarded_ps": summary["equilibration_index"] * args.every_ps,
            "equilibration": settle, "n_atoms": len(frames[0].atoms),
            "cutoff_A": plan.cutoff_A, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--equil-ps", type=float, default=50.0)
    parser.add_argument("--max-equil-ps", type=float, default=250.0)
    parser.add_argument("--prod-ps", type=float, default=100.0)
    parser.add_argument("--max-density", type=float, default=2.6,
                        help="densest box the default cutoff must fit (g/cm³); neat ILs "
                        "stay below 1.6, which allows a longer cutoff")
    parser.add_argument("--every-ps", type=float, default=1.0)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--only", choices=["neat", "mixture"], default=None)
    parser.add_argument("--ils", default=",".join(NEAT), help="neat ILs to run, in order")
    parser.add_argument("--fractions", default="0,0.2,0.4,0.6,0.8,1.0")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = {"settings": vars(args) | {"out": str(args.out)}, "neat": {}, "mixture": {}}
    if args.only in (None, "neat"):
        for name in args.ils.split(","):
            unit = NEAT[name]
            with tempfile.TemporaryDirectory() as tmp:
                r = run_density({name: unit}, {name: 1.0}, 298.15, 0.8, args, tmp)
            exp = EXPERIMENT_298K[name]
            r.update(experiment_g_cm3=exp,
                     deviation_percent=100 * (r["density_g_cm3"] - exp) / exp)
            results["neat"][name] = r
            print(name, json.dumps(r), flush=True)
    if args.only in (None, "mixture"):
        units = {"LiPF6": {"Li": 1, "PF6": 1}, "EMIMPF6": {"EMIM": 1, "PF6": 1}}
        for x in (float(v) for v in args.fractions.split(",")):
            comp = {"LiPF6": x, "EMIMPF6": round(1 - x, 9)}
            with tempfile.TemporaryDirectory() as tmp:
                r = run_density(units, comp, 300.0, 0.8, args, tmp)
            results["mixture"][f"{x:g}"] = r
            print(f"x={x:g}", json.dumps(r), flush=True)
    results["date"] = time.strftime("%Y-%m-%d")
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
