"""Outputs of the transferability study: metrics files, Figure-1 heat maps, report.md."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from ionmix import design
from ionmix.dataset import composition_key
from ionmix.report.figure import plt, save_figure


def heatmaps(mixture: design.Mixture, recipes, compositions, metrics):
    """The paper's Figure 1: force and energy MAE, rows = recipes, columns = test comps
    (a Figure: two heat-map axes, the values written in their cells)."""
    names = [r.name for r in recipes if any(m["recipe"] == r.name for m in metrics)]
    keys = [composition_key(c) for c in compositions]
    lookup = {(m["recipe"], m["test_composition"]): m for m in metrics}
    fig, axes = plt.subplots(1, 2, figsize=(3 + 1.1 * len(keys), 1.6 + 0.5 * len(names)),
                             constrained_layout=True)
    panels = [("force_mae_meV_per_A", "force MAE (meV/Å)", "Blues"),
              ("energy_mae_meV_per_atom", "energy MAE (meV/atom)", "Reds")]
    for ax, (field, title, cmap) in zip(axes, panels, strict=True):
        data = np.array([[lookup[(n, k)][field] if (n, k) in lookup else np.nan for k in keys]
                         for n in names])
        positive = data[np.isfinite(data) & (data > 0)]
        norm = matplotlib.colors.LogNorm(vmin=positive.min(), vmax=positive.max()) \
            if positive.size and positive.max() > 5 * positive.min() else None
        ax.imshow(data, cmap=cmap, norm=norm, aspect="auto")
        for i, n in enumerate(names):
            for j, k in enumerate(keys):
                v = data[i, j]
                if not np.isfinite(v):
                    continue
                text = f"{v:.0f}" if v >= 10 else f"{v:.1f}" if v >= 1 else f"{v:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7)
                if lookup[(n, k)]["in_training_set"]:
                    ax.plot(j, i - 0.32, marker="v", color="green", markersize=6)
        ax.set_xticks(range(len(keys)), [mixture.fraction_label(c) for c in compositions])
        ax.set_yticks(range(len(names)), names)
        xlabel = (f"test composition: {mixture.units[0]} mole fraction"
                  if len(mixture.units) == 2 else "test composition")
        ax.set_xlabel(xlabel)
        ax.set_title(title + "  (▼ = trained on)", fontsize=10)
    return fig


def species_figure(analysis: dict[str, Any]):
    """Determined per-species combinations per model vs the teacher, and the undetermined
    projection of each model's own ion energies (a Figure; None without models or the
    teacher's values)."""
    models = analysis["models"]
    if not models or analysis["teacher"] is None:
        return None
    combos = analysis["combinations"]
    names = list(models)
    has_proj = bool(analysis["undetermined_projection_eV"])
    ncols = len(combos) + (1 if has_proj else 0)
    fig, axes = plt.subplots(1, ncols, figsize=(3.2 * ncols, 0.6 + 0.45 * len(names)),
                             constrained_layout=True, squeeze=False)
    for ax, combo in zip(axes[0], combos, strict=False):
        vals = np.array([models[n][combo][0] for n in names])
        errs = np.array([models[n][combo][1] for n in names])
        teacher = analysis["teacher"][combo][0]
        ax.errorbar(vals - teacher, range(len(names)), xerr=errs, fmt="o")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(names)), names if ax is axes[0][0] else [""] * len(names))
        ax.set_title(f"{combo}\nmodel − teacher (eV)", fontsize=9)
    if has_proj:
        ax = axes[0][-1]
        proj = analysis["undetermined_projection_eV"]
        shown = [n for n in names if n in proj]
        ax.plot([proj[n][0] for n in shown], [names.index(n) for n in shown], "s", color="C3")
        ax.set_yticks(range(len(names)), [""] * len(names))
        ax.set_title("undetermined direction ·\nmodel's own ion energies (eV)", fontsize=9)
    return fig


