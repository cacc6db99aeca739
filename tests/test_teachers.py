"""The teacher interface, ion sets and provenance: specs, keys, records, legacy stores."""

from __future__ import annotations

import pickle
import shutil

import ase.db
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from ionmix.build import build_box
from ionmix.chemistry import IonLibraryError, load_user_ion
from ionmix.chemistry.ions import LIBRARY_DIR
from ionmix.chemistry.ionset import IonSet
from ionmix.dataset import DatasetStore
from ionmix.dataset.provenance import Provenance, ProvenanceError, load_provenance
from ionmix.teachers import (
    TEACHER_KINDS,
    ClassicalTeacher,
    TeacherError,
    make_teacher,
    teacher_spec,
)
from ionmix.teachers.classical import ClassicalCalculator
from ionmix.testing import CalculatorBattery, Tolerance


def test_spec_key_is_stable_and_defaults_are_filled():
    bare = teacher_spec("classical")
    explicit = teacher_spec({"kind": "classical", "charge_scale": 0.8,
                             "lj_switch_width_A": 1.0})
    recorded = teacher_spec(explicit.record())
    assert bare.key == explicit.key == recorded.key
    assert bare.key.startswith("classical-") and len(bare.key) == len("classical-") + 12
    assert teacher_spec("classical", charge_scale=0.7).key != bare.key
    assert pickle.loads(pickle.dumps(bare)) == bare  # ships to Dask workers
    assert "classical" in TEACHER_KINDS


@pytest.mark.parametrize("data, message", [
    ({"kind": "classical", "charge_scal": 0.8}, "charge_scal: Extra inputs"),
    ({"kind": "classical", "charge_scale": 1.5}, "charge_scale"),
    ({"kind": "dft"}, "unknown teacher kind 'dft'"),
    ({}, "unknown teacher kind None"),
])
def test_bad_specs_are_named(data, message):
    with pytest.raises(TeacherError, match=message) as exc:
        teacher_spec(data, "study.toml [teacher]")
    assert "study.toml [teacher]" in str(exc.value)


def test_classical_teacher_labels_like_the_calculator():
    atoms = build_box({"EMIM": 2, "PF6": 2}, seed=1)
    teacher = make_teacher(teacher_spec("classical", cutoff_A=4.0), platform="Reference")
    assert isinstance(teacher, ClassicalTeacher) and teacher.provides_stress
    atoms.calc = teacher.calculator(atoms)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    direct = atoms.copy()
    direct.calc = ClassicalCalculator(charge_scale=0.8, cutoff_A=4.0, platform="Reference")
    assert energy == pytest.approx(direct.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(forces, direct.get_forces(), atol=1e-9)
    assert teacher.isolated_atom_energies_eV(["P", "C", "F"]) == {"C": 0.0, "F": 0.0, "P": 0.0}


def _user_bf4(tmp_path):
    itp = (LIBRARY_DIR / "BF4" / "BF4.itp").read_text().replace("BF4 ", "MyBF4 ", 1)
    (tmp_path / "MyBF4.itp").write_text(itp)
    shutil.copy(LIBRARY_DIR / "BF4" / "BF4.pdb", tmp_path / "MyBF4.pdb")
    return load_user_ion(tmp_path / "MyBF4.itp", tmp_path / "MyBF4.pdb")


def test_ion_set_record_rebuilds_user_ions_anywhere(tmp_path, monkeypatch):
    monkeypatch.setenv("IONMIX_CACHE", str(tmp_path / "cache"))
    (tmp_path / "src").mkdir()
    user = _user_bf4(tmp_path / "src")
    ions = IonSet({"Li": IonSet.library(["Li"])["Li"], "MyBF4": user})
    record = ions.record
    shutil.rmtree(tmp_path / "src")  # the user's files are gone
    again = IonSet.from_record(record)
    assert again.key == ions.key and list(again.user_ions) == ["MyBF4"]
    assert again["MyBF4"].partial_charges == user.partial_charges
    assert IonSet.library(["li", "[PF6]-"]).key == IonSet.library(["PF6", "Li"]).key
    record["MyBF4"]["itp"] = record["MyBF4"]["itp"].replace("0.8276", "0.9")
    with pytest.raises(IonLibraryError, match="do not match their recorded sha256"):
        IonSet.from_record(record)


def test_provenance_file_round_trip_and_unknown_keys(tmp_path):
    spec = teacher_spec("classical", charge_scale=0.7)
    ions = IonSet.library(["EMIM", "PF6"])
    Provenance().add(spec, ions).write(tmp_path)
    prov = load_provenance(tmp_path / "box.extxyz")
    atoms = build_box({"EMIM": 1, "PF6": 1}, seed=0)
    atoms.info.update(teacher=spec.key, ion_set=ions.key)
    assert prov.teacher_spec(atoms) == spec
    assert prov.teacher(atoms).params.charge_scale == 0.7
    # a run folder of a study (props density's T_300K/) finds the study's record
    assert load_provenance(tmp_path / "T_300K" / "run.extxyz").teacher_spec(atoms) == spec
    atoms.info["teacher"] = "classical-000000000000"
    with pytest.raises(ProvenanceError, match="does not record"):
        prov.teacher_spec(atoms)
    assert load_provenance(tmp_path / "elsewhere" / "deeper" / "x.xyz").teachers == {}


def test_legacy_store_rows_read_as_md_snapshots_of_the_classical_teacher(tmp_path):
    """A store written before teacher specs (teacher "classical", no task, no label_id)."""
    atoms = build_box({"Li": 1, "PF6": 1}, seed=0)
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((len(atoms), 3)))
    db = ase.db.connect(tmp_path / "old.db", type="db")
    db.write(atoms, key_value_pairs={
        "run_id": "r0", "frame_index": 0, "composition": "LiPF6=1", "temperature_K": 300.0,
        "replica": 0, "seed": 1, "time_ps": 0.1, "teacher": "classical",
        "charge_scale": 0.6, "cutoff_A": 5.0, "molecules": "Li:1,PF6:1"})
    store = DatasetStore(tmp_path / "old.db")
    (frame,) = store.select()
    assert frame.info["task"] == "md" and frame.info["label_id"] == "r0/0"
    spec = store.provenance().teacher_spec(frame.atoms)
    assert spec.params["charge_scale"] == 0.6 and spec.params["cutoff_A"] == 5.0
    assert set(store.provenance().ion_set(frame.atoms)) == {"Li", "PF6"}
    assert store.has_frame("r0", 0)  # resuming an old run still skips stored frames


