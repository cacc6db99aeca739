"""[F-OMIM][C4F9CO2] with the classical teacher (CL&P, charges × 0.7) against experiment.

The paper's second system (Goodwin et al., JPCL 2024, Figure 2). Stages, each resumable
(its result is kept in OUT and reused when the command is run again):

1. ``build``: ``ionmix build examples/f-omim-sample.toml`` packs a 10-ion-pair box; its
   provenance.json carries the teacher (charge scale 0.7 from the config).
2. ``equilibrate``: NPT at 300 K and 1 bar in OpenMM from the packed box (``--equil-ps``),
   so that the temperature runs start from a settled liquid.
3. ``density``: ``ionmix props density BOX --model classical --engine openmm
   --temperatures 290,...,350 --experiment examples/f-omim-experiment.csv``: ρ(T) with block
   errors, dρ/dT and α_P, and the figure (OUT/density/density.png); κ_T from the volume
   fluctuations of the 300 K run.
4. ``ramp``: a pressure ramp at 300 K (each pressure continues from the previous one) →
   V(P) → Tait fit (`ionmix.properties.eos.fit_tait`) → κ_T at 1 bar.
5. ``scale`` (when ρ(300 K) misses 1.69 g/cm³ by more than 3 %, or with ``--scale-fit``):
   ρ(300 K) at other charge scales, and the scale that matches experiment by linear
   interpolation: a documented, reproducible fit, not a silent change of the force field.

Order: build, equilibrate, density at 300 K and the two ends of the range, scale fit,
ramp, then the remaining temperatures, so that a partial run already answers the main
questions (bench-fomim.json is rewritten after each stage).

All MD is the classical teacher natively in OpenMM: Langevin middle integrator (1 fs,
1 ps⁻¹), Monte Carlo barostat every 25 steps, PME, the teacher's cutoff (from the box).

Usage: .venv/bin/python benchmarks/bench_fomim.py [--out runs/bench-fomim]
       [--equil-ps 100] [--density-ps 150] [--ramp-ps 60] [--ramp-pressures 1,250,...]
       [--scale-ps 100] [--scale-fit] [--skip-ramp]
Writes OUT/bench-fomim.json (every number the docs quote) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

EXPERIMENT = {"rho_300K_g_cm3": 1.69, "rho_340K_g_cm3": 1.64,
              "drho_dT_g_cm3_per_K": -1.32e-3, "kappa_T_298K_per_Pa": 8.6e-10}
ALLEGRO_PAPER = {"rho_300K_g_cm3": 1.61, "drho_dT_g_cm3_per_K": -1.03e-3,
                 "kappa_T_300K_per_Pa": 6.46e-10}
REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "examples" / "f-omim-sample.toml"
EXPERIMENT_CSV = REPO / "examples" / "f-omim-experiment.csv"
#: Pressures of the ramp (bar): dense at low pressure, where κ_T at 1 bar is decided.
RAMP_BAR = (1.0, 250.0, 500.0, 1000.0, 1500.0, 2000.0, 3000.0)
#: Relative miss of ρ(300 K) above which the charge-scale fit runs.
SCALE_FIT_THRESHOLD = 0.03


def ionmix_cli(*args: str) -> str:
    """Run the ``ionmix`` console script of this interpreter; returns its stdout."""
    exe = Path(sys.executable).parent / "ionmix"
    cmd = [str(exe) if exe.exists() else "ionmix", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def npt_segment(atoms, temperature_K: float, pressure_bar: float, time_ps: float, *,
                charge_scale: float, seed: int = 0, sample_interval_ps: float = 0.1):
    """NPT MD of the classical teacher in OpenMM, as `classical_npt_density` runs it, but
    returning the final state so that the next segment can continue from it.

    Returns (volumes Å³ every `sample_interval_ps`, final ase.Atoms with the same arrays
    and info).
    """
    import openmm
    import openmm.unit as u

    from ionmix.chemistry.topology import molecules_of
    from ionmix.teachers.classical import make_context, make_system
    from ionmix.units import NM_IN_ANGSTROM

    csys = make_system(molecules_of(atoms), atoms.cell.array, charge_scale=charge_scale,
                       cutoff_A=atoms.info.get("cutoff_A"))
    csys.system.addForce(openmm.MonteCarloBarostat(pressure_bar * u.bar,
                                                   temperature_K * u.kelvin, 25))
    integrator = openmm.LangevinMiddleIntegrator(temperature_K * u.kelvin,
                                                 1.0 / u.picosecond, 1.0 * u.femtosecond)
    integrator.setRandomNumberSeed(seed + 1)
    ctx = make_context(csys, integrator=integrator)
    ctx.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in atoms.cell.array / NM_IN_ANGSTROM])
    ctx.setPositions(atoms.positions / NM_IN_ANGSTROM)
    ctx.setVelocitiesToTemperature(temperature_K * u.kelvin, seed + 1)
    steps = max(1, int(round(sample_interval_ps * 1000.0)))
    volumes = []
    for _ in range(int(round(time_ps / sample_interval_ps))):
        integrator.step(steps)
        box = ctx.getState().getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.angstrom)
        volumes.append(float(abs(np.linalg.det(np.asarray(box)))))
    state = ctx.getState(getPositions=True)
    final = atoms.copy()
    final.set_cell(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.angstrom))
    final.positions = state.getPositions(asNumpy=True).value_in_unit(u.angstrom)
    return np.asarray(volumes), final


def density_of(atoms, volumes_A3) -> np.ndarray:
    """Densities (g/cm³) of `atoms`' mass in each volume (Å³)."""
    from ionmix.units import density_g_per_cm3

    mass = float(np.sum(atoms.get_masses()))
    return np.array([density_g_per_cm3(mass, v) for v in volumes_A3])


