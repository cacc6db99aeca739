"""Labelling benchmarks: ionmix's overhead over a bare teacher loop, and Dask scaling.

1. Samples (or reuses) Li[PF6]/[EMIM][PF6] at x = 0.5, `--ion-pairs` (10: 170 atoms), with
   the classical teacher: the frames to label.
2. ``--stage xtb-overhead``: `ionmix.labelling.label` (xtb, single points, one Dask
   worker) against a bare loop of tblite's ASE calculator (energy, forces, stress) on the
   same frames, alternating, in one run. Both single-threaded (OMP_NUM_THREADS=1, set
   before tblite loads), so the ratio is ionmix's overhead alone. Target ≥ 0.95.
3. ``--stage xtb-scaling``: labels per hour with 1 and 2 Dask workers.
4. ``--stage espresso-overhead``: the same for Quantum ESPRESSO (PBE-D3, 50/500 Ry, 1 rank)
   against pw.x through ASE. ``--cell nh3``: NH3 in 5 Å cells with Debian's N/H files
   (seconds per frame). ``--cell emim-pf6 --pseudo-dir DIR``: one [EMIM][PF6] pair (26
   atoms, ~1 min per frame) with a pslibrary set made by ``ionmix pseudo generate DIR
   --pslibrary CHECKOUT``.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_label.py --stage xtb-overhead
       [--frames 16] [--out runs/bench-label]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before tblite/numpy load their thread pools

from ionmix.cluster import ClusterConfig  # noqa: E402
from ionmix.config import SampleConfig, parse_model  # noqa: E402
from ionmix.dataset import DatasetStore, equally_spaced  # noqa: E402
from ionmix.labelling import label  # noqa: E402
from ionmix.sampling import sample  # noqa: E402


def frames_store(out: Path, n_frames: int, n_ion_pairs: int) -> Path:
    """A classical store with `n_frames` snapshots of one composition (x = 0.5)."""
    cfg = parse_model(SampleConfig, {
        "mixture": {"units": {"LiPF6": {"Li": 1, "PF6": 1}, "EMIMPF6": {"EMIM": 1, "PF6": 1}},
                    "compositions": [{"LiPF6": 0.5, "EMIMPF6": 0.5}], "n_ion_pairs": n_ion_pairs},
        "sampling": {"initial_density_g_cm3": 1.3, "equilibration_ps": 5.0,
                     "production_ps": 0.5 * n_frames, "snapshot_interval_ps": 0.5,
                     "replicas": 1}}, "bench")
    sample(cfg, out / f"sample-{n_ion_pairs}")
    return out / f"sample-{n_ion_pairs}" / "frames.db"


def bare_xtb_s(frames) -> float:
    """Wall seconds of a bare tblite loop (a new calculator per frame, as a script would)."""
    from tblite.ase import TBLite

    start = time.perf_counter()
    for atoms in frames:
        work = atoms.copy()
        work.calc = TBLite(method="GFN2-xTB", verbosity=0)
        work.get_potential_energy(), work.get_forces(), work.get_stress()
    return time.perf_counter() - start


def ionmix_xtb_s(store: Path, out: Path, workers: int, tag: str) -> tuple[float, int]:
    """Wall seconds of `label` (fresh output store), and the labels it stored."""
    target = out / f"labels-{tag}.db"
    target.unlink(missing_ok=True)
    shutil.rmtree(out / f"work-{tag}", ignore_errors=True)
    start = time.perf_counter()
    summary = label(store, "xtb", "single-point", target, cluster=ClusterConfig(
        workers=workers), workdir=out / f"work-{tag}")
    return time.perf_counter() - start, summary.n_labels


def xtb_overhead(store: Path, out: Path, repeats: int) -> dict:
    frames = [f.atoms for f in DatasetStore(store).select()]
    bare, ours = [], []
    for k in range(repeats):  # alternate, so machine load hits both alike
        bare.append(bare_xtb_s(frames))
        ours.append(ionmix_xtb_s(store, out, 1, f"overhead-{k}")[0])
    return {"n_frames": len(frames), "n_atoms": len(frames[0]), "bare_s": bare,
            "ionmix_s": ours, "ratio_bare_over_ionmix": min(bare) / min(ours)}


def xtb_scaling(store: Path, out: Path) -> dict:
    result = {}
    for workers in (1, 2):
        wall, n = ionmix_xtb_s(store, out, workers, f"scaling-{workers}")
        result[f"{workers}_workers"] = {"wall_s": wall, "labels": n,
                                        "labels_per_hour": 3600.0 * n / wall}
    return result


DEBIAN_PSEUDO = Path("/usr/share/espresso/pseudo")
NH3_PSEUDOPOTENTIALS = {"N": "N.pbe-n-rrkjus_psl.1.0.0.UPF", "H": "H.pbe-kjpaw.UPF"}
PSLIBRARY_FILES = {"H": "H.pbe-rrkjus_psl.1.0.0.UPF", "C": "C.pbe-n-rrkjus_psl.1.0.0.UPF",
                   "N": "N.pbe-n-rrkjus_psl.1.0.0.UPF", "F": "F.pbe-n-rrkjus_psl.1.0.0.UPF",
                   "P": "P.pbe-n-rrkjus_psl.1.0.0.UPF"}


def qe_frames(out: Path, n_frames: int, cell: str) -> Path:
    """`n_frames` rattled small periodic cells: NH3 in 5 Å, or one [EMIM][PF6] pair."""
    import ase.io
    from ase.build import molecule

    from ionmix.build import build_box

    frames = []
    for seed in range(n_frames):
        if cell == "nh3":
            atoms = molecule("NH3")
            atoms.set_cell([5.0] * 3)
            atoms.center()
            atoms.pbc = True
        else:  # one ion pair packed at 1.3 g/cm³ (a 6.9 Å cube), as a laptop DFT cell
            atoms = build_box({"EMIM": 1, "PF6": 1}, density_g_cm3=1.3, seed=seed,
                              tolerance_A=1.8)
        atoms.rattle(0.03, seed=seed)
        frames.append(atoms)
    path = out / f"{cell}.extxyz"
    ase.io.write(path, frames)
    return path


def bare_qe_s(frames, work: Path, pseudo_dir: Path, pseudopotentials: dict) -> float:
    """Wall seconds of pw.x through ASE's Espresso calculator, the teacher's settings."""
    from ase.calculators.espresso import Espresso, EspressoProfile

    start = time.perf_counter()
    for k, atoms in enumerate(frames):
        atoms = atoms.copy()
        atoms.calc = Espresso(
            profile=EspressoProfile(command="pw.x", pseudo_dir=str(pseudo_dir)),
            directory=str(work / f"bare-{k}"), kpts=None, pseudopotentials=pseudopotentials,
            input_data={"control": {"tprnfor": True, "tstress": True},
                        "system": {"ecutwfc": 50, "ecutrho": 500, "input_dft": "PBE",
                                   "vdw_corr": "dft-d3", "tot_charge": 0},
                        "electrons": {"conv_thr": 1e-10, "mixing_beta": 0.7}})
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    return time.perf_counter() - start


def qe_overhead(out: Path, n_frames: int, repeats: int, cell: str,
                pseudo_dir: Path | None) -> dict:
    """`ionmix label --teacher espresso` vs bare pw.x through ASE (1 rank each, alternating)."""
    import ase.io

    path = qe_frames(out, n_frames, cell)
    frames = ase.io.read(path, ":")
    if cell == "nh3":
        pseudo_dir, files = DEBIAN_PSEUDO, NH3_PSEUDOPOTENTIALS
    elif pseudo_dir is None:
        raise SystemExit("--cell emim-pf6 needs --pseudo-dir (made by 'ionmix pseudo generate')")
    else:
        files = PSLIBRARY_FILES
    spec = {"kind": "espresso", "pseudo_dir": str(pseudo_dir), "pseudopotentials": files}
    bare, ours = [], []
    for k in range(repeats):
        shutil.rmtree(out / f"qe-{k}", ignore_errors=True)
        bare.append(bare_qe_s(frames, out / f"qe-{k}", pseudo_dir, files))
        start = time.perf_counter()
        label(path, spec, "single-point", out / f"qe-{k}" / "labels.db",
              cluster=ClusterConfig(workers=1), workdir=out / f"qe-{k}" / "work")
        ours.append(time.perf_counter() - start)
    return {"cell": cell, "n_frames": n_frames, "n_atoms": len(frames[0]), "bare_s": bare,
            "ionmix_s": ours,
            "ratio_bare_over_ionmix": min(bare) / min(ours)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage", choices=["xtb-overhead", "xtb-scaling", "espresso-overhead"],
                        required=True)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ion-pairs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-label"))
    parser.add_argument("--cell", choices=["nh3", "emim-pf6"], default="nh3")
    parser.add_argument("--pseudo-dir", type=Path, default=None)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.stage == "espresso-overhead":
        result = qe_overhead(out, args.frames, args.repeats, args.cell,
                             args.pseudo_dir and args.pseudo_dir.resolve())
    else:
        store = frames_store(out, args.frames, args.ion_pairs)
        picked = equally_spaced(DatasetStore(store).select(), args.frames)
        assert len(picked) == args.frames
        result = (xtb_overhead(store, out, args.repeats) if args.stage == "xtb-overhead"
                  else xtb_scaling(store, out))
    result.update(stage=args.stage, machine=platform.processor() or platform.machine(),
                  cores=os.cpu_count(), omp_threads=os.environ["OMP_NUM_THREADS"],
                  date=time.strftime("%Y-%m-%d"))
    (out / f"{args.stage}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
