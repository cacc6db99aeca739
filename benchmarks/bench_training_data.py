"""Issue 22: is the students' molecular pressure bias made by their training data?

Every student trained so far pushes whole molecules apart: on the teacher's liquid its
molecular pressure is +270–690 bar above the teacher's (docs/benchmarks.md, "What moves
whole molecules"). Two suspects were left: the loop's labels (most from the walkers' sunk
boxes and the expanded volume scans) and a loss that hardly sees intermolecular forces.
This trains students from random weights on the same number of frames of the teacher's
own settled liquid (a sampling store, e.g. ``ionmix sample
examples/sample-li-emim-pf6-settled.toml --out runs/settled``), one per variant:

- ``thermal``: the sampler's frames of replica 0, nothing else (no loop label at all);
- ``rigid``: every other one of those frames, and a rigid-molecule move of each of the
  rest. Every molecule is translated (Gaussian, σ ``--shift-A`` per axis) and rotated
  about its centre of mass (a random axis, a Gaussian angle of σ ``--rotate-deg``); then
  the centres and the cell are scaled by a factor drawn uniformly from
  [1 − ``--scale``, 1 + ``--scale``]. The teacher labels the moved frames. The molecules'
  insides stay thermal and only their arrangement changes, so the differences between
  labels are intermolecular forces and the molecular virial;
- ``bonded``: the ``thermal`` frames, with the force field's bonds, angles and
  Ryckaert–Bellemans torsions under the network too (``--baseline`` + ``+bonded``, e.g.
  ``coulomb+wall+bonded``: `ionmix.models.baseline`, subtracted from the labels and added
  back by the model factory). The stiff intramolecular forces, which dominate the force
  loss, and their virial are then not the network's to learn: if the bias comes from how
  the network splits the virial between the inside of molecules and between them, this
  removes it. (The first runs of this script subtracted the same terms with a calculator
  of its own, before the baseline existed; the labels are the same.)

Every variant gets the same validation (replica 0) and test (replica 1) frames, seed,
preset, baseline and epochs, and 1 torch thread (run two side by side on two cores).
``evaluate`` then compares every trained variant with the teacher on the replica-1 frames
(`bench_molecule_forces.errors`: atom forces, the molecules' net forces and torques, and
the atomic and molecular pressure's mean difference from the teacher's):

    .venv/bin/python benchmarks/bench_training_data.py train --store runs/settled/frames.db \\
        --out runs/bench-data --variant thermal      # and rigid, bonded: two side by side
    .venv/bin/python benchmarks/bench_training_data.py evaluate --out runs/bench-data

``md`` runs a trained variant through 6 ps (``--ps``) of NPT from the sampling's last
settled frame, with ``--seed`` for the velocities, and prints its 1-ps block densities;
``evaluate --frames OUT/<variant>/md-seed0/trajectory.extxyz`` then compares the students
with the teacher on that run's own frames.

Resumable: the moved frames' labels (``OUT/rigid-moves.extxyz``) and each variant's
training folder are reused. Results: ``OUT/<variant>/bench-training-data.json`` and
``OUT/evaluate.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

VARIANTS = ("thermal", "rigid", "bonded")


def rigid_move(atoms, rng: np.random.Generator, shift_A: float, rotate_deg: float,
               scale: float):
    """A copy of `atoms` (molecule arrays attached, molecules whole) with every molecule
    translated by N(0, shift_A²) per axis and rotated about its centre of mass by
    N(0, rotate_deg²) degrees about a uniformly random axis; then the centres and the
    cell scaled by U(1 − scale, 1 + scale). Returns the copy (no calculator)."""
    from scipy.spatial.transform import Rotation

    from ionmix.chemistry.topology import MOL_ID_ARRAY, rescale_molecules

    moved = atoms.copy()
    moved.calc = None
    positions, masses = moved.positions.copy(), moved.get_masses()
    mol_id = moved.arrays[MOL_ID_ARRAY]
    for m in np.unique(mol_id):
        sel = mol_id == m
        com = (masses[sel, None] * positions[sel]).sum(0) / masses[sel].sum()
        axis = rng.normal(size=3)
        angle = np.radians(rng.normal(0.0, rotate_deg))
        turn = Rotation.from_rotvec(angle * axis / np.linalg.norm(axis))
        positions[sel] = turn.apply(positions[sel] - com) + com + rng.normal(0.0, shift_A, 3)
    factor = rng.uniform(1.0 - scale, 1.0 + scale)
    moved.positions = rescale_molecules(positions, mol_id, masses, factor)
    moved.set_cell(moved.cell.array * factor)
    return moved


def check_whole(atoms, what: str, limit_A: float = 6.0) -> None:
    """Refuse frames whose molecules are split across the box (a rigid move of a split
    molecule would tear it): no atom farther than `limit_A` from its molecule's first."""
    mol_id = atoms.arrays["mol_id"]
    for m in np.unique(mol_id):
        xyz = atoms.positions[mol_id == m]
        if np.linalg.norm(xyz - xyz[0], axis=1).max() > limit_A:
            raise SystemExit(f"{what}: molecule {m} is not whole (atoms > {limit_A} Å apart)")


