"""MD benchmarks with a trained model (issue 7): throughput, energy conservation, and the
student-vs-teacher NPT density.

Model: `cpu-tiny-allegro-npt` trained on classical (OPLS, charges × 0.8) labels of
Li[PF6]/[EMIM][PF6] at x(LiPF6) = 0.4, 300 K, 20 ion pairs (376 atoms): 36 train + 4
validation frames of replica 0, tested on replica 1 (the frames of benchmarks/bench_train.py).
Train it first (about 8 min here):

    .venv/bin/python benchmarks/bench_md.py --stage train

Stages (each writes into runs/bench-md/ and merges its numbers into bench-md.json):

* ``throughput``: steps/s of `ionmix.md.run_md` (log every 10 steps, trajectory and
  checkpoint every 100) against a bare ASE loop (`IsotropicMTKNPT.run`, no observers) with
  the same calculator and integrator, alternating in one process; ratio of medians.
* ``nve``: NVE at 0.5 fs with the model in float64 (checkpoint rebuilt in float64) for
  2 ps from an NVT-equilibrated state; linear drift of the total energy, meV/atom/ps.
* ``density``: the teacher's own NPT density (OpenMM, MonteCarloBarostat, 300 K, 1 bar,
  same force field and cutoff as the labels) against the student's (`ionmix md`, MTK NPT,
  0.5 fs), both with block errors, same starting frame.

Usage: .venv/bin/python benchmarks/bench_md.py --stage {train,throughput,nve,density}
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

OUT = Path("runs/bench-md")
STORE = Path("runs/bench-train/sample/frames.db")
COMPOSITION = "LiPF6=0.4,EMIMPF6=0.6"


def merge(results: dict, path: Path = OUT / "bench-md.json") -> None:
    """Merge `results` into the JSON file `path` with the machine and date; print them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(results)
    data.update(machine=f"{platform.machine()}, {platform.processor() or 'cpu'}",
                date=time.strftime("%Y-%m-%d"))
    path.write_text(json.dumps(data, indent=2))
    print(json.dumps(results, indent=2), flush=True)


def start_frame():
    from ionmix.dataset.structures import load_structure

    return load_structure(STORE, composition=COMPOSITION, replica=0)


def stage_train() -> None:
    from ionmix.train import train_from_store

    t0 = time.perf_counter()
    res = train_from_store(STORE, [COMPOSITION], n_train=36, n_val=4, n_test=40,
                           preset="cpu-tiny-allegro-npt", run_dir=OUT / "model", say=print)
    merge({"train": {"wall_s": time.perf_counter() - t0, **res.metrics}})


def stage_throughput(n_steps: int, repeats: int) -> None:
    from ase import units
    from ase.md.nose_hoover_chain import IsotropicMTKNPT

    from ionmix.md import MDSettings, run_md
    from ionmix.models import load_model
    from ionmix.units import bar_to_ev_per_a3

    atoms = start_frame()
    calc = load_model(OUT / "model" / "model.nequip.zip", atoms).calc
    settings = MDSettings(n_steps=n_steps)
    dt = settings.timestep_fs * units.fs
    bare, ours = [], []
    for k in range(repeats):
        a = atoms.copy()
        a.calc = calc
        a.set_momenta(np.zeros((len(a), 3)))
        from ase.md.velocitydistribution import Stationary, thermalize_momenta

        thermalize_momenta(a, 300.0, rng=np.random.default_rng(k))
        Stationary(a)
        dyn = IsotropicMTKNPT(a, timestep=dt, temperature_K=300.0,
                              pressure_au=float(bar_to_ev_per_a3(1.0)), tdamp=1000 * dt,
                              pdamp=1000 * dt)
        a.get_forces()
        t0 = time.perf_counter()
        dyn.run(n_steps)
        bare.append(n_steps / (time.perf_counter() - t0))
        result = run_md(atoms, calc, settings.model_copy(update={"seed": k}),
                        OUT / "throughput" / f"run{k}")
        ours.append(result.steps_per_s)
        print(f"repeat {k}: bare {bare[-1]:.2f} steps/s, ionmix md {ours[-1]:.2f} steps/s",
              flush=True)
    n = len(atoms)
    ratio = statistics.median(ours) / statistics.median(bare)
    merge({"throughput": {
        "n_atoms": n, "n_steps": n_steps, "repeats": repeats, "model": "cpu-tiny-allegro-npt",
        "bare_steps_per_s": bare, "ionmix_steps_per_s": ours, "ratio_ionmix_over_bare": ratio,
        "ionmix_atom_steps_per_s": statistics.median(ours) * n,
        "ionmix_ns_per_day": statistics.median(ours) * 0.5e-6 * 86400}})


