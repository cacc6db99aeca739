"""Model, teacher and experiment side by side (the paper's Figure 2 as one table): ρ at a
reference temperature, dρ/dT, α_P and κ_T, and the model's errors on its test set and
along its own trajectory. Everything is read from what `ionmix props density`,
`ionmix validate` and `ionmix train` wrote; nothing is re-run.

Conventions (all three columns treated alike):
* ρ(T_ref): the run at T_ref (mean ± standard error) when there is one, else the
  straight-line fit at T_ref (marked "fit"); the experiment's value at T_ref, or linearly
  interpolated between its two nearest temperatures.
* dρ/dT: the weighted line of `props density` (± its standard error); for the experiment,
  the least-squares line through its densities (no error: the CSV has none).
* α_P(T_ref) = −(dρ/dT)/ρ(T_ref).
* κ_T: the volume fluctuations of the run at T_ref (jackknife error); the experiment's κ_T
  row closest to T_ref within 5 K.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ionmix.files import atomic_write_json, atomic_write_text
from ionmix.md import MDError
from ionmix.properties.studies import read_density_json, read_experiment_csv

#: How far (K) an experimental κ_T may sit from T_ref and still be compared.
KAPPA_T_WINDOW_K = 5.0


def _json_in(path: str | Path, name: str) -> Path:
    """`path` itself, or `path/name` when `path` is a folder."""
    path = Path(path)
    return path / name if path.is_dir() else path


def simulated_properties(density: dict, temperature_K: float) -> dict:
    """ρ, dρ/dT, α_P and κ_T at `temperature_K` from a `props density` result (see module)."""
    point = next((p for p in density["points"]
                  if abs(p["temperature_K"] - temperature_K) < 0.5), None)
    fit = density.get("fit")
    out: dict = {"label": density.get("label", ""), "drifting_runs":
                 density.get("drifting_runs", []), "blew_up": density.get("blew_up", [])}
    if point is not None:
        out.update(density_g_cm3=point["density_g_cm3"],
                   density_err_g_cm3=point["density_err_g_cm3"], density_from="run",
                   kappa_T_per_Pa=point.get("kappa_T_fluctuation_per_Pa"),
                   kappa_T_err_per_Pa=point.get("kappa_T_fluctuation_err_per_Pa"))
    elif fit is not None:
        out.update(density_g_cm3=fit["intercept_g_cm3"] + fit["slope_g_cm3_per_K"]
                   * temperature_K, density_err_g_cm3=None, density_from="fit")
    if fit is not None and "density_g_cm3" in out:
        out.update(slope_g_cm3_per_K=fit["slope_g_cm3_per_K"], slope_err=fit["slope_err"],
                   alpha_P_per_K=-fit["slope_g_cm3_per_K"] / out["density_g_cm3"],
                   alpha_P_err=fit["slope_err"] / out["density_g_cm3"])
    return out


def experimental_properties(experiment: dict, temperature_K: float) -> dict:
    """The same quantities from a `read_experiment_csv` table (see module)."""
    t, rho = experiment["temperature_K"], experiment["density_g_cm3"]
    out: dict = {"label": "experiment"}
    order = np.argsort(t)
    if t.size and t.min() <= temperature_K <= t.max():
        out["density_g_cm3"] = float(np.interp(temperature_K, t[order], rho[order]))
        out["density_from"] = "measured" if np.any(np.isclose(t, temperature_K)) else "interp."
    if t.size >= 2:
        out["slope_g_cm3_per_K"] = float(np.polyfit(t, rho, 1)[0])
        if "density_g_cm3" in out:
            out["alpha_P_per_K"] = -out["slope_g_cm3_per_K"] / out["density_g_cm3"]
    tk, kappa = experiment["kappa_T_temperature_K"], experiment["kappa_T_per_Pa"]
    if tk.size and np.min(np.abs(tk - temperature_K)) <= KAPPA_T_WINDOW_K:
        k = int(np.argmin(np.abs(tk - temperature_K)))
        out.update(kappa_T_per_Pa=float(kappa[k]), kappa_T_temperature_K=float(tk[k]))
    return out


def compare_properties(model_density: str | Path, *, teacher_density: str | Path | None = None,
                       experiment: str | Path | None = None,
                       validation: str | Path | None = None,
                       train_run: str | Path | None = None,
                       temperature_K: float = 300.0,
                       out_dir: str | Path | None = None) -> dict:
    """Gather the model's, teacher's and experiment's properties and the model's errors;
    with `out_dir`, also write comparison.json, comparison.md and comparison.png (ρ(T) of
    all three) there.

    Args:
        model_density, teacher_density: `props density` folders (or their density.json).
        experiment: CSV as `read_experiment_csv` reads it.
        validation: an `ionmix validate` folder (or its validate.json).
        train_run: the model's `ionmix train` folder (its test MAEs).
        temperature_K: T_ref (K) where ρ, α_P and κ_T are compared.
    """
    from ionmix.train.run import read_test_metrics

    model = read_density_json(_json_in(model_density, "density.json"))
    teacher = None if teacher_density is None else read_density_json(
        _json_in(teacher_density, "density.json"))
    measured = None if experiment is None else read_experiment_csv(experiment)
    result: dict = {"temperature_K": temperature_K, "columns": {}}
    result["columns"]["model"] = simulated_properties(model, temperature_K)
    if teacher is not None:
        result["columns"]["teacher"] = simulated_properties(teacher, temperature_K)
    if measured is not None:
        result["columns"]["experiment"] = experimental_properties(measured, temperature_K)
    if validation is not None:
        path = _json_in(validation, "validate.json")
        try:
            v = json.loads(path.read_text())
            result["validation"] = {k: v[k] for k in (
                "n_frames", "energy_mae_meV_per_atom", "force_mae_meV_per_A")}
        except (OSError, ValueError, KeyError) as exc:
            raise MDError(f"{path} is not a validate.json written by `ionmix validate` "
                          f"({exc})") from None
    if train_run is not None:
        test = read_test_metrics(train_run)
        if "force_mae_meV_per_A" not in test:
            raise MDError(f"{train_run}: no test metrics (is it an `ionmix train` folder "
                          f"whose training finished?)")
        result["test"] = {k: test[k] for k in ("energy_mae_meV_per_atom",
                                                "force_mae_meV_per_A") if k in test}
    if out_dir is not None:
        from ionmix.report.figure import save_figure
        from ionmix.report.properties import plot_density

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "comparison.json", result)
        atomic_write_text(out / "comparison.md", comparison_markdown(result))
        save_figure(plot_density(model, teacher=teacher, experiment=measured),
                    out / "comparison.png")
    return result


def _fmt(value, err=None, scale=1.0, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = f"{value * scale:.{digits}f}"
    return text if err is None else f"{text} ± {err * scale:.{digits}f}"


def _deviation(columns: dict, a: str, b: str) -> str:
    x, y = (columns.get(c, {}).get("density_g_cm3") for c in (a, b))
    return "—" if x is None or y is None else f"{100.0 * (x - y) / y:+.1f} %"


def comparison_markdown(result: dict) -> str:
    """The comparison as a Markdown table (rows: quantities; columns: model/teacher/exp.)."""
    cols = result["columns"]
    names = list(cols)
    t_ref = result["temperature_K"]
    header = "| quantity | " + " | ".join(
        f"{n}{': ' + cols[n]['label'] if cols[n].get('label') and n != 'experiment' else ''}"
        for n in names) + " |"
    lines = [f"# Model, teacher and experiment at {t_ref:g} K", "", header,
             "|---" * (len(names) + 1) + "|"]

    def row(title, key, err_key=None, scale=1.0, digits=3, suffix=None):
        cells = [_fmt(cols[n].get(key), cols[n].get(err_key) if err_key else None, scale,
                      digits) + (suffix(cols[n]) if suffix else "") for n in names]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")

    row(f"ρ({t_ref:g} K) (g/cm³)", "density_g_cm3", "density_err_g_cm3", digits=4,
        suffix=lambda c: f" ({c['density_from']})" if c.get("density_from") in ("fit",
                                                                              "interp.") else "")
    row("dρ/dT (10⁻³ g cm⁻³ K⁻¹)", "slope_g_cm3_per_K", "slope_err", scale=1e3, digits=2)
    row(f"α_P({t_ref:g} K) (10⁻⁴ K⁻¹)", "alpha_P_per_K", "alpha_P_err", scale=1e4, digits=2)
    row("κ_T (10⁻¹⁰ Pa⁻¹)", "kappa_T_per_Pa", "kappa_T_err_per_Pa", scale=1e10, digits=2,
        suffix=lambda c: f" ({c['kappa_T_temperature_K']:g} K)"
        if "kappa_T_temperature_K" in c else "")
    lines.append("")
    for a, b in (("model", "teacher"), ("model", "experiment"), ("teacher", "experiment")):
        if a in cols and b in cols:
            lines.append(f"- ρ, {a} vs {b}: {_deviation(cols, a, b)}")
    for name in names:
        for failed in cols[name].get("blew_up", []):
            lines.append(f"- {name}: **blew up at {failed['temperature_K']:g} K** "
                         f"({failed['reason'].split('. ')[0]})")
        if cols[name].get("drifting_runs"):
            lines.append(f"- {name}: runs still drifting (> 3σ between halves): "
                         f"{', '.join(cols[name]['drifting_runs'])}")
    if "test" in result or "validation" in result:
        lines += ["", "| model error | test set | along its own NPT trajectory |",
                  "|---|---|---|"]
        for key, title in (("energy_mae_meV_per_atom", "energy MAE (meV/atom)"),
                           ("force_mae_meV_per_A", "force MAE (meV/Å)")):
            lines.append(f"| {title} | {_fmt(result.get('test', {}).get(key), digits=1)} | "
                         f"{_fmt(result.get('validation', {}).get(key), digits=1)} |")
    return "\n".join(lines) + "\n"
