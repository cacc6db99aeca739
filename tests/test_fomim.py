"""[F-OMIM][C4F9CO2], the paper's second system: the two library ions (CL&P, four anion
analogue terms), boxes of them, the classical teacher's battery on a small box, the
examples, and the validator's error for an anion missing a torsion."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

from ionmix.build import build_box
from ionmix.chemistry import load_ion, load_user_ion
from ionmix.chemistry.ions import (
    LIBRARY_DIR,
    IonLibraryError,
    list_ions,
    load_ion_folder,
    one_four_pairs,
    parse_itp,
    proper_torsions,
)
from ionmix.teachers.classical import ClassicalCalculator, make_system, make_system_for_atoms
from ionmix.testing import CalculatorBattery, Tolerance

REPO = Path(__file__).resolve().parents[1]
PAIRS = {"FOMIM": 3, "C4F9CO2": 3}
#: The paper's charge scale for this liquid.
CHARGE_SCALE = 0.7


@pytest.fixture(scope="module")
def box():
    """3 ion pairs (159 atoms), packed at 0.8 g/cm³ so that the 14 Å cation fits the box
    (edge 16.3 Å); the battery does not need the liquid's density. (With 2 pairs the
    battery's molecule permutation, seed 1, happens to be the identity.)"""
    return build_box(PAIRS, density_g_cm3=0.8, seed=0)


# ----------------------------------------------------------------------------- the ions


def test_library_lists_both():
    assert {"FOMIM", "C4F9CO2"} <= set(list_ions())


@pytest.mark.parametrize("alias, name", [
    ("[F-OMIM]+", "FOMIM"), ("F-OMIM", "FOMIM"), ("fomim", "FOMIM"), ("C8FC1im", "FOMIM"),
    ("[C4F9CO2]-", "C4F9CO2"), ("perfluoropentanoate", "C4F9CO2"),
    ("nonafluoropentanoate", "C4F9CO2"),
])
def test_aliases(alias, name):
    assert load_ion(alias).name == name


@pytest.mark.parametrize("name, mass, formula, charge, n_atoms", [
    ("FOMIM", 429.20, "C12H10F13N2", 1, 37),
    ("C4F9CO2", 263.04, "C5F9O2", -1, 16),
])
def test_mass_formula_charge(name, mass, formula, charge, n_atoms):
    ion = load_ion(name)
    assert ion.mass_amu == pytest.approx(mass, abs=0.01)
    assert (ion.formula, ion.charge, ion.n_atoms) == (formula, charge, n_atoms)
    assert sum(ion.partial_charges) == pytest.approx(charge, abs=1e-9)


