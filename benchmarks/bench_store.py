"""Dataset-store throughput: frames written and read per second for a 340-atom box.

340 atoms is the seed system at Li-salt fraction 0.5 with 20 ion pairs (10 Li, 10 EMIM,
20 PF6). Store I/O does not depend on what the numbers are, so frames carry random
positions and labels of the right shapes. Writes are batched as `ionmix sample` does
(one transaction per snapshot) and also in one transaction of many frames.

Usage: .venv/bin/python benchmarks/bench_store.py [--frames 500]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ionmix.dataset import DatasetStore, composition_key


def make_frame(rng: np.random.Generator, n_atoms: int = 340) -> Atoms:
    numbers = rng.choice([1, 3, 6, 7, 9, 15], size=n_atoms)
    atoms = Atoms(numbers, positions=rng.uniform(0, 16, (n_atoms, 3)), cell=[16, 16, 16],
                  pbc=True)
    atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()),
                                       forces=rng.normal(size=(n_atoms, 3)),
                                       stress=rng.normal(size=6) * 1e-3)
    return atoms


def meta(i: int) -> dict:
    return {"run_id": "bench", "frame_index": i,
            "composition": composition_key({"LiPF6": 0.5, "EMIMPF6": 0.5}),
            "temperature_K": 300.0, "replica": 0, "seed": 0, "time_ps": 20.0 * i,
            "teacher": "bench", "charge_scale": 0.8}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=500)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frames = [make_frame(rng) for _ in range(args.frames)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = DatasetStore(Path(tmp) / "one-per-transaction.db")
        t0 = time.perf_counter()
        for i, f in enumerate(frames):
            store.add_frames([f], [meta(i)])
        results["write_frames_per_s_one_per_transaction"] = args.frames / (
            time.perf_counter() - t0)

        store = DatasetStore(Path(tmp) / "batched.db")
        t0 = time.perf_counter()
        store.add_frames(frames, [meta(i) for i in range(args.frames)])
        results["write_frames_per_s_one_transaction"] = args.frames / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        back = store.select(run_id="bench")
        results["read_frames_per_s"] = len(back) / (time.perf_counter() - t0)
        assert len(back) == args.frames
    results.update(n_atoms=340, n_frames=args.frames, machine=platform.processor() or
                   platform.machine(), date=time.strftime("%Y-%m-%d"))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
