"""Active-learning benchmarks (issue 16) on a finished or running `ionmix learn` folder.

Li[PF6]/[EMIM][PF6] at x = 0.4, 300 K, classical teacher (examples/learn-li-emim-pf6*.toml):

    ionmix learn examples/learn-li-emim-pf6-short.toml --out runs/learn-short

Stages (each merges its numbers into RUN/bench/bench-learn.json):

* ``summary``: generations, labelled frames, wall time per step, committee test MAEs.
* ``teacher``: the teacher's own NPT density (OpenMM, Monte Carlo barostat, 300 K, 1 bar,
  the labels' force field), from the walkers' starting frame, with its block error; run
  once (``--teacher-ps``, 1 ns by default so that the error is < 0.5 %).
* ``student``: NPT (`ionmix md` defaults: MTK, 0.5 fs) with a generation's committee (or
  one member, ``--member``) from the same frame, resumable (``--steps`` extends it); its
  density with the block error against the teacher's (`pooled_teacher_density`: every
  teacher NPT run in the folder, since one run of this box is no 1 % reference), and
  ``ionmix validate`` along the trajectory (classical teacher) against the committee's
  test MAEs; a figure.
* ``retrain``: generation G's data trained the other way for ``--members`` models (from
  random weights when the loop fine-tuned, else fine-tuned from generation G−1), same
  seeds: test MAEs, epochs and training wall time of both, for fine-tuning's saving.

Usage: .venv/bin/python benchmarks/bench_learn.py --run runs/learn-short --stage STAGE
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import bench_md  # its merge and its student-vs-teacher density figure (issue 7)
import numpy as np
from bench_md import density_figure

COMPOSITION = "LiPF6=0.4,EMIMPF6=0.6"


def merge(run: Path, results: dict) -> None:
    bench_md.merge(results, run / "bench" / "bench-learn.json")


def summaries(run: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(run.glob("gen-*/summary.json"))]


def start_frame(run: Path):
    """The walkers' starting structure: the last classical frame of replica 0."""
    from ionmix.dataset.structures import load_structure

    return load_structure(run / "frames.db", composition=COMPOSITION, replica=0)


def classical_teacher(run: Path, atoms):
    """The teacher that labelled the run's frames (force field, charge scale, cutoff)."""
    from ionmix.dataset.provenance import load_provenance

    return load_provenance(run / "frames.db").teacher(atoms, "classical")


def teacher_series(run: Path) -> dict[str, np.ndarray]:
    """Every teacher NPT density series (g/cm³, one value per 0.1 ps) in a loop folder,
    by name: the sampler's replicas from 100 ps on (equilibration and production), the
    1-ns reference after its detected equilibration (500 ps), and whole the runs of
    bench_teacher_thermostat.py and of bench_density_relaxation.py (``--out
    RUN/bench/relaxation``, from the students' start frame)."""
    import csv

    out = {}
    for path in sorted((run / "sample").glob("*/equilibration.csv")):
        with open(path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if float(r["time_ps"]) > 100.0]
        out[f"sampler {path.parent.name[-2:]}, 0.1-ps thermostat, 100–600 ps"] = np.array(
            [float(r["density_g_cm3"]) for r in rows])
    reference = run / "bench" / "teacher-density.json"
    if reference.is_file():
        d = json.loads(reference.read_text())
        n_skip = int(round(d["equilibration_time_ps"] / 0.1))
        out["bench_learn teacher, 1-ps thermostat, 500–1000 ps"] = np.array(d["series"][n_skip:])
    for path in sorted((run / "bench" / "relaxation").glob("teacher-s*.json")):
        d = json.loads(path.read_text())  # bench_density_relaxation.py --out RUN/bench/relaxation
        out[f"from the students' start, {path.stem}, 0–{d['time_ps']:g} ps"] = np.array(
            d["series"])
    for path in sorted((run / "bench").glob("teacher-thermostat-*.json")):
        d = json.loads(path.read_text())
        out[f"{d['thermostat_time_ps']:g}-ps thermostat, seed {d['seed']}, 0–"
            f"{d['time_ps']:g} ps"] = np.array(d["series_g_cm3"])
    return out


