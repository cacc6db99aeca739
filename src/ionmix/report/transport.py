"""Figures of the transport and structure analyses: MSD per species with the fit window,
and RDFs with running coordination numbers."""

from __future__ import annotations

import numpy as np

from ionmix.report.figure import plt


def plot_msd(result):
    """Log-log MSD of each species' centres of mass (Å² vs ps), the fit window shaded and
    a slope-1 guide through its start; D ± error in the legend.

    Args:
        result: a `ionmix.properties.transport.TransportResult` (its ``curves``).
    """
    curves = result.curves
    lag = np.asarray(curves["lag_ps"])
    fig, ax = plt.subplots(figsize=(4.8, 3.6), constrained_layout=True)
    lo, hi = curves["window_ps"]
    ax.axvspan(lo, hi, color="0.9", label="fit window")
    for k, (name, msd) in enumerate(curves["msd_A2"].items()):
        msd = np.asarray(msd)
        d = result.diffusion_cm2_per_s[name]
        flag = "" if d["diffusive"] else " (not diffusive)"
        ax.loglog(lag[1:], msd[1:], color=f"C{k}",
                  label=f"{name}: D = {d['value'] * 1e7:.2f} ± {d['error'] * 1e7:.2f} "
                        f"×10⁻⁷ cm²/s{flag}")
        i_lo = int(np.searchsorted(lag, lo))
        guide = msd[i_lo] * lag[i_lo:] / lag[i_lo]
        ax.loglog(lag[i_lo:], guide, ":", color=f"C{k}", lw=0.8)
    ax.set_xlabel("lag time (ps)")
    ax.set_ylabel("centre-of-mass MSD (Å²)")
    ax.set_title(f"{result.temperature_K:g} K, {result.run_length_ps:g} ps; dotted: slope 1",
                 fontsize=8)
    ax.legend(fontsize=6)
    return fig


def plot_rdf(result):
    """g(r) of every pair (left axis) and its running coordination number (right axis),
    the first-shell radius marked.

    Args:
        result: a `ionmix.properties.structure.StructureResult`.
    """
    fig, ax = plt.subplots(figsize=(4.8, 3.6), constrained_layout=True)
    ax2 = ax.twinx()
    for k, (name, pair) in enumerate(result.pairs.items()):
        r = np.asarray(pair["r_A"])
        ax.plot(r, pair["g"], color=f"C{k}", label=name)
        ax2.plot(r, pair["coordination"], "--", color=f"C{k}", lw=0.8)
        if pair["first_shell_A"] is not None:
            ax.axvline(pair["first_shell_A"], color=f"C{k}", lw=0.6, ls=":")
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("g(r)")
    ax2.set_ylabel("running coordination number (dashed)")
    ax.legend(fontsize=7)
    return fig
