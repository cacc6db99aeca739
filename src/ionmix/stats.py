"""Statistics of MD time series: averages with honest error bars, equilibration, drift.

Every average ionmix reports follows one rule (`series_summary`):

1. **Equilibration** is detected automatically (Chodera, J. Chem. Theory Comput. 2016, 12,
   1799; pymbar's ``timeseries.detect_equilibration``): the start t0 that maximises the
   number of effectively uncorrelated samples after it. A user may ask for a minimum
   discarded share; t0 is never more than half the run, so a run that is still drifting
   keeps a production part long enough for the drift check to see it.
2. **Error bar**: the statistical inefficiency g (= 1 + 2τ, τ the integrated correlation
   time in samples; pymbar's ``timeseries.statistical_inefficiency``) of the production
   part gives the standard error of the mean, std · sqrt(g / N), and N / g effective
   samples.
3. **Drift check**: the means of the two halves of the production part, each with its own
   error (from its fluctuations about a fitted line, and their g), must agree;
   ``drift_sigma`` is their difference in units of the combined error. Above ~3 the
   series is still equilibrating (or drifting): its mean is not an equilibrium average,
   and callers list such runs.

Block averaging (Flyvbjerg & Petersen, J. Chem. Phys. 1989, 91, 461) stays available as
`block_average`, an independent cross-check of the same error bar.
"""

from __future__ import annotations

import logging

import numpy as np

from ionmix.errors import InputError


class InsufficientDataError(InputError):
    """A series too short for the requested statistics; the message says what to run."""


#: Fewest production samples `series_summary` accepts (g needs a few lags to be estimated).
MIN_PRODUCTION_SAMPLES = 10
#: Default minimum share of each run discarded as equilibration; the automatic detection
#: usually discards more.
EQUILIBRATION_FRACTION = 0.0
#: The detected equilibration is capped at this share of the run (see module docstring).
MAX_EQUILIBRATION_FRACTION = 0.5


def _timeseries():
    """pymbar.timeseries, imported quietly: pymbar logs a generic caveat and a note about
    JAX at import, which would land in every user's terminal."""
    pymbar_logger = logging.getLogger("pymbar")
    level = pymbar_logger.level
    pymbar_logger.setLevel(logging.ERROR)
    try:
        from pymbar import timeseries
    finally:
        pymbar_logger.setLevel(level)
    return timeseries