def stage_nve(ps: float, model_dir: Path) -> None:
    from ionmix.md import MDSettings, read_thermo, run_md
    from ionmix.models import load_model

    atoms = start_frame()
    calc = load_model(model_dir / "best.ckpt", atoms, float64=True).calc
    # 0.5 ps of NVT first, so NVE starts from a state the model has thermalised
    nvt = MDSettings(ensemble="nvt", n_steps=1000, thermostat_time_steps=100)
    run_md(atoms, calc, nvt, OUT / f"nve-equil-{model_dir.name}")
    state = json.loads((OUT / f"nve-equil-{model_dir.name}" / "checkpoint.json").read_text())[
        "atoms"]
    atoms.positions = state["positions"]
    atoms.set_momenta(state["momenta"])
    n_steps = int(round(ps * 2000))
    nve = MDSettings(ensemble="nve", n_steps=n_steps, initial_velocities="keep",
                     trajectory_interval_steps=500)
    t0 = time.perf_counter()
    run_md(atoms, calc, nve, OUT / f"nve-{model_dir.name}")
    t = read_thermo(OUT / f"nve-{model_dir.name}" / "thermo.csv")
    n = len(atoms)
    e = t["conserved_energy_eV"] / n * 1000.0  # meV/atom
    slope, _ = np.polyfit(t["time_ps"], e, 1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), constrained_layout=True)
    ax.plot(t["time_ps"], e - e[0], label="total")
    ax.plot(t["time_ps"], (t["potential_energy_eV"] / n * 1000.0) - e[0], lw=0.5,
            label="potential")
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("energy − E_tot(0) (meV/atom)")
    ax.set_title(f"NVE, 0.5 fs, float64: drift {slope:+.3f} meV/atom/ps", fontsize=9)
    ax.legend(fontsize=7)
    fig.savefig(OUT / f"nve-{model_dir.name}.png", dpi=150)
    merge({f"nve_{model_dir.name}": {
                   "n_atoms": n, "time_ps": float(t["time_ps"][-1]), "timestep_fs": 0.5,
                   "drift_meV_per_atom_per_ps": float(slope),
                   "total_energy_std_meV_per_atom": float(np.std(e)),
                   "potential_energy_std_meV_per_atom": float(
                       np.std(t["potential_energy_eV"] / n * 1000.0)),
                   "mean_temperature_K": float(np.mean(t["temperature_K"])),
                   "wall_s": time.perf_counter() - t0,
                   "figure": str(OUT / f"nve-{model_dir.name}.png")}})


def stage_density(teacher_ps: float, student_steps: int, model_dir: Path) -> None:
    from ionmix.md import MDSettings, read_thermo, run_md
    from ionmix.models import load_model
    from ionmix.stats import block_average, drift_sigma, production_part
    from ionmix.teachers.classical.openmm_md import classical_npt_density

    series_path = OUT / "density-teacher-series.json"
    if series_path.exists():  # the teacher does not depend on the student: run it once
        teacher = json.loads(series_path.read_text())
    else:
        t0 = time.perf_counter()
        teacher = classical_npt_density(start_frame(), 300.0, 1.0, time_ps=teacher_ps, seed=11)
        teacher["wall_s"] = time.perf_counter() - t0
        series_path.write_text(json.dumps(teacher))
        merge({"density_teacher": {k: v for k, v in teacher.items() if k != "series"}})
    atoms = start_frame()
    calc = load_model(model_dir / "model.nequip.zip", atoms).calc
    run_dir = OUT / f"density-student-{model_dir.name}"
    t0 = time.perf_counter()
    run_md(atoms, calc, MDSettings(n_steps=student_steps), run_dir)  # resumable
    t = read_thermo(run_dir / "thermo.csv")
    prod = production_part(t["density_g_cm3"])
    mean, err = block_average(prod)
    student = {"density_g_cm3": mean, "density_err_g_cm3": err,
               "time_ps": float(t["time_ps"][-1]), "drift_sigma": drift_sigma(prod),
               "mean_pressure_bar": float(np.mean(production_part(t["pressure_bar"]))),
               "wall_s": time.perf_counter() - t0}
    rel = (mean - teacher["density_g_cm3"]) / teacher["density_g_cm3"]
    rel_err = np.hypot(err, teacher["density_err_g_cm3"]) / teacher["density_g_cm3"]
    density_figure(teacher, t, "student", mean, err, rel, rel_err,
                   OUT / f"density-{model_dir.name}.png")
    merge({f"density_student_{model_dir.name}": {
        **student, "relative_difference": rel, "relative_difference_err": rel_err,
        "figure": str(OUT / f"density-{model_dir.name}.png")}})


