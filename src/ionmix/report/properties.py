"""Figures of the property studies: ρ(T), V(P) with the Tait fit, and the paper's
Figure 2c–e (force parity per element, energy along the trajectory, energy parity)."""

from __future__ import annotations

import numpy as np

from ionmix.report.figure import plt


def plot_density(result: dict, teacher: dict | None = None, experiment: dict | None = None):
    """ρ(T) with block errors and the fitted line; teacher and experiment on the same axes."""
    fig, ax = plt.subplots(figsize=(4.8, 3.6), constrained_layout=True)

    def series(data, label, color, marker):
        t = np.array([p["temperature_K"] for p in data["points"]])
        rho = np.array([p["density_g_cm3"] for p in data["points"]])
        err = np.array([p["density_err_g_cm3"] for p in data["points"]])
        ax.errorbar(t, rho, yerr=err, fmt=marker, color=color, capsize=3, label=label)
        if "fit" in data:
            fit = data["fit"]
            tt = np.linspace(t.min(), t.max(), 50)
            ax.plot(tt, fit["intercept_g_cm3"] + fit["slope_g_cm3_per_K"] * tt, "-",
                    color=color, lw=1,
                    label=f"  α_P = {fit['alpha_P_per_K'] * 1e4:.2f} ± "
                          f"{fit['alpha_P_err'] * 1e4:.2f} ×10⁻⁴ K⁻¹")

    series(result, result.get("label", "model"), "C0", "o")
    if teacher is not None:
        series(teacher, f"teacher: {teacher.get('label', '')}".rstrip(": "), "C3", "s")
    if experiment is not None:
        ax.plot(experiment["temperature_K"], experiment["density_g_cm3"], "k^",
                label="experiment")
    ax.set_xlabel("temperature (K)")
    ax.set_ylabel("density (g cm⁻³)")
    ax.legend(fontsize=7)
    return fig


