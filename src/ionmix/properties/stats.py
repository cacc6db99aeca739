"""Statistics of MD time series: averages with honest error bars, equilibration, drift.

Block averaging (Flyvbjerg & Petersen, J. Chem. Phys. 1989, 91, 461): a correlated series
is cut into `n_blocks` contiguous blocks; the standard error of the mean is the standard
deviation of the block means over sqrt(n_blocks − 1). Blocks longer than the correlation
time make the block means independent, so the estimate is honest where the naive
std/sqrt(n) is not.
"""

from __future__ import annotations

import numpy as np

from ionmix.errors import InputError


class InsufficientDataError(InputError):
    """A series too short for the requested statistics; the message says what to run."""


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
# Equilibration, drift and fluctuation estimates

#: Default share of each run discarded as equilibration (see `production_part`).
EQUILIBRATION_FRACTION = 0.25


def production_part(series, equilibration_fraction: float = EQUILIBRATION_FRACTION):
    """The production part of a time series: everything after the first
    ``equilibration_fraction`` of the samples.

    The rule is deliberately simple and stated: ionmix discards a fixed leading share of
    every run (25 % by default) and then *checks* that what is left is stationary with
    `drift_sigma`; a drift of more than 3 block errors is reported, never silently used.
    """
    x = np.asarray(series, dtype=float)
    if not 0.0 <= equilibration_fraction < 1.0:
        raise ValueError(f"equilibration_fraction must be in [0, 1), got {equilibration_fraction}")
    return x[int(np.floor(equilibration_fraction * x.size)):]


def drift_sigma(series, n_blocks: int = 5) -> float:
    """|mean(second half) − mean(first half)| in units of their combined block error.

    Values above ~3 say the series is still equilibrating (or drifting): its mean is not
    an equilibrium average. Returns 0 for a series too short to split into blocks.
    """
    x = np.asarray(series, dtype=float)
    half = x.size // 2
    if half < n_blocks:
        return 0.0
    m1, e1 = block_average(x[:half], n_blocks)
    m2, e2 = block_average(x[half:], n_blocks)
    err = np.hypot(e1, e2)
    return float(abs(m2 - m1) / err) if err > 0 else (0.0 if m1 == m2 else float("inf"))


def series_summary(values, n_blocks: int, equilibration_fraction: float) -> dict:
    prod = production_part(values, equilibration_fraction)
    if prod.size < 2 * n_blocks:
        raise InsufficientDataError(f"only {prod.size} production samples after discarding "
                      f"{equilibration_fraction:.0%}; run longer or log more often "
                      f"(need ≥ {2 * n_blocks})")
    mean, err = block_average(prod, n_blocks)
    return {"mean": mean, "err": err, "n_samples": int(prod.size),
            "drift_sigma": drift_sigma(prod, n_blocks)}