def pooled_teacher_density(run: Path, series: dict | None = None) -> dict:
    """The teacher's density for the loop's box: the mean of its NPT runs' means
    (`teacher_series`), with the standard error from their spread. One run's own error bar
    (0.2 %) is ~4× smaller than the spread between runs of this 188-atom box
    (docs/benchmarks.md, "The teacher's density of a 188-atom box"), so a single run is no
    reference at the 1 % level. Keys: ``density_g_cm3``, ``density_err_g_cm3``,
    ``run_spread_g_cm3``, ``n_runs``, ``runs`` (name → mean). `series`: the folder's
    `teacher_series` when the caller has read them already."""
    series = teacher_series(run) if series is None else series
    if not series:
        raise FileNotFoundError(f"{run}: no teacher NPT series (run `--stage teacher`)")
    means = {name: float(np.mean(rho)) for name, rho in series.items()}
    values = np.array(list(means.values()))
    spread = float(values.std(ddof=1)) if values.size > 1 else float("nan")
    return {"density_g_cm3": float(values.mean()), "n_runs": int(values.size),
            "density_err_g_cm3": spread / np.sqrt(values.size), "run_spread_g_cm3": spread,
            "runs": means}


def stage_summary(run: Path) -> None:
    rows = []
    for s in summaries(run):
        rows.append({
            "generation": s["generation"], "n_train_frames": s["n_train_frames"],
            "frames_added": s["frames_added"],
            "accurate_share": round(s["accurate_share"], 3),
            "candidate_share": round(s["candidate_share"], 3),
            "failed_share": round(s["failed_share"], 3),
            "test_energy_mae_meV_per_atom": float(np.mean(
                s["committee_test_energy_mae_meV_per_atom"])),
            "test_force_mae_meV_per_A": float(np.mean(s["committee_test_force_mae_meV_per_A"])),
            "wall_min": {k: round(v / 60, 1) for k, v in s.get("wall_s", {}).items()},
            "walkers": {n: {k: w.get(k) for k in ("status", "reason", "density_g_cm3",
                                                    "density_err_g_cm3", "n_candidates")}
                        for n, w in s["walkers"].items()},
        })
    total_min = sum(sum(r["wall_min"].values()) for r in rows)
    labelled = sum(r["frames_added"] for r in rows)
    merge(run, {"generations": rows, "labelled_frames": labelled,
                "loop_wall_min_excluding_sampling": round(total_min, 1)})


def stage_teacher(run: Path, teacher_ps: float) -> dict:
    from ionmix.teachers.classical.openmm_md import classical_npt_density

    path = run / "bench" / "teacher-density.json"
    if path.exists():  # the teacher does not depend on the students: run it once
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    atoms = start_frame(run)
    teacher = classical_npt_density(atoms, 300.0, 1.0, time_ps=teacher_ps, seed=11,
                                    teacher=classical_teacher(run, atoms))
    teacher["wall_s"] = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(teacher))
    rel_err = teacher["density_err_g_cm3"] / teacher["density_g_cm3"]
    merge(run, {"teacher": {**{k: v for k, v in teacher.items() if k != "series"},
                            "relative_err": rel_err}})
    return teacher


def _models(run: Path, generation: int, member: int | None) -> tuple[Path, str]:
    models = run / f"gen-{generation:03d}" / "models"
    if member is None:
        return models, f"gen{generation}-committee"
    return models / f"model-{member}" / "model.nequip.zip", f"gen{generation}-model{member}"