def plot_compressibility(result: dict, tait_curve: tuple[np.ndarray, np.ndarray]):
    """Mean volume vs pressure with block errors and the Tait curve (pressures in bar,
    volumes in Å³); κ_T in the legend."""
    fig, ax = plt.subplots(figsize=(4.8, 3.6), constrained_layout=True)
    p = np.array([r["pressure_bar"] for r in result["points"]])
    v = np.array([r["volume_A3"] for r in result["points"]])
    err = np.array([r["volume_err_A3"] for r in result["points"]])
    ax.errorbar(p / 1000.0, v, yerr=err, fmt="o", capsize=3, label="NPT mean volume")
    pp, vv = tait_curve
    ax.plot(np.asarray(pp) / 1000.0, vv, "-", color="C1",
            label=f"Tait: κ_T = {result['kappa_T_per_Pa'] * 1e10:.2f} ± "
                  f"{result['kappa_T_err_per_Pa'] * 1e10:.2f} ×10⁻¹⁰ Pa⁻¹")
    ax.plot([], [], " ", label=f"fluctuations: κ_T = "
            f"{result['kappa_T_fluctuation_per_Pa'] * 1e10:.2f} ± "
            f"{result['kappa_T_fluctuation_err_per_Pa'] * 1e10:.2f} ×10⁻¹⁰ Pa⁻¹")
    ax.set_xlabel("pressure (kbar)")
    ax.set_ylabel("volume (Å³)")
    ax.set_title(f"{result['temperature_K']:g} K", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def plot_validation(result: dict, forces_model, forces_teacher, symbols):
    """Figure 2c–e: force parity per element (MAE in the legend), energy per atom of model
    and teacher along the trajectory, and energy parity; a panel with both configurational
    pressures along the trajectory when the result has them, and one with a classical
    teacher's energy terms along it (each from its first-frame value) when it has those.

    Args:
        forces_model, forces_teacher: shape (n_frames, n_atoms, 3), eV/Å.
        symbols: shape (n_atoms,), element of each atom.
    """
    pressures = "pressure_n_frames" in result
    terms = "teacher_term_change_meV_per_atom" in result
    n_panels = 3 + pressures + terms
    fig, axes = plt.subplots(1, n_panels, figsize=(4 * n_panels, 3.8), constrained_layout=True)
    ax = axes[0]
    for k, el in enumerate(sorted(set(symbols))):
        mask = np.asarray(symbols) == el
        x = np.asarray(forces_teacher)[:, mask, :].ravel()
        y = np.asarray(forces_model)[:, mask, :].ravel()
        mae = result["force_by_element"][el]["mae_meV_per_A"]
        ax.plot(x, y, ".", ms=2, alpha=0.5, color=f"C{k}", label=f"{el}: {mae:.0f} meV/Å")
    lim = np.abs(np.asarray(forces_teacher)).max() * 1.05
    ax.plot([-lim, lim], [-lim, lim], "k-", lw=0.7)
    ax.set_xlabel("teacher force (eV/Å)")
    ax.set_ylabel("model force (eV/Å)")
    ax.set_title("forces (MAE per element)", fontsize=9)
    ax.legend(fontsize=7, markerscale=4)

    frames = result["frames"]
    t = np.array([f["time_ps"] for f in frames])
    em = np.array([f["model_energy_eV_per_atom"] for f in frames]) * 1000.0
    et = np.array([f["teacher_energy_eV_per_atom"] for f in frames]) * 1000.0
    ax = axes[1]
    ax.plot(t, et, "s-", color="C3", label="teacher")
    ax.plot(t, em, "o-", color="C0", label="model")
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("energy (meV/atom)")
    ax.set_title(f"along the trajectory (MAE {result['energy_mae_meV_per_atom']:.2f} "
                 "meV/atom)", fontsize=9)
    ax.legend(fontsize=7)

    ax = axes[2]
    ax.plot(et, em, "o")
    lo, hi = min(et.min(), em.min()), max(et.max(), em.max())
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.7)
    ax.set_xlabel("teacher energy (meV/atom)")
    ax.set_ylabel("model energy (meV/atom)")
    ax.set_title(f"energy parity (offset {result['energy_mean_offset_meV_per_atom']:+.2f} "
                 "meV/atom)", fontsize=9)
    if pressures:
        _pressure_panel(axes[3], result)
    if terms:
        _terms_panel(axes[-1], result)
    return fig


def _terms_panel(ax, result: dict) -> None:
    """The classical teacher's main energy terms along the trajectory, each minus its value
    on the first frame (meV/atom): the degrees of freedom the model strains climb."""
    frames = result["frames"]
    t = [f["time_ps"] for f in frames]
    from ionmix.teachers.classical.terms import main_terms

    names = list(main_terms(frames[0]["teacher_terms_meV_per_atom"]))
    for k, name in enumerate(names):
        values = np.array([f["teacher_terms_meV_per_atom"][name] for f in frames])
        ax.plot(t, values - values[0], "o-", ms=3, color=f"C{k}", label=name)
    ax.axhline(0.0, color="k", lw=0.7)
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("teacher's term − first frame (meV/atom)")
    ax.set_title("the teacher's energy by term", fontsize=9)
    ax.legend(fontsize=7)


def _pressure_panel(ax, result: dict) -> None:
    """Model's and teacher's configurational pressure (bar) along the trajectory."""
    frames = [f for f in result["frames"] if "model_pressure_bar" in f]
    t = [f["time_ps"] for f in frames]
    ax.plot(t, [f["teacher_pressure_bar"] for f in frames], "s-", color="C3", label="teacher")
    ax.plot(t, [f["model_pressure_bar"] for f in frames], "o-", color="C0", label="model")
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("configurational pressure (bar)")
    ax.set_title(f"pressure: model − teacher {result['pressure_mean_difference_bar']:+.0f} ± "
                 f"{result['pressure_mean_difference_sem_bar']:.0f} bar", fontsize=9)
    ax.legend(fontsize=7)
