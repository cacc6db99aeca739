"""Issue 22: does training longer stop a learning loop's student from drifting in NPT?

The loop's students are trained for few epochs (30, then 8 per generation) and their
validation force error is still falling by 2–3 % an epoch when training stops. This takes
one committee member of a loop generation, trains it further on that generation's own
data (the loop's call: `train_recipe_task`, fine-tuned from the member's package, same
seed, energy shifts and baseline), and runs both students, as trained and trained longer,
through the same NPT (`ionmix md` defaults: MTK, 0.5 fs, 300 K, 1 bar, molecule guard on,
no committee trust guard) from the last settled frame, with the same velocity seed:

    .venv/bin/python benchmarks/bench_epochs.py --loop runs/learn-npt --generation 2 \
        --member 0 --extra-epochs 60 --ps 5 --out runs/bench-epochs

``--long-ps 20`` then continues the longer student's run, in a copy of its folder, to 20 ps.
For each student: test MAEs, how long the NPT ran and why it stopped, 1-ps block
densities and their mean (a 1-ps block spans the MTK barostat's ringing; the JSON also
keeps `bench_baseline.py`'s density of the second half after detected equilibration),
and `ionmix validate` along the run (energy / force MAE against the teacher). Resumable
(training and MD folders are reused); results in ``OUT/epochs-*-seedS.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_baseline import run_student, validate_cell, validate_student  # noqa: E402


def train_longer(loop: Path, gen: Path, member: int, extra_epochs: int, run_dir: Path,
                 preset: str | None = None) -> dict:
    """Fine-tune the member on its generation's data for `extra_epochs` epochs; or, with a
    `preset`, train that preset from random weights on the same data for as many epochs
    (same seed, energy shifts and baseline: the capacity comparison)."""
    from ionmix.active.loop import LearnConfig
    from ionmix.dataset.store import DatasetStore
    from ionmix.files import read_frames
    from ionmix.train.from_store import teacher_isolated_atom_energies
    from ionmix.train.tasks import train_recipe_task

    cfg = LearnConfig.model_validate(json.loads((loop / "learn-config.json").read_text()))
    files = {k: str(gen / "data" / f"{k}.extxyz") for k in ("train", "val", "test")}
    train = read_frames(files["train"], ":", what="training frames")
    type_names = sorted({s for f in train for s in f.get_chemical_symbols()})
    store = DatasetStore(loop / "frames.db")
    shifts = teacher_isolated_atom_energies(store, train[0].info["teacher"], type_names,
                                            train[0])
    t0 = time.perf_counter()
    result = train_recipe_task(
        files, type_names, preset or cfg.learn.preset, shifts, str(run_dir),
        cfg.learn.seed + member, {**cfg.learn.overrides, "max_epochs": extra_epochs}, None,
        None if preset else str(gen / "models" / f"model-{member}" / "model.nequip.zip"),
        baseline=cfg.learn.baseline, provenance=store.provenance(),
        baseline_cache=str(loop / "baseline-cache.sqlite"))
    return {"package": result["package_path"], "train_wall_s": time.perf_counter() - t0,
            **_test_maes(result["metrics"])}


def _test_maes(metrics: dict) -> dict:
    return {k: metrics.get(k) for k in ("energy_mae_meV_per_atom", "force_mae_meV_per_A",
                                         "stress_mae_meV_per_A3")}


def block_densities(md_dir: Path, block_ps: float = 1.0) -> list[float]:
    """Mean density (g/cm³) of each whole `block_ps` block of the run."""
    from ionmix.md import read_thermo

    thermo = read_thermo(md_dir / "thermo.csv")
    t = np.asarray(thermo["time_ps"], float)
    rho = np.asarray(thermo["density_g_cm3"], float)
    n_blocks = int(t[-1] // block_ps) if len(t) else 0
    return [float(rho[(t > i * block_ps) & (t <= (i + 1) * block_ps)].mean())
            for i in range(n_blocks)]


def markdown(rows: list[dict], teacher_rho: float) -> str:
    head = ("| student | epochs | test E / F / stress MAE | NPT ran (ps) | stopped by | "
            "1-ps block ρ (g/cm³) | their mean, vs the teacher's | validate E / F MAE |\n"
            "|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        blocks = ", ".join(f"{x:.3f}" for x in r["blocks"]) or "–"
        mean = float(np.mean(r["blocks"])) if r["blocks"] else None
        rho = f"{mean:.3f} ({100 * (mean / teacher_rho - 1):+.1f} %)" if mean else "–"
        val = validate_cell(r)
        lines.append(
            f"| {r['student']} | {r['epochs']} | {r['energy_mae_meV_per_atom']:.1f} / "
            f"{r['force_mae_meV_per_A']:.0f} / {r['stress_mae_meV_per_A3']:.2f} | "
            f"{r['time_ps']:.2f} | {r['stop'][:60] or '—'} | {blocks} | {rho} | {val} |")
    return (head + "\n".join(lines)
            + f"\n\nTeacher's density (its runs of this box pooled): {teacher_rho:.4f} g/cm³\n")


def box_teacher_density(loop: Path, parser) -> float:
    """The teacher's density for the box the students start from, g/cm³: the pooled mean
    of the teacher's NPT runs in the loop folder (`bench_learn.pooled_teacher_density`;
    one run is no reference at the 1 % level: docs/benchmarks.md, "The teacher's density
    of a 188-atom box")."""
    import bench_learn

    try:
        return bench_learn.pooled_teacher_density(loop)["density_g_cm3"]
    except FileNotFoundError:
        parser.error(f"{loop}: no teacher NPT runs to compare with; run "
                     f"`benchmarks/bench_learn.py --run {loop} --stage teacher` first or "
                     "pass --teacher-density")


