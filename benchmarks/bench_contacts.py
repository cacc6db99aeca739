"""Which contacts between molecules a student's liquid has more or fewer of than its
teacher's: intermolecular neighbours by element pair within a few radii, in a store's
sampled (teacher) frames and in the second half of MD runs (issue 22: the students sit ~2 %
light, and the teacher prices their Lennard-Jones ~1.5 meV/atom above what the density
alone explains).

    .venv/bin/python benchmarks/bench_contacts.py --store runs/learn-npt/frames.db \
        --composition LiPF6=0.4,EMIMPF6=0.6 --runs runs/md100-g2m0 runs/md100-g2m1

For each ordered element pair A–B: the mean number of B atoms of *other* molecules within r
of an A atom, r in ``--radii`` (Å), per run, and the run's ratio to the teacher's. A liquid
that is only less dense has every count lower by about its density ratio at every radius;
a contact the student avoids (or favours) stands out at short radii. Prints one JSON object;
counts are averaged over frames (errors: the frames' scatter, not their correlation).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

RADII_A = (2.5, 3.0, 3.5, 4.0, 5.0)


def contact_counts(frames, radii_A=RADII_A) -> dict[str, np.ndarray]:
    """'A-B' → array (n_frames, n_radii): mean count of B atoms of other molecules within
    each radius of an A atom. Frames need ``mol_id`` arrays."""
    from ase.neighborlist import neighbor_list

    out: dict[str, list] = {}
    for atoms in frames:
        i, j, d = neighbor_list("ijd", atoms, max(radii_A))
        mol = atoms.arrays["mol_id"]
        other = mol[i] != mol[j]
        symbols = np.array(atoms.get_chemical_symbols())
        elements = sorted(set(symbols))
        for a, b in itertools.product(elements, elements):
            n_a = np.sum(symbols == a)
            pick = other & (symbols[i] == a) & (symbols[j] == b)
            out.setdefault(f"{a}-{b}", []).append(
                [np.sum(d[pick] < r) / n_a for r in radii_A])
    return {k: np.array(v) for k, v in out.items()}


def density(frames) -> float:
    from ionmix.units import density_g_per_cm3

    return float(np.mean([density_g_per_cm3(a.get_masses().sum(), a.get_volume())
                          for a in frames]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--composition", required=True)
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--every", type=int, default=4, help="every n-th run frame")
    args = parser.parse_args()

    from ionmix.chemistry.topology import with_molecule_arrays
    from ionmix.dataset import DatasetStore
    from ionmix.files import read_frames

    store = DatasetStore(args.store, must_exist=True)
    ions = store.provenance().ion_set(store.select(args.composition)[0].atoms)
    teacher = [with_molecule_arrays(f.atoms, ions)
               for f in store.select(args.composition, task="md")]
    sets = {"teacher (sampled frames)": teacher}
    for run in args.runs:
        frames = read_frames(run / "trajectory.extxyz", ":", what="trajectory")
        sets[str(run)] = frames[len(frames) // 2::args.every]
    counts = {name: contact_counts(frames) for name, frames in sets.items()}
    reference = counts["teacher (sampled frames)"]
    result = {"radii_A": list(RADII_A), "sets": {}}
    for name, frames in sets.items():
        rows = {}
        for pair, c in counts[name].items():
            mean = c.mean(axis=0)
            ref = reference[pair].mean(axis=0)
            rows[pair] = {"count": [round(float(x), 3) for x in mean],
                          "ratio_to_teacher": [round(float(x / r), 3) if r > 0.05 else None
                                               for x, r in zip(mean, ref, strict=True)]}
        result["sets"][name] = {"n_frames": len(frames), "density_g_cm3": density(frames),
                                "pairs": rows}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
