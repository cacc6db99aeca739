"""What the bonded prior fitted to the teacher leaves to the network (issue 22's xTB lever).

The `coulomb+wall+bonded` baseline carries the force field's harmonic bonds and angles.
Under a quantum teacher its springs sit at the force field's r0 and θ0, not the teacher's,
so for some ions (PF6⁻ under GFN2-xTB) it leaves the network more to undo than it removes
(`bench_residual_size.py`). `coulomb+wall+bonded-fit` refits each bond and angle type's
(k, x0) to the teacher's forces on training frames (`ionmix.models.bonded_fit`). This
script fits it on one file and reports, on held-out frames, the force RMS each baseline
leaves, by element, and the fitted parameters beside the force field's:

    .venv/bin/python benchmarks/bench_bonded_fit.py \
        --train runs/learn-xtb/gen-002/data/train.extxyz \
        --test runs/learn-xtb/gen-002/data/test.extxyz --out runs/bench-bonded-fit.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _ion_sets(frames):
    from ionmix.chemistry.ionset import IonSet
    from ionmix.chemistry.topology import molecules_of

    return [IonSet.library({name for name, _ in molecules_of(f)}) for f in frames]


def force_rms(frames, baseline, ion_sets) -> dict[str, float]:
    """RMS (eV/Å) of the forces `baseline` leaves on `frames`, by element and in all."""
    from ionmix.models.baseline import residual_frames

    forces = np.concatenate([r.get_forces() for r in residual_frames(frames, baseline,
                                                                        ion_sets)])
    symbols = np.concatenate([f.get_chemical_symbols() for f in frames])
    out = {e: float(np.sqrt(np.mean(forces[symbols == e] ** 2))) for e in sorted(set(symbols))}
    out["all"] = float(np.sqrt(np.mean(forces**2)))
    return out


def field_parameters(frame, ions) -> dict[str, tuple[float, float]]:
    """The force field's (k, x0) per term type of `frame`."""
    from ionmix.chemistry.topology import molecules_of
    from ionmix.teachers.classical.harmonic import harmonic_terms
    from ionmix.teachers.classical.system import make_system

    bonds, angles = harmonic_terms(make_system(molecules_of(frame), frame.cell.array,
                                               ions=ions, bonded_only=True))
    return {key: (k, x0) for *_, key, x0, k in bonds + angles}


def main() -> None:
    import ase.io

    from ionmix.models.baseline import baseline_for_frames

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", required=True, help="labelled extxyz (molecules info)")
    parser.add_argument("--test", required=True, help="held-out labelled extxyz")
    parser.add_argument("--out", default=None, help="JSON (default: print only)")
    args = parser.parse_args()
    for path in (args.train, args.test):
        if not Path(path).is_file():
            parser.error(f"{path}: no such file")
    train, test = ase.io.read(args.train, ":"), ase.io.read(args.test, ":")
    train_ions, test_ions = _ion_sets(train), _ion_sets(test)
    t0 = time.perf_counter()
    fitted = baseline_for_frames("coulomb+wall+bonded-fit", train, train_ions, "train")
    fit_s = time.perf_counter() - t0
    field = baseline_for_frames("coulomb+wall+bonded", test, test_ions, "test")
    ff = field_parameters(train[0], train_ions[0])
    result = {
        "n_train": len(train), "n_test": len(test), "fit_wall_s": fit_s,
        "test_force_rms_eV_per_A": {
            "none": force_rms(test, baseline_for_frames("none", test, test_ions, "test"),
                              test_ions),
            "coulomb+wall+bonded": force_rms(test, field, test_ions),
            "coulomb+wall+bonded-fit": force_rms(test, fitted, test_ions)},
        "parameters (k, x0): force field, fitted": {
            key: [list(ff.get(key, (np.nan, np.nan))), list(p)]
            for key, p in fitted.bonded_parameters.items()},
        "units": "k in eV/Å² (bonds) or eV/rad² (angles), x0 in Å or rad",
    }
    print(json.dumps(result, indent=1, ensure_ascii=False))
    elements = list(result["test_force_rms_eV_per_A"]["none"])
    print("| baseline | " + " | ".join(f"F RMS {e}" for e in elements) + " |")
    print("|---" * (len(elements) + 1) + "|")
    for name, rms in result["test_force_rms_eV_per_A"].items():
        print(f"| {name} | " + " | ".join(f"{rms[e]:.3f}" for e in elements) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