def summary(values, equilibration_fraction: float = 0.25, n_blocks: int = 5) -> dict:
    """Mean, block error, samples and drift of the production part of a series."""
    from ionmix.stats import series_summary

    return series_summary(list(values), n_blocks, equilibration_fraction)


def stage_build(out: Path) -> Path:
    """Pack the box with ``ionmix build`` (charge scale from the config)."""
    boxes = out / "boxes"
    box = boxes / "FOMIMC4F9CO2-1_T300K_r0.extxyz"
    if not box.exists():
        ionmix_cli("build", str(CONFIG), "--out", str(boxes))
    return box


def stage_equilibrate(box: Path, out: Path, equil_ps: float) -> Path:
    """NPT at 300 K from the packed box; the final state, with its provenance, for the
    later stages."""
    import ase.io

    folder = out / "equilibrated"
    result = folder / "box.extxyz"
    if result.exists():
        return result
    atoms = ase.io.read(box)
    t0 = time.perf_counter()
    volumes, final = npt_segment(atoms, 300.0, 1.0, equil_ps,
                                 charge_scale=float(atoms.info["charge_scale"]))
    wall = time.perf_counter() - t0
    folder.mkdir(parents=True, exist_ok=True)
    rho = density_of(atoms, volumes)
    (folder / "equilibration.json").write_text(json.dumps({
        "time_ps": equil_ps, "wall_s": wall, "ns_per_day": equil_ps / 1000 / wall * 86400,
        "density_g_cm3": rho.tolist()}))
    shutil.copy(box.parent / "provenance.json", folder / "provenance.json")
    ase.io.write(result, final, format="extxyz")
    return result