def _as_series(series) -> np.ndarray:
    x = np.asarray(series, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"series must be 1-D, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("series contains NaN or infinite values")
    return x


def block_average(series, n_blocks: int = 5) -> tuple[float, float]:
    """Mean and block standard error of a 1-D series (any units; same units returned).

    Args:
        series: shape (n_samples,), n_samples ≥ n_blocks ≥ 2. Trailing samples that do
            not fill a block are dropped from the error estimate only.
        n_blocks: number of contiguous blocks.
    """
    x = np.asarray(series, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"series must be 1-D, got shape {x.shape}")
    if n_blocks < 2 or x.size < n_blocks:
        raise ValueError(f"need at least n_blocks ≥ 2 samples; got {x.size} for {n_blocks}")
    size = x.size // n_blocks
    means = x[: size * n_blocks].reshape(n_blocks, size).mean(axis=1)
    return float(x.mean()), float(means.std(ddof=1) / np.sqrt(n_blocks))


# --------------------------------------------------------------------------------------
# Correlation, equilibration, drift


def statistical_inefficiency(series) -> float:
    """Statistical inefficiency g ≥ 1 of a 1-D series (pymbar): the number of samples per
    independent sample. A constant series (no fluctuation to correlate) gives 1.

    Args:
        series: shape (n_samples,), n_samples ≥ 2.
    """
    x = _as_series(series)
    if x.size < 2 or np.ptp(x) == 0.0:
        return 1.0
    return float(_timeseries().statistical_inefficiency(x))


def mean_and_error(series) -> tuple[float, float, float]:
    """Mean, standard error std·sqrt(g/N) and g of a stationary 1-D series (same units)."""
    x = _as_series(series)
    g = statistical_inefficiency(x)
    err = float(x.std(ddof=1) * np.sqrt(g / x.size)) if x.size > 1 else 0.0
    return float(x.mean()), err, g


def detect_equilibration(series, min_fraction: float = EQUILIBRATION_FRACTION) -> int:
    """Index t0 where the production part starts (samples before it are equilibration).

    pymbar's automatic detection (maximum number of uncorrelated samples after t0), but at
    least ``min_fraction`` and at most `MAX_EQUILIBRATION_FRACTION` of the series, so a
    still-drifting run keeps half its samples for `drift_sigma` to judge.
    """
    x = _as_series(series)
    if not 0.0 <= min_fraction <= MAX_EQUILIBRATION_FRACTION:
        raise InputError(f"equilibration_fraction must be in [0, {MAX_EQUILIBRATION_FRACTION}]"
                         f", got {min_fraction}")
    lo = int(np.floor(min_fraction * x.size))
    hi = int(np.floor(MAX_EQUILIBRATION_FRACTION * x.size))
    if x.size < 3 or np.ptp(x) == 0.0:
        return lo
    # try every ~1 % of the series as t0: the optimum is broad, and this keeps the cost
    # at ~100 evaluations of g however long the run
    nskip = max(1, x.size // 100)
    t0 = int(_timeseries().detect_equilibration(x, fast=True, nskip=nskip)[0])
    return min(max(t0, lo), hi)


def _noise_error(x: np.ndarray) -> float:
    """Standard error of the mean of `x` from its fluctuations about a straight-line fit:
    a trend inside `x` would otherwise inflate both the variance and g, and hide itself."""
    t = np.arange(x.size, dtype=float)
    resid = x - np.polyval(np.polyfit(t, x, 1), t)
    g = statistical_inefficiency(resid)
    return float(resid.std(ddof=2) * np.sqrt(g / x.size))


def _halves(x: np.ndarray) -> tuple[float, float]:
    """mean(second half) − mean(first half) and its standard error (see `drift_sigma`)."""
    half = x.size // 2
    diff = float(x[half:].mean() - x[:half].mean())
    return diff, float(np.hypot(_noise_error(x[:half]), _noise_error(x[half:])))


def drift_sigma(series) -> float:
    """|mean(second half) − mean(first half)| in units of their combined standard error
    (each half's error from its own fluctuations and statistical inefficiency, about a
    line fitted to that half, so that a drift cannot pass for noise).

    Values above ~3 say the series is still equilibrating (or drifting): its mean is not
    an equilibrium average. Returns 0 for a series too short to split (< 8 samples).
    """
    x = _as_series(series)
    if x.size // 2 < 4:
        return 0.0
    diff, err = _halves(x)
    return float(abs(diff) / err) if err > 0 else (0.0 if diff == 0 else float("inf"))


def production_part(series, equilibration_fraction: float = EQUILIBRATION_FRACTION):
    """The production part of a time series: everything from `detect_equilibration`'s t0
    (automatic, at least ``equilibration_fraction`` of the samples)."""
    x = _as_series(series)
    return x[detect_equilibration(x, equilibration_fraction):]


def series_summary(values, equilibration_fraction: float = EQUILIBRATION_FRACTION,
                   start: int | None = None) -> dict:
    """The average ionmix reports for a time series (the rule in the module docstring).

    Args:
        values: shape (n_samples,), equally spaced in time (any units).
        equilibration_fraction: minimum share discarded as equilibration (default 0: the
            detection alone decides).
        start: production starts at this index instead of the detected one (to average
            several quantities of one run over the same window).

    Returns: ``mean`` and ``err`` (standard error; units of `values`), ``n_samples``
    (production samples), ``equilibration_index`` (t0: samples discarded),
    ``statistical_inefficiency`` (g, samples), ``n_effective`` (N/g) and ``drift_sigma``.
    """
    x = _as_series(values)
    t0 = detect_equilibration(x, equilibration_fraction) if start is None else int(start)
    prod = x[t0:]
    if prod.size < MIN_PRODUCTION_SAMPLES:
        raise InsufficientDataError(
            f"only {prod.size} production samples after discarding {t0} as equilibration; "
            f"run longer or log more often (need ≥ {MIN_PRODUCTION_SAMPLES})")
    mean, err, g = mean_and_error(prod)
    return {"mean": mean, "err": err, "n_samples": int(prod.size),
            "equilibration_index": int(t0), "statistical_inefficiency": g,
            "n_effective": float(prod.size / g), "drift_sigma": drift_sigma(prod)}


# --------------------------------------------------------------------------------------
# Has a box settled?

#: Fewest samples before `plateau_check` judges a series (g and t0 need some length).
MIN_PLATEAU_SAMPLES = 20
#: A settled series' production halves agree within this many combined errors.
PLATEAU_MAX_DRIFT_SIGMA = 2.0


def plateau_check(series, max_drift_sigma: float = PLATEAU_MAX_DRIFT_SIGMA) -> dict:
    """Has a series (e.g. an NPT density or volume) reached a plateau?

    Settled when the detected transient ends in the first half of the series (t0 below the
    cap of `detect_equilibration`) and the two halves of the rest agree within
    ``max_drift_sigma`` combined errors. A series shorter than `MIN_PLATEAU_SAMPLES` is
    never settled. No test on a window can see a relaxation much slower than the window
    (in ionic liquids, hundreds of ps): a minimum window length is the guard against that.

    Returns: ``settled`` (bool), ``equilibration_index`` (t0), ``drift_sigma``, ``mean``
    (of the part after t0, units of `series`).
    """
    x = _as_series(series)
    if x.size < MIN_PLATEAU_SAMPLES:
        t0 = x.size // 2
        return {"settled": False, "equilibration_index": t0, "drift_sigma": None,
                "mean": float(x[t0:].mean()) if x.size else float("nan")}
    t0 = detect_equilibration(x)
    drift = drift_sigma(x[t0:])
    settled = (t0 < int(np.floor(MAX_EQUILIBRATION_FRACTION * x.size))
               and drift <= max_drift_sigma)
    return {"settled": bool(settled), "equilibration_index": int(t0), "drift_sigma": drift,
            "mean": float(x[t0:].mean())}
