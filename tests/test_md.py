"""Tests of ionmix.md: restart continuity, blow-up handling, bad inputs, conservation.

The MD engine is generic over ASE calculators, so most tests use ASE's Lennard-Jones argon
(cheap, with analytic stress); a real trained model is covered in test_md_model.py.
"""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.lj import LennardJones
from ase.calculators.tip3p import TIP3P
from pydantic import ValidationError

from ionmix.md import MDBlowUp, MDError, MDSettings, read_thermo, run_md


def argon(n: int = 3) -> object:
    """fcc argon near its triple-point density, n×n×n conventional cells (4n³ atoms)."""
    atoms = bulk("Ar", "fcc", a=5.4, cubic=True).repeat(n)
    atoms.rattle(0.05, seed=1)
    return atoms


def lj() -> LennardJones:
    return LennardJones(sigma=3.4, epsilon=0.0104, rc=7.0, smooth=True)


FAST = {"timestep_fs": 5.0, "thermostat_time_steps": 20, "barostat_time_steps": 50,
        "log_interval_steps": 2, "trajectory_interval_steps": 4, "temperature_K": 80.0}


def settings(**kw) -> MDSettings:
    return MDSettings(**{**FAST, **kw})


@pytest.mark.parametrize("ensemble", ["npt", "nvt", "nve"])
def test_restart_continues_the_same_trajectory(tmp_path, ensemble):
    """Interrupted at step 10 (checkpoint at 8, rows up to 10 written), then restarted:
    files and final state equal an uninterrupted run's, bit for bit."""
    s = settings(ensemble=ensemble, n_steps=16)
    straight = run_md(argon(), lj(), s, tmp_path / "straight")

    def interrupt(step, n):
        if step == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_md(argon(), lj(), s, tmp_path / "restarted", progress=interrupt)
    assert json.loads((tmp_path / "restarted" / "checkpoint.json").read_text())["step"] == 8
    resumed = run_md(argon(), lj(), s, tmp_path / "restarted")
    assert resumed.resumed_from_step == 8 and straight.resumed_from_step == 0
    # ASE's LJ keeps a neighbour list whose order depends on history, so sums may round
    # differently after a restart: equal to ~1e-12, not bit for bit
    a, b = (read_thermo(tmp_path / d / "thermo.csv") for d in ("straight", "restarted"))
    assert list(b["step"]) == list(range(0, 17, 2))
    for column in a:
        np.testing.assert_allclose(b[column], a[column], rtol=1e-10, atol=1e-12, err_msg=column)
    fa, fb = (ase.io.read(tmp_path / d / "trajectory.extxyz", ":")
              for d in ("straight", "restarted"))
    assert [f.info["step"] for f in fb] == [0, 4, 8, 12, 16]
    for x, y in zip(fa, fb, strict=True):
        np.testing.assert_allclose(y.positions, x.positions, rtol=0, atol=1e-10)
        np.testing.assert_allclose(y.cell.array, x.cell.array, rtol=0, atol=1e-10)
        np.testing.assert_allclose(y.get_forces(), x.get_forces(), rtol=0, atol=1e-10)
    ca, cb = (json.loads((tmp_path / d / "checkpoint.json").read_text())
              for d in ("straight", "restarted"))
    assert ca["step"] == cb["step"] == 16
    np.testing.assert_allclose(cb["atoms"]["momenta"], ca["atoms"]["momenta"], atol=1e-10)
    for part in ("thermostat", "barostat"):
        for key, value in ca["integrator"].get(part, {}).items():
            np.testing.assert_allclose(cb["integrator"][part][key], value, rtol=1e-9,
                                       atol=1e-14)


def test_extending_a_finished_run(tmp_path):
    """n_steps may grow between calls; the extension equals one longer run."""
    run_md(argon(), lj(), settings(n_steps=8), tmp_path / "a")
    run_md(argon(), lj(), settings(n_steps=16), tmp_path / "a")
    run_md(argon(), lj(), settings(n_steps=16), tmp_path / "b")
    a, b = read_thermo(tmp_path / "a" / "thermo.csv"), read_thermo(tmp_path / "b" / "thermo.csv")
    assert list(a["step"]) == list(b["step"])
    np.testing.assert_allclose(a["conserved_energy_eV"], b["conserved_energy_eV"], rtol=1e-10)