def stage_density(box: Path, out: Path, density_ps: float, temperatures: list[str]) -> dict:
    """ρ(T) with ``ionmix props density`` (OpenMM engine), and κ_T from the volume
    fluctuations of the 300 K run. Resumable: a later call with more temperatures reuses
    the runs already done (the study resumes per temperature)."""
    import ase.io

    from ionmix.properties.eos import kappa_T_from_volume_fluctuations

    folder = out / "density"
    steps = int(round(density_ps * 1000))  # 1 fs steps
    t0 = time.perf_counter()
    result = json.loads(ionmix_cli(
        "props", "density", str(box), "--model", "classical", "--engine", "openmm",
        "--temperatures", ",".join(temperatures), "--steps", str(steps), "--timestep-fs", "1",
        "--log-every", "100", "--experiment", str(EXPERIMENT_CSV), "--out", str(folder),
        "--json"))
    result["wall_s"] = time.perf_counter() - t0
    series = json.loads((folder / "T_300K" / "density_series.json").read_text())
    rho = np.asarray(series["density_g_cm3"])
    mass_amu = float(np.sum(ase.io.read(box).get_masses()))
    volumes = mass_amu * 1.66053906660 / rho  # Å³: amu → g is 1.66054e-24, cm³ → Å³ 1e24
    prod = volumes[int(round(0.25 * volumes.size)):]
    kappa, err = kappa_T_from_volume_fluctuations(prod, 300.0)
    result["kappa_T_fluct_per_Pa"] = kappa
    result["kappa_T_fluct_err"] = err
    return result


def stage_ramp(box: Path, out: Path, ramp_ps: float,
               pressures_bar: tuple[float, ...] = RAMP_BAR) -> dict:
    """V(P) at 300 K along `pressures_bar`, each pressure continuing from the previous one, and
    the Tait fit at 1 bar."""
    import ase.io

    from ionmix.properties.eos import fit_tait

    folder = out / "ramp"
    folder.mkdir(parents=True, exist_ok=True)
    atoms = ase.io.read(box)
    rows = []
    for k, p in enumerate(pressures_bar):
        path = folder / f"P_{p:g}bar.json"
        if path.exists():
            row = json.loads(path.read_text())
            atoms = ase.io.read(folder / f"P_{p:g}bar.extxyz")
        else:
            volumes, atoms = npt_segment(atoms, 300.0, p, ramp_ps, seed=k,
                                         charge_scale=float(atoms.info["charge_scale"]))
            s = summary(volumes)
            row = {"pressure_bar": p, "volume_A3": s["mean"], "volume_err_A3": s["err"],
                   "drift_sigma": s["drift_sigma"], "n_samples": s["n_samples"]}
            ase.io.write(folder / f"P_{p:g}bar.extxyz", atoms, format="extxyz")
            path.write_text(json.dumps(row))
        rows.append(row)
    fit = fit_tait([r["pressure_bar"] for r in rows], [r["volume_A3"] for r in rows],
                   reference_pressure_bar=1.0)
    from dataclasses import asdict

    return {"points": rows, "tait": asdict(fit)}