def stage_student(run: Path, generation: int, member: int | None, steps: int,
                  validate_frames: int, analyse_only: bool = False,
                  compiled: bool = False) -> None:
    from ionmix.cli._common import write_provenance
    from ionmix.dataset.provenance import load_provenance
    from ionmix.md import MDBlowUp, MDSettings, read_thermo, run_md
    from ionmix.models import load_model
    from ionmix.properties.validate import validate_trajectory
    from ionmix.stats import block_average, drift_sigma, production_part

    model, name = _models(run, generation, member)
    name += "-compiled" if compiled else ""  # another implementation: its own run
    atoms = start_frame(run)
    run_dir = run / "bench" / f"npt-{name}"
    t0 = time.perf_counter()
    try:
        if not analyse_only:  # else: what an interrupted run left on disk
            provenance = load_provenance(run / "frames.db")
            loaded = load_model(model, atoms, provenance=provenance, compiled=compiled)
            # the records `ionmix validate RUN` reads: the start's teacher and ion set, and
            # the teachers that trained the model
            write_provenance(run_dir, atoms, provenance)
            run_md(atoms, loaded.calc, MDSettings(n_steps=steps), run_dir,
                   model_id=loaded.model_id, model_teachers=loaded.teachers)
    except MDBlowUp:  # e.g. a molecule broke: analyse what it did until then (md.json)
        pass
    wall_s = time.perf_counter() - t0
    stopped = json.loads((run_dir / "md.json").read_text()).get("reason", "")
    t = read_thermo(run_dir / "thermo.csv")
    prod = production_part(t["density_g_cm3"])
    mean, err = block_average(prod)
    pooled = pooled_teacher_density(run)  # not the one run: runs of this box scatter by ~1 %
    rho_t, err_t = pooled["density_g_cm3"], pooled["density_err_g_cm3"]
    teacher = _figure_teacher(run, pooled)
    rel = (mean - rho_t) / rho_t
    rel_err = float(np.hypot(err, err_t) / rho_t)
    calc = classical_teacher(run, atoms).calculator(atoms)
    checked = validate_trajectory(run_dir, calc, run_dir / "validate", n_frames=validate_frames)
    tests = [json.loads(p.read_text())["metrics"] for p in sorted(
        (run / f"gen-{generation:03d}" / "models").glob("model-*/ionmix_train.json"))]
    density_figure(teacher, t, name, mean, err, rel, rel_err,
                   run / "bench" / f"density-{name}.png")
    merge(run, {f"student_{name}": {
        "density_g_cm3": mean, "density_err_g_cm3": err, "time_ps": float(t["time_ps"][-1]),
        "stopped": stopped,
        "drift_sigma": drift_sigma(prod), "relative_difference": rel,
        "relative_difference_err": rel_err, "wall_s_this_call": wall_s,
        "validate_energy_mae_meV_per_atom": checked.energy_mae_meV_per_atom,
        "validate_force_mae_meV_per_A": checked.force_mae_meV_per_A,
        "committee_test_energy_mae_meV_per_atom": [m["energy_mae_meV_per_atom"] for m in tests],
        "committee_test_force_mae_meV_per_A": [m["force_mae_meV_per_A"] for m in tests]}})


def _figure_teacher(run: Path, pooled: dict) -> dict:
    """The teacher line of the density figure: the 1-ns reference (``--stage teacher``)
    when the folder has one, else a teacher run from the students' start frame (or the
    longest series), labelled with the pooled density (a folder that copied another's
    ``bench/relaxation`` runs of the same box)."""
    reference = run / "bench" / "teacher-density.json"
    if reference.is_file():
        return json.loads(reference.read_text())
    series = teacher_series(run)
    same_start = [v for k, v in series.items() if k.startswith("from the students' start")]
    shown = same_start[0] if same_start else max(series.values(), key=len)
    return {"series": list(shown), "density_g_cm3": pooled["density_g_cm3"],
            "density_err_g_cm3": pooled["density_err_g_cm3"]}


