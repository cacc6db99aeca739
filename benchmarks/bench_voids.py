"""Empty space in a liquid: the largest empty sphere and the share of the box far from every
atom, in a store's sampled (teacher) frames and in windows of MD runs (issue 22: the
students' boxes expand suddenly; do they open cavities?).

    .venv/bin/python benchmarks/bench_voids.py --store runs/learn-npt/frames.db \
        --composition LiPF6=0.4,EMIMPF6=0.6 \
        --run runs/md100-g2m1:0:15 --run runs/md100-g2m1:20:40 --run runs/md100-g2m0:0:30

Per frame, on a grid of ``--grid``³ points over an orthorhombic periodic box: the largest
distance from a grid point to its nearest atom (the radius of the largest empty sphere, to
the grid's resolution) and the share of grid points farther than ``--far-A`` (2.5 Å) from
every atom. Means ± spread over every ``--every``-th frame of each window
(RUN:START_PS:END_PS) and over every 10th sampled frame. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def empty_space(atoms, grid: int, far_A: float) -> tuple[float, float]:
    """(largest distance from a grid point to its nearest atom in Å, share of grid points
    farther than `far_A`) of one frame with an orthorhombic periodic cell."""
    from scipy.spatial import cKDTree

    cell = atoms.cell.array
    lengths = np.diag(cell)
    if not np.allclose(cell, np.diag(lengths)):
        raise SystemExit("bench_voids: orthorhombic cells only")
    tree = cKDTree(np.mod(atoms.positions, lengths), boxsize=lengths)
    axes = [np.arange(grid) / grid * length for length in lengths]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    distance, _ = tree.query(points)
    return float(distance.max()), float(np.mean(distance > far_A))


def summary(frames, grid: int, far_A: float) -> dict:
    values = np.array([empty_space(a, grid, far_A) for a in frames])
    return {"n_frames": len(frames),
            "largest_empty_radius_A": [round(values[:, 0].mean(), 3),
                                       round(values[:, 0].std(), 3)],
            "share_far_from_atoms": [round(values[:, 1].mean(), 5),
                                     round(values[:, 1].std(), 5)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--composition", required=True)
    parser.add_argument("--run", action="append", default=[], help="RUN:START_PS:END_PS")
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--grid", type=int, default=24)
    parser.add_argument("--far-A", type=float, default=2.5)
    args = parser.parse_args()

    import ase.io

    from ionmix.dataset import DatasetStore

    teacher = [f.atoms for f in DatasetStore(args.store, must_exist=True).select(
        args.composition, task="md")][::10]
    result = {"teacher (sampled frames)": summary(teacher, args.grid, args.far_A)}
    for spec in args.run:
        run, start, end = spec.rsplit(":", 2)
        frames = ase.io.read(Path(run) / "trajectory.extxyz", f"::{args.every}")
        window = [a for a in frames if float(start) <= a.info["time_ps"] < float(end)]
        result[spec] = summary(window, args.grid, args.far_A)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