def continue_longer(args, store: Path, package: str) -> None:
    """The longer student's run continued to ``--long-ps`` in a copy of its folder (the 5-ps
    run and its `validate` stay as they were); its 1-ps blocks to
    ``OUT/epochs-longer-seedS-long.json``."""
    import shutil

    run = args.out / f"md-longer-seed{args.seed}"
    long_dir = args.out / f"md-longer-seed{args.seed}-long"
    if not long_dir.exists():
        shutil.copytree(run, long_dir, ignore=shutil.ignore_patterns("validate"))
    row = run_student(store, args.composition, package, long_dir, args.seed, args.long_ps)
    row["blocks"] = block_densities(long_dir)
    (args.out / f"epochs-longer-seed{args.seed}-long.json").write_text(json.dumps(row, indent=1))
    print(json.dumps(row), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loop", type=Path, required=True, help="an `ionmix learn` folder")
    p.add_argument("--generation", type=int, required=True)
    p.add_argument("--member", type=int, default=0)
    p.add_argument("--extra-epochs", type=int, default=60)
    p.add_argument("--ps", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0, help="velocity seed of both NPT runs")
    p.add_argument("--composition", default="LiPF6=0.4,EMIMPF6=0.6")
    p.add_argument("--validate-frames", type=int, default=10)
    p.add_argument("--teacher-density", type=float, default=None,
                   help="g/cm³; default: the teacher's NPT runs in LOOP pooled "
                   "(`bench_learn.pooled_teacher_density`)")
    p.add_argument("--preset", default=None,
                   help="add a third student: this preset trained from random weights on "
                   "the generation's data for --extra-epochs epochs (model capacity)")
    p.add_argument("--only", choices=("trained", "longer", "preset"), default=None,
                   help="run one of the students (to run them side by side)")
    p.add_argument("--long-ps", type=float, default=None,
                   help="then continue the longer student's run, in a copy "
                   "(md-longer-seedS-long), to this many ps")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    gen = args.loop / f"gen-{args.generation:03d}"
    member = gen / "models" / f"model-{args.member}"
    if not (member / "ionmix_train.json").is_file() or not (gen / "data").is_dir():
        p.error(f"--loop {args.loop} --generation {args.generation} --member {args.member}: "
                f"no trained member with its data there ({member})")
    if args.extra_epochs < 1 or args.ps <= 0 or (args.long_ps is not None
                                                 and args.long_ps <= args.ps):
        p.error("--extra-epochs must be ≥ 1, --ps > 0 and --long-ps > --ps")
    if args.teacher_density is not None and args.teacher_density <= 0:
        p.error(f"--teacher-density {args.teacher_density}: must be > 0 (g/cm³)")
    if args.preset is not None:
        from ionmix.errors import InputError
        from ionmix.train.presets import get_preset

        try:
            get_preset(args.preset)
        except InputError as exc:
            p.error(f"--preset {args.preset}: {exc}")
    if args.only == "preset" and args.preset is None:
        p.error("--only preset needs --preset NAME")
    if args.teacher_density is None:
        args.teacher_density = box_teacher_density(args.loop, p)
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.loop / "frames.db"
    trained_json = json.loads((member / "ionmix_train.json").read_text())
    results_path = args.out / f"epochs-{args.only or 'both'}-seed{args.seed}.json"
    done = json.loads(results_path.read_text()) if results_path.exists() else {}
    students = ("trained", "longer") + (("preset",) if args.preset else ())
    for student in students:
        if student in done or (args.only and student != args.only):
            continue
        if student == "trained":
            row = {"package": str(member / "model.nequip.zip"),
                   "epochs": f"as the loop trained it ({trained_json['metrics']['epochs']:.0f})",
                   **_test_maes(trained_json["metrics"])}
        elif student == "longer":
            row = {"epochs": f"+{args.extra_epochs}",
                   **train_longer(args.loop, gen, args.member, args.extra_epochs,
                                  args.out / f"model-{args.member}-plus{args.extra_epochs}")}
        else:
            row = {"epochs": f"{args.extra_epochs} from random weights",
                   **train_longer(args.loop, gen, args.member, args.extra_epochs,
                                  args.out / f"model-{args.member}-{args.preset}-"
                                  f"{args.extra_epochs}", preset=args.preset)}
        name = f"{args.preset} on its data" if student == "preset" else student
        row["student"] = (f"gen {args.generation} member {args.member}, {name}, "
                          f"velocity seed {args.seed}")
        tag = f"{args.preset}-{args.extra_epochs}" if student == "preset" else student
        md_dir = args.out / f"md-{tag}-seed{args.seed}"
        row.update(run_student(store, args.composition, row["package"], md_dir, args.seed,
                               args.ps))
        row["blocks"] = block_densities(md_dir)
        row.update(validate_student(store, md_dir, args.validate_frames))
        done[student] = row
        results_path.write_text(json.dumps(done, indent=1))
        print(json.dumps(row), flush=True)
    if args.long_ps and "longer" in done:
        continue_longer(args, store, done["longer"]["package"])
    table = markdown(list(done.values()), args.teacher_density)
    (args.out / f"epochs-{args.only or 'both'}-seed{args.seed}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
