"""Property studies on Lennard-Jones argon (cheap, real dynamics): ρ(T), the pressure ramp
with its Tait fit, validation against a teacher, and the errors raised before any work."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase import units
from ase.calculators.tip3p import TIP3P

from ionmix.md import MDError, MDSettings, run_md
from ionmix.properties.studies import compressibility_study, density_study
from ionmix.properties.validate import validate_trajectory
from test_md import argon, lj

FAST = MDSettings(timestep_fs=5.0, thermostat_time_steps=20, barostat_time_steps=40,
                  log_interval_steps=2, trajectory_interval_steps=20, n_steps=400)


def test_density_falls_with_temperature_and_resumes(tmp_path):
    result = density_study(argon(2), lj(), [30.0, 70.0], FAST, tmp_path)
    (cold, hot) = result.points
    assert hot["density_g_cm3"] < cold["density_g_cm3"] - 3 * np.hypot(
        hot["density_err_g_cm3"], cold["density_err_g_cm3"])
    fit = result.fit
    assert fit["slope_g_cm3_per_K"] == pytest.approx(
        (hot["density_g_cm3"] - cold["density_g_cm3"]) / 40.0)
    # solid argon expands by ~1e-3 K⁻¹ near its melting point; a shrinking or exploding
    # crystal would be far outside this range
    assert 1e-4 < fit["alpha_P_per_K"] < 1e-2
    assert json.loads((tmp_path / "density.json").read_text())["fit"] == fit
    assert (tmp_path / "density.png").stat().st_size > 0
    from ionmix.report.properties import plot_density

    ax = plot_density(result.to_json()).axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("temperature (K)", "density (g cm⁻³)")
    points, line = ax.containers[0], ax.get_lines()[-1]      # errorbars, then the fit
    np.testing.assert_allclose(points.lines[0].get_xdata(), [30.0, 70.0])
    np.testing.assert_allclose(points.lines[0].get_ydata(),
                               [cold["density_g_cm3"], hot["density_g_cm3"]])
    np.testing.assert_allclose(np.polyfit(line.get_xdata(), line.get_ydata(), 1)[0],
                               fit["slope_g_cm3_per_K"])
    assert f"  α_P = {fit['alpha_P_per_K'] * 1e4:.2f} ± {fit['alpha_P_err'] * 1e4:.2f} ×10⁻⁴ K⁻¹" \
        in ax.get_legend_handles_labels()[1]
    again = density_study(argon(2), lj(), [30.0, 70.0], FAST, tmp_path)  # nothing left to run
    assert again.points == result.points
    md = json.loads((tmp_path / "T_30K" / "md.json").read_text())
    assert md["settings"]["temperature_K"] == 30.0 and md["settings"]["ensemble"] == "npt"
    # κ_T per temperature from the volume fluctuations of the equilibrated part, as the
    # volume column of thermo.csv gives it (the study works from densities: V = m/ρ)
    from ionmix.md import read_thermo
    from ionmix.properties.eos import kappa_T_from_volume_fluctuations

    volume = read_thermo(tmp_path / "T_30K" / "thermo.csv")["volume_A3"]
    kappa, err = kappa_T_from_volume_fluctuations(volume[cold["equilibration_index"]:], 30.0)
    assert cold["kappa_T_fluctuation_per_Pa"] == pytest.approx(kappa, rel=1e-4)
    assert cold["kappa_T_fluctuation_err_per_Pa"] == pytest.approx(err, rel=1e-3)


def test_compare_model_teacher_and_experiment(tmp_path):
    """`props compare` puts the numbers of two density studies, a validation and an
    experimental table side by side, each taken from where it was computed."""
    from ase.calculators.lj import LennardJones
    from typer.testing import CliRunner

    from ionmix.cli import app
    from ionmix.properties.comparison import compare_properties

    model = density_study(argon(2), lj(), [30.0, 70.0], FAST, tmp_path / "model")
    teacher_calc = LennardJones(sigma=3.45, epsilon=0.0110, rc=7.0, smooth=True)
    teacher = density_study(argon(2), teacher_calc, [30.0, 70.0], FAST, tmp_path / "teacher")
    validate_trajectory(tmp_path / "model" / "T_30K", teacher_calc, tmp_path / "val", n_frames=3)
    exp = tmp_path / "exp.csv"  # densities at 20 and 40 K; κ_T at 32 K (in the window)
    exp.write_text("temperature_K,density_g_cm3,kappa_T_per_Pa\n20,1.70,\n40,1.60,\n"
                   "32,,2.0e-10\n")
    result = compare_properties(tmp_path / "model", teacher_density=tmp_path / "teacher",
                                experiment=exp, validation=tmp_path / "val",
                                temperature_K=30.0)
    cols = result["columns"]
    cold = model.points[0]
    assert cols["model"]["density_g_cm3"] == cold["density_g_cm3"]
    assert cols["model"]["kappa_T_per_Pa"] == cold["kappa_T_fluctuation_per_Pa"]
    assert cols["teacher"]["density_g_cm3"] == teacher.points[0]["density_g_cm3"]
    assert cols["model"]["alpha_P_per_K"] == pytest.approx(
        -model.fit["slope_g_cm3_per_K"] / cold["density_g_cm3"])
    assert cols["experiment"]["density_g_cm3"] == pytest.approx(np.interp(30, [20, 40],
                                                                          [1.70, 1.60]))
    assert cols["experiment"]["slope_g_cm3_per_K"] == pytest.approx((1.60 - 1.70) / 20)
    assert cols["experiment"]["kappa_T_per_Pa"] == 2.0e-10
    val = json.loads((tmp_path / "val" / "validate.json").read_text())
    assert result["validation"]["force_mae_meV_per_A"] == val["force_mae_meV_per_A"]
    # at 50 K the experiment's κ_T (32 K) is out of the window and ρ comes from the fit
    far = compare_properties(tmp_path / "model", experiment=exp, temperature_K=50.0)
    assert "kappa_T_per_Pa" not in far["columns"]["experiment"]
    assert far["columns"]["model"]["density_from"] == "fit"
    assert far["columns"]["model"]["density_g_cm3"] == pytest.approx(
        model.fit["intercept_g_cm3"] + 50.0 * model.fit["slope_g_cm3_per_K"])
    # the command writes the table and the figure
    run = CliRunner().invoke(app, [
        "props", "compare", str(tmp_path / "model"), "--teacher", str(tmp_path / "teacher"),
        "--experiment", str(exp), "--validation", str(tmp_path / "val"),
        "--temperature-K", "30", "--out", str(tmp_path / "cmp")])
    assert run.exit_code == 0, run.output
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    deviation = 100 * (cold["density_g_cm3"] / teacher.points[0]["density_g_cm3"] - 1)
    assert f"ρ, model vs teacher: {deviation:+.1f} %" in table
    assert f"{cold['density_g_cm3']:.4f} ± {cold['density_err_g_cm3']:.4f}" in table
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 0
    import subprocess
    import sys
    from pathlib import Path

    bad = subprocess.run([str(Path(sys.executable).parent / "ionmix"), "props", "compare",
                          str(tmp_path / "val"), "--out", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "val/density.json is not a density.json" in bad.stderr


def test_pressure_ramp_gives_consistent_compressibility(tmp_path):
    settings = FAST.model_copy(update={"temperature_K": 40.0, "n_steps": 300})
    result = compressibility_study(argon(2), lj(), settings, tmp_path,
                                   pressures_bar=[1.0, 1000.0, 2000.0, 3000.0, 4000.0],
                                   first_stage_steps=600)
    v = np.array([p["volume_A3"] for p in result.points])
    assert np.all(np.diff(v) < 0)
    # the barostat reached each target pressure
    for p in result.points:
        assert abs(p["measured_pressure_bar"] - p["pressure_bar"]) < \
            4 * p["measured_pressure_err_bar"] + 150.0
    # Tait κ_T at 1 bar against the secant of the first two points and the fluctuations
    secant = -(v[1] - v[0]) / (v[0] * 1000.0e5)
    kappa = result.kappa_T_per_Pa
    assert kappa == pytest.approx(secant, rel=0.5)
    fluct = result.kappa_T_fluctuation_per_Pa
    err = np.hypot(result.kappa_T_fluctuation_err_per_Pa, result.kappa_T_err_per_Pa)
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
    steps = [r["step"] for r in result.frames]
    assert steps[0] == 0 and steps[-1] == 100 and len(steps) == 3  # first, middle, last
    picked = [frames[k] for k in steps]
    df, de, dp = [], [], []
    for f in picked:
        a = f.copy()
        a.calc = teacher
        df.append(f.get_forces() - a.get_forces())
        de.append((f.get_potential_energy() - a.get_potential_energy()) / len(f))
        dp.append(-np.trace(f.get_stress(voigt=False) - a.get_stress(voigt=False)) / 3 / units.bar)
    assert result.n_frames == 3
    assert result.force_mae_meV_per_A == pytest.approx(1000 * np.mean(np.abs(df)), rel=1e-6)
    assert result.energy_mae_meV_per_atom == pytest.approx(1000 * np.mean(np.abs(de)),
                                                              rel=1e-6)
    assert result.force_mae_meV_per_A > 0
    # the configurational pressures: what decides an NPT density
    assert result.pressure_n_frames == 3
    assert result.pressure_mean_difference_bar == pytest.approx(np.mean(dp), rel=1e-6)
    assert result.pressure_mae_bar == pytest.approx(np.mean(np.abs(dp)), rel=1e-6)
    assert result.pressure_mae_bar > 0
    assert set(result.force_by_element) == {"Ar"}
    assert "teacher_term_change_meV_per_atom" not in result.to_json()  # not a force field
    assert not {"molecule_forces", "molecular_pressure_mean_difference_bar"} & set(
        result.to_json())  # argon atoms carry no molecules
    assert (tmp_path / "val" / "validate.png").exists()
    from ionmix.report.properties import plot_validation

    forces_model = np.array(df) + 1.0  # any arrays of the right shape: the panels' data
    parity, along, energy, pressure = plot_validation(result.to_json(), forces_model,
                                                      forces_model - 1.0,
                                                      ["Ar"] * forces_model.shape[1]).axes
    np.testing.assert_allclose(pressure.get_lines()[1].get_ydata() -
                               pressure.get_lines()[0].get_ydata(), dp, rtol=1e-6)
    assert parity.get_legend_handles_labels()[1] == [
        f"Ar: {result.force_by_element['Ar']['mae_meV_per_A']:.0f} meV/Å"]
    np.testing.assert_allclose(along.get_lines()[1].get_ydata(),
                               [1000 * f["model_energy_eV_per_atom"] for f in result.frames])
    assert f"MAE {result.energy_mae_meV_per_atom:.2f}" in along.get_title()
    # relabelling is resumable: the stored teacher labels are reused
    labels = (tmp_path / "val" / "teacher_labels.extxyz").read_text()
    again = validate_trajectory(tmp_path / "run", teacher, tmp_path / "val", n_frames=3)
    assert again.force_mae_meV_per_A == pytest.approx(result.force_mae_meV_per_A, rel=1e-6)
    assert (tmp_path / "val" / "teacher_labels.extxyz").read_text() == labels


def test_molecule_force_errors_sum_each_molecule_and_unwrap_it():
    """A molecule's net-force error is the sum of its atoms' errors; a couple of opposite
    forces moves no centre of mass but turns the molecule by (r_a − r_b) × f, also when the
    periodic boundary splits the molecule; a single atom has no torque."""
    from ionmix.metrics import molecule_force_errors

    rng = np.random.default_rng(3)
    cell = np.diag([10.0, 11.0, 12.0])
    # molecule 0: three atoms across the x boundary (x = 9.6, 0.3, 0.9); molecule 1: one atom
    positions = np.array([[[9.6, 5.0, 5.0], [0.3, 5.5, 5.0], [0.9, 5.0, 6.0], [4.0, 4.0, 4.0]]])
    masses = np.array([12.0, 1.0, 19.0, 7.0])
    ref = rng.normal(size=(1, 4, 3))
    shift = rng.normal(size=(1, 4, 3)) * 0.05  # arbitrary per-atom errors
    out = molecule_force_errors(ref + shift, ref, np.array([0, 0, 0, 1]),
                                np.array(["A", "A", "A", "Li"]), positions, cell[None],
                                masses)
    net = np.concatenate([shift[0, :3].sum(axis=0), shift[0, 3]])
    assert out["net_force_mae_meV_per_A"] == pytest.approx(1e3 * np.mean(np.abs(net)))
    assert out["by_ion"]["Li"]["net_force_mae_meV_per_A"] == pytest.approx(
        1e3 * np.mean(np.abs(shift[0, 3])))
    assert out["by_ion"]["Li"]["torque_mae_meV"] is None
    assert out["net_force_reference_mean_abs_meV_per_A"] == pytest.approx(1e3 * np.mean(
        np.abs(np.concatenate([ref[0, :3].sum(axis=0), ref[0, 3]]))))

    f = np.array([0.0, 0.3, -0.2])
    couple = np.zeros((1, 4, 3))
    couple[0, 0], couple[0, 1] = f, -f
    out = molecule_force_errors(ref + couple, ref, np.array([0, 0, 0, 1]),
                                np.array(["A", "A", "A", "Li"]), positions, cell[None],
                                masses)
    assert out["net_force_mae_meV_per_A"] == pytest.approx(0.0, abs=1e-9)
    arm = np.array([9.6 - 10.3, 5.0 - 5.5, 0.0])  # atom 0 minus atom 1, across the boundary
    assert out["by_ion"]["A"]["torque_mae_meV"] == pytest.approx(
        1e3 * np.mean(np.abs(np.cross(arm, f))))
    with pytest.raises(ValueError, match="must all be"):
        molecule_force_errors(ref, ref, np.array([0, 0, 1]), np.array(["A", "A", "Li"]),
                              positions, cell[None], masses)


def test_intramolecular_virial_of_a_bond_across_the_boundary():
    """A bond pulling its two atoms together with f contributes (r_a − r_b)·f_a / 3V,
    wherever the molecule's centre of mass is and across the periodic boundary; a single
    atom contributes nothing, however large its force."""
    from ionmix.metrics import intramolecular_virial_bar
    from ionmix.units import ev_per_a3_to_bar

    cell = np.diag([10.0, 12.0, 14.0])
    positions = np.array([[[9.5, 6.0, 7.0], [0.5, 6.2, 7.1], [3.0, 3.0, 3.0]]])
    bond = np.array([1.0, 0.2, 0.1])  # b − a across the x boundary
    f_a = 0.8 * bond / np.linalg.norm(bond)  # a pulled towards b
    forces = np.array([[f_a, -f_a, [5.0, -3.0, 2.0]]])
    virial = intramolecular_virial_bar(forces, np.array([0, 0, 1]), positions, cell[None],
                                       np.array([12.0, 16.0, 7.0]))
    expected = ev_per_a3_to_bar(np.dot(-bond, f_a) / (3 * np.linalg.det(cell)))
    assert virial == pytest.approx([expected], rel=1e-12)
    assert expected < 0  # a bond under tension pulls the atomic pressure down


def test_openmm_engine_runs_only_the_classical_teacher_it_is_given(tmp_path):
    """The teacher to run natively is passed explicitly (``LoadedModel.teacher``), never
    guessed from the calculator."""
    with pytest.raises(MDError, match="classical teacher only"):
        density_study(argon(2), lj(), [30.0], FAST, tmp_path, engine="openmm")


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


def test_density_study_goes_on_past_a_blow_up(tmp_path):
    """Argon at 3000 K boils out of its box (volume > 2× the start): that temperature is
    listed as blown up with its reason, the others are still run, and a rerun reads the
    blow-up back instead of running it again."""
    from ionmix.properties.comparison import compare_properties, comparison_markdown

    temps = [30.0, 3000.0, 50.0]
    result = density_study(argon(2), lj(), temps, FAST, tmp_path)
    assert [p["temperature_K"] for p in result.points] == [30.0, 50.0]
    (failed,) = result.blew_up
    assert failed["temperature_K"] == 3000.0 and "MD stopped at step" in failed["reason"]
    record = json.loads((tmp_path / "T_3000K" / "md.json").read_text())
    assert record["status"] == "blew_up"
    assert result.fit is not None  # from the two temperatures that ran
    again = density_study(argon(2), lj(), temps, FAST, tmp_path)
    assert again.blew_up[0]["reason"].startswith(f"MD stopped at step {record['steps_done']}")
    table = comparison_markdown(compare_properties(tmp_path, temperature_K=30.0))
    assert "model: **blew up at 3000 K**" in table
