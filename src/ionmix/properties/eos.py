"""Equation of state: the Tait equation fitted to V(P), and κ_T from volume fluctuations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ionmix.errors import InputError
from ionmix.units import A3_IN_M3, BOLTZMANN_J_PER_K


class EOSError(InputError):
    """A V(P) table that cannot be fitted; the message names the row or column at fault."""


@dataclass(frozen=True)
class TaitFit:
    """Tait equation V(P) = V0 · [1 − C · ln(1 + (P − P0)/B)] fitted to V(P).

    Attributes:
        reference_pressure_bar: P0 (bar), where V0 and κ_T are reported.
        V0_A3, B_bar, C: fitted parameters (Å³, bar, dimensionless) and their standard
            errors (`*_err`).
        kappa_T_per_Pa: isothermal compressibility at P0, κ_T = −(1/V)(∂V/∂P) = C/B,
            in Pa⁻¹, with its standard error from the fit covariance.
        residual_rms_A3: RMS of the volume residuals (Å³).
    """

    reference_pressure_bar: float
    V0_A3: float
    V0_A3_err: float
    B_bar: float
    B_bar_err: float
    C: float
    C_err: float
    kappa_T_per_Pa: float
    kappa_T_per_Pa_err: float
    residual_rms_A3: float
    n_points: int

    def volume_A3(self, pressure_bar):
        """Fitted V(P) (Å³) at pressures in bar (scalar or array)."""
        p = np.asarray(pressure_bar, dtype=float)
        return tait_volume(p, self.V0_A3, self.B_bar, self.C, self.reference_pressure_bar)


def tait_volume(pressure_bar, V0_A3: float, B_bar: float, C: float,
                reference_pressure_bar: float = 1.0):
    """V(P) of the Tait equation; pressures in bar, volume in the units of V0."""
    p = np.asarray(pressure_bar, dtype=float)
    return V0_A3 * (1.0 - C * np.log1p((p - reference_pressure_bar) / B_bar))


def fit_tait(pressure_bar, volume_A3, reference_pressure_bar: float | None = None) -> TaitFit:
    """Fit the Tait equation to a V(P) table (least squares, scipy's curve_fit).

    Args:
        pressure_bar: shape (n,), strictly increasing is not required but each pressure
            must be distinct; n ≥ 4 (three parameters and at least one degree of freedom).
        volume_A3: shape (n,), must decrease as pressure increases (a stable liquid).
        reference_pressure_bar: P0 (default: the lowest pressure in the table).

    Raises:
        EOSError: too few points, non-finite or non-positive volumes, repeated pressures,
            a volume that does not decrease with pressure (naming the rows), or a
            reference pressure outside the table.
    """
    from scipy.optimize import curve_fit

    p = np.asarray(pressure_bar, dtype=float)
    v = np.asarray(volume_A3, dtype=float)
    if p.ndim != 1 or p.shape != v.shape:
        raise EOSError(f"pressure and volume must be 1-D of equal length, got {p.shape} and "
                       f"{v.shape}")
    if p.size < 4:
        raise EOSError(f"the Tait fit needs at least 4 (pressure, volume) points, got {p.size}")
    bad = np.flatnonzero(~np.isfinite(p) | ~np.isfinite(v) | (v <= 0))
    if bad.size:
        raise EOSError(f"row {int(bad[0])}: pressure {p[bad[0]]} bar, volume {v[bad[0]]} Å³ "
                       "is not a finite pressure with a positive volume")
    order = np.argsort(p)
    p, v = p[order], v[order]
    if np.any(np.diff(p) == 0):
        i = int(np.flatnonzero(np.diff(p) == 0)[0])
        raise EOSError(f"pressure {p[i]} bar appears twice")
    rising = np.flatnonzero(np.diff(v) >= 0)
    if rising.size:
        i = int(rising[0])
        raise EOSError(
            f"volume does not decrease with pressure: {v[i]:.6g} Å³ at {p[i]:g} bar but "
            f"{v[i + 1]:.6g} Å³ at {p[i + 1]:g} bar (noisy MD means: run each pressure longer, "
            "or use fewer, wider-spaced pressures)")
    p0 = float(p[0]) if reference_pressure_bar is None else float(reference_pressure_bar)
    if not p[0] <= p0 <= p[-1]:
        # outside the data the Tait form is an extrapolation (below the table, 1 + (P−P0)/B
        # may even turn negative): the reference must be a measured pressure range
        raise EOSError(f"reference pressure {p0:g} bar (--reference-pressure-bar) is outside "
                       f"the table's pressures, {p[0]:g} to {p[-1]:g} bar")
    # Start from a linear fit: κ ≈ −slope/V, and the common C ≈ 0.0894 (Tait/Dymond).
    slope = np.polyfit(p, v, 1)[0]
    v0_guess = float(np.interp(p0, p, v))
    c_guess = 0.0894
    b_guess = max(c_guess * v0_guess / max(-slope, 1e-30), 1.0)
    params, cov = curve_fit(lambda x, v0, b, c: tait_volume(x, v0, b, c, p0), p, v,
                            p0=[v0_guess, b_guess, c_guess],
                            bounds=([0.0, max(p0 - p[0], 0.0) + 1e-3, 0.0], [np.inf, np.inf, 10.0]),
                            maxfev=20000)
    v0, b, c = (float(x) for x in params)
    err = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    # κ_T(P0) = C/B [bar⁻¹]; gradient (∂κ/∂B, ∂κ/∂C) = (−C/B², 1/B) for the error.
    grad = np.array([0.0, -c / b**2, 1.0 / b])
    kappa_err_bar = float(np.sqrt(max(grad @ cov @ grad, 0.0)))
    residual = v - tait_volume(p, v0, b, c, p0)
    bar_in_pa = 1e5
    return TaitFit(p0, v0, float(err[0]), b, float(err[1]), c, float(err[2]),
                   c / b / bar_in_pa, kappa_err_bar / bar_in_pa,
                   float(np.sqrt(np.mean(residual**2))), int(p.size))


def read_pv_table(path) -> tuple[np.ndarray, np.ndarray]:
    """Read a CSV with columns `pressure_bar` and `volume_A3` (header required)."""
    import csv
    from pathlib import Path

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise EOSError(f"cannot read {path}: {exc.strerror}") from None
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise EOSError(f"{path}: no rows (expected a header pressure_bar,volume_A3)")
    missing = {"pressure_bar", "volume_A3"} - set(rows[0])
    if missing:
        raise EOSError(f"{path}: missing column(s) {sorted(missing)}; found {list(rows[0])}")
    p, v = [], []
    for i, row in enumerate(rows, start=2):
        try:
            p.append(float(row["pressure_bar"]))
            v.append(float(row["volume_A3"]))
        except (TypeError, ValueError):
            raise EOSError(f"{path}: line {i} is not two numbers: {row}") from None
    return np.array(p), np.array(v)


def kappa_T_from_volume_fluctuations(volume_A3, temperature_K: float,
                                     n_blocks: int = 5) -> tuple[float, float]:
    """Isothermal compressibility κ_T = ⟨δV²⟩ / (k_B T ⟨V⟩) (Pa⁻¹) from an NPT volume series,
    with a jackknife error over contiguous blocks.

    Args:
        volume_A3: shape (n_samples,), equilibrated NPT volumes (Å³).
        temperature_K: the thermostat temperature (K).
    """
    v = np.asarray(volume_A3, dtype=float)
    if v.size < 2 * n_blocks:
        raise ValueError(f"need at least {2 * n_blocks} volumes for {n_blocks} blocks, "
                         f"got {v.size}")
    if temperature_K <= 0:
        raise ValueError(f"temperature must be positive, got {temperature_K} K")

    def kappa(x):
        return float(np.var(x) * A3_IN_M3 / (BOLTZMANN_J_PER_K * temperature_K * np.mean(x)))

    size = v.size // n_blocks
    blocks = v[: size * n_blocks].reshape(n_blocks, size)
    leave_one_out = np.array([kappa(np.delete(blocks, i, axis=0).ravel())
                              for i in range(n_blocks)])
    err = np.sqrt((n_blocks - 1) / n_blocks * np.sum((leave_one_out - leave_one_out.mean())**2))
    return kappa(v), float(err)
