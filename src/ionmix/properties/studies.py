"""Liquid properties from NPT MD: density vs temperature, compressibility from a pressure
ramp, and validation of a trajectory against the teacher (Goodwin et al., Figure 2).

Each study is a set of `ionmix.md` runs in sub-folders of one study folder, so every study
resumes where it stopped (run the same command again) and the analysis can be redone from
what is on disk. Analysis conventions (documented in docs/properties.md):

* every mean follows `stats.series_summary`: the equilibration part of each run is detected
  automatically (pymbar, at least `equilibration_fraction`, at most half the run), the
  standard error is std·sqrt(g/N) with g the statistical inefficiency of the production
  part, and the two halves of the production part are compared (`drift_sigma`, reported
  per run; runs above 3 are listed as still drifting);
* densities are fitted linearly in T (weighted by their errors) for dρ/dT and α_P;
* the ramp's mean volumes are fitted by the Tait equation for κ_T, cross-checked by the
  volume fluctuations of the first (lowest-pressure) stage.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from ionmix import stats as P
from ionmix.chemistry.topology import carry_metadata
from ionmix.files import atomic_write_json, atomic_write_text
from ionmix.md import MDBlowUp, MDError, MDSettings, read_thermo, run_md
from ionmix.progress import Progress
from ionmix.properties import eos
from ionmix.properties.thermo import fit_density_vs_temperature
from ionmix.teachers.classical.openmm_md import classical_npt_density
from ionmix.units import volume_A3_for_density

__all__ = [
    "DEFAULT_RAMP_BAR",
    "CompressibilityResult",
    "DensityResult",
    "compressibility_study",
    "density_study",
    "read_density_json",
    "read_experiment_csv",
]

#: The paper's ramp: 1 bar, then 18 steps of +1 kbar.
DEFAULT_RAMP_BAR: tuple[float, ...] = (1.0,) + tuple(1000.0 * k for k in range(1, 19))


def _check_temperatures(temperatures_K: Sequence[float]) -> list[float]:
    temps = [float(t) for t in temperatures_K]
    if not temps:
        raise MDError("give at least one temperature")
    bad = [t for t in temps if not np.isfinite(t) or t <= 0 or t > 1e4]
    if bad:
        raise MDError(f"temperature {bad[0]} K is not physical (need 0 < T ≤ 10000 K)")
    if len(set(temps)) != len(temps):
        raise MDError(f"temperatures repeat: {temps}")
    return temps


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


# --------------------------------------------------------------------------------------
# density vs temperature


@dataclass(frozen=True)
class DensityResult:
    """ρ(T) of one model (`density_study`); ``density.json`` is `to_json`.

    Attributes (units in the names):
        label: what was run (figure legend).
        settings: the MD settings (`MDSettings.model_dump`).
        equilibration_fraction: minimum leading share of each run discarded.
        points: per temperature ``temperature_K``, ``density_g_cm3`` ± ``density_err_g_cm3``,
            the series' statistics, κ_T from volume fluctuations, and its ``run`` folder.
        fit: the ρ(T) line (`ionmix.properties.thermo.DensityFit` as a dict: dρ/dT, α_P at
            the reference temperature), None with fewer than two temperatures.
        drifting_runs: runs whose production part still drifts (> 3 σ).
        blew_up: ``{"temperature_K", "run", "reason"}`` of each run that blew up.
    """

    label: str
    settings: dict
    equilibration_fraction: float
    points: list[dict]
    fit: dict | None
    drifting_runs: list[str]
    blew_up: list[dict]

    def to_json(self) -> dict:
        out = asdict(self)
        if out["fit"] is None:  # as density.json has always been: no key without a line
            del out["fit"]
        return out


def density_study(atoms: Atoms, calc, temperatures_K: Sequence[float], settings: MDSettings,
                  out_dir: str | os.PathLike, *, equilibration_fraction: float =
                  P.EQUILIBRATION_FRACTION,
                  reference_temperature_K: float | None = None,
                  teacher: str | os.PathLike | None = None,
                  experiment: str | os.PathLike | None = None,
                  label: str | None = None, engine: str = "ase", classical_teacher=None,
                  model_id: str | None = None, model_teachers: Mapping | None = None,
                  progress: Progress | None = None) -> DensityResult:
    """NPT at each temperature → mean density ± standard error → ρ(T) line, dρ/dT and α_P.

    Args:
        atoms: starting structure of every run (each temperature starts from it).
        calc: ASE calculator with stress (engine "ase"), or the classical teacher's
            calculator with engine "openmm" and that `classical_teacher` (a `Teacher` of
            kind classical, e.g. ``LoadedModel.teacher``): it then runs natively in OpenMM
            (`classical_npt_density`: Langevin thermostat, Monte Carlo barostat, same run
            length and sampling interval; the same equilibrium density as the ASE/MTK
            route at ~100× the speed).
        temperatures_K: shape (n,), distinct, physical.
        settings: MD settings; ``ensemble`` is forced to ``npt`` and ``temperature_K`` is set
            per run; ``n_steps`` is the length of each run (equilibration included).
        equilibration_fraction: minimum leading share of each run discarded; the
            automatic detection (`stats.series_summary`) usually discards more.
        out_dir: study folder; runs go to ``out_dir/T_<T>K``.
        teacher: a ``density.json`` of the same study run with the teacher (plotted along).
        experiment: CSV with ``temperature_K,density_g_cm3`` (plotted along).
        label: what was run, for the figure legend and the JSON (default: the calculator's
            class name, or "classical (OpenMM)").
        model_id: what `calc` is (``LoadedModel.model_id``), recorded by each run and
            compared on a restart.
        model_teachers: the teachers that trained it (``LoadedModel.teachers``), recorded
            by each run for ``ionmix validate``.
        progress: ``progress(step, n_steps, run_name)`` (`ionmix.progress.Progress`).

    Returns (and writes ``density.json``, ``density.csv``, ``density.png``) a
    `DensityResult`: per-temperature means and, when two or more temperatures were run, the
    fit with dρ/dT and α_P. A model that blows up at one temperature (`MDBlowUp`) is listed
    under ``blew_up`` with the reason (its data kept in its run folder) and the other
    temperatures still run.
    """
    temps = _check_temperatures(temperatures_K)
    openmm_teacher = _openmm_teacher(classical_teacher) if engine == "openmm" else None
    if "stress" not in getattr(calc, "implemented_properties", ()):
        raise MDError("the density study runs NPT, which needs a calculator with stress")
    teacher_data = read_density_json(teacher) if teacher is not None else None
    experiment_data = read_experiment_csv(experiment) if experiment is not None else None
    out = Path(out_dir)
    rows, blew_up = [], []
    for t in temps:
        name = f"T_{t:g}K"
        if openmm_teacher is not None:
            # the teacher natively in OpenMM: same force field, same time, ~100x faster
            series_path = out / name / "density_series.json"
            if series_path.exists():
                series = json.loads(series_path.read_text())
            else:
                run = classical_npt_density(
                    atoms, t, settings.pressure_bar,
                    time_ps=settings.n_steps * settings.timestep_fs / 1000.0,
                    sample_interval_ps=settings.log_interval_steps * settings.timestep_fs
                    / 1000.0, seed=settings.seed, teacher=openmm_teacher)
                series = {"density_g_cm3": run["series"]}
                atomic_write_json(series_path, series)
            density = series["density_g_cm3"]
            temperature = [t] * len(density)  # Langevin: the target on average
        else:
            try:
                density, temperature = _model_npt_series(atoms, calc, settings, t,
                                                         out / name, progress, model_id,
                                                         model_teachers)
            except MDBlowUp as exc:  # the other temperatures still run; the data is kept
                blew_up.append({"temperature_K": t, "run": name, "reason": str(exc)})
                continue
        summary = P.series_summary(density, equilibration_fraction)
        temp_summary = P.series_summary(temperature, start=summary["equilibration_index"])
        kappa, kappa_err = _kappa_from_densities(
            density[summary["equilibration_index"]:], atoms, t)
        rows.append({"temperature_K": t, "density_g_cm3": summary["mean"],
                     "density_err_g_cm3": summary["err"], "n_samples": summary["n_samples"],
                     "equilibration_index": summary["equilibration_index"],
                     "statistical_inefficiency": summary["statistical_inefficiency"],
                     "n_effective": summary["n_effective"],
                     "drift_sigma": summary["drift_sigma"],
                     "mean_temperature_K": temp_summary["mean"],
                     "kappa_T_fluctuation_per_Pa": kappa,
                     "kappa_T_fluctuation_err_per_Pa": kappa_err, "run": name})
    if label is None:
        label = "classical (OpenMM)" if openmm_teacher else type(calc).__name__
    fit = None
    if len(rows) >= 2:
        fit = asdict(fit_density_vs_temperature([r["temperature_K"] for r in rows],
                                                [r["density_g_cm3"] for r in rows],
                                                [r["density_err_g_cm3"] for r in rows],
                                                reference_temperature_K))
    result = DensityResult(label=label, settings=settings.model_dump(),
                           equilibration_fraction=equilibration_fraction, points=rows, fit=fit,
                           drifting_runs=[r["run"] for r in rows if r["drift_sigma"] > 3],
                           blew_up=blew_up)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "density.json", result.to_json())
    if rows:
        atomic_write_text(out / "density.csv", _csv_text(rows))
    from ionmix.report.figure import save_figure
    from ionmix.report.properties import plot_density

    save_figure(plot_density(result.to_json(), teacher=teacher_data,
                             experiment=experiment_data), out / "density.png")
    return result


def _model_npt_series(atoms: Atoms, calc, settings: MDSettings, temperature_K: float,
                      run_dir: Path, progress, model_id: str | None,
                      model_teachers: Mapping | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Density (g/cm³) and temperature (K) series of an NPT run with `calc` at
    `temperature_K` (run, continued, or read back). Raises MDBlowUp, also for a run that
    blew up before (`run_md` does not re-run it)."""
    s = settings.model_copy(update={"ensemble": "npt", "temperature_K": temperature_K})
    run_md(atoms, calc, s, run_dir, progress=progress, model_id=model_id,
           model_teachers=model_teachers)
    thermo = read_thermo(run_dir / "thermo.csv")
    return thermo["density_g_cm3"], thermo["temperature_K"]