def test_restart_refuses_changed_settings(tmp_path):
    run_md(argon(), lj(), settings(n_steps=4), tmp_path)
    with pytest.raises(MDError, match="temperature_K = 80.0"):
        run_md(argon(), lj(), settings(n_steps=4, temperature_K=90.0), tmp_path)


def test_restart_refuses_another_model(tmp_path):
    """A model retrained into the same file has another checksum: the run is not continued
    with it (`ionmix.models.load_model` tags its calculators with file name and checksum)."""
    first, retrained = lj(), lj()
    first.ionmix_model_id = "model.nequip.zip sha256:0123456789abcdef"
    retrained.ionmix_model_id = "model.nequip.zip sha256:fedcba9876543210"
    run_md(argon(), first, settings(n_steps=4), tmp_path)
    assert json.loads((tmp_path / "md.json").read_text())["model_id"] == first.ionmix_model_id
    with pytest.raises(MDError, match="holds a run of the model model.nequip.zip "
                                      "sha256:0123456789abcdef; this one is .*fedcba"):
        run_md(argon(), retrained, settings(n_steps=8), tmp_path)
    run_md(argon(), first, settings(n_steps=8), tmp_path)  # the same model continues


def test_npt_thermo_columns_are_consistent(tmp_path):
    """Density from mass and volume; pressure logged; conserved energy nearly constant."""
    run_md(argon(), lj(), settings(n_steps=40, timestep_fs=2.0), tmp_path)
    t = read_thermo(tmp_path / "thermo.csv")
    atoms = argon()
    mass_g = atoms.get_masses().sum() / 6.02214076e23
    # ASE's Avogadro constant is CODATA 2014's; 2018's exact value differs by 2e-8
    assert t["density_g_cm3"] == pytest.approx(mass_g / (t["volume_A3"] * 1e-24), rel=1e-7)
    assert np.all(np.isfinite(t["pressure_bar"]))
    assert np.ptp(t["volume_A3"]) > 0  # the barostat moves the box
    drift = np.ptp(t["conserved_energy_eV"]) / len(atoms)
    assert drift < 0.2 * np.mean(t["kinetic_energy_eV"]) / len(atoms)


