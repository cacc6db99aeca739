"""Unit conversions against hand calculations."""

from __future__ import annotations

import pytest

from ionmix import units


def test_kj_per_mol_to_ev():
    # 1 kJ/mol = 1000 J / 6.02214076e23 / 1.602176634e-19 J/eV = 0.0103642688 eV
    assert units.kj_per_mol_to_ev(1.0) == pytest.approx(1000 / 6.02214076e23 / 1.602176634e-19,
                                                        rel=1e-6)
    assert units.KCAL_PER_MOL_IN_EV == pytest.approx(4.184 * units.KJ_PER_MOL_IN_EV, rel=1e-6)


def test_force_conversion():
    # 1 kJ/(mol nm) = 0.0103642688 eV / 10 Å
    assert units.kj_per_mol_nm_to_ev_per_angstrom(1.0) == pytest.approx(0.00103642688, rel=1e-6)


def test_pressure_conversion():
    # 1 bar = 1e5 Pa = 1e5 J/m³ = 1e5 / 1.602176634e-19 eV / 1e30 Å³
    assert units.bar_to_ev_per_a3(1.0) == pytest.approx(1e5 / 1.602176634e-19 / 1e30, rel=1e-6)
    assert units.ev_per_a3_to_bar(units.bar_to_ev_per_a3(1234.5)) == pytest.approx(1234.5)
    assert units.EV_PER_A3_IN_PA == pytest.approx(160.21766e9, rel=1e-6)


def test_density():
    # One water molecule (18.015 amu) in 29.9 Å³ ≈ 1.0005 g/cm³ by hand:
    # 18.015 / 6.02214076e23 g / 29.9e-24 cm³
    rho = units.density_g_per_cm3(18.015, 29.9)
    assert rho == pytest.approx(18.015 / 6.02214076e23 / 29.9e-24, rel=1e-6)
    assert units.volume_A3_for_density(18.015, rho) == pytest.approx(29.9)
    with pytest.raises(ValueError, match="volume"):
        units.density_g_per_cm3(1.0, 0.0)


def test_block_average_on_known_correlated_series():
    import numpy as np

    from ionmix.stats import block_average

    # AR(1) with phi = 0.9: the true standard error of the mean of n samples is
    # sigma_x * sqrt((1 + phi) / (1 - phi) / n); the naive one is sqrt(19) ≈ 4.4× too small.
    rng = np.random.default_rng(0)
    phi, n = 0.9, 20000
    noise = rng.normal(size=n)
    x = np.empty(n)
    x[0] = noise[0] / np.sqrt(1 - phi**2)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + noise[i]
    sigma_x = 1 / np.sqrt(1 - phi**2)
    true_se = sigma_x * np.sqrt((1 + phi) / (1 - phi) / n)
    mean, se = block_average(x, n_blocks=10)
    assert abs(mean) < 4 * true_se
    assert 0.5 * true_se < se < 1.6 * true_se
    assert se > 2.5 * x.std() / np.sqrt(n)
    with pytest.raises(ValueError, match="n_blocks"):
        block_average([1.0], 5)


def test_tait_fit_recovers_known_compressibility():
    import numpy as np

    from ionmix.properties.eos import fit_tait, tait_volume

    # The paper's ramp: 1 bar, then +1 kbar steps, 18 of them. Tait parameters of a typical
    # IL: V0 = 10000 Å³, C = 0.0894, B = 1100 bar → κ_T = C/B = 8.13e-10 Pa⁻¹.
    rng = np.random.default_rng(42)
    p = np.concatenate([[1.0], 1.0 + 1000.0 * np.arange(1, 19)])
    v = tait_volume(p, 10000.0, 1100.0, 0.0894, 1.0) + rng.normal(0, 5.0, p.size)
    fit = fit_tait(p, v)
    true_kappa = 0.0894 / 1100.0 / 1e5
    assert fit.kappa_T_per_Pa_err > 0
    assert abs(fit.kappa_T_per_Pa - true_kappa) < 2 * fit.kappa_T_per_Pa_err
    assert fit.kappa_T_per_Pa_err < 0.2 * true_kappa
    assert fit.residual_rms_A3 < 10


@pytest.mark.parametrize("p, v, match", [
    ([1, 1000, 2000], [10, 9.9, 9.8], "at least 4"),
    ([1, 1000, 2000, 3000], [10, 9.9, 9.95, 9.8], "does not decrease"),
    ([1, 1000, 1000, 3000], [10, 9.9, 9.8, 9.7], "appears twice"),
    ([1, 1000, 2000, 3000], [10, float("nan"), 9.8, 9.7], "row 1"),
])
def test_tait_fit_bad_tables(p, v, match):
    from ionmix.properties.eos import EOSError, fit_tait

    with pytest.raises(EOSError, match=match):
        fit_tait(p, v)
