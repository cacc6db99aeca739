"""A non-classical teacher's walkers: started from the sampler's frame as it is, or
minimised under the walker's own model first (`WalkerSpec.minimise_start`, issue 22's xTB
target).

    .venv/bin/python benchmarks/bench_walker_start.py --run runs/learn-xtb-fit \
        --generation 0 --steps 2000 --seeds 0 1

For each velocity seed, the loop folder's first npt walker (its committee, trust window and
density window; ``n_steps`` from ``--steps``) runs twice from the same starting frame (the
last of replica 0, as the loop's first walker): once as sampled, once minimised. Recorded per
run: the time it ran before a guard stopped it (ps), why, the highest temperature in its
first 0.1 ps, its mean temperature, and the minimisation (steps, max force before/after).
Runs go to RUN/bench/walker-start/<start>-s<seed> (a rerun reads them back); one JSON
object is printed and written to RUN/bench/walker-start.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def start_frame(run: Path, cfg):
    """The loop's first walker's start: the teacher's last replica-0 frame, with its
    molecule arrays (as `ionmix.active.loop._start_frames` gives it)."""
    from ionmix.chemistry.topology import with_molecule_arrays
    from ionmix.dataset import DatasetStore
    from ionmix.teachers import teacher_spec
    from ionmix.units import density_g_per_cm3

    store = DatasetStore(run / "frames.db", must_exist=True)
    pool = store.select(replica=0, teacher=teacher_spec(cfg.teacher, "[teacher]").key)
    compositions = {f.atoms.info["composition"] for f in pool}
    if len(compositions) != 1:
        raise SystemExit(f"{run}: one composition expected, found {sorted(compositions)}")
    atoms = pool[-1].atoms.copy()
    atoms.calc = None
    with_molecule_arrays(atoms, store.provenance().ion_set(atoms))
    rho = [density_g_per_cm3(f.atoms.get_masses().sum(), f.atoms.get_volume()) for f in pool]
    return atoms, store.provenance(), float(np.mean(rho))


def summarise(folder: Path, record: dict) -> dict:
    """The walker's record plus what its thermo.csv says."""
    from ionmix.md import read_thermo

    out = {k: record.get(k) for k in ("status", "reason", "start_minimisation")}
    thermo_path = folder / "thermo.csv"
    if thermo_path.is_file():
        t = read_thermo(thermo_path)
        early = t["temperature_K"][t["time_ps"] <= 0.1]
        out.update(ran_ps=float(t["time_ps"][-1]), max_T_first_100fs_K=float(early.max()),
                   mean_T_K=float(t["temperature_K"].mean()),
                   start_potential_energy_eV=float(t["potential_energy_eV"][0]))
    else:
        out["ran_ps"] = 0.0  # stopped during the minimisation
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="an `ionmix learn` folder")
    parser.add_argument("--generation", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()

    import torch

    from ionmix.active.explore import run_walker
    from ionmix.active.loop import LearnConfig
    from ionmix.config import parse_model

    torch.set_num_threads(1)
    cfg = parse_model(LearnConfig, json.loads((args.run / "learn-config.json").read_text()),
                      str(args.run / "learn-config.json"))
    walker = next(w for w in cfg.learn.explore if w.kind == "npt")
    gen = args.run / f"gen-{args.generation:03d}"
    window = json.loads((gen / "trust_window.json").read_text())
    models = [str(p) for p in sorted(gen.glob("models/model-*/model.nequip.zip"))]
    atoms, provenance, rho0 = start_frame(args.run, cfg)
    frac = cfg.learn.density_window_fraction
    results = {}
    for seed in args.seeds:
        for minimise in (False, True):
            name = f"{'minimised' if minimise else 'as-sampled'}-s{seed}"
            spec = walker.model_copy(update={"n_steps": args.steps, "n_starts": 1,
                                             "minimise_start": minimise}).model_dump()
            folder = args.run / "bench" / "walker-start" / name
            record = run_walker(spec, [atoms], models, str(folder),
                                (window["lo_eV_per_A"], window["hi_eV_per_A"]),
                                (rho0 * (1 - frac), rho0 * (1 + frac)), provenance=provenance,
                                velocity_seed=seed)
            results[name] = summarise(folder, record)
            print(name, json.dumps(results[name]), flush=True)
    out = {"run": str(args.run), "generation": args.generation, "steps": args.steps,
           "trust_window_eV_per_A": [window["lo_eV_per_A"], window["hi_eV_per_A"]],
           "drive": walker.drive, "results": results}
    path = args.run / "bench" / "walker-start.json"
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