@pytest.mark.parametrize("name", ["FOMIM", "C4F9CO2"])
def test_no_missing_terms(name):
    """The validator passes, and the files hold exactly the terms of the bond graph: every
    angle i-j-k, every proper torsion (plus the declared impropers), every 1-4 pair."""
    ion = load_ion_folder(LIBRARY_DIR / name)
    itp = parse_itp(ion.itp_path)
    n = len(itp.atoms)
    nb = [set() for _ in range(n)]
    for i, j in itp.bonds:
        nb[i - 1].add(j)
        nb[j - 1].add(i)
    n_angles = sum(len(s) * (len(s) - 1) // 2 for s in nb)
    assert len(itp.angles) == n_angles
    torsions = proper_torsions(n, itp.bonds)
    impropers = {"FOMIM": 5, "C4F9CO2": 1}[name]
    assert len(itp.dihedrals) == len(torsions) + impropers
    assert sorted(map(tuple, map(sorted, itp.pairs))) == one_four_pairs(n, itp.bonds)
    assert set(itp.dihedral_functs) == {"5"}  # OPLS V1..V4 as GROMACS Fourier


def test_anion_analogue_terms_are_marked():
    """The four terms il.ff lacks are tagged ANALOGUE, with the values of their analogues."""
    text = (LIBRARY_DIR / "C4F9CO2" / "C4F9CO2.itp").read_text()
    marked = {line.split(";")[1].split()[0] for line in text.splitlines()
              if not line.startswith(";") and "ANALOGUE" in line}
    assert marked == {"CO-CF-CF", "O2-CO-CF-CF", "CO-CF-CF-F", "CO-CF-CF-CF"}
    itp = parse_itp(LIBRARY_DIR / "C4F9CO2" / "C4F9CO2.itp")
    # C(carboxyl)-Cα-Cβ-Cγ takes CL&P's CF-CF-CF-CT backbone torsion (kJ/mol)
    k = itp.dihedrals.index((1, 4, 5, 8))
    assert itp.dihedral_params[k] == pytest.approx((14.675, -0.9179, -2.898, -2.0174))


def test_anion_charge_groups():
    """Carboxylate + α-CF2 carry -1 (-0.8 and -0.2, as CL&P's trifluoroacetate); the β, γ
    CF2 and the CF3 are neutral, as CL&P's fluoroalkyl chains."""
    ion = load_ion("C4F9CO2")
    q = np.asarray(ion.partial_charges)
    assert q[[0, 1, 2]].sum() == pytest.approx(-0.8)
    assert q[[3, 5, 6]].sum() == pytest.approx(-0.2)
    for group in ([4, 8, 9], [7, 11, 12], [10, 13, 14, 15]):
        assert q[group].sum() == pytest.approx(0.0, abs=1e-12)


def test_types_mix_with_the_other_ions():
    """CL&P's F is renamed FCF (PF6's F has other LJ); shared names (NA, CR, CW) have the
    same LJ as OPLS-2009IL, so a system of all four ions builds."""
    assert "F" not in parse_itp(load_ion("FOMIM").itp_path).atomtypes
    csys = make_system({"FOMIM": 1, "C4F9CO2": 1, "EMIM": 1, "PF6": 1}, 30.0)
    assert csys.system.getNumParticles() == 37 + 16 + 19 + 7


# ------------------------------------------------------------------------------ boxes


def test_box_is_neutral_with_scaled_charges(box):
    assert len(box) == 3 * 37 + 3 * 16
    csys = make_system_for_atoms(box, charge_scale=CHARGE_SCALE)
    (nb,) = [f for f in csys.system.getForces() if f.getName() == "NonbondedForce"]
    charges = [nb.getParticleParameters(i)[0]._value for i in range(nb.getNumParticles())]
    assert sum(charges) == pytest.approx(0.0, abs=1e-9)
    # the cation's charges times 0.7: NA +0.15 -> +0.105
    assert charges[0] == pytest.approx(0.15 * CHARGE_SCALE)
    masses = box.get_masses()
    assert masses.sum() == pytest.approx(3 * 429.200 + 3 * 263.035, abs=0.01)


def test_build_from_the_example_config(tmp_path):
    """`ionmix build` on the laptop example: 10 ion pairs, charge scale 0.7 in the boxes'
    info and in the teacher recorded in provenance.json."""
    from typer.testing import CliRunner

    from ionmix.cli import app

    cfg = tmp_path / "one.toml"
    text = (REPO / "examples" / "f-omim-sample.toml").read_text()
    cfg.write_text(text.replace("replicas = 2 ", "replicas = 1 "))
    result = CliRunner().invoke(app, ["build", str(cfg), "--out", str(tmp_path / "boxes")])
    assert result.exit_code == 0, result.output
    import ase.io

    atoms = ase.io.read(tmp_path / "boxes" / "FOMIMC4F9CO2-1_T300K_r0.extxyz")
    assert len(atoms) == 10 * 53
    assert atoms.info["charge_scale"] == CHARGE_SCALE
    prov = (tmp_path / "boxes" / "provenance.json").read_text()
    assert '"charge_scale": 0.7' in prov


@pytest.mark.parametrize("name", ["f-omim-sample.toml", "f-omim-sample-paper.toml"])
def test_example_configs(name):
    from ionmix.config import load_sample_config

    cfg = load_sample_config(REPO / "examples" / name)
    assert cfg.mixture.charge_scale == CHARGE_SCALE
    assert cfg.mixture.n_ion_pairs == 10
    assert cfg.sampling.production_ensemble == "npt"
    assert cfg.sampling.snapshot_interval_ps == 20.0
    header = (REPO / "examples" / name).read_text()
    assert all(f"{t}" in header for t in (300, 450, 600))


def test_paper_scale_example():
    with open(REPO / "examples" / "f-omim-sample-paper.toml", "rb") as fh:
        sampling = tomllib.load(fh)["sampling"]
    assert (sampling["equilibration_ps"], sampling["production_ps"]) == (1000.0, 6000.0)


def test_experiment_csv_reads():
    from ionmix.properties.studies import read_experiment_csv

    data = read_experiment_csv(REPO / "examples" / "f-omim-experiment.csv")
    assert data["temperature_K"].tolist() == [300.0, 340.0]
    assert data["density_g_cm3"].tolist() == [1.69, 1.64]
    assert data["kappa_T_temperature_K"].tolist() == [298.0]
    assert data["kappa_T_per_Pa"].tolist() == [8.6e-10]


def test_experiment_csv_bad_cell_is_named(tmp_path):
    from ionmix.md import MDError
    from ionmix.properties.studies import read_experiment_csv

    bad = tmp_path / "exp.csv"
    bad.write_text("temperature_K,density_g_cm3,kappa_T_per_Pa\n300,1.69,\n310,,\n")
    with pytest.raises(MDError, match=r"exp.csv, line 3: need a temperature and a density"):
        read_experiment_csv(bad)
    bad.write_text("temperature_K,density_g_cm3\n300,dense\n")
    with pytest.raises(MDError, match=r"line 2: density_g_cm3 = 'dense' is not a number"):
        read_experiment_csv(bad)


# ------------------------------------------------------------------------- bad input


def test_anion_missing_a_torsion_is_named(tmp_path):
    """The anion minus one torsion: the error names the term, its atoms and their types."""
    src = LIBRARY_DIR / "C4F9CO2"
    lines = (src / "C4F9CO2.itp").read_text().splitlines(keepends=True)
    target = next(i for i, line in enumerate(lines)
                  if line.split()[:5] == ["1", "4", "5", "8", "5"])
    del lines[target]
    (tmp_path / "anion.itp").write_text("".join(lines))
    shutil.copy(src / "C4F9CO2.pdb", tmp_path / "anion.pdb")
    with pytest.raises(IonLibraryError,
                       match=r"dihedral 1-4-5-8 \(C1-C4-C5-C8, types CO2-CFB-CSF-CSF\) is "
                             r"missing from \[ dihedrals \]"):
        load_user_ion(tmp_path / "anion.itp", tmp_path / "anion.pdb")


def test_reversed_torsion_counts(tmp_path):
    """A torsion written l-k-j-i is the same term."""
    src = LIBRARY_DIR / "C4F9CO2"
    text = (src / "C4F9CO2.itp").read_text()
    text = text.replace("    1     4     5     8  5", "    8     5     4     1  5")
    (tmp_path / "anion.itp").write_text(text)
    shutil.copy(src / "C4F9CO2.pdb", tmp_path / "anion.pdb")
    assert load_user_ion(tmp_path / "anion.itp", tmp_path / "anion.pdb").n_atoms == 16


# ------------------------------------------------------------------ the battery

DISPERSION_CORRECTION_NOT_EXTENSIVE = (
    "OpenMM's LJ dispersion correction counts same-type pairs as n(n+1)/2: a constant "
    "offset of 4.4e-4 eV on this 159-atom box (see test_classical.py)"
)


class TestFOMIMBattery(CalculatorBattery):
    """The battery on 3 ion pairs (159 atoms), charges × 0.7, the teacher's production
    settings (PME 5e-5, 1 Å LJ switch, cutoff 0.49 × 16.3 Å), Reference platform.

    Deviations measured on this box, and the tolerances (~10x; more where the deviation
    is the finite-difference stress or the PME grid, which vary from box to box):
    - forces vs -dE/dx, ε = 1e-4 Å, 8 atoms: max 1.0e-7 eV/Å (2.6e-8 at 5e-5: O(ε²)).
    - stress vs (1/V) dE/dε (step 1e-5): 1.4e-7 eV/Å3 (the teacher's own stress is a
      ±1e-3 strain difference; 5.1e-7 on a 2-pair box).
    - rotation: 1.6e-14 eV, 2.1e-13 eV/Å, stress 9.6e-8 eV/Å3 (finite-difference stress
      taken in another frame; 5.3e-7 on a 2-pair box).
    - translation (PME grid): over 8 random vectors max 2.5e-6 eV, 1.4e-5 eV/Å,
      3.5e-9 eV/Å3 (2-pair box: 4.5e-6, 1.7e-5, 7e-9).
    - permutation of whole molecules: 1.8e-14 eV, 1.8e-15 eV/Å.
    - extensivity: forces 3.2e-13 eV/Å, the energy off by the dispersion correction
      (+4.4e-4 eV; strict xfail, as for the Li/EMIM/PF6 box).
    """

    n_fd_atoms = 12
    fd_force_atol_eV_per_A = 1e-6
    strain_step = 1e-5
    fd_stress_atol_eV_per_A3 = 5e-6
    rotation_tol = Tolerance(energy_eV=1e-12, force_eV_per_A=1e-11, stress_eV_per_A3=5e-6)
    translation_tol = Tolerance(energy_eV=5e-5, force_eV_per_A=2e-4, stress_eV_per_A3=1e-7)
    lattice_shift_tol = Tolerance(energy_eV=1e-12, force_eV_per_A=1e-11, stress_eV_per_A3=1e-12)
    permutation_tol = Tolerance(energy_eV=1e-12, force_eV_per_A=1e-11, stress_eV_per_A3=1e-12)
    extensivity_tol = translation_tol
    permutation = "molecules"

    @pytest.fixture(scope="class")
    @classmethod
    def calculator(cls):
        return ClassicalCalculator(charge_scale=CHARGE_SCALE, platform="Reference")

    @pytest.fixture(scope="class")
    @classmethod
    def structure(cls, box):
        return box

    @pytest.mark.xfail(strict=True, reason=DISPERSION_CORRECTION_NOT_EXTENSIVE)
    def test_extensivity(self, calculator, structure):
        super().test_extensivity(calculator, structure)


def test_figure2_workflow_script_is_consistent():
    """examples/f-omim-study.sh parses, and its presets, files and commands exist."""
    import re
    import subprocess

    from ionmix.train.presets import PRESETS

    script = REPO / "examples" / "f-omim-study.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    presets = re.findall(r'PRESET:=([\w-]+)', text)
    assert presets and set(presets) <= set(PRESETS)
    for name in re.findall(r'\$HERE/([\w.-]+)', text):
        assert (REPO / "examples" / name).exists(), name
    from ionmix.cli import app

    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    commands |= {g.name for g in app.registered_groups}
    used = set(re.findall(r'"\$IONMIX" ([\w-]+)', text))
    assert used and used <= commands, used - commands


def test_learn_example_and_script_are_consistent():
    """examples/learn-fomim-npt.toml (issue 22's F-OMIM loop) is this liquid's sampling with
    member-driven NPT walkers at each temperature of the density study, within the label
    budget; examples/f-omim-learn.sh (the study as one command) parses and calls it."""
    import re
    import subprocess

    from ionmix.active.loop import load_learn_config
    from ionmix.cli import app

    cfg = load_learn_config(REPO / "examples" / "learn-fomim-npt.toml")
    sample = tomllib.loads((REPO / "examples" / "f-omim-sample.toml").read_text())
    assert cfg.mixture.model_dump(exclude_unset=True) == sample["mixture"]
    assert cfg.learn.baseline == "coulomb+wall+bonded+tail" and cfg.learn.committee == 4
    assert cfg.learn.max_generations * cfg.learn.max_new_frames <= 600
    script = REPO / "examples" / "f-omim-learn.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    temps = {float(t) for t in re.search(r'TEMPS:=([\d,]+)', text).group(1).split(",")}
    npt = [w for w in cfg.learn.explore if w.kind == "npt"]
    assert {w.temperature_K for w in npt} == temps == {300.0, 325.0, 350.0}
    assert all(w.drive == "member" and w.n_starts == cfg.learn.committee for w in npt)
    for name in re.findall(r'\$HERE/([\w.-]+)', text):
        assert (REPO / "examples" / name).exists(), name
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    commands |= {g.name for g in app.registered_groups}
    used = set(re.findall(r'"\$IONMIX" ([\w-]+)', text))
    assert {"learn", "props", "validate"} <= used <= commands, used - commands


def test_learn_baseline_on_this_liquid(box):
    """The loop's coulomb+wall+bonded baseline on CL&P's ions: residual labels + baseline
    give the classical teacher's labels back (1e-6 eV, eV/Å)."""
    from ionmix.chemistry.ionset import IonSet
    from ionmix.models.baseline import baseline_calculator, baseline_for_frames, residual_frames

    frame = box.copy()
    frame.info["charge_scale"] = CHARGE_SCALE
    frame.calc = ClassicalCalculator(charge_scale=CHARGE_SCALE, platform="Reference")
    energy_eV, forces, stress = (frame.get_potential_energy(), frame.get_forces(),
                                 frame.get_stress())
    from ase.calculators.singlepoint import SinglePointCalculator

    frame.calc = SinglePointCalculator(frame, energy=energy_eV, forces=forces, stress=stress)
    ions = IonSet.library(["FOMIM", "C4F9CO2"])
    baseline = baseline_for_frames("coulomb+wall+bonded", [frame], [ions], "frames")
    assert baseline.charge_scale == CHARGE_SCALE
    (residual,) = residual_frames([frame], baseline, [ions])
    work = frame.copy()
    work.calc = baseline_calculator(baseline, ions)
    assert residual.get_potential_energy() + work.get_potential_energy() == pytest.approx(
        energy_eV, abs=1e-6)
    np.testing.assert_allclose(residual.get_forces() + work.get_forces(), forces, atol=1e-6)
    np.testing.assert_allclose(residual.get_stress() + work.get_stress(), stress, atol=1e-8)
    # the record names both ions' bonded terms, and the baseline moves the labels
    assert set(baseline.to_json()["bonded"]["ion_sha256"]) == {"FOMIM", "C4F9CO2"}
    assert np.abs(work.get_forces()).max() > 0.1  # eV/Å
