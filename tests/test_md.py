"""Tests of ionmix.md: restart continuity, blow-up handling, bad inputs, conservation.

The MD engine is generic over ASE calculators, so most tests use ASE's Lennard-Jones argon
(cheap, with analytic stress); a real trained model is covered in test_md_model.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.lj import LennardJones
from ase.calculators.tip3p import TIP3P
from pydantic import ValidationError

from ionmix.md import (
    MDBlowUp,
    MDError,
    MDSettings,
    check_can_continue,
    minimise_reason,
    read_thermo,
    run_md,
)


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

    def interrupt(step, n, what):
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
    with it (`ionmix.models.load_model` names its models by file name and checksum)."""
    first, retrained = "model.nequip.zip sha256:0123456789abcdef", \
        "model.nequip.zip sha256:fedcba9876543210"
    run_md(argon(), lj(), settings(n_steps=4), tmp_path, model_id=first)
    record = json.loads((tmp_path / "md.json").read_text())
    assert record["model_id"] == record["calculator"] == first
    with pytest.raises(MDError, match="holds a run of the model model.nequip.zip "
                                      "sha256:0123456789abcdef; this one is .*fedcba"):
        run_md(argon(), lj(), settings(n_steps=8), tmp_path, model_id=retrained)
    with pytest.raises(MDError, match="this one is .*fedcba"):  # checked before any write
        check_can_continue(tmp_path, argon(), settings(n_steps=8), retrained)
    run_md(argon(), lj(), settings(n_steps=8), tmp_path, model_id=first)  # same model goes on


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