def labelled(atoms, teacher_calc):
    """`atoms` with the teacher's energy (eV), forces (eV/Å) and stress (eV/Å³) as labels."""
    from ase.calculators.singlepoint import SinglePointCalculator

    work = atoms.copy()
    work.calc = teacher_calc
    labels = {"energy": work.get_potential_energy(), "forces": work.get_forces(),
              "stress": work.get_stress()}
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, **labels)
    return out


def moved_frames(sources: list, provenance, args, path: Path) -> list:
    """The rigid moves of `sources`, labelled by the teacher (read back from `path`)."""
    from ionmix.dataset.store import atomic_write_extxyz
    from ionmix.files import read_frames

    if path.exists():
        return read_frames(path, ":", what="rigid moves")
    rng = np.random.default_rng(args.seed)
    teacher = provenance.teacher(sources[0], "classical").calculator(sources[0])
    out = []
    for k, atoms in enumerate(sources):
        check_whole(atoms, f"source frame {k}")
        moved = rigid_move(atoms, rng, args.shift_A, args.rotate_deg, args.scale)
        moved.info["label_id"] = f"{atoms.info.get('label_id', k)}/rigid-move"
        out.append(labelled(moved, teacher))
    atomic_write_extxyz(out, path)
    return out


def split(args):
    """Train/val/test frames (Atoms, molecule arrays attached) and the store's provenance."""
    from ionmix.chemistry.topology import with_molecule_arrays
    from ionmix.dataset import DatasetStore, split_by_replica

    store = DatasetStore(args.store, must_exist=True)
    provenance = store.provenance()
    parts = split_by_replica(store, [args.composition], args.n_train, args.n_val,
                             args.n_test, seed=args.seed)
    frames = {}
    for role in ("train", "val", "test"):
        frames[role] = [f.atoms for f in getattr(parts, role)]
        for atoms in frames[role]:
            with_molecule_arrays(atoms, provenance.ion_set(atoms))
    return frames, provenance


def train(args) -> None:
    from ionmix.dataset.store import atomic_write_extxyz
    from ionmix.train.tasks import train_recipe_task

    frames, provenance = split(args)
    args.out.mkdir(parents=True, exist_ok=True)
    eval_path = args.out / "eval.extxyz"
    if not eval_path.exists():
        atomic_write_extxyz(frames["test"], eval_path)
        provenance.write(args.out)
    if args.variant == "rigid":
        frames["train"] = frames["train"][::2] + moved_frames(
            frames["train"][1::2], provenance, args, args.out / "rigid-moves.extxyz")
    run_dir = args.out / args.variant
    files = {role: str(atomic_write_extxyz(f, run_dir / "data" / f"{role}.extxyz"))
             for role, f in frames.items()}
    type_names = sorted({s for f in frames["train"] for s in f.get_chemical_symbols()})
    t0 = time.perf_counter()
    baseline = f"{args.baseline}+bonded" if args.variant == "bonded" else args.baseline
    result = train_recipe_task(files, type_names, args.preset, "fit", str(run_dir), args.seed,
                               {"max_epochs": args.epochs}, args.threads,
                               baseline=baseline, provenance=provenance,
                               baseline_cache=str(args.out / "baseline-cache.sqlite"))
    metrics = {k: result["metrics"].get(k) for k in (
        "energy_mae_meV_per_atom", "force_mae_meV_per_A", "stress_mae_meV_per_A3")}
    row = {"variant": args.variant, "n_train": len(frames["train"]), "epochs": args.epochs,
           "preset": args.preset, "baseline": baseline, "seed": args.seed,
           "package": result["package_path"], "train_wall_s": time.perf_counter() - t0,
           **({"shift_A": args.shift_A, "rotate_deg": args.rotate_deg, "scale": args.scale}
              if args.variant == "rigid" else {}), **metrics}
    (run_dir / "bench-training-data.json").write_text(json.dumps(row, indent=1))
    print(json.dumps(row))


