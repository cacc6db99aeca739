"""A loop member fine-tuned further on its own generation's data with another energy loss
weight (issue 22: the students overprice contacts whose energy is below what the force
term of the loss can see).

    .venv/bin/python benchmarks/bench_energy_weight.py --loop runs/learn-npt --generation 2 \
        --member 0 --weight 1000 --epochs 30 --out runs/bench-energy-weight/m0-energy1000
    .venv/bin/python benchmarks/bench_energy_weight.py ... --weight 1 ...   # the control

The member's preset, seed, energy shifts and baseline are kept; only
``loss_coeffs.total_energy`` (the weight of the per-atom energy's squared error; forces 1)
and the epochs are set. Judge the result with `bench_contact_energy.py` and `ionmix md`.
Prints the test metrics as JSON; a rerun into the same --out is a no-op (resumes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loop", type=Path, required=True)
    parser.add_argument("--generation", type=int, required=True)
    parser.add_argument("--member", type=int, default=0)
    parser.add_argument("--weight", type=float, required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from ionmix.dataset import DatasetStore
    from ionmix.models.baseline import read_record
    from ionmix.train import run_training

    gen = args.loop / f"gen-{args.generation:03d}"
    member = gen / "models" / f"model-{args.member}"
    manifest = json.loads((member / "data_manifest.json").read_text())
    data = gen / "data"
    result = run_training(
        data / "train.extxyz", data / "val.extxyz", data / "test.extxyz",
        manifest["type_names"], preset=manifest["preset"],
        energy_shifts=manifest["energy_reference"]["per_type_energy_shifts_eV"],
        run_dir=args.out, seed=manifest["seed"],
        overrides={"max_epochs": args.epochs, "loss_coeffs.total_energy": args.weight},
        initial_model=member / "model.nequip.zip",
        baseline=read_record(member / "model.nequip.zip").name,
        provenance=DatasetStore(args.loop / "frames.db").provenance(),
        baseline_cache=args.loop / "baseline-cache.sqlite", num_threads=1)
    print(json.dumps(result.metrics))


if __name__ == "__main__":
    main()