def _kappa_from_densities(density_g_cm3, atoms: Atoms, temperature_K: float):
    """κ_T (Pa⁻¹) and its jackknife error from the volume fluctuations of an equilibrated
    NPT density series (V = mass / ρ); (None, None) when the series is too short."""
    mass_amu = float(np.sum(atoms.get_masses()))
    volume_A3 = [volume_A3_for_density(mass_amu, rho) for rho in density_g_cm3]
    try:
        kappa, err = eos.kappa_T_from_volume_fluctuations(volume_A3, temperature_K)
    except ValueError:
        return None, None
    return kappa, err


def _openmm_teacher(teacher):
    """`teacher`, checked to be one OpenMM can run natively (the classical teacher)."""
    if teacher is None or teacher.kind != "classical":
        raise MDError("engine 'openmm' runs the classical teacher only; use engine 'ase' "
                      "for other calculators")
    return teacher


def read_density_json(path) -> dict:
    """A ``density.json`` written by `density_study`, checked for its shape."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        if data["points"] or not data.get("blew_up"):  # every run may have blown up
            data["points"][0]["density_g_cm3"]  # noqa: B018 - shape check
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        raise MDError(f"{path} is not a density.json written by `ionmix props density`") from None
    return data


def read_experiment_csv(path) -> dict[str, np.ndarray]:
    """Measurements: CSV with a header ``temperature_K,density_g_cm3`` and optionally a
    ``kappa_T_per_Pa`` column (isothermal compressibility, Pa⁻¹). A row may leave the
    density or κ_T blank (e.g. κ_T measured at another temperature) but not both.

    Returns arrays ``temperature_K``, ``density_g_cm3`` (rows with a density) and
    ``kappa_T_temperature_K``, ``kappa_T_per_Pa`` (rows with a κ_T; empty when none).
    """
    path = Path(path)
    try:
        rows = list(csv.DictReader(path.read_text().splitlines()))
    except OSError as exc:
        raise MDError(f"cannot read {path}: {exc.strerror}") from None
    if not rows or {"temperature_K", "density_g_cm3"} - set(rows[0]):
        raise MDError(f"{path}: need a header with temperature_K,density_g_cm3")

    def number(row: dict, key: str, line: int) -> float:
        text = (row.get(key) or "").strip()
        try:
            return float(text) if text else float("nan")
        except ValueError:
            raise MDError(f"{path}, line {line}: {key} = {text!r} is not a number") from None

    table = []
    for line, row in enumerate(rows, start=2):
        t, rho, kappa = (number(row, k, line) for k in
                         ("temperature_K", "density_g_cm3", "kappa_T_per_Pa"))
        if np.isnan(t) or (np.isnan(rho) and np.isnan(kappa)):
            raise MDError(f"{path}, line {line}: need a temperature and a density or κ_T")
        table.append((t, rho, kappa))
    t, rho, kappa = (np.array(c) for c in zip(*table, strict=True))
    has_rho, has_kappa = ~np.isnan(rho), ~np.isnan(kappa)
    return {"temperature_K": t[has_rho], "density_g_cm3": rho[has_rho],
            "kappa_T_temperature_K": t[has_kappa], "kappa_T_per_Pa": kappa[has_kappa]}


# --------------------------------------------------------------------------------------
# compressibility from a pressure ramp


def _continue_from(atoms: Atoms, run_dir: Path) -> Atoms:
    """`atoms` (topology, info) at the final state of the run in `run_dir`, with momenta."""
    state = json.loads((run_dir / "checkpoint.json").read_text())["atoms"]
    return carry_metadata(atoms, Atoms(atoms.get_chemical_symbols(),
                                       positions=state["positions"], cell=state["cell"],
                                       pbc=True, momenta=state["momenta"]))


@dataclass(frozen=True)
class CompressibilityResult:
    """V(P) along a pressure ramp and κ_T (`compressibility_study`); ``compressibility.json``
    is `to_json`.

    Attributes (units in the names):
        settings, temperature_K, equilibration_fraction, n_blocks: how it was run.
        points: per pressure stage ``pressure_bar``, ``volume_A3`` ± ``volume_err_A3``, the
            density and measured pressure with errors, the series' statistics, ``run``.
        tait: the Tait fit (`ionmix.properties.eos.TaitFit` as a dict).
        kappa_T_per_Pa, kappa_T_err_per_Pa: κ_T at the first pressure from the Tait fit.
        kappa_T_fluctuation_per_Pa, kappa_T_fluctuation_err_per_Pa: κ_T from the volume
            fluctuations of stage 0 (jackknife error over `n_blocks`).
        drifting_runs: stages whose production part still drifts (> 3 σ).
    """

    settings: dict
    temperature_K: float
    equilibration_fraction: float
    n_blocks: int
    points: list[dict]
    tait: dict
    kappa_T_per_Pa: float
    kappa_T_err_per_Pa: float
    kappa_T_fluctuation_per_Pa: float | None
    kappa_T_fluctuation_err_per_Pa: float | None
    drifting_runs: list[str]

    def to_json(self) -> dict:
        return asdict(self)


def compressibility_study(atoms: Atoms, calc, settings: MDSettings,
                          out_dir: str | os.PathLike, *,
                          pressures_bar: Sequence[float] = DEFAULT_RAMP_BAR,
                          first_stage_steps: int | None = None,
                          equilibration_fraction: float = P.EQUILIBRATION_FRACTION,
                          n_blocks: int = 5, model_id: str | None = None,
                          model_teachers: Mapping | None = None,
                          progress: Progress | None = None) -> CompressibilityResult:
    """The paper's pressure ramp at one temperature → V(P) → Tait fit → κ_T.

    Stage 0 runs at the first pressure (1 bar) from `atoms` for `first_stage_steps`
    (default ``settings.n_steps``); every later stage starts from the final positions,
    velocities and cell of the previous one and runs ``settings.n_steps``. In each stage the
    equilibration part is detected on the volume series (`stats.series_summary`, at least
    ``equilibration_fraction``) and the rest is production; `n_blocks` is the number of
    blocks of the jackknife error of κ_T from the volume fluctuations.

    Returns (and writes ``compressibility.json``, ``pv.csv`` — readable by ``ionmix props
    eos`` — and ``compressibility.png``) a `CompressibilityResult`: mean volume ± standard
    error per pressure, the Tait fit with κ_T at the first pressure, and κ_T from the
    volume fluctuations of stage 0.
    """
    pressures = [float(p) for p in pressures_bar]
    if len(pressures) < 4:
        raise MDError(f"the Tait fit needs at least 4 pressures, got {len(pressures)}")
    bad = [p for p in pressures if not np.isfinite(p) or not -1e4 <= p <= 1e6]
    if bad:
        raise MDError(f"pressure {bad[0]} bar is not physical (need -1e4 ≤ P ≤ 1e6 bar)")
    if any(b <= a for a, b in zip(pressures, pressures[1:], strict=False)):
        raise MDError(f"pressures must increase along the ramp, got {pressures}")
    if "stress" not in getattr(calc, "implemented_properties", ()):
        raise MDError("the pressure ramp runs NPT, which needs a calculator with stress")
    out = Path(out_dir)
    rows = []
    start = atoms
    stage_kappa = None
    for k, p in enumerate(pressures):
        name = f"stage{k:02d}_P_{p:g}bar"
        n_steps = first_stage_steps if (k == 0 and first_stage_steps) else settings.n_steps
        s = settings.model_copy(update={
            "ensemble": "npt", "pressure_bar": p, "n_steps": n_steps,
            "initial_velocities": "maxwell" if k == 0 else "keep"})
        run_md(start, calc, s, out / name, model_id=model_id, model_teachers=model_teachers,
               progress=progress)
        thermo = read_thermo(out / name / "thermo.csv")
        # one production window per stage, the volume's: density and pressure are averaged
        # over the same samples
        t0 = P.detect_equilibration(thermo["volume_A3"], equilibration_fraction)
        vol = P.series_summary(thermo["volume_A3"], start=t0)
        rho = P.series_summary(thermo["density_g_cm3"], start=t0)
        pres = P.series_summary(thermo["pressure_bar"], start=t0)
        rows.append({"pressure_bar": p, "volume_A3": vol["mean"], "volume_err_A3": vol["err"],
                     "density_g_cm3": rho["mean"], "density_err_g_cm3": rho["err"],
                     "measured_pressure_bar": pres["mean"],
                     "measured_pressure_err_bar": pres["err"],
                     "n_samples": vol["n_samples"], "equilibration_index": t0,
                     "statistical_inefficiency": vol["statistical_inefficiency"],
                     "drift_sigma": vol["drift_sigma"],
                     "run": name})
        if k == 0:
            prod = np.asarray(thermo["volume_A3"])[t0:]
            stage_kappa = eos.kappa_T_from_volume_fluctuations(prod, settings.temperature_K,
                                                             n_blocks)
        start = _continue_from(atoms, out / name)
    fit = eos.fit_tait([r["pressure_bar"] for r in rows], [r["volume_A3"] for r in rows],
                     reference_pressure_bar=pressures[0])
    result = CompressibilityResult(
        settings=settings.model_dump(), temperature_K=settings.temperature_K,
        equilibration_fraction=equilibration_fraction, n_blocks=n_blocks, points=rows,
        tait=asdict(fit), kappa_T_per_Pa=fit.kappa_T_per_Pa,
        kappa_T_err_per_Pa=fit.kappa_T_per_Pa_err, kappa_T_fluctuation_per_Pa=stage_kappa[0],
        kappa_T_fluctuation_err_per_Pa=stage_kappa[1],
        drifting_runs=[r["run"] for r in rows if r["drift_sigma"] > 3])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "compressibility.json", result.to_json())
    atomic_write_text(out / "pv.csv", _csv_text(rows))
    from ionmix.report.figure import save_figure
    from ionmix.report.properties import plot_compressibility

    pressures_bar = np.linspace(min(r["pressure_bar"] for r in rows),
                                max(r["pressure_bar"] for r in rows), 100)
    save_figure(plot_compressibility(result.to_json(),
                                     (pressures_bar, fit.volume_A3(pressures_bar))),
                out / "compressibility.png")
    return result