def stage_retrain(run: Path, generation: int, epochs: int | None, members: int) -> None:
    """Generation G's data trained the other way for the first `members` models: from random
    weights if the loop fine-tuned them (`epochs` default: generation 0's), else fine-tuned
    from generation G−1 (`epochs` required); same preset, seeds and overrides otherwise."""
    from ionmix.train import TrainResult
    from ionmix.train.run import MANIFEST_NAME, PACKAGE_NAME
    from ionmix.train.tasks import train_recipe_task

    gen, previous = run / f"gen-{generation:03d}", run / f"gen-{generation - 1:03d}"
    files = {k: str(gen / "data" / f"{k}.extxyz") for k in ("train", "val", "test")}
    loop = [TrainResult.from_json(json.loads((gen / "models" / f"model-{k}" /
                                              "ionmix_train.json").read_text()))
            for k in range(members)]
    manifests = [json.loads((r.run_dir / MANIFEST_NAME).read_text()) for r in loop]
    loop_kind = "fine-tuned" if manifests[0].get("initial_model") else "scratch"
    if loop_kind == "scratch" and epochs is None:
        raise SystemExit("--epochs: how many epochs of fine-tuning to compare with")
    if epochs is None:
        epochs = json.loads((run / "gen-000" / "models" / "model-0" / MANIFEST_NAME
                             ).read_text())["overrides"]["max_epochs"]
    other = []
    for k, own in enumerate(manifests):
        initial = (None if loop_kind == "fine-tuned"
                   else str(previous / "models" / f"model-{k}" / PACKAGE_NAME))
        out = run / "bench" / f"retrain-gen{generation}-{epochs}ep" / f"model-{k}"
        result = train_recipe_task(
            files, own["type_names"], own["preset"],
            own["energy_reference"]["per_type_energy_shifts_eV"], str(out), own["seed"],
            {**own["overrides"], "max_epochs": epochs}, 1, initial)
        other.append(TrainResult.from_json(result))

    def table(results):
        return {"test_energy_mae_meV_per_atom": [r.metrics["energy_mae_meV_per_atom"]
                                                 for r in results],
                "test_force_mae_meV_per_A": [r.metrics["force_mae_meV_per_A"] for r in results],
                "test_stress_mae_meV_per_A3": [r.metrics.get("stress_mae_meV_per_A3")
                                               for r in results],
                "epochs": [r.metrics["epochs"] for r in results],
                "train_wall_s": [r.train_wall_s for r in results]}

    other_kind = "scratch" if loop_kind == "fine-tuned" else "fine-tuned"
    merge(run, {f"retrain_gen{generation}": {loop_kind + " (loop)": table(loop),
                                             other_kind: table(other)}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="the `ionmix learn` folder")
    parser.add_argument("--stage", required=True,
                        choices=["summary", "teacher", "student", "retrain"])
    parser.add_argument("--teacher-ps", type=float, default=1000.0)
    parser.add_argument("--generation", type=int, default=-1,
                        help="student/retrain: generation (default: the last finished)")
    parser.add_argument("--member", type=int, default=None,
                        help="student: one committee member instead of the committee")
    parser.add_argument("--steps", type=int, default=20000, help="student: NPT steps")
    parser.add_argument("--validate-frames", type=int, default=10)
    parser.add_argument("--analyse-only", action="store_true",
                        help="student: analyse the run on disk (e.g. one stopped early)")
    parser.add_argument("--compiled", action="store_true",
                        help="student: the networks' compiled forms (nequip-compile)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="retrain: epochs (default: generation 0's, for from scratch)")
    parser.add_argument("--members", type=int, default=2, help="retrain: models to retrain")
    args = parser.parse_args()
    generation = args.generation if args.generation >= 0 else len(summaries(args.run)) - 1
    if args.stage == "summary":
        stage_summary(args.run)
    elif args.stage == "teacher":
        stage_teacher(args.run, args.teacher_ps)
    elif args.stage == "student":
        stage_student(args.run, generation, args.member, args.steps, args.validate_frames,
                      args.analyse_only, args.compiled)
    else:
        stage_retrain(args.run, generation, args.epochs, args.members)


if __name__ == "__main__":
    main()
