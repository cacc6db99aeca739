"""Issue 22's ablation: what each baseline under the network buys in NPT.

Li[PF6]/[EMIM][PF6] at x = 0.4, 10 ion pairs, 300 K, classical teacher, from a settled box:

    ionmix sample examples/sample-li-emim-pf6-settled.toml --out runs/settled
    .venv/bin/python benchmarks/bench_baseline.py --store runs/settled/frames.db \
        --out runs/ablation [--members 4 --ps 20 --epochs 30]

For each baseline (none, zbl, coulomb, coulomb+zbl) the same data (``--n-train`` frames of
replica 0, every other frame from the end so the settled part comes first; validation
frames between them; ``--n-test`` frames of replica 1) and the same seeds train
``--members`` students; each then runs NPT (`ionmix md` defaults: MTK, 0.5 fs, 300 K, 1
bar, molecule guard on) from the last frame of replica 0 with its own velocity seed. For
every student: its test MAEs, the time to the first guard stop (or the whole run), its
density (mean of the second half of the run, with its block error), and ``ionmix
validate`` along the run against the teacher (energy and force MAE). Everything is
resumable (training and MD folders are reused) and the table goes to
``OUT/ablation.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

BASELINES = ("none", "zbl", "coulomb", "coulomb+zbl", "wall", "coulomb+wall")


def train_student(store: Path, out: Path, baseline: str, seed: int, args) -> dict:
    from ionmix.train import train_from_store

    run_dir = out / baseline / f"model-{seed}"
    t0 = time.perf_counter()
    result = train_from_store(store, [args.composition], n_train=args.n_train, n_val=args.n_val,
                              n_test=args.n_test, preset=args.preset, run_dir=run_dir,
                              energy_reference="fit", seed=seed, baseline=baseline,
                              overrides={"max_epochs": args.epochs}, say=None)
    return {"package": str(result.package_path), "train_wall_s": time.perf_counter() - t0,
            **{k: result.metrics.get(k) for k in ("energy_mae_meV_per_atom",
                                                   "force_mae_meV_per_A",
                                                   "stress_mae_meV_per_A3")}}


def run_student(store: Path, composition: str, package: str, md_dir: Path, seed: int,
                ps: float) -> dict:
    """NPT with one student; the time it ran, why it stopped, its density."""
    from ionmix.chemistry.topology import with_molecule_arrays
    from ionmix.dataset.provenance import load_provenance
    from ionmix.dataset.structures import load_structure
    from ionmix.md import MDBlowUp, MDSettings, read_thermo, run_md
    from ionmix.models import load_model

    provenance = load_provenance(store)
    atoms = load_structure(store, composition=composition, replica=0)
    with_molecule_arrays(atoms, provenance.ion_set(atoms))  # for validate's molecule forces
    calc = load_model(package, atoms, provenance=provenance).calc
    settings = MDSettings(n_steps=int(round(ps * 2000)), seed=seed,
                          trajectory_interval_steps=100)
    t0 = time.perf_counter()
    stop = ""
    try:
        run_md(atoms, calc, settings, md_dir)
    except MDBlowUp as exc:
        stop = str(exc)
    thermo = read_thermo(md_dir / "thermo.csv")
    time_ps = float(thermo["time_ps"][-1]) if len(thermo["time_ps"]) else 0.0
    wall_s = time.perf_counter() - t0
    # a resumed or blown-up run records no throughput: steps done in this call / wall
    out = {"time_ps": time_ps, "stop": stop, "md_wall_s": wall_s,
           "steps_per_s": time_ps * 1000.0 / settings.timestep_fs / wall_s}
    rho = np.asarray(thermo["density_g_cm3"], float)
    if len(rho) >= 20:
        out.update(_density(rho[len(rho) // 2:]))
    return out


def _density(series) -> dict:
    from ionmix.stats import series_summary

    summary = series_summary(series)
    return {"density_g_cm3": summary["mean"], "density_err_g_cm3": summary["err"]}


def validate_student(store: Path, md_dir: Path, n_frames: int) -> dict:
    """`ionmix validate` along the student's run against the classical teacher."""
    from ionmix.dataset.provenance import load_provenance
    from ionmix.files import read_frames
    from ionmix.properties.validate import validate_trajectory

    traj = md_dir / "trajectory.extxyz"
    frames = read_frames(traj, ":", what="trajectory")
    if len(frames) < 2:
        return {}
    teacher = load_provenance(store).teacher(frames[0], "classical").calculator(frames[0])
    result = validate_trajectory(traj, teacher, md_dir / "validate", n_frames=n_frames)
    return {"validate_energy_mae_meV_per_atom": result.energy_mae_meV_per_atom,
            "validate_force_mae_meV_per_A": result.force_mae_meV_per_A,
            "validate_molecule_forces": result.molecule_forces}


