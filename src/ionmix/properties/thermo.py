"""Thermodynamic fits: density vs temperature, dρ/dT and the thermal expansion α_P."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DensityFit:
    """ρ(T) = intercept + slope · T (weighted least squares on block errors).

    Attributes:
        slope_g_cm3_per_K, slope_err: dρ/dT (g cm⁻³ K⁻¹) and its standard error.
        intercept_g_cm3: ρ at 0 K of the straight line (g/cm³; a fit parameter only).
        reference_temperature_K: T where α_P is reported (default: the mean temperature).
        alpha_P_per_K, alpha_P_err: thermal expansion α_P = −(1/ρ) dρ/dT at that T (K⁻¹).
        chi2_per_dof: reduced χ² of the line (≫ 1: not linear within the errors, or errors
            underestimated); None with two temperatures or an unweighted fit.
    """

    slope_g_cm3_per_K: float
    slope_err: float
    intercept_g_cm3: float
    reference_temperature_K: float
    density_at_reference_g_cm3: float
    alpha_P_per_K: float
    alpha_P_err: float
    chi2_per_dof: float | None
    n_points: int

    def density_g_cm3(self, temperature_K):
        return self.intercept_g_cm3 + self.slope_g_cm3_per_K * np.asarray(temperature_K, float)


def fit_density_vs_temperature(temperature_K, density_g_cm3, density_err_g_cm3=None,
                               reference_temperature_K: float | None = None) -> DensityFit:
    """Straight-line fit of ρ(T) and the thermal expansion coefficient α_P at T_ref.

    Args:
        temperature_K, density_g_cm3: shape (n,), n ≥ 2 distinct temperatures.
        density_err_g_cm3: shape (n,) standard errors (weights; absolute). If None or any
            is zero, the fit is unweighted and errors come from the residuals (n ≥ 3).
    """
    t = np.asarray(temperature_K, dtype=float)
    rho = np.asarray(density_g_cm3, dtype=float)
    if t.size < 2 or len(set(t.tolist())) < t.size:
        raise ValueError(f"need at least 2 distinct temperatures, got {t.tolist()}")
    x = np.column_stack([np.ones_like(t), t])
    err = None if density_err_g_cm3 is None else np.asarray(density_err_g_cm3, dtype=float)
    if err is not None and np.all(err > 0):
        w = 1.0 / err**2
        cov = np.linalg.inv(x.T @ (x * w[:, None]))
        params = cov @ (x.T @ (w * rho))
        resid = (rho - x @ params) / err
        chi2 = float(resid @ resid / (t.size - 2)) if t.size > 2 else None
    else:
        if t.size < 3:
            raise ValueError("an unweighted fit needs at least 3 temperatures for an error")
        params, *_ = np.linalg.lstsq(x, rho, rcond=None)
        resid = rho - x @ params
        s2 = float(resid @ resid / (t.size - 2))
        cov = s2 * np.linalg.inv(x.T @ x)
        chi2 = None
    t_ref = float(np.mean(t)) if reference_temperature_K is None else float(reference_temperature_K)
    a, b = float(params[0]), float(params[1])
    rho_ref = a + b * t_ref
    alpha = -b / rho_ref
    # α = −b / (a + b T): gradient with respect to (a, b)
    grad = np.array([b / rho_ref**2, -1.0 / rho_ref + b * t_ref / rho_ref**2])
    alpha_err = float(np.sqrt(max(grad @ cov @ grad, 0.0)))
    return DensityFit(b, float(np.sqrt(cov[1, 1])), a, t_ref, rho_ref, alpha, alpha_err, chi2,
                      int(t.size))


@dataclass(frozen=True)
class TrajectorySummary:
    """What a trajectory holds and its density (`trajectory_summary`).

    Attributes (units in the names):
        source: the trajectory file.
        n_frames, time_ps: frames and the time they span (None without times).
        molecules: ion name → count.
        mass_amu: the box's mass.
        density_g_cm3, density_err_g_cm3: mean and standard error of the production part
            (`ionmix.stats.series_summary`: equilibration detected, correlation counted).
        equilibration_index, drift_sigma: frames discarded, and the drift between halves.
        cell_lengths_A: mean box lengths.
        varying_cell: whether the box changes (NPT).
    """

    source: str
    n_frames: int
    time_ps: float | None
    molecules: dict[str, int]
    mass_amu: float
    density_g_cm3: float
    density_err_g_cm3: float
    equilibration_index: int
    drift_sigma: float
    cell_lengths_A: list[float]
    varying_cell: bool

    def to_json(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def trajectory_summary(path, molecules: str | None = None, topology=None) -> TrajectorySummary:
    """Density and composition of any trajectory a property command reads (an `ionmix md`
    run, an extxyz file, or a LAMMPS/GROMACS file with its `topology`,
    `ionmix.properties.foreign.Topology`)."""
    from ionmix.chemistry.topology import molecules_of
    from ionmix.properties.transport import read_trajectory, trajectory_path
    from ionmix.stats import series_summary
    from ionmix.units import density_g_per_cm3

    path = trajectory_path(path)
    frames = read_trajectory(path, molecules, topology)
    mass_amu = float(frames[0].get_masses().sum())
    volumes = np.array([f.get_volume() for f in frames])
    rho = np.array([density_g_per_cm3(mass_amu, v) for v in volumes])
    varying = bool(np.ptp(volumes) > 1e-9 * volumes.mean())
    # a fixed box (NVT, NVE) has one density: nothing to average
    density = series_summary(rho) if varying else {
        "mean": rho[0], "err": 0.0, "equilibration_index": 0, "drift_sigma": 0.0}
    counts: dict[str, int] = {}
    for name, count in molecules_of(frames[0]):
        counts[name] = counts.get(name, 0) + int(count)
    times = [f.info.get("time_ps") for f in frames]
    return TrajectorySummary(
        source=str(path), n_frames=len(frames),
        time_ps=None if None in times else float(times[-1] - times[0]), molecules=counts,
        mass_amu=mass_amu, density_g_cm3=float(density["mean"]),
        density_err_g_cm3=float(density["err"]),
        equilibration_index=int(density["equilibration_index"]),
        drift_sigma=float(density["drift_sigma"]),
        cell_lengths_A=[float(x) for x in np.mean([f.cell.lengths() for f in frames], 0)],
        varying_cell=varying)
