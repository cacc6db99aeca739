"""A loop member fine-tuned further on its own generation's data with another energy loss
weight or another baseline (issue 22: the students overprice contacts whose energy is below
what the force term of the loss can see, and lean toward larger boxes by the part of the
force field's dispersion beyond their cutoff that they do not infer).

    .venv/bin/python benchmarks/bench_energy_weight.py --loop runs/learn-npt --generation 2 \
        --member 0 --weight 1000 --epochs 30 --out runs/bench-energy-weight/m0-energy1000
    .venv/bin/python benchmarks/bench_energy_weight.py ... --weight 1 ...   # the control
    .venv/bin/python benchmarks/bench_energy_weight.py ... --weight 1 \
        --baseline coulomb+wall+bonded+tail --out runs/bench-energy-weight/m0-tail

The member's preset, seed, energy shifts and baseline are kept; only
``loss_coeffs.total_energy`` (the weight of the per-atom energy's squared error; forces 1)
and the epochs are set. With --baseline (the member's own plus ``+tail``), the member's
weights start a network under that baseline (`run_training`'s ``rebaseline``); every type's
energy shift moves by the tail's mean per atom on the training frames, so the network
starts where it was. Judge the result with `bench_contact_energy.py` and `ionmix md`.
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
    parser.add_argument("--baseline", help="another baseline: the member's own + '+tail'")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from ionmix.dataset import DatasetStore
    from ionmix.models.baseline import read_record
    from ionmix.train import run_training
    from ionmix.train.presets import get_preset

    gen = args.loop / f"gen-{args.generation:03d}"
    member = gen / "models" / f"model-{args.member}"
    manifest = json.loads((member / "data_manifest.json").read_text())
    data = gen / "data"
    own = read_record(member / "model.nequip.zip").name
    baseline = args.baseline or own
    shifts = manifest["energy_reference"]["per_type_energy_shifts_eV"]
    if baseline != own:
        shifts = _shifts_with_tail(shifts, baseline, own, data / "train.extxyz",
                                   get_preset(manifest["preset"]).cutoff_radius_A, args.loop)
    result = run_training(
        data / "train.extxyz", data / "val.extxyz", data / "test.extxyz",
        manifest["type_names"], preset=manifest["preset"],
        energy_shifts=shifts,
        run_dir=args.out, seed=manifest["seed"],
        overrides={"max_epochs": args.epochs, "loss_coeffs.total_energy": args.weight},
        initial_model=member / "model.nequip.zip",
        baseline=baseline, rebaseline=baseline != own,
        provenance=DatasetStore(args.loop / "frames.db").provenance(),
        baseline_cache=args.loop / "baseline-cache.sqlite", num_threads=1)
    print(json.dumps(result.metrics))


def _shifts_with_tail(shifts: dict, baseline: str, own: str, train_file: Path,
                      cutoff_A: float, loop: Path) -> dict:
    """The member's energy shifts (eV per atom of each type) moved by minus the dispersion
    tail's mean per atom on the training frames: the residual labels under `baseline`
    (`own` + the tail) are higher by that much."""
    import numpy as np
    from ase.io import read

    from ionmix.dataset import DatasetStore
    from ionmix.models.tail import DispersionTail

    if baseline != own + "+tail":
        raise SystemExit(f"--baseline {baseline}: only the member's own ({own}) + '+tail'")
    frames = read(train_file, index=":")
    provenance = DatasetStore(loop / "frames.db").provenance()
    calc = DispersionTail(provenance.ion_set(frames[0]), cutoff_A)
    per_atom = []
    for atoms in frames:
        atoms.calc = calc
        per_atom.append(atoms.get_potential_energy() / len(atoms))
    move_eV = -float(np.mean(per_atom))
    print(f"tail: {-1e3 * move_eV:.2f} meV/atom on average; shifts move by {1e3 * move_eV:+.2f}")
    return {t: float(v) + move_eV for t, v in shifts.items()}


if __name__ == "__main__":
    main()
