"""Averages, error bars, equilibration detection and the plateau check on synthetic series
whose answers are known: AR(1) noise x[i] = φ x[i−1] + ε[i] has statistical inefficiency
g = (1 + φ)/(1 − φ) and mean 0."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from ionmix import stats as S


def ar1(phi: float, n: int, seed: int) -> np.ndarray:
    """Stationary AR(1) series, shape (n,), unit innovations, started in equilibrium."""
    rng = np.random.default_rng(seed)
    eps = rng.normal(size=n)
    eps[0] /= np.sqrt(1 - phi**2)  # x[0] from the stationary distribution
    return lfilter([1.0], [1.0, -phi], eps)


def g_true(phi: float) -> float:
    return (1 + phi) / (1 - phi)


def test_statistical_inefficiency_of_known_correlated_series():
    # one long series: g within 20 % (the estimator's spread at n/g ≈ 1000 is ~5 %)
    assert S.statistical_inefficiency(ar1(0.9, 20000, seed=1)) == pytest.approx(19.0, rel=0.2)
    # many short ones: the typical estimate is within 20 % (pymbar truncates the
    # correlation function at its first zero, so it is biased slightly low)
    gs = [S.statistical_inefficiency(ar1(0.8, 1000, seed)) for seed in range(50)]
    assert np.median(gs) == pytest.approx(g_true(0.8), rel=0.2)
    assert S.statistical_inefficiency(np.ones(50)) == 1.0


def test_error_bar_covers_true_mean_at_the_1_sigma_rate():
    """200 independent AR(1) series (φ = 0.8, g = 9), through the full reporting rule
    (automatic equilibration detection included): |mean| ≤ err for ~68 % of them. The
    naive std/sqrt(N) would cover only ~26 %; an error 2× too large, ~95 %."""
    covered, naive = 0, 0
    for seed in range(200):
        x = ar1(0.8, 1000, seed)
        s = S.series_summary(x)
        covered += abs(s["mean"]) <= s["err"]
        naive += abs(x.mean()) <= x.std() / np.sqrt(x.size)
        assert s["n_effective"] == pytest.approx(s["n_samples"] / s["statistical_inefficiency"])
    assert 0.60 <= covered / 200 <= 0.76
    assert naive / 200 < 0.4  # the test would catch an error bar without g


@pytest.mark.parametrize("seed", range(4))
def test_equilibration_detection_skips_an_exponential_transient(seed):
    """A transient 20·exp(−t/100) on AR(1) noise (sd 1.7, g = 9): the production part
    starts after it has decayed into the noise, so its mean is unbiased within the error;
    the mean of the whole series (biased by ~1) is not."""
    t = np.arange(2000)
    x = 20 * np.exp(-t / 100) + ar1(0.8, 2000, seed)
    s = S.series_summary(x)
    assert 150 <= s["equilibration_index"] <= 1000
    assert abs(s["mean"]) < 3 * s["err"]
    assert abs(x.mean()) > 5 * s["err"]
    assert s["drift_sigma"] < 3


def test_minimum_discard_and_short_series():
    x = ar1(0.5, 400, seed=3)
    assert S.series_summary(x, equilibration_fraction=0.3)["equilibration_index"] >= 120
    with pytest.raises(S.InsufficientDataError, match="run longer"):
        S.series_summary(x[:8])
    with pytest.raises(S.InputError, match="equilibration_fraction"):
        S.series_summary(x, equilibration_fraction=0.8)
    flat = S.series_summary(np.full(30, 1.25))
    assert flat["mean"] == 1.25 and flat["err"] == 0.0 and flat["drift_sigma"] == 0.0


def test_plateau_check_stops_on_a_plateau_and_continues_on_a_drift():
    """Density-like series (g/cm³, one sample per 0.1 ps, noise sd 0.007 with g = 19), 20
    seeds: a box that expands from 1.19 and settles at 1.30 with a 5-ps time constant,
    seen over 100 ps, has settled (a miss only costs another chunk of MD, so ≥ 80 % is
    asked); the same box over its first 10 ps, or a box drifting by 0.03 g/cm³ per
    100 ps, never has; 1 ps is too short to judge."""
    t = np.arange(1000)
    settled, early, drift = 0, 0, 0
    for seed in range(20):
        noise = 0.003 * ar1(0.9, 1000, seed)
        settling = 1.30 - 0.11 * np.exp(-t / 50) + noise
        check = S.plateau_check(settling)
        settled += check["settled"]
        if check["settled"]:
            assert check["mean"] == pytest.approx(1.30, abs=0.003)
        early += S.plateau_check(settling[:100])["settled"]
        drift += S.plateau_check(1.30 + 0.0003 * (t / 10) + noise)["settled"]
        assert not S.plateau_check(settling[-10:])["settled"]
    assert settled >= 16 and early == 0 and drift == 0


def test_drift_sigma_flags_a_linear_drift():
    t = np.arange(1000)
    x = ar1(0.8, 1000, seed=5)
    assert S.drift_sigma(x) < 3
    assert S.drift_sigma(x + 0.005 * t) > 3  # 5 units over the run, noise sd 1.7
