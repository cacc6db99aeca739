"""Training benchmarks: cpu-tiny presets on the seed system, and ionmix's overhead.

1. Samples (or reuses) Li[PF6]/[EMIM][PF6] at x = 0.4 and 0.6, 20 ion pairs, two replicas,
   with the classical teacher.
2. Trains `cpu-tiny-nequip` and `cpu-tiny-allegro` with `ionmix.train.train_from_store` on
   2 compositions × 40 frames (36 train + 4 validation each), tests on the independent
   replica, and reports wall time and MAEs.
3. Overhead: re-runs the config ionmix generated with a bare `nequip-train -cp DIR -cn
   config` in a fresh folder and compares wall times (same machine, same run).

Usage: .venv/bin/python benchmarks/bench_train.py [--out runs/bench-train] [--epochs 30]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ionmix.config import SampleConfig, parse_model
from ionmix.sampling import sample
from ionmix.train import train_from_store

COMPS = [{"LiPF6": 0.4, "EMIMPF6": 0.6}, {"LiPF6": 0.6, "EMIMPF6": 0.4}]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("runs/bench-train"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--presets", default="cpu-tiny-nequip,cpu-tiny-allegro")
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    out = args.out.resolve()
    cfg = parse_model(SampleConfig, {
        "mixture": {"units": {"LiPF6": {"Li": 1, "PF6": 1}, "EMIMPF6": {"EMIM": 1, "PF6": 1}},
                    "compositions": COMPS, "n_ion_pairs": 20},
        "sampling": {"initial_density_g_cm3": 1.3, "equilibration_ps": 20.0,
                     "production_ps": 20.0, "snapshot_interval_ps": 0.5}}, "bench")
    t0 = time.perf_counter()
    sample(cfg, out / "sample")
    results = {"sampling_wall_s": time.perf_counter() - t0, "presets": {}}
    for preset in args.presets.split(","):
        run_dir = out / preset
        shutil.rmtree(run_dir, ignore_errors=True)  # time a fresh training every time
        t0 = time.perf_counter()
        res = train_from_store(out / "sample" / "frames.db", COMPS, n_train=36, n_val=4,
                               n_test=40, preset=preset, run_dir=run_dir,
                               overrides={"max_epochs": args.epochs,
                                          "early_stopping_patience": args.epochs},
                               say=None)
        wall = time.perf_counter() - t0
        entry = {"ionmix_train_wall_s": wall, "nequip_train_wall_s_inside": res.train_wall_s,
                 "package_wall_s": res.package_wall_s, "epochs": res.metrics.get("epochs"),
                 "test_energy_mae_meV_per_atom": res.metrics.get("energy_mae_meV_per_atom"),
                 "test_force_mae_meV_per_A": res.metrics.get("force_mae_meV_per_A")}
        if not args.skip_overhead:
            bare = out / f"{preset}-bare"
            shutil.rmtree(bare, ignore_errors=True)
            bare.mkdir(parents=True)
            shutil.copytree(run_dir / "data", bare / "data")  # the config's data paths
            text = (run_dir / "config.yaml").read_text().replace(str(run_dir), str(bare))
            (bare / "config.yaml").write_text(text)
            t0 = time.perf_counter()
            subprocess.run([str(Path(sys.executable).parent / "nequip-train"), "-cp", str(bare),
                            "-cn", "config"], check=True, capture_output=True, cwd=bare)
            entry["bare_nequip_train_wall_s"] = time.perf_counter() - t0
            # ionmix train includes packaging; compare like with like (training only) and
            # the whole command.
            entry["ratio_ionmix_train_over_nequip_train"] = (
                (wall - res.package_wall_s) / entry["bare_nequip_train_wall_s"])
        results["presets"][preset] = entry
        print(preset, json.dumps(entry), flush=True)
    results.update(machine=platform.machine(), date=time.strftime("%Y-%m-%d"))
    print(json.dumps(results, indent=2))
    (out / "bench-train.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
