"""Property studies on Lennard-Jones argon (cheap, real dynamics): ρ(T), the pressure ramp
with its Tait fit, validation against a teacher, and the errors raised before any work."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase.calculators.tip3p import TIP3P

from ionmix.md import MDError, MDSettings, run_md
from ionmix.properties.studies import compressibility_study, density_study
from ionmix.properties.validate import validate_trajectory
from test_md import argon, lj

FAST = MDSettings(timestep_fs=5.0, thermostat_time_steps=20, barostat_time_steps=40,
                  log_interval_steps=2, trajectory_interval_steps=20, n_steps=400)


def test_density_falls_with_temperature_and_resumes(tmp_path):
    result = density_study(argon(2), lj(), [30.0, 70.0], FAST, tmp_path)
    (cold, hot) = result["points"]
    assert hot["density_g_cm3"] < cold["density_g_cm3"] - 3 * np.hypot(
        hot["density_err_g_cm3"], cold["density_err_g_cm3"])
    fit = result["fit"]
    assert fit["slope_g_cm3_per_K"] == pytest.approx(
        (hot["density_g_cm3"] - cold["density_g_cm3"]) / 40.0)
    # solid argon expands by ~1e-3 K⁻¹ near its melting point; a shrinking or exploding
    # crystal would be far outside this range
    assert 1e-4 < fit["alpha_P_per_K"] < 1e-2
    assert json.loads((tmp_path / "density.json").read_text())["fit"] == fit
    assert (tmp_path / "density.png").stat().st_size > 0
    again = density_study(argon(2), lj(), [30.0, 70.0], FAST, tmp_path)  # nothing left to run
    assert again["points"] == result["points"]
    md = json.loads((tmp_path / "T_30K" / "md.json").read_text())
    assert md["settings"]["temperature_K"] == 30.0 and md["settings"]["ensemble"] == "npt"


def test_pressure_ramp_gives_consistent_compressibility(tmp_path):
    settings = FAST.model_copy(update={"temperature_K": 40.0, "n_steps": 300})
    result = compressibility_study(argon(2), lj(), settings, tmp_path,
                                   pressures_bar=[1.0, 1000.0, 2000.0, 3000.0, 4000.0],
                                   first_stage_steps=600)
    v = np.array([p["volume_A3"] for p in result["points"]])
    assert np.all(np.diff(v) < 0)
    # the barostat reached each target pressure
    for p in result["points"]:
        assert abs(p["measured_pressure_bar"] - p["pressure_bar"]) < \
            4 * p["measured_pressure_err_bar"] + 150.0
    # Tait κ_T at 1 bar against the secant of the first two points and the fluctuations
    secant = -(v[1] - v[0]) / (v[0] * 1000.0e5)
    kappa = result["kappa_T_per_Pa"]
    assert kappa == pytest.approx(secant, rel=0.5)
    fluct = result["kappa_T_fluctuation_per_Pa"]
    err = np.hypot(result["kappa_T_fluctuation_err_per_Pa"], result["kappa_T_err_per_Pa"])
    # two independent estimates of the same κ_T (fluctuations at 1 bar; the V(P) curve)
    assert abs(fluct - kappa) < 3 * err
    table = (tmp_path / "pv.csv").read_text().splitlines()
    assert table[0].startswith("pressure_bar,volume_A3") and len(table) == 6
    # stage k starts where stage k-1 ended
    end0 = ase.io.read(tmp_path / "stage00_P_1bar" / "trajectory.extxyz", -1)
    start1 = ase.io.read(tmp_path / "stage01_P_1000bar" / "trajectory.extxyz", 0)
    np.testing.assert_allclose(start1.positions, end0.positions, atol=1e-8)


def test_validate_against_a_teacher(tmp_path):
    run_md(argon(2), lj(), FAST.model_copy(update={"ensemble": "nvt", "n_steps": 100}),
           tmp_path / "run")
    from ase.calculators.lj import LennardJones

    teacher = LennardJones(sigma=3.45, epsilon=0.0110, rc=7.0, smooth=True)
    result = validate_trajectory(tmp_path / "run", teacher, tmp_path / "val", n_frames=3)
    frames = {f.info["step"]: f for f in ase.io.read(tmp_path / "run" / "trajectory.extxyz", ":")}
    steps = [r["step"] for r in result["frames"]]
    assert steps[0] == 0 and steps[-1] == 100 and len(steps) == 3  # first, middle, last
    picked = [frames[k] for k in steps]
    df, de = [], []
    for f in picked:
        a = f.copy()
        a.calc = teacher
        df.append(f.get_forces() - a.get_forces())
        de.append((f.get_potential_energy() - a.get_potential_energy()) / len(f))
    assert result["n_frames"] == 3
    assert result["force_mae_meV_per_A"] == pytest.approx(1000 * np.mean(np.abs(df)), rel=1e-6)
    assert result["energy_mae_meV_per_atom"] == pytest.approx(1000 * np.mean(np.abs(de)),
                                                              rel=1e-6)
    assert result["force_mae_meV_per_A"] > 0
    assert set(result["force_by_element"]) == {"Ar"}
    assert (tmp_path / "val" / "validate.png").exists()
    # relabelling is resumable: the stored teacher labels are reused
    labels = (tmp_path / "val" / "teacher_labels.extxyz").read_text()
    again = validate_trajectory(tmp_path / "run", teacher, tmp_path / "val", n_frames=3)
    assert again["force_mae_meV_per_A"] == pytest.approx(result["force_mae_meV_per_A"], rel=1e-6)
    assert (tmp_path / "val" / "teacher_labels.extxyz").read_text() == labels


@pytest.mark.parametrize("temps, match", [
    ([], "at least one"), ([300.0, -5.0], "not physical"), ([300.0, 300.0], "repeat"),
    ([float("nan")], "not physical")])
def test_density_study_refuses_bad_temperatures(tmp_path, temps, match):
    with pytest.raises(MDError, match=match):
        density_study(argon(2), lj(), temps, FAST, tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("pressures, match", [
    ([1.0, 1000.0, 2000.0], "at least 4"), ([1.0, 2000.0, 1000.0, 3000.0], "increase"),
    ([1.0, 1e3, 2e3, 1e7], "not physical")])
def test_ramp_refuses_bad_pressures(tmp_path, pressures, match):
    with pytest.raises(MDError, match=match):
        compressibility_study(argon(2), lj(), FAST, tmp_path, pressures_bar=pressures)
    assert not any(tmp_path.iterdir())


def test_studies_need_stress(tmp_path):
    with pytest.raises(MDError, match="stress"):
        density_study(argon(2), TIP3P(), [300.0], FAST, tmp_path)