def test_a_collapsed_angle_counts_as_a_broken_molecule():
    """A student can fold the two H of a CH₂ onto each other (issue 22: H–C–H at 40°, the
    H 0.74 Å apart after 14 ps, every bond intact): the guard names the angle; a methane
    at rest, or bent by 20° (thermal), is whole."""
    from ase import Atoms

    from ionmix.md import _broken_bond, covalent_geometry

    methane = Atoms("CH4", positions=[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63],
                                       [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]],
                    cell=[12.0] * 3, pbc=True)
    geometry = covalent_geometry(methane)
    assert len(geometry[1][0]) == 6  # the 6 H–C–H angles of CH4

    def h1_rotated_towards_h2(degrees: float) -> Atoms:
        bent = methane.copy()
        bent.rotate(degrees, np.cross(bent.positions[1], bent.positions[2]), center=(0, 0, 0))
        bent.positions[[0, 2, 3, 4]] = methane.positions[[0, 2, 3, 4]]  # only H1 moves
        return bent

    assert _broken_bond(methane, geometry, 1.5) is None
    thermal = h1_rotated_towards_h2(20.0)
    assert np.isclose(thermal.get_distance(0, 1), 1.091, atol=1e-3)
    assert _broken_bond(thermal, geometry, 1.5) is None
    folded = h1_rotated_towards_h2(85.0)  # H–C–H 109.5° → 24.5°, H1–H2 0.46 Å
    assert np.isclose(folded.get_distance(0, 1), 1.091, atol=1e-3)  # the bond is intact
    why = _broken_bond(folded, geometry, 1.5)
    assert why is not None and "H1–C0–H2 angle collapsed" in why, why
    assert _broken_bond(folded, covalent_geometry(argon()), 1.5) is None  # no bonds: no check


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
    # NPT: its frames carry the stress, so validate compares pressures too
    out = cli("md", db, "--model", "classical", "--out", str(tmp_path / "run"),
              "--composition", "LiPF6=0.25,EMIMPF6=0.75", "--ensemble", "npt", "--steps", "20",
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
    # the molecules' net forces: none wrong against itself; the scale of a single-atom
    # ion's is its atoms' forces, read here from the trajectory (the teacher relabels the
    # positions as written, to 8 decimals: 1e-6 apart)
    molecules = result["molecule_forces"]
    assert set(molecules["by_ion"]) == {"Li", "PF6", "EMIM"}
    assert molecules["net_force_mae_meV_per_A"] < 1e-3 and molecules["torque_mae_meV"] < 1e-3
    li = [f.get_forces()[np.array(f.get_chemical_symbols()) == "Li"] for f in frames]
    assert molecules["by_ion"]["Li"]["net_force_reference_mean_abs_meV_per_A"] == (
        pytest.approx(1e3 * np.mean(np.abs(li)), rel=1e-5))
    assert molecules["by_ion"]["EMIM"]["torque_reference_mean_abs_meV"] > 0
    # the molecular virial: the same model on both sides, and the bonds' share removed
    assert abs(result["molecular_pressure_mean_difference_bar"]) < 1.0
    for row in result["frames"]:
        assert row["teacher_molecular_pressure_bar"] != pytest.approx(
            row["teacher_pressure_bar"], abs=10.0)
    # the classical teacher's energy by term: the force field's terms sum to its energy,
    # the torsions by element quadruplet to the torsions
    for row in result["frames"]:
        terms = row["teacher_terms_meV_per_atom"]
        main = sum(v for k, v in terms.items() if not k.startswith("torsion "))
        assert main == pytest.approx(1e3 * row["teacher_energy_eV_per_atom"], abs=1e-3)
        by_kind = sum(v for k, v in terms.items() if k.startswith("torsion "))
        assert by_kind == pytest.approx(terms["torsions"], abs=1e-3)
        assert {"bonds", "angles", "torsions", "Lennard-Jones", "Coulomb"} <= set(terms)

        assert "torsion C-N-C-N" in terms  # the EMIM⁺ ring
    change = result["teacher_term_change_meV_per_atom"]
    first, later = result["frames"][0], result["frames"][1:]  # 3 frames: the later half 2
    assert change["bonds"] == pytest.approx(np.mean(
        [r["teacher_terms_meV_per_atom"]["bonds"] for r in later])
        - first["teacher_terms_meV_per_atom"]["bonds"], rel=1e-9)
    from ionmix.report.properties import plot_validation

    symbols = frames[0].get_chemical_symbols()
    zeros = np.zeros((3, len(symbols), 3))  # the force panel's data does not matter here
    panel = plot_validation(result, zeros + 1.0, zeros, symbols).axes[-1]
    bonds = next(line for line in panel.get_lines() if line.get_label() == "bonds")
    np.testing.assert_allclose(bonds.get_ydata(), [
        r["teacher_terms_meV_per_atom"]["bonds"] - first["teacher_terms_meV_per_atom"]["bonds"]
        for r in result["frames"]], atol=1e-12)


@pytest.mark.parametrize("args, message", [
    (["-T", "-5"], "--temperature-K -5.0"),
    (["--pressure-bar", "nan"], "--pressure-bar nan: must be a finite number"),
    (["--composition", "LiPF6=0.5,EMIMPF6=0.5"], "no composition"),
    (["--model", "missing.nequip.zip"], "no such file"),
    (["--max-bond-stretch", "0.8"], "--max-bond-stretch 0.8"),
    (["--index", "0"], "--index 0 picks a frame of a structure file"),
])
def test_cli_md_bad_input_exits_2_before_work(tiny_sample, tmp_path, args, message):
    base = ["md", str(tiny_sample / "frames.db"), "--model", "classical", "--out",
            str(tmp_path / "run"), "--composition", "LiPF6=0.25,EMIMPF6=0.75", "--steps", "4"]
    out = cli(*base, *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "thermo.csv").exists()


def test_validate_compares_with_the_teacher_that_trained_the_model(tiny_sample, tmp_path):
    """A student trained on one teacher's labels, run from frames another teacher labelled
    (as an xTB student starts from the classical sampler's frames): `ionmix validate`
    compares with the student's teacher, which `md` records from the model's manifest, and
    not with the start frame's (the old default: a silent wrong comparison). A run that
    does not record it falls back to the start frame's teacher and says so; a teacher
    whose record was lost is refused, not guessed."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from ionmix.dataset import DatasetStore
    from ionmix.train import run_training

    lib = "LiPF6=0.25,EMIMPF6=0.75"
    store = DatasetStore(tiny_sample / "frames.db")
    provenance = store.provenance()
    frames = [f.atoms for f in store.select(lib)][:8]
    start_key = frames[0].info["teacher"]
    other = provenance.teacher_spec(frames[0]).record()
    other["params"]["charge_scale"] = 0.7  # another classical teacher: another key
    teacher = provenance.teacher(frames[0], other)
    assert teacher.key != start_key
    for atoms in frames:
        calc = teacher.calculator(atoms)
        atoms.calc = SinglePointCalculator(atoms, energy=calc.get_potential_energy(atoms),
                                           forces=calc.get_forces(atoms),
                                           stress=calc.get_stress(atoms))
        atoms.info["teacher"] = teacher.key
    provenance.add(teacher=teacher.spec)
    files = {}
    for role, part in (("train", frames[:4]), ("val", frames[4:6]), ("test", frames[6:])):
        files[role] = tmp_path / f"{role}.extxyz"
        ase.io.write(files[role], part)
    types = ["C", "F", "H", "Li", "N", "P"]
    trained = run_training(files["train"], files["val"], files["test"], types,
                           preset="cpu-tiny-allegro", energy_shifts=dict.fromkeys(types, 0.0),
                           run_dir=tmp_path / "model", seed=0,
                           overrides={"max_epochs": 1}, say=None, num_threads=1,
                           provenance=provenance)
    manifest = json.loads(trained.manifest_path.read_text())
    assert manifest["teachers"] == {teacher.key: teacher.spec.record()}
    run = tmp_path / "run"
    out = cli("md", str(tiny_sample / "frames.db"), "--composition", lib, "--model",
              str(trained.package_path), "--out", str(run), "--ensemble", "nvt",
              "--steps", "10", "--log-every", "5", "--trajectory-every", "5")
    assert out.returncode == 0, out.stderr
    md_json = json.loads((run / "md.json").read_text())
    assert md_json["model_teachers"] == {teacher.key: teacher.spec.record()}
    assert ase.io.read(run / "trajectory.extxyz", 0).info["teacher"] == start_key

    def teacher_of_validate(*extra):
        done = cli("validate", str(run), "--frames", "2", "--json", *extra)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["teacher"], done.stderr

    used, _ = teacher_of_validate()
    assert teacher.key in used and start_key not in used
    used, _ = teacher_of_validate("--teacher", "classical")  # asked for: the start frame's
    assert start_key in used
    # a run that does not record it (an older ionmix): the start frame's teacher, said
    md_json["model_teachers"] = None
    (run / "md.json").write_text(json.dumps(md_json))
    used, err = teacher_of_validate()
    assert start_key in used and "does not record the teacher" in err
    # a key without its record, not the start frame's: refused, naming the key and file
    md_json["model_teachers"] = {teacher.key: None}
    (run / "md.json").write_text(json.dumps(md_json))
    done = cli("validate", str(run), "--frames", "2")
    assert done.returncode == 2
    assert teacher.key in done.stderr and "model_teachers" in done.stderr
    assert "--teacher" in done.stderr
    # a damaged md.json, or a record that is not a mapping: refused, naming the file
    md_json["model_teachers"] = [teacher.key]
    (run / "md.json").write_text(json.dumps(md_json))
    done = cli("validate", str(run), "--frames", "2")
    assert done.returncode == 2 and "model_teachers" in done.stderr
    (run / "md.json").write_text("{damaged")
    done = cli("validate", str(run), "--frames", "2")
    assert done.returncode == 2 and "md.json" in done.stderr and "Traceback" not in done.stderr


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
    from ionmix.stats import series_summary

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


# --------------------------------------------------------------------------------------
# minimisation of a never-relaxed start, blow-up wording, resume keys, option checks


def test_a_packed_box_is_minimised_once_before_dynamics(tmp_path):
    """A box that still carries `ionmix build`'s packmol_seed is relaxed (FIRE, cell fixed,
    same calculator) before the first step; steps and max forces go to the log and md.json.
    A restart does not minimise again; minimise=False never minimises."""
    packed = argon()
    packed.rattle(0.2, seed=2)
    packed.info["packmol_seed"] = 7
    lines = []
    result = run_md(packed, lj(), settings(ensemble="nvt", n_steps=8), tmp_path / "a",
                    log=lines.append)
    done = result.minimisation
    assert done["reason"] == "a packed box that was never relaxed" and done["steps"] > 0
    assert done["max_force_after_eV_per_A"] <= 0.5 < done["max_force_before_eV_per_A"]
    assert len(lines) == 1 and lines[0].startswith("minimised the starting structure")
    first = ase.io.read(tmp_path / "a" / "trajectory.extxyz", 0)  # the dynamics' start
    assert np.linalg.norm(first.get_forces(), axis=1).max() <= 0.5
    np.testing.assert_array_equal(first.cell.array, packed.cell.array)
    lines.clear()
    run_md(packed, lj(), settings(ensemble="nvt", n_steps=16), tmp_path / "a",
           log=lines.append)
    assert lines == []  # the restart continues from the checkpoint
    assert json.loads((tmp_path / "a" / "md.json").read_text())["minimisation"] == done
    skipped = run_md(packed, lj(), settings(ensemble="nvt", n_steps=8, minimise=False),
                     tmp_path / "b")
    assert skipped.minimisation is None


def test_the_auto_minimisation_rule():
    """Auto minimises a box packed by `ionmix build` only, whatever the forces (a learned
    model's large forces are its own error); True/False override it."""
    packed = argon()
    packed.info["packmol_seed"] = 1
    overlapping = argon()
    overlapping.rattle(0.6, seed=3)  # huge forces, but not known to be unrelaxed
    assert minimise_reason(packed, settings()) == "a packed box that was never relaxed"
    assert minimise_reason(argon(), settings()) is None
    assert minimise_reason(overlapping, settings()) is None
    assert minimise_reason(packed, settings(minimise=False)) is None
    assert minimise_reason(argon(), settings(minimise=True)) == "asked for"


def test_blow_up_message_names_what_drives_the_dynamics(tmp_path):
    """A learned model (named by `ionmix.models.load_model`) 'left the region it can
    describe'; any other calculator is not blamed on a model's training region."""
    s = settings(ensemble="nvt", n_steps=40)
    with pytest.raises(MDBlowUp, match="The model left the region it can describe"):
        run_md(argon(), BlowsUpAfter(n_ok=14), s, tmp_path / "model",
               model_id="model.nequip.zip sha256:0123456789abcdef")
    with pytest.raises(MDBlowUp) as plain:
        run_md(argon(), BlowsUpAfter(n_ok=14), s, tmp_path / "plain")
    assert "model left" not in str(plain.value) and "diverged" in str(plain.value)


def test_restart_refuses_another_starting_structure(tmp_path):
    """The run folder records its start's sha256: other positions, other atoms or other
    kept momenta are refused, naming the difference; the same start continues."""
    run_md(argon(), lj(), settings(n_steps=4), tmp_path / "a")
    moved = argon()
    moved.rattle(0.01, seed=5)
    with pytest.raises(MDError, match=r"started from another structure \(Ar108 too, but "
                                      r"other positions.*use another --out folder"):
        run_md(moved, lj(), settings(n_steps=8), tmp_path / "a")
    with pytest.raises(MDError, match=r"Ar108, 108 atoms; this one is Ar32, 32 atoms"):
        run_md(argon(2), lj(), settings(n_steps=8), tmp_path / "a")
    run_md(argon(), lj(), settings(n_steps=8), tmp_path / "a")  # the same start goes on

    start = argon()
    start.set_momenta(np.random.default_rng(0).normal(0.0, 0.05, (len(start), 3)))
    kept = settings(ensemble="nvt", n_steps=4, initial_velocities="keep")
    run_md(start, lj(), kept, tmp_path / "kept")
    start.set_momenta(-start.get_momenta())
    with pytest.raises(MDError, match="kept momenta"):
        run_md(start, lj(), kept.model_copy(update={"n_steps": 8}), tmp_path / "kept")


# the command line in-process: `ionmix.cli.app` maps ionmix's errors to exit statuses
# (typer's CliRunner calls the command underneath, where they are still exceptions)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``ionmix ARGS``."""
    from ionmix.cli import app

    with pytest.raises(SystemExit) as stop:
        app([str(a) for a in args], prog_name="ionmix")
    out, err = capsys.readouterr()
    return stop.value.code or 0, out, err


BOX_TOML = """
[mixture]
units = {LiPF6 = {Li = 1, PF6 = 1}, EMIMPF6 = {EMIM = 1, PF6 = 1}}
compositions = [{LiPF6 = 0.25, EMIMPF6 = 0.75}]
n_ion_pairs = 4
charge_scale = 0.8

[sampling]
temperature_K = 300.0
equilibration_ps = 0.4
production_ps = 0.8
snapshot_interval_ps = 0.1
seed = 7
"""


@pytest.fixture(scope="module")
def packed_boxes(tmp_path_factory) -> list[Path]:
    """Two boxes from `ionmix build` (Li/EMIM/PF6, 4 ion pairs, 86 atoms; replicas 0, 1)."""
    from typer.testing import CliRunner

    from ionmix.cli import app

    root = tmp_path_factory.mktemp("packed")
    (root / "box.toml").write_text(BOX_TOML)
    built = CliRunner().invoke(app, ["build", str(root / "box.toml"), "--out",
                                     str(root / "boxes")])
    assert built.exit_code == 0, built.output
    return sorted((root / "boxes").glob("*.extxyz"))


SHORT_NVT = ["--model", "classical", "--ensemble", "nvt", "--steps", "10", "--log-every",
             "5", "--trajectory-every", "10"]


def test_cli_md_minimises_a_built_box(packed_boxes, tmp_path, capsys):
    """`ionmix md` on a box from `ionmix build` minimises it first and says so;
    --no-minimise starts the dynamics from the packed positions."""
    code, _, err = run_cli(capsys, "md", packed_boxes[0], *SHORT_NVT, "--out", tmp_path / "a")
    assert code == 0, err
    assert "minimised the starting structure (a packed box that was never relaxed)" in err
    done = json.loads((tmp_path / "a" / "md.json").read_text())["minimisation"]
    assert done["max_force_after_eV_per_A"] <= 0.5 < done["max_force_before_eV_per_A"]
    first = ase.io.read(tmp_path / "a" / "trajectory.extxyz", 0)
    assert np.linalg.norm(first.get_forces(), axis=1).max() <= 0.5
    code, _, err = run_cli(capsys, "md", packed_boxes[0], *SHORT_NVT, "--no-minimise",
                           "--out", tmp_path / "b")
    assert code == 0 and "minimised" not in err, err
    assert json.loads((tmp_path / "b" / "md.json").read_text())["minimisation"] is None


# ASE's thermostat overflows as the run diverges (a warning outside the test suite)
@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning",
                            "ignore:invalid value:RuntimeWarning")