def evaluate(args) -> None:
    """Every trained variant against the teacher on ``OUT/eval.extxyz`` (the bonded one
    with its bonded terms added back)."""
    from bench_molecule_forces import errors, forces_of, frames_with_molecules, markdown

    frames, provenance = frames_with_molecules(args.frames or args.out / "eval.extxyz",
                                               args.every)
    teacher = provenance.teacher(frames[0], "classical").calculator(frames[0])
    ref = forces_of(teacher, frames)
    rows = {}
    for variant in VARIANTS:
        record = args.out / variant / "bench-training-data.json"
        if not record.is_file():
            continue
        row = json.loads(record.read_text())
        calc = student(args.out, variant, frames[0], provenance)
        rows[variant] = {**row, **errors(forces_of(calc, frames), ref, frames)}
    if not rows:
        raise SystemExit(f"{args.out}: no trained variant (run train first)")
    name = "evaluate.json" if args.frames is None else f"evaluate-{args.frames.parent.name}.json"
    (args.out / name).write_text(json.dumps(rows, indent=1))
    print(markdown(rows))


def student(out: Path, variant: str, atoms, provenance):
    """The trained variant as the model factory builds it (network + its baseline)."""
    from ionmix.models import load_model

    row = json.loads((out / variant / "bench-training-data.json").read_text())
    return load_model(row["package"], atoms, provenance=provenance).calc


def md(args) -> None:
    """NPT of a trained variant (`ionmix md` defaults: MTK, 0.5 fs, 300 K, 1 bar, molecule
    guard) from the last frame of the sampling's replica 0; prints 1-ps block densities."""
    from bench_epochs import block_densities

    from ionmix.chemistry.topology import with_molecule_arrays
    from ionmix.dataset import DatasetStore
    from ionmix.dataset.structures import load_structure
    from ionmix.md import MDBlowUp, MDSettings, run_md

    provenance = DatasetStore(args.store, must_exist=True).provenance()
    atoms = load_structure(args.store, composition=args.composition, replica=0)
    with_molecule_arrays(atoms, provenance.ion_set(atoms))
    md_dir = args.out / args.variant / f"md-seed{args.seed}"
    provenance.write(md_dir)  # for evaluate --frames on its trajectory
    settings = MDSettings(n_steps=int(round(args.ps * 2000)), seed=args.seed,
                          trajectory_interval_steps=100)
    stop = ""
    try:
        run_md(atoms, student(args.out, args.variant, atoms, provenance), settings, md_dir)
    except MDBlowUp as exc:
        stop = str(exc)
    blocks = block_densities(md_dir)
    row = {"variant": args.variant, "seed": args.seed, "stop": stop, "blocks": blocks,
           "mean_density_g_cm3": float(np.mean(blocks)) if blocks else None}
    (md_dir / "bench-training-data-md.json").write_text(json.dumps(row, indent=1))
    print(json.dumps(row))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=("train", "evaluate", "md"))
    p.add_argument("--store", type=Path, help="the sampling's store (train)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--variant", choices=VARIANTS, help="what to train (train)")
    p.add_argument("--composition", default="LiPF6=0.4,EMIMPF6=0.6")
    p.add_argument("--preset", default="cpu-tiny-allegro-npt")
    p.add_argument("--baseline", default="coulomb+wall")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--n-train", type=int, default=160)
    p.add_argument("--n-val", type=int, default=10)
    p.add_argument("--n-test", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shift-A", type=float, default=0.1)
    p.add_argument("--rotate-deg", type=float, default=5.0)
    p.add_argument("--scale", type=float, default=0.02)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--every", type=int, default=1, help="evaluate on every N-th frame")
    p.add_argument("--ps", type=float, default=6.0, help="NPT length (md)")
    p.add_argument("--frames", type=Path, default=None,
                   help="evaluate on these frames (with molecule information and a "
                   "provenance.json beside them) instead of OUT/eval.extxyz, e.g. an md run's "
                   "trajectory.extxyz")
    args = p.parse_args()
    if args.step != "evaluate" and (args.variant is None or args.store is None):
        p.error(f"{args.step} needs --variant and --store")
    if args.step != "evaluate" and not args.store.exists():
        p.error(f"--store {args.store}: no such file")
    for name in ("shift_A", "rotate_deg", "scale"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be ≥ 0")
    for name in ("epochs", "n_train", "n_val", "n_test", "threads", "every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be ≥ 1")
    if args.ps <= 0 or args.seed < 0:
        p.error(f"--ps {args.ps} must be > 0 and --seed {args.seed} ≥ 0")
    from ionmix.models.baseline import BASELINES

    if args.baseline not in BASELINES or "bonded" in args.baseline:
        plain = ", ".join(b for b in BASELINES if "bonded" not in b)
        p.error(f"--baseline {args.baseline}: one of {plain} (the bonded variant adds "
                "+bonded itself)")
    if args.frames is not None and not args.frames.is_file():
        p.error(f"--frames {args.frames}: no such file")
    if args.step == "evaluate" and args.frames is None and \
            not (args.out / "eval.extxyz").is_file():
        p.error(f"--out {args.out}: no eval.extxyz (run train first, or give --frames)")
    {"train": train, "evaluate": evaluate, "md": md}[args.step](args)


if __name__ == "__main__":
    main()