def step_cost(store: Path, composition: str, package: str, n_calls: int = 20) -> dict:
    """Median wall time (s) of one MD step's evaluation (forces, then stress, as ASE's MTK
    asks for them) of the network alone, the baseline beside it alone and the student, on
    the starting frame (the same machine load for all three, interleaved)."""
    from ionmix.dataset.provenance import load_provenance
    from ionmix.dataset.structures import load_structure
    from ionmix.models import load_calculator, load_model
    from ionmix.models.baseline import baseline_calculator

    atoms = load_structure(store, composition=composition, replica=0)
    prov = load_provenance(store)
    student = load_model(package, atoms, provenance=prov)
    calcs = {"network": load_calculator(package),
             "baseline": baseline_calculator(student.baseline, prov.ion_set(atoms)),
             "student": student.calc}
    times: dict[str, list[float]] = {name: [] for name in calcs}
    rng = np.random.default_rng(0)
    for _ in range(n_calls):
        moved = atoms.copy()
        moved.positions += rng.normal(scale=0.01, size=moved.positions.shape)
        for name, calc in calcs.items():
            if calc is None:
                continue
            work = moved.copy()
            work.calc = calc
            t0 = time.perf_counter()
            work.get_forces()
            work.get_stress()
            times[name].append(time.perf_counter() - t0)
    return {f"{name}_s_per_step": float(np.median(t)) for name, t in times.items() if t}


def validate_cell(row: dict) -> str:
    """A table cell: `validate`'s energy / force MAE of a result row, – if it did not run."""
    if "validate_energy_mae_meV_per_atom" not in row:
        return "–"
    return (f"{row['validate_energy_mae_meV_per_atom']:.1f} / "
            f"{row['validate_force_mae_meV_per_A']:.0f}")


def markdown(rows: list[dict], teacher_rho: float | None) -> str:
    head = ("| baseline | member | test E / F MAE (meV/atom, meV/Å) | NPT ran (ps) | stopped by "
            "| ρ (g/cm³) | validate E / F MAE | train / MD wall (s) |\n"
            "|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        rho = (f"{r['density_g_cm3']:.3f} ± {r['density_err_g_cm3']:.3f}"
               if "density_g_cm3" in r else "–")
        val = validate_cell(r)
        lines.append(
            f"| {r['baseline']} | {r['member']} | {r['energy_mae_meV_per_atom']:.2f} / "
            f"{r['force_mae_meV_per_A']:.0f} | {r['time_ps']:.2f} | {r['stop'][:60] or '—'} | "
            f"{rho} | {val} | {r['train_wall_s']:.0f} / {r['md_wall_s']:.0f} |")
    note = f"\nTeacher density (1 ns, OpenMM): {teacher_rho:.4f} g/cm³\n" if teacher_rho else ""
    return head + "\n".join(lines) + "\n" + note


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--composition", default="LiPF6=0.4,EMIMPF6=0.6")
    p.add_argument("--baselines", default=",".join(BASELINES))
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--ps", type=float, default=20.0)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--preset", default="cpu-tiny-allegro-npt")
    p.add_argument("--n-train", type=int, default=110)
    p.add_argument("--n-val", type=int, default=10)
    p.add_argument("--n-test", type=int, default=20)
    p.add_argument("--validate-frames", type=int, default=10)
    p.add_argument("--teacher-density", type=float, default=None,
                   help="the teacher's long-run density (g/cm³), for the table")
    p.add_argument("--cost", metavar="PACKAGE", default=None,
                   help="only measure the cost per MD step of this student (a Coulomb "
                   "baseline) against its network and baseline alone, then stop")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cost:
        cost = step_cost(args.store, args.composition, args.cost)
        (args.out / "step-cost.json").write_text(json.dumps(cost, indent=1))
        print(json.dumps(cost))
        return
    results_path = args.out / "ablation.json"
    done = json.loads(results_path.read_text()) if results_path.exists() else {}
    for baseline in args.baselines.split(","):
        for seed in range(args.members):
            key = f"{baseline}/{seed}"
            if key in done:
                continue
            row = {"baseline": baseline, "member": seed, "preset": args.preset,
                   "epochs": args.epochs, "ps": args.ps}
            row.update(train_student(args.store, args.out, baseline, seed, args))
            md_dir = args.out / baseline / f"md-{seed}"
            row.update(run_student(args.store, args.composition, row["package"], md_dir, seed,
                                   args.ps))
            row.update(validate_student(args.store, md_dir, args.validate_frames))
            done[key] = row
            results_path.write_text(json.dumps(done, indent=1))
            print(json.dumps(row), flush=True)
    rows = list(done.values())
    (args.out / "ablation.md").write_text(markdown(rows, args.teacher_density))
    print(markdown(rows, args.teacher_density))


if __name__ == "__main__":
    main()
