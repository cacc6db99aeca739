"""What one step of an active-learning walker costs: the committee's mean (every member at
every step) against one member driving with the whole committee every n-th step
(`CommitteeCalculator(drive_member=..., deviation_every=n)`, dpgen's model_devi_freq).

    .venv/bin/python benchmarks/bench_walker_step.py \
        --models runs/learn-npt/gen-000/models --store runs/learn-npt/frames.db \
        --every 10 --calls 40

Calls alternate between the modes on the same frame, rattled a little each call (a new
geometry, as in MD), so both see the same machine load; medians of forces + stress per
call, in ms, one torch thread. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="committee folder")
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()

    import torch

    from ionmix.dataset import DatasetStore
    from ionmix.models import load_committee, model_paths

    torch.set_num_threads(1)
    store = DatasetStore(args.store, must_exist=True)
    frame = store.select(replica=0)[-1].atoms
    provenance = store.provenance()
    paths = model_paths(args.models)
    calcs = {"mean": load_committee(paths, frame, provenance=provenance).calc,
             "member": load_committee(paths, frame, provenance=provenance, drive_member=0,
                                      deviation_every=args.every).calc}
    times: dict[str, list[float]] = {name: [] for name in calcs}
    for k in range(args.calls + 2):
        for name, calc in calcs.items():
            atoms = frame.copy()
            atoms.rattle(1e-3, seed=k)
            atoms.calc = calc
            t0 = time.perf_counter()
            atoms.get_forces()
            atoms.get_stress()
            if k >= 2:  # the first calls load and warm up
                times[name].append(1e3 * (time.perf_counter() - t0))
    # the member mode's cost is periodic: its mean over whole periods is what a walker pays
    result = {"n_atoms": len(frame), "n_members": len(paths), "every": args.every,
              "mean_ms_median": statistics.median(times["mean"]),
              "member_ms_mean": statistics.fmean(times["member"]),
              "member_ms_median": statistics.median(times["member"])}
    result["speedup"] = result["mean_ms_median"] / result["member_ms_mean"]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
