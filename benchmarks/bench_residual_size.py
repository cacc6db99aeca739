"""How much of a teacher's forces each baseline leaves for the network (issue 22).

For labelled frames (an extxyz with molecule arrays, e.g. a learning loop's
``gen-000/data/train.extxyz``), the RMS of the teacher's forces and, per baseline, of the
residual the network must fit (teacher − baseline), by element; and the residual stress.
A baseline that removes most of the teacher's forces leaves the network less to learn; one
whose terms disagree with the teacher (the force field's bonded terms under an xTB
teacher, whose bond lengths differ) can leave more than it removes.

    .venv/bin/python benchmarks/bench_residual_size.py runs/learn-xtb/gen-000/data/train.extxyz \
        --baselines none coulomb+wall coulomb+wall+bonded --frames 20
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def residual_sizes(frames, baselines: list[str]) -> dict:
    """{baseline: {"force_rms_eV_per_A": {element: rms, "all": rms},
    "stress_rms_meV_per_A3": rms}} of the residual labels of `frames`."""
    from ionmix.chemistry.ionset import IonSet
    from ionmix.chemistry.topology import molecules_of
    from ionmix.models.baseline import baseline_for_frames, residual_frames

    ion_sets = [IonSet.library({name for name, _ in molecules_of(f)}) for f in frames]
    symbols = np.concatenate([f.get_chemical_symbols() for f in frames])
    out = {}
    for name in baselines:
        baseline = baseline_for_frames(name, frames, ion_sets, "frames")
        residual = residual_frames(frames, baseline, ion_sets)
        forces = np.concatenate([f.get_forces() for f in residual])
        stress = np.array([f.get_stress() for f in residual])
        rms = {el: float(np.sqrt(np.mean(forces[symbols == el] ** 2)))
               for el in sorted(set(symbols))}
        rms["all"] = float(np.sqrt(np.mean(forces**2)))
        out[name] = {"force_rms_eV_per_A": rms,
                     "stress_rms_meV_per_A3": float(np.sqrt(np.mean(stress**2)) * 1e3)}
    return out


def main() -> None:
    import ase.io

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("frames", help="labelled extxyz with molecule arrays")
    from ionmix.models.baseline import BASELINES

    parser.add_argument("--baselines", nargs="+", choices=BASELINES,
                        default=["none", "coulomb+wall", "coulomb+wall+bonded"])
    parser.add_argument("--frames", dest="n_frames", type=int, default=20,
                        help="the first N frames of the file")
    args = parser.parse_args()
    if args.n_frames < 1:
        parser.error(f"--frames {args.n_frames}: must be at least 1")
    if not Path(args.frames).is_file():
        parser.error(f"{args.frames}: no such file")
    frames = ase.io.read(args.frames, f":{args.n_frames}")
    sizes = residual_sizes(frames, args.baselines)
    print(json.dumps(sizes, indent=1))
    elements = list(sizes[args.baselines[0]]["force_rms_eV_per_A"])
    print("| baseline | " + " | ".join(f"F RMS {e} (eV/Å)" for e in elements)
          + " | stress RMS (meV/Å³) |")
    print("|---" * (len(elements) + 2) + "|")
    for name, s in sizes.items():
        cells = " | ".join(f"{s['force_rms_eV_per_A'][e]:.3f}" for e in elements)
        print(f"| {name} | {cells} | {s['stress_rms_meV_per_A3']:.2f} |")


if __name__ == "__main__":
    main()