def stage_scale(box: Path, out: Path, scale_ps: float, rho_07: tuple[float, float],
                scales: tuple[float, ...] = (0.8, 1.0)) -> dict:
    """ρ(300 K) at other charge scales (each from the 0.7-equilibrated box; 30 % of each run
    discarded) and the scale that matches the experimental 1.69 g/cm³ (linear
    interpolation between the two bracketing scales)."""
    import ase.io

    folder = out / "scale"
    folder.mkdir(parents=True, exist_ok=True)
    atoms = ase.io.read(box)
    rows = [{"charge_scale": float(atoms.info["charge_scale"]), "density_g_cm3": rho_07[0],
             "density_err_g_cm3": rho_07[1], "from": "density stage"}]
    for k, s in enumerate(scales):
        path = folder / f"scale_{s:g}.json"
        if not path.exists():
            volumes, _ = npt_segment(atoms, 300.0, 1.0, scale_ps, charge_scale=s, seed=10 + k)
            rho = summary(density_of(atoms, volumes), equilibration_fraction=0.3)
            path.write_text(json.dumps({"charge_scale": s, "density_g_cm3": rho["mean"],
                                        "density_err_g_cm3": rho["err"],
                                        "drift_sigma": rho["drift_sigma"],
                                        "time_ps": scale_ps}))
        rows.append(json.loads(path.read_text()))
    rows.sort(key=lambda r: r["charge_scale"])
    x = np.array([r["charge_scale"] for r in rows])
    y = np.array([r["density_g_cm3"] for r in rows])
    target = EXPERIMENT["rho_300K_g_cm3"]
    fitted = None
    for i in range(len(rows) - 1):
        if (y[i] - target) * (y[i + 1] - target) <= 0:
            fitted = float(x[i] + (target - y[i]) * (x[i + 1] - x[i]) / (y[i + 1] - y[i]))
    slope, intercept = np.polyfit(x, y, 1)
    return {"points": rows, "scale_matching_experiment": fitted,
            "linear_fit": {"slope_g_cm3_per_unit_scale": float(slope),
                           "intercept_g_cm3": float(intercept),
                           "scale_at_target": float((target - intercept) / slope)}}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-fomim"))
    ap.add_argument("--equil-ps", type=float, default=100.0)
    ap.add_argument("--density-ps", type=float, default=150.0,
                    help="per temperature; the first 25%% are discarded")
    ap.add_argument("--temperatures", default="290,300,310,320,330,340,350")
    ap.add_argument("--ramp-ps", type=float, default=60.0, help="per pressure")
    ap.add_argument("--ramp-pressures", default=",".join(f"{p:g}" for p in RAMP_BAR),
                    help="bar, increasing")
    ap.add_argument("--scale-ps", type=float, default=100.0, help="per charge scale")
    ap.add_argument("--scale-fit", action="store_true",
                    help="run the charge-scale fit even if ρ(300 K) is within 3 %%")
    ap.add_argument("--skip-ramp", action="store_true")
    ap.add_argument("--only-ramp", action="store_true",
                    help="equilibrate, then only the pressure ramp (Tait κ_T)")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report: dict = {"experiment": EXPERIMENT, "allegro_paper": ALLEGRO_PAPER,
                    "args": {k: str(v) for k, v in vars(args).items()}}

    def save() -> None:
        report["wall_s"] = time.perf_counter() - t0
        (out / "bench-fomim.json").write_text(json.dumps(report, indent=2))

    box = stage_equilibrate(stage_build(out), out, args.equil_ps)
    report["equilibration"] = {k: v for k, v in json.loads(
        (box.parent / "equilibration.json").read_text()).items() if k != "density_g_cm3"}
    log(f"equilibrated: {box} ({report['equilibration']['ns_per_day']:.1f} ns/day)")
    if args.only_ramp:
        pressures = tuple(float(p) for p in args.ramp_pressures.split(","))
        report["ramp"] = stage_ramp(box, out, args.ramp_ps, pressures)
        save()
        log(f"Tait kappa_T = {report['ramp']['tait']['kappa_T_per_Pa']:.3e}")
        return
    temps = args.temperatures.split(",")
    # ρ(300 K) and the ends of the range first, then the charge-scale fit and the ramp,
    # then the remaining temperatures: a partial run already answers the main questions
    first = list(dict.fromkeys(t for t in ("300", temps[-1], temps[0]) if t in temps))
    report["density"] = stage_density(box, out, args.density_ps, first)
    save()
    rho300 = next(r for r in report["density"]["points"] if r["temperature_K"] == 300.0)
    log(f"rho(300 K) = {rho300['density_g_cm3']:.4f} ± {rho300['density_err_g_cm3']:.4f}")
    miss = abs(rho300["density_g_cm3"] / EXPERIMENT["rho_300K_g_cm3"] - 1)
    report["rho_300K_relative_miss"] = miss
    if miss > SCALE_FIT_THRESHOLD or args.scale_fit:
        report["scale"] = stage_scale(box, out, args.scale_ps,
                                      (rho300["density_g_cm3"], rho300["density_err_g_cm3"]))
        save()
        log(f"charge scale matching experiment: "
            f"{report['scale']['scale_matching_experiment']}")
    if not args.skip_ramp:
        pressures = tuple(float(p) for p in args.ramp_pressures.split(","))
        report["ramp"] = stage_ramp(box, out, args.ramp_ps, pressures)
        save()
        log(f"Tait kappa_T = {report['ramp']['tait']['kappa_T_per_Pa']:.3e}")
    report["density"] = stage_density(box, out, args.density_ps, temps)
    save()
    log("done")
    print(json.dumps({k: v for k, v in report.items() if k not in ("experiment",)},
                     indent=2)[:6000])


if __name__ == "__main__":
    main()