class BlowsUpAfter(Calculator):
    """Lennard-Jones whose energy becomes NaN after `n_ok` evaluations: a model failing
    mid-run, injected on purpose to test that the run stops and keeps its data."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, n_ok: int):
        super().__init__()
        self.inner, self.n_ok, self.calls = lj(), n_ok, 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.inner.calculate(self.atoms, properties, system_changes)
        self.results = dict(self.inner.results)
        self.calls += 1
        if self.calls > self.n_ok:
            self.results["energy"] = self.results["free_energy"] = np.nan


def test_nan_energy_stops_the_run_and_keeps_the_data(tmp_path):
    with pytest.raises(MDBlowUp, match=r"potential_energy_eV is nan"):
        run_md(argon(), BlowsUpAfter(n_ok=14), settings(ensemble="nvt", n_steps=40), tmp_path)
    meta = json.loads((tmp_path / "md.json").read_text())
    assert meta["status"] == "blew_up" and "nan" in meta["reason"]
    frames = ase.io.read(tmp_path / "trajectory.extxyz", ":")
    assert len(frames) >= 2 and all(np.isfinite(f.get_potential_energy()) for f in frames)
    assert (tmp_path / "blowup.extxyz").exists()
    t = read_thermo(tmp_path / "thermo.csv")
    assert np.all(np.isfinite(t["potential_energy_eV"]))
    # a rerun reports the earlier blow-up; it does not step into it again
    thermo = (tmp_path / "thermo.csv").read_bytes()
    with pytest.raises(MDBlowUp, match=rf"MD stopped at step {meta['steps_done']}: "
                                       r"potential_energy_eV is nan.*earlier call"):
        run_md(argon(), lj(), settings(ensemble="nvt", n_steps=40), tmp_path)
    assert (tmp_path / "thermo.csv").read_bytes() == thermo


def test_runaway_volume_stops_the_run(tmp_path):
    """Real dynamics under strong tension: the box grows past the allowed ratio."""
    s = settings(n_steps=400, pressure_bar=-5000.0, max_volume_ratio=1.02,
                 barostat_time_steps=10)
    with pytest.raises(MDBlowUp, match="volume"):
        run_md(argon(), lj(), s, tmp_path)


def test_hot_temperature_stops_the_run(tmp_path):
    atoms = argon()
    atoms.rattle(0.6, seed=3)  # overlapping atoms: a huge kick, like a broken model
    with pytest.raises(MDBlowUp, match="temperature"):
        run_md(atoms, lj(), settings(ensemble="nve", n_steps=20), tmp_path)


def test_a_broken_molecule_stops_the_run(tmp_path):
    """A model that pushes a C–H bond apart (here: a repulsive LJ pair, as a student with no
    data at short C–H distances might) is stopped when the bond passes 1.5× its starting
    length, long before temperature or volume notice; a bond-free liquid never is."""
    from ase import Atoms

    methane = Atoms("CH4", positions=[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63],
                                       [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]],
                    cell=[12.0] * 3, pbc=True)
    methane.center()
    repulsive = LennardJones(sigma=1.2, epsilon=0.02, rc=5.0)
    hot_is_fine = {"ensemble": "nve", "n_steps": 400, "max_temperature_factor": 1e3}
    with pytest.raises(MDBlowUp, match=r"bond is .* its starting 1.09 Å .*molecule broke"):
        run_md(methane, repulsive, settings(**hot_is_fine), tmp_path / "ch4")
    meta = json.loads((tmp_path / "ch4" / "md.json").read_text())
    assert meta["status"] == "blew_up"
    # unguarded, the same steps run through: only the bond check saw the broken molecule
    free = settings(**{**hot_is_fine, "n_steps": meta["steps_done"]}, max_bond_stretch=None)
    run_md(methane, repulsive, free, tmp_path / "unchecked")
    run_md(argon(), lj(), settings(ensemble="nvt", n_steps=40), tmp_path / "argon")


@pytest.mark.parametrize("bad", [
    {"temperature_K": 0.0}, {"temperature_K": -10.0}, {"temperature_K": float("nan")},
    {"pressure_bar": float("inf")}, {"pressure_bar": -1e6}, {"timestep_fs": 0.0},
    {"n_steps": 0}, {"ensemble": "npH"}, {"thermostat_steps": 100},
])
def test_non_physical_settings_are_refused(bad):
    with pytest.raises(ValidationError):
        MDSettings(**bad)


def test_npt_needs_stress(tmp_path):
    from ase.build import molecule

    water = molecule("H2O")
    water.set_cell([8.0, 8.0, 8.0])
    water.pbc = True
    with pytest.raises(MDError, match="NPT needs stress.*TIP3P"):
        run_md(water, TIP3P(rc=3.9), settings(n_steps=2), tmp_path)
    assert not (tmp_path / "thermo.csv").exists()  # refused before any work


def test_npt_needs_a_periodic_cell(tmp_path):
    atoms = argon()
    atoms.pbc = False
    with pytest.raises(MDError, match="periodic"):
        run_md(atoms, lj(), settings(n_steps=2), tmp_path)


def test_nve_conserves_energy(tmp_path):
    """Velocity Verlet at a small step: no systematic drift of the total energy."""
    run_md(argon(), lj(), settings(ensemble="nve", n_steps=200, timestep_fs=2.0,
                                   log_interval_steps=10, trajectory_interval_steps=100),
           tmp_path)
    t = read_thermo(tmp_path / "thermo.csv")
    n = len(argon())
    slope_eV_per_atom_per_ps = np.polyfit(t["time_ps"], t["conserved_energy_eV"] / n, 1)[0]
    fluctuation_eV_per_atom = np.std(t["kinetic_energy_eV"] / n)
    assert abs(slope_eV_per_atom_per_ps) * t["time_ps"][-1] < 0.1 * fluctuation_eV_per_atom


def test_npt_holds_the_target_pressure(tmp_path):
    """The barostat drives the mean pressure to the target (argon, 1 kbar)."""
    target_bar = 1000.0
    s = settings(n_steps=600, timestep_fs=5.0, pressure_bar=target_bar,
                 log_interval_steps=5, trajectory_interval_steps=600)
    run_md(argon(), lj(), s, tmp_path)
    t = read_thermo(tmp_path / "thermo.csv")
    p = t["pressure_bar"][len(t["pressure_bar"]) // 3:]
    # instantaneous pressure of a 108-atom box fluctuates by ~1 kbar; its mean converges
    assert abs(p.mean() - target_bar) < 3 * p.std() / np.sqrt(len(p) / 10)


# --------------------------------------------------------------------------------------
# the command line, on a real classical dataset (Li/EMIM/PF6, OPLS teacher)


def cli(*args: str):
    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "ionmix")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


def test_cli_md_then_validate_with_the_classical_teacher(tiny_sample, tmp_path):
    """`ionmix md` with the teacher itself, then `ionmix validate` against it: the teacher
    agrees with itself to the extxyz precision, and the files are where the docs say."""
    db = str(tiny_sample / "frames.db")
    out = cli("md", db, "--model", "classical", "--out", str(tmp_path / "run"),
              "--composition", "LiPF6=0.25,EMIMPF6=0.75", "--ensemble", "nvt", "--steps", "20",
              "--log-every", "5", "--trajectory-every", "10", "--max-bond-stretch", "0")
    assert out.returncode == 0, out.stderr
    settings = json.loads((tmp_path / "run" / "md.json").read_text())["settings"]
    assert settings["max_bond_stretch"] is None  # 0: the bond check is off
    frames = ase.io.read(tmp_path / "run" / "trajectory.extxyz", ":")
    assert [f.info["step"] for f in frames] == [0, 10, 20]
    assert frames[0].info["molecules"] and frames[0].info["charge_scale"] == 0.8
    out = cli("validate", str(tmp_path / "run"), "--frames", "3", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["n_frames"] == 3 and result["force_mae_meV_per_A"] < 1e-3
    assert set(result["force_by_element"]) == {"C", "F", "H", "Li", "N", "P"}
    assert (tmp_path / "run" / "validate" / "validate.png").exists()


@pytest.mark.parametrize("args, message", [
    (["-T", "-5"], "temperature_K"),
    (["--pressure-bar", "nan"], "pressure_bar"),
    (["--composition", "LiPF6=0.5,EMIMPF6=0.5"], "no composition"),
    (["--model", "missing.nequip.zip"], "no such file"),
    (["--max-bond-stretch", "0.8"], "max_bond_stretch"),
])
def test_cli_md_bad_input_exits_2_before_work(tiny_sample, tmp_path, args, message):
    base = ["md", str(tiny_sample / "frames.db"), "--model", "classical", "--out",
            str(tmp_path / "run"), "--composition", "LiPF6=0.25,EMIMPF6=0.75", "--steps", "4"]
    out = cli(*base, *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "thermo.csv").exists()


def test_cli_teacher_density_natively_in_openmm(tiny_sample, tmp_path):
    """`props density --model classical --engine openmm`: the teacher's ρ(T) curve, the
    reference a student's `props density --teacher .../density.json` is plotted against."""
    args = ["props", "density", str(tiny_sample / "frames.db"), "--model", "classical",
            "--engine", "openmm", "--composition", "LiPF6=0.25,EMIMPF6=0.75", "--out",
            str(tmp_path), "--temperatures", "300,400", "--steps", "4000", "--log-every", "20",
            "--json"]
    out = cli(*args)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert [p["temperature_K"] for p in result["points"]] == [300.0, 400.0]
    from ionmix.properties.stats import series_summary

    for p in result["points"]:
        series = json.loads((tmp_path / p["run"] / "density_series.json").read_text())
        assert len(series["density_g_cm3"]) == 200  # 2 ps sampled every 10 fs
        s = series_summary(series["density_g_cm3"])
        assert (p["density_g_cm3"], p["density_err_g_cm3"]) == pytest.approx((s["mean"], s["err"]))
        assert p["n_samples"] == 200 - p["equilibration_index"] >= 100
        assert p["density_g_cm3"] > 0.5
    assert "fit" in result and (tmp_path / "density.png").exists()
    assert cli(*args).stdout == out.stdout  # a rerun reuses the stored series
    bad = cli(*args[:4], "missing.nequip.zip", *args[5:])
    assert bad.returncode == 2 and "--engine openmm" in bad.stderr