def _table(rows: list[list[str]], header: list[str]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def write_outputs(out: Path, cfg, mixture: design.Mixture, recipes, compositions,
                  metrics: list[dict[str, Any]], analysis: dict[str, Any],
                  failed: dict[str, str], teacher: str) -> tuple[Path, Path]:
    """Write metrics.json/.csv, transferability.png, species_energies.{json,png}, report.md.

    Returns (figure path, report path).
    """
    from ionmix.files import atomic_write_text
    from ionmix.metrics import metrics_csv, transfer_ratios

    ratios = transfer_ratios(metrics) if metrics else {}
    atomic_write_text(out / "metrics.json", json.dumps(
        {"metrics": metrics, "transfer_ratios": ratios, "failed": failed}, indent=2) + "\n")
    atomic_write_text(out / "metrics.csv", metrics_csv(metrics))
    atomic_write_text(out / "species_energies.json", json.dumps(analysis, indent=2) + "\n")
    fig_path = out / "transferability.png"
    if metrics:
        save_figure(heatmaps(mixture, recipes, compositions, metrics), fig_path, dpi=130)
    species = species_figure(analysis)
    species_png = None if species is None else save_figure(
        species, out / "species_energies.png", dpi=130)
    report = out / "report.md"
    atomic_write_text(report, _report_text(cfg, mixture, recipes, compositions, metrics,
                                            ratios, analysis, failed, species_png, teacher))
    return fig_path, report


def _report_text(cfg, mixture, recipes, compositions, metrics, ratios, analysis, failed,
                 species_png, teacher: str) -> str:
    """``report.md``: the study set-up, failed recipes, the transfer table and its
    reading, the per-species energies and the files written."""
    lines = _intro_lines(cfg, mixture, compositions, teacher)
    if failed:
        lines += ["## Recipes that failed", ""]
        lines += [f"- **{k}**: {v}" for k, v in failed.items()] + [""]
    if metrics:
        lines += ["## How far each recipe transfers", "",
                  "ratio = worst energy MAE over all test compositions ÷ mean energy MAE on "
                  "the recipe's own training compositions. The condition number (see "
                  "`ionmix plan`) measures how much an error in the learned per-species "
                  "energies is amplified away from the training compositions.", ""]
        lines.append(_transfer_table(mixture, recipes, metrics, ratios))
        lines += ["", "## Reading", ""] + _reading(mixture, recipes, ratios) + [""]
    if analysis.get("teacher"):
        lines += ["## Per-species energies", "",
                  "Each model's predictions at every test composition are fitted to "
                  "E ≈ Σ μ_j N_j on the identifiable subspace only. Combinations that C "
                  "compositions determine should agree with the teacher's for models trained "
                  "on ≥ C compositions; the part along the undetermined direction "
                  + ", ".join(str(np.round(v, 3).tolist())
                              for v in mixture.undetermined_directions()) + " "
                  "is the model's own choice (from its atomic energies) and may drift.", ""]
        lines.append(_species_table(analysis))
        if species_png:
            lines += ["", "![per-species energies](species_energies.png)"]
        lines.append("")
    lines += ["## Files", "",
              "- `metrics.json`, `metrics.csv`: every recipe × test composition (energy MAE "
              "meV/atom, force MAE meV/Å overall and per element, frame counts)",
              "- `species_energies.json`: the per-species analysis",
              "- `models/<recipe>/`: nequip config, checkpoints, packaged model, evaluation",
              "- `data/`: the extxyz splits; `frames.db`: every sampled frame", ""]
    return "\n".join(lines)


def _intro_lines(cfg, mixture, compositions, teacher: str) -> list[str]:
    """The report's title and set-up: units, species, C, teacher, sampling, model."""
    c = mixture.min_compositions
    s = cfg.study
    return [
        "# Transferability study",
        "",
        f"Mixture units: {', '.join(mixture.units)}; species "
        + ", ".join(f"{sp}({q:+d})" for sp, q in
                    zip(mixture.species, mixture.charges, strict=True)) + "."
        f" C = N − M = {mixture.n_species} − {mixture.n_constraints} = **{c}** compositions are "
        "needed for the energy to transfer (see docs/composition-design.md).",
        "",
        f"Teacher: {teacher}; sampled at "
        f"{cfg.sampling.temperature_K:g} K; {len(compositions)} compositions × "
        f"{cfg.sampling.replicas} replicas, {cfg.mixture.n_ion_pairs or cfg.mixture.n_ions} "
        f"{'ion pairs' if cfg.mixture.n_ion_pairs else 'ions'} per box. Model: `{s.preset}`, "
        f"energy reference `{s.energy_reference}`, {s.n_train} train + {s.n_val} validation "
        f"frames per training composition (replica 0), {s.n_test} test frames per composition "
        "(replica 1, an independent box).",
        "",
        "![transferability](transferability.png)",
        "",
    ]


def _transfer_table(mixture, recipes, metrics, ratios) -> str:
    """Per recipe: rank vs C, condition number, in-distribution and worst energy MAE
    (meV/atom), their ratio and the force MAE range (meV/Å)."""
    c = mixture.min_compositions
    rows = []
    for recipe in recipes:
        if recipe.name not in ratios:
            continue
        r = ratios[recipe.name]
        vecs = np.array([mixture.counts(x) for x in recipe.compositions])
        rank = design.matrix_rank(vecs)
        fmae = [m["force_mae_meV_per_A"] for m in metrics if m["recipe"] == recipe.name]
        cond = design.condition_number(mixture, recipe.compositions)
        rows.append([recipe.name, f"{rank} of {c}", "yes" if rank >= c else "**no**",
                     f"{cond:.1f}" if math.isfinite(cond) else "∞",
                     f"{r['in_distribution_energy_mae_meV_per_atom']:.2f}",
                     f"{r['worst_energy_mae_meV_per_atom']:.2f}", f"{r['ratio']:.1f}",
                     f"{min(fmae):.0f}–{max(fmae):.0f}"])
    return _table(rows, ["recipe", "rank", "≥ C?", "condition number",
                         "in-distribution energy MAE (meV/atom)", "worst energy MAE (meV/atom)",
                         "ratio", "force MAE range (meV/Å)"])


def _species_table(analysis) -> str:
    """Per model: each determined combination minus the teacher's (eV, ± its error) and
    the undetermined projection (eV)."""
    header = ["model"] + [f"{k} − teacher (eV)" for k in analysis["combinations"]]
    has_proj = bool(analysis["undetermined_projection_eV"])
    if has_proj:
        header.append("undetermined projection (eV)")
    rows = []
    for name, vals in analysis["models"].items():
        row = [name] + [f"{vals[k][0] - analysis['teacher'][k][0]:+.3f} ± {vals[k][1]:.3f}"
                        for k in analysis["combinations"]]
        if has_proj:
            proj = analysis["undetermined_projection_eV"].get(name)
            row.append(f"{proj[0]:+.3f}" if proj else "-")
        rows.append(row)
    return _table(rows, header)


def _reading(mixture, recipes, ratios) -> list[str]:
    """One line per recipe — its verdict (`ionmix.metrics.transfer_verdict`) and what
    C = N − M says of its rank — then which recipe transfers best and why."""
    from ionmix.metrics import (
        APPROXIMATE_MEV_PER_ATOM,
        APPROXIMATE_RATIO,
        TRANSFERS_MEV_PER_ATOM,
        TRANSFERS_RATIO,
    )

    c = mixture.min_compositions
    out = [f"Verdict: with its worst energy MAE below {APPROXIMATE_MEV_PER_ATOM:.1f} meV/atom "
           f"(kT at 300 K, per atom), a recipe *transfers* when that worst case stays "
           f"within {TRANSFERS_RATIO:g}× its in-distribution MAE or below "
           f"{TRANSFERS_MEV_PER_ATOM:g} meV/atom, and *transfers approximately* within "
           f"{APPROXIMATE_RATIO:g}×; otherwise it does not transfer "
           "(docs/transferability.md).", ""]
    ranks = {}
    for recipe in recipes:
        if recipe.name not in ratios:
            continue
        rank = design.matrix_rank(np.array([mixture.counts(x) for x in recipe.compositions]))
        ranks[recipe.name] = rank
        r = ratios[recipe.name]
        verdict = r["verdict"]
        spans = rank >= c
        home = r["in_distribution_energy_mae_meV_per_atom"]
        theory = ("its error on its own compositions is already above "
                  f"{APPROXIMATE_MEV_PER_ATOM:.1f} meV/atom: the model is inaccurate, which "
                  "says nothing of transfer (train longer)"
                  if home > APPROXIMATE_MEV_PER_ATOM else
                  "as C = N − M predicts" if spans == (verdict != "does not transfer") else
                  "although its compositions span the mixture (C = N − M is met): an "
                  "ill-conditioned set or unsampled interactions" if spans else
                  "although rank < C (the errors happen to stay small at these compositions)")
        out.append(f"- **{recipe.name}** (rank {rank} of {c}): {verdict} — worst "
                   f"{r['worst_energy_mae_meV_per_atom']:.1f} meV/atom, "
                   f"{r['ratio']:.1f}× in-distribution; {theory}.")
    finite = {n: r for n, r in ratios.items() if math.isfinite(r["ratio"])}
    if finite:
        best = min(finite, key=lambda n: (finite[n]["worst_energy_mae_meV_per_atom"]))
        out.append(f"- Best: **{best}**, the lowest worst-case error "
                   f"({finite[best]['worst_energy_mae_meV_per_atom']:.1f} meV/atom), "
                   f"{'with' if ranks.get(best, 0) >= c else 'without'} C = {c} compositions "
                   "that determine every identifiable per-species energy.")
    if len(finite) < len(ratios):
        out.append("- Some in-distribution errors are zero or missing; ratios are undefined.")
    return out