def test_cli_classical_blow_up_says_the_integration_diverged(packed_boxes, tmp_path, capsys):
    """A packed box, not minimised, at 5 fs: the classical force field's run diverges in a
    few steps, and the message says so (not that a model left its region)."""
    code, _, err = run_cli(capsys, "md", packed_boxes[0], "--model", "classical",
                           "--no-minimise", "--timestep-fs", "5", "--ensemble", "nvt",
                           "--steps", "200", "--log-every", "5", "--trajectory-every", "50",
                           "--out", tmp_path)
    assert code == 3, err
    assert "integration diverged" in err and "--timestep-fs" in err and "--minimise" in err
    assert "model left" not in err and "Traceback" not in err


def test_cli_md_refuses_another_starting_structure(packed_boxes, tmp_path, capsys):
    """Rerunning `ionmix md` into a run folder with another structure is refused before
    anything there changes."""
    code, _, err = run_cli(capsys, "md", packed_boxes[0], *SHORT_NVT, "--out", tmp_path)
    assert code == 0, err
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    code, _, err = run_cli(capsys, "md", packed_boxes[1], *SHORT_NVT, "--steps", "20",
                           "--out", tmp_path)
    assert code == 2 and "Traceback" not in err, err
    assert f"{tmp_path} holds a run that started from another structure" in err
    assert "use another --out folder" in err
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before