# ------------------------------------------------------- the battery on the xTB teacher

class TestXtbTeacherBattery(CalculatorBattery):
    """GFN2-xTB (tblite, the teacher's defaults: accuracy 1) on Li + PF6⁻ in a 6.3 Å box,
    shifted by (0.37, 0.41, 0.53) Å and wrapped so that no atom sits on a cell face.

    Deviations measured on this box (2026-12-06), tolerances ~10× (≥ 20× for rounding):
    - forces vs -dE/dx, all 8 atoms: 8.2e-5 eV/Å at ε = 2e-3 Å, 2.9e-5 at 1e-3, 1.5e-5 at
      5e-4 (O(ε²), then a floor). The unshifted box has its Li exactly on a face (z = 0):
      there a 1e-5 eV step in the energy as the atom crosses the face gives 1.1e-2 eV/Å at
      ε = 5e-4 (∝ 1/ε; tighter SCF accuracy does not change it): tblite's lattice sums
      depend on where an atom is wrapped.
    - stress vs (1/V) dE/dε: 3.5e-7 eV/Å³ at strain 1e-4, 1.1e-7 at 5e-5.
    - rotation: 2.3e-13 eV, 8.9e-14 eV/Å, 8.1e-16 eV/Å³; permutation of the atoms:
      3.4e-13 eV, 7.7e-14 eV/Å, 3.3e-16 eV/Å³.
    - translation (atoms wrapped across faces): 3.0e-5 eV, 2.8e-5 eV/Å, 3.5e-7 eV/Å³, the
      same wrapping effect; lattice shifts (atoms moved by whole cell vectors, wrapped back
      by tblite) are held to the same tolerance.
    Not extensive at this size: Γ-point only, so a 2×1×1 supercell samples two k-points of
    the small cell (energy 0.38 eV from twice, forces 0.18 eV/Å, stress 1.6e-3 eV/Å³).
    """

    fd_step_A = 5e-4
    n_fd_atoms = 8
    fd_force_atol_eV_per_A = 1.5e-4
    strain_step = 5e-5
    fd_stress_atol_eV_per_A3 = 1e-6
    rotation_tol = Tolerance(energy_eV=5e-12, force_eV_per_A=2e-12, stress_eV_per_A3=2e-14)
    permutation_tol = rotation_tol
    lattice_shift_tol = Tolerance(energy_eV=3e-4, force_eV_per_A=3e-4, stress_eV_per_A3=3.5e-6)
    translation_tol = lattice_shift_tol
    extensivity_tol = rotation_tol
    extensivity_skip_reason = ("Γ-point only: a 2x1x1 supercell of a 6.3 Å box samples two "
                               "k-points (0.38 eV from twice the energy, measured)")

    @pytest.fixture(scope="class")
    @classmethod
    def calculator(cls):
        pytest.importorskip("tblite")
        return make_teacher(teacher_spec("xtb")).calculator()

    @pytest.fixture(scope="class")
    @classmethod
    def structure(cls):
        atoms = build_box({"Li": 1, "PF6": 1}, density_g_cm3=1.0, seed=0)
        atoms.positions += (0.37, 0.41, 0.53)
        atoms.wrap()
        return atoms
