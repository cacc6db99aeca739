"""Li⁺'s first shell: the mean number of F within 2.3 Å of a Li⁺, in a store's sampled
(teacher) frames and in the second half of MD runs (issue 22: do the students overfill the
Li⁺ shell?).

    .venv/bin/python benchmarks/bench_li_shell.py --store runs/learn-npt/frames.db \
        --composition LiPF6=0.4,EMIMPF6=0.6 \
        --runs runs/learn-npt/gen-002/explore/w0-npt-300K-1bar-s0 runs/md-g1m0

Errors are the standard error of the frames' scatter, not of their correlation (an
underestimate for correlated frames).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

CUTOFF_A = 2.3


def li_f_coordination(frames, cutoff_A: float = CUTOFF_A) -> np.ndarray:
    """Per frame, the mean number of F atoms within `cutoff_A` of a Li atom."""
    from ase.neighborlist import neighbor_list

    out = []
    for atoms in frames:
        i, j = neighbor_list("ij", atoms, cutoff_A)
        symbols = np.array(atoms.get_chemical_symbols())
        lithium = np.flatnonzero(symbols == "Li")
        out.append(np.mean([np.sum((i == k) & (symbols[j] == "F")) for k in lithium]))
    return np.array(out)


def _line(name: str, values: np.ndarray) -> str:
    return (f"{name}: {values.mean():.2f} ± {values.std(ddof=1) / np.sqrt(values.size):.2f} "
            f"({values.size} frames)")


def main() -> None:
    import ase.io

    from ionmix.dataset import DatasetStore

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", required=True, help="dataset store with sampled frames")
    parser.add_argument("--composition", required=True, help="e.g. LiPF6=0.4,EMIMPF6=0.6")
    parser.add_argument("--runs", nargs="*", default=[], help="ionmix md run folders")
    args = parser.parse_args()
    if not Path(args.store).is_file():
        parser.error(f"--store {args.store}: no such file")
    for run in args.runs:
        if not (Path(run) / "trajectory.extxyz").is_file():
            parser.error(f"--runs {run}: no trajectory.extxyz there")
    sampled = [f.atoms for f in DatasetStore(args.store).select(args.composition, task="md")]
    if not sampled:
        parser.error(f"--composition {args.composition}: no sampled frames in {args.store}")
    print(_line("teacher's sampled frames", li_f_coordination(sampled)))
    for run in args.runs:
        frames = ase.io.read(Path(run) / "trajectory.extxyz", ":")
        print(_line(f"{run}, second half", li_f_coordination(frames[len(frames) // 2:])))


if __name__ == "__main__":
    main()
