"""The active-learning loop's report: a figure against generation and report.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from ionmix.files import atomic_write_text
from ionmix.report.figure import plt, save_figure


def plot_generations(summaries: list[dict], reference_density_g_cm3: float | None = None):
    """Shares (accurate/candidate/failed), frames added, committee test force MAE and each
    NPT walker's density (± error) against generation, with the teacher's (the mean
    density of the initial frames, g/cm³) as a dashed line when given."""
    gens = [s["generation"] for s in summaries]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), constrained_layout=True)
    for key, colour in (("accurate", "tab:green"), ("candidate", "tab:orange"),
                        ("failed", "tab:red")):
        axes[0].plot(gens, [s[f"{key}_share"] for s in summaries], "o-", color=colour,
                     label=key)
    axes[0].set(xlabel="generation", ylabel="share of explored frames", ylim=(-0.02, 1.02))
    axes[0].legend(fontsize=8)
    mae = [np.mean([m for m in s["committee_test_force_mae_meV_per_A"] if m is not None])
           for s in summaries]
    axes[1].plot(gens, mae, "o-", label="committee test force MAE (meV/Å)")
    axes[1].bar(gens, [s["frames_added"] for s in summaries], alpha=0.3,
                label="frames added")
    axes[1].set(xlabel="generation")
    axes[1].legend(fontsize=8)
    for name in summaries[-1]["walkers"]:
        pts = [(s["generation"], s["walkers"][name]) for s in summaries
               if "density_g_cm3" in s["walkers"].get(name, {})]
        if pts:
            axes[2].errorbar([g for g, _ in pts], [w["density_g_cm3"] for _, w in pts],
                             yerr=[w["density_err_g_cm3"] for _, w in pts], fmt="o-",
                             capsize=3, label=name)
    if reference_density_g_cm3 is not None:
        axes[2].axhline(reference_density_g_cm3, color="k", ls="--", lw=0.8,
                        label="initial frames (classical sampler)")
    axes[2].set(xlabel="generation", ylabel="committee NPT density (g/cm³)")
    if axes[2].get_legend_handles_labels()[0]:
        axes[2].legend(fontsize=7)
    for ax in axes:  # generations are whole numbers, all of them on every panel
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(min(gens) - 0.5, max(gens) + 0.5)
    return fig


def _walker_line(name: str, w: dict) -> str:
    rho = (f"ρ = {w['density_g_cm3']:.4f} ± {w['density_err_g_cm3']:.4f} g/cm³"
           if "density_g_cm3" in w else "no density")
    return (f"| {name} | {w['status']} | {w.get('n_candidates', 0)} | {rho} | "
            f"{w.get('reason', '')} |")


def write_report(out: Path, summaries: list[dict], stopped: str, teacher: str,
                 reference_density_g_cm3: float | None = None) -> tuple[Path, Path]:
    """Write ``generations.png`` and ``report.md`` into `out`; returns (report, figure)."""
    figure = save_figure(plot_generations(summaries, reference_density_g_cm3),
                         out / "generations.png")
    lines = ["# Active learning", "", f"Teacher: {teacher}.", f"Stopped: {stopped}.", "",
             "![generations](generations.png)", "",
             "| generation | train frames | explored | accurate | candidate | failed | added "
             "| trust window (eV/Å) | committee force MAE (meV/Å) | wall (min) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        mae = [m for m in s["committee_test_force_mae_meV_per_A"] if m is not None]
        lines.append(
            f"| {s['generation']} | {s['n_train_frames']} | {s['n_explored']} | "
            f"{s['accurate_share']:.2f} | {s['candidate_share']:.2f} | "
            f"{s['failed_share']:.2f} | {s['frames_added']} | "
            f"{s['trust_lo_eV_per_A']:.3f}–{s['trust_hi_eV_per_A']:.3f} | "
            f"{np.mean(mae):.1f} | {sum(s.get('wall_s', {}).values()) / 60:.1f} |"
            if mae else f"| {s['generation']} | – |")
    for s in summaries:
        lines += ["", f"## Generation {s['generation']}: walkers", "",
                  "| walker | status | candidates | density | stop reason |",
                  "|---|---|---|---|---|"]
        lines += [_walker_line(n, w) for n, w in s["walkers"].items()]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report, figure
