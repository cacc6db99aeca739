"""Where a student's run leaves the teacher's liquid: the classical teacher's energy, term
by term, along the student's trajectory against along the teacher's own NPT frames.

    .venv/bin/python benchmarks/bench_teacher_terms.py --store runs/learn-npt/frames.db \
        --trajectory runs/bench-epochs/md-trained-seed0/trajectory.extxyz

A student whose own energy stays flat while the teacher prices its run ~15 meV/atom higher
(docs/benchmarks.md, "Why the students' density sinks") has some degrees of freedom the
teacher finds too hot or too strained. Splitting the teacher's energy into its force
field's terms (bonds, angles, torsions, Lennard-Jones, Coulomb, and the torsions by element
quadruplet: `ionmix.teachers.classical.terms`, which `ionmix validate` also reports along
one run) names them. Reference: the teacher's own NPT frames of the same composition
(``--replica``, the last ``--reference-frames``), whose term energies are the teacher's
equilibrium at that temperature (e.g. ½ k_B T per harmonic bond). Energies in meV per
atom; the difference of the student's run (its second half) from the reference, with the
reference's spread. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--trajectory", type=Path, required=True, nargs="+")
    parser.add_argument("--replica", type=int, default=0)
    parser.add_argument("--reference-frames", type=int, default=40)
    args = parser.parse_args()
    for path in (args.store, *args.trajectory):
        if not path.is_file():
            parser.error(f"{path}: no such file")
    if args.reference_frames < 2:
        parser.error("--reference-frames must be ≥ 2")

    from ionmix.dataset import DatasetStore
    from ionmix.files import read_frames
    from ionmix.teachers.classical.terms import energy_terms_meV_per_atom

    store = DatasetStore(args.store, must_exist=True)
    reference = [f.atoms for f in store.select(replica=args.replica, task="md")]
    reference = reference[-args.reference_frames:]
    teacher = store.provenance().teacher(reference[0], "classical").calculator(reference[0])

    def terms(frames):
        return energy_terms_meV_per_atom(frames, teacher)

    ref = terms(reference)
    result = {"reference": {"replica": args.replica, "n_frames": len(reference),
                            **{k: [float(v.mean()), float(v.std())] for k, v in ref.items()}},
              "runs": {}}
    for path in args.trajectory:
        frames = read_frames(path, ":", what="trajectory")
        run = terms(frames)
        half = len(frames) // 2
        result["runs"][str(path)] = {
            "n_frames": len(frames),
            "second_half_minus_reference_meV_per_atom": {
                k: float(v[half:].mean() - ref[k].mean()) for k, v in run.items()},
            "series_meV_per_atom": {k: [round(float(x), 2) for x in v] for k, v in run.items()},
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