@pytest.mark.parametrize("args, message", [
    (["md", "BOX", "--steps", "0"], "--steps 0: input should be greater than or equal to 1"),
    (["md", "BOX", "--steps", "-3"], "--steps -3"),
    (["md", "BOX", "--timestep-fs", "-0.5"], "--timestep-fs -0.5"),
    (["md", "BOX", "-T", "0"], "--temperature-K 0.0"),
    (["md", "BOX", "--pressure-bar", "inf"], "--pressure-bar inf: must be a finite number"),
    (["md", "BOX", "--pressure-bar", "2e6"], "--pressure-bar 2000000.0"),
    (["md", "BOX", "--log-every", "0"], "--log-every 0"),
    (["md", "BOX", "--trajectory-every", "0"], "--trajectory-every 0"),
    (["md", "BOX", "--trajectory-every", "15"],
     "--trajectory-every 15 must be a multiple of --log-every 10"),
    (["md", "BOX", "--seed", "-1"], "--seed -1"),
    (["md", "BOX", "--ensemble", "npH"], "--ensemble 'npH'"),
    (["md", "BOX", "--index", "3"], "--index 3 is out of range"),
    (["validate", "RUN", "--frames", "0"], "--frames 0"),
    (["validate", "RUN", "--frames", "-4"], "--frames -4"),
    (["export-lammps", "BOX", "--steps", "0"], "--steps 0"),
    (["export-lammps", "BOX", "--steps", "-1"], "--steps -1"),
    (["export-lammps", "BOX", "-T", "-4"], "--temperature-K -4.0"),
    (["export-lammps", "BOX", "--pressure-bar", "-1"], "--pressure-bar -1"),
    (["export-lammps", "BOX", "--timestep-fs", "0"], "--timestep-fs 0.0"),
    (["export-lammps", "BOX", "--index", "-2"], "--index -2 is out of range"),
    (["export-lammps", "BOX", "--pair-style", "mace"], "--pair-style 'mace'"),
])
def test_cli_bad_options_are_named_as_typed(packed_boxes, tmp_path, capsys, args, message):
    """Refused (exit status 2) before any work, naming the option, not the setting."""
    code, _, err = run_cli(capsys, *_command(args, packed_boxes[0], tmp_path))
    assert code == 2 and message in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def _command(args: list[str], box: Path, tmp_path: Path) -> list:
    """`args` with BOX/RUN filled in, the model and --out added."""
    command, target, *rest = args
    target = box if target == "BOX" else tmp_path / "run"
    model = {"md": ["--model", "classical"], "validate": [],
             "export-lammps": ["--model", tmp_path / "model.nequip.zip"]}[command]
    return [command, target, *model, *rest, "--out", tmp_path / "out"]


@pytest.mark.parametrize("command", ["md", "validate", "export-lammps"])
def test_cli_out_must_be_a_writable_folder(packed_boxes, tmp_path, capsys, monkeypatch,
                                           command):
    """--out naming a file, or a folder that cannot be written, is refused up front."""
    args = _command([command, "RUN" if command == "validate" else "BOX"], packed_boxes[0],
                    tmp_path)[:-2]
    taken = tmp_path / "taken.txt"
    taken.write_text("not a folder")
    code, _, err = run_cli(capsys, *args, "--out", taken)
    assert code == 2 and "'--out'" in err and f"{taken} is a file, not a folder" in err, err
    assert taken.read_text() == "not a folder" and "Traceback" not in err

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # root may write anywhere, so chmod cannot stand in for a read-only folder here
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked
                        and real_access(path, mode, **kw))
    code, _, err = run_cli(capsys, *args, "--out", locked / "job")
    assert code == 2 and "'--out'" in err and f"cannot write into {locked}" in err, err
    assert not (locked / "job").exists() and "Traceback" not in err