def density_figure(teacher: dict, thermo: dict, label: str, mean: float, err: float,
                   rel: float, rel_err: float, path: Path) -> None:
    """Teacher (OpenMM series, every 0.1 ps) and student (`ionmix md` thermo) density
    against time, the relative difference (± error) in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), constrained_layout=True)
    ax.plot(np.arange(len(teacher["series"])) * 0.1, teacher["series"], lw=0.6, color="C3",
            label=f"teacher (OpenMM): {teacher['density_g_cm3']:.4f} ± "
                  f"{teacher['density_err_g_cm3']:.4f}")
    ax.plot(thermo["time_ps"], thermo["density_g_cm3"], lw=0.6, color="C0",
            label=f"{label} (ionmix md): {mean:.4f} ± {err:.4f}")
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("density (g cm⁻³)")
    ax.set_title(f"Li[PF6]/[EMIM][PF6] x=0.4, 300 K, 1 bar: {100 * rel:+.2f} ± "
                 f"{100 * rel_err:.2f} %", fontsize=9)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=150)


def stage_pv_scan(model_dirs: list[Path], n_frames: int) -> None:
    """Configurational pressure vs volume, teacher against each model, on test frames whose
    molecule centres are scaled (molecules rigid): where a model's equation of state differs
    from its teacher's. Mean over `n_frames` frames of the independent replica at 300 K."""
    from ionmix.chemistry import load_ion
    from ionmix.chemistry.topology import molecules_of, rescale_molecules
    from ionmix.dataset import DatasetStore, equally_spaced
    from ionmix.models import load_model
    from ionmix.units import ev_per_a3_to_bar

    factors = [0.97, 0.98, 0.99, 1.0, 1.01, 1.02, 1.03, 1.04, 1.05, 1.06]  # on edge lengths
    frames = equally_spaced(DatasetStore(STORE).select(COMPOSITION, 300.0, 1), n_frames)
    calcs = {"teacher": None, **{d.name: d / "model.nequip.zip" for d in model_dirs}}
    pressure = {name: np.zeros((n_frames, len(factors))) for name in calcs}
    v_ratio = np.array(factors) ** 3
    for i, frame in enumerate(frames):
        atoms = frame.atoms
        # molecule index per atom: the stored (ion, count) runs, atoms of a molecule contiguous
        sizes = [load_ion(name).n_atoms for name, n in molecules_of(frame.atoms) for _ in range(n)]
        mol_id = np.repeat(np.arange(len(sizes)), sizes)
        scaled = []  # the same scaled structures for every model
        for f in factors:
            a = atoms.copy()
            a.set_cell(atoms.cell * f, scale_atoms=False)
            a.set_positions(rescale_molecules(atoms.positions, mol_id, atoms.get_masses(), f))
            scaled.append(a)
        for name, model in calcs.items():
            calc = load_model(model or "classical", atoms).calc
            for j, a in enumerate(scaled):
                a.calc = calc
                pressure[name][i, j] = -ev_per_a3_to_bar(np.trace(a.get_stress(voigt=False)) / 3)
        print(f"frame {i + 1}/{n_frames}", flush=True)
    rows = {name: {"mean_bar": p.mean(0).tolist(),
                   "err_bar": (p.std(0, ddof=1) / np.sqrt(n_frames)).tolist()}
            for name, p in pressure.items()}
    merge({"pv_scan": {"volume_ratio": v_ratio.tolist(), "n_frames": n_frames,
                       "frames": "replica 1, 300 K, equally spaced", **rows}})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage", required=True,
                        choices=["train", "throughput", "nve", "density", "pv-scan"])
    parser.add_argument("--throughput-steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nve-ps", type=float, default=2.0)
    parser.add_argument("--teacher-ps", type=float, default=200.0)
    parser.add_argument("--student-steps", type=int, default=20000)
    parser.add_argument("--model-dir", type=Path, default=[OUT / "model"], nargs="+",
                        help="training run folder(s) with model.nequip.zip (and best.ckpt); "
                             "several only for pv-scan")
    parser.add_argument("--pv-frames", type=int, default=4)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.stage == "train":
        stage_train()
    elif args.stage == "throughput":
        stage_throughput(args.throughput_steps, args.repeats)
    elif args.stage == "nve":
        stage_nve(args.nve_ps, args.model_dir[0])
    elif args.stage == "pv-scan":
        stage_pv_scan(args.model_dir, args.pv_frames)
    else:
        stage_density(args.teacher_ps, args.student_steps, args.model_dir[0])


if __name__ == "__main__":
    main()
