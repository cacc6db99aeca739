"""The physics under a student (issue 22): Coulomb and ZBL baselines, their record beside
the model, and the one model factory.

A tiny Allegro (1 epoch, float64) is trained with ``coulomb+zbl`` on the classical tiny
sample (Li/EMIM/PF6, charges × 0.8); the checks are on what a user relies on: the labels it
learned plus the baseline give back the teacher's, the factory's calculator is network +
baseline, its reported test error is the error of network + baseline on the teacher's own
labels, and a missing, altered or mismatched baseline is refused by name.
"""

from __future__ import annotations

import json
import shutil

import ase.io
import numpy as np
import pytest
from ase.calculators.mixing import SumCalculator

from ionmix.dataset import DatasetStore
from ionmix.models import BaselineError, load_model, read_record
from ionmix.models.baseline import Baseline, baseline_for_frames, coulomb_calculator
from ionmix.testing import CalculatorBattery, Tolerance
from ionmix.train.errors import TrainConfigError

BASELINE = "coulomb+zbl"


@pytest.fixture(scope="module")
def student(tiny_sample, tmp_path_factory):
    """(TrainResult, store path) of a tiny coulomb+zbl student."""
    from ionmix.train import train_from_store

    store = tiny_sample / "frames.db"
    comps = DatasetStore(store).compositions()
    result = train_from_store(store, comps, n_train=3, n_val=1, n_test=2,
                              preset="cpu-tiny-allegro-npt",
                              run_dir=tmp_path_factory.mktemp("student"),
                              overrides={"max_epochs": 1, "model_dtype": "float64"},
                              baseline=BASELINE, say=None)
    return result, store


def _provenance(store):
    return DatasetStore(store).provenance()


def test_residual_labels_plus_baseline_give_the_teachers_labels(student):
    result, store = student
    prov = _provenance(store)
    for role in ("train", "val", "test"):
        teacher = ase.io.read(result.run_dir / "data" / f"{role}.extxyz", ":")
        residual = ase.io.read(result.run_dir / "residual" / f"{role}.extxyz", ":")
        assert len(residual) == len(teacher)
        baseline = read_record(result.package_path)
        for t, r in zip(teacher, residual, strict=True):
            # a fresh calculator, not the cache the training used
            work = t.copy()
            work.calc = coulomb_calculator(baseline, prov.ion_set(t))
            e_b, f_b, s_b = work.get_potential_energy(), work.get_forces(), work.get_stress()
            assert abs(e_b) > 1.0  # the baseline is not nothing (eV)
            assert r.get_potential_energy() + e_b == pytest.approx(t.get_potential_energy(),
                                                                   abs=1e-6)
            np.testing.assert_allclose(r.get_forces() + f_b, t.get_forces(), atol=1e-6)
            np.testing.assert_allclose(r.get_stress() + s_b, t.get_stress(), atol=1e-8)


def test_record_names_the_baseline_and_the_package(student):
    result, _ = student
    record = json.loads((result.run_dir / "baseline.json").read_text())
    baseline = read_record(result.package_path)
    assert baseline.name == BASELINE and record["key"] == baseline.key
    assert baseline.charge_scale == pytest.approx(0.8)
    assert set(baseline.ion_charges_e) == {"Li", "EMIM", "PF6"}
    assert "nequip.nn.pair_potential.ZBL" in (result.run_dir / "config.yaml").read_text()


def test_factory_gives_network_plus_baseline(student):
    result, store = student
    from ionmix.models import load_calculator

    frame = DatasetStore(store).select(replica=1)[0].atoms
    loaded = load_model(result.package_path, frame, provenance=_provenance(store))
    assert isinstance(loaded.calc, SumCalculator)
    assert loaded.baseline.key in loaded.model_id
    parts = []
    for calc in (load_calculator(result.package_path),
                 coulomb_calculator(loaded.baseline, _provenance(store).ion_set(frame))):
        work = frame.copy()
        work.calc = calc
        parts.append((work.get_potential_energy(), work.get_forces()))
    work = frame.copy()
    work.calc = loaded.calc
    assert work.get_potential_energy() == pytest.approx(parts[0][0] + parts[1][0], abs=1e-5)
    np.testing.assert_allclose(work.get_forces(), parts[0][1] + parts[1][1], atol=1e-4)
    # the run folder and the package load the same model
    assert load_model(result.run_dir, frame, provenance=_provenance(store)).model_id == \
        loaded.model_id


def test_reported_test_error_is_the_students_error_on_the_teachers_labels(student):
    """nequip tested on residual labels; network + baseline on the teacher's own labels
    must give the same MAEs."""
    result, store = student
    from ionmix.train import evaluate

    ours = evaluate(result.package_path, result.run_dir / "data" / "test.extxyz",
                    provenance=_provenance(store))
    for key in ("energy_mae_meV_per_atom", "force_mae_meV_per_A", "stress_mae_meV_per_A3"):
        assert getattr(ours, key) == pytest.approx(result.metrics[key], rel=1e-4, abs=1e-4), key


# --------------------------------------------------------------------------------------
# bad input


def test_missing_altered_or_foreign_record_is_refused(student, tmp_path):
    result, store = student
    frame = DatasetStore(store).select(replica=1)[0].atoms
    folder = tmp_path / "copy"
    shutil.copytree(result.run_dir, folder, ignore=shutil.ignore_patterns("residual", "*.ckpt"))
    package = folder / "model.nequip.zip"
    record_path = folder / "baseline.json"
    record = json.loads(record_path.read_text())

    record_path.unlink()
    with pytest.raises(BaselineError, match=r"baseline.json: missing"):
        load_model(package, frame)
    altered = json.loads(json.dumps(record))
    altered["baseline"]["charge_scale"] = 1.0
    record_path.write_text(json.dumps(altered))
    with pytest.raises(BaselineError, match="baseline.json: key .* altered"):
        load_model(package, frame)
    foreign = dict(record, package_sha256="0" * 64)
    record_path.write_text(json.dumps(foreign))
    with pytest.raises(BaselineError, match="another package"):
        load_model(package, frame)
    record_path.write_text("not json")
    with pytest.raises(BaselineError, match="not a baseline record"):
        load_model(package, frame)


def test_compiled_form_is_refused_where_it_cannot_be_what_was_asked(student):
    """float64 (a compiled model keeps its own dtype), a checkpoint (only packages carry
    the record the compiled file is checked against) and the classical teacher: refused
    by name before anything is compiled."""
    from ionmix.models import ModelError
    from ionmix.models.network import CompileError

    result, store = student
    frame = DatasetStore(store).select(replica=1)[0].atoms
    prov = _provenance(store)
    with pytest.raises(CompileError, match="float64 and compiled"):
        load_model(result.package_path, frame, provenance=prov, float64=True, compiled=True)
    with pytest.raises(CompileError, match=r"best.ckpt: only a packaged model"):
        load_model(result.checkpoint_path, frame, provenance=prov, compiled=True)
    with pytest.raises(ModelError, match="'classical': only a trained network"):
        load_model("classical", frame, provenance=prov, compiled=True)
    assert not list(result.run_dir.glob("*.pt2*"))


@pytest.mark.slow
def test_compiled_student_is_the_package_and_is_kept_until_its_record_changes(student,
                                                                               tmp_path):
    """nequip-compile (AOTInductor) of the float64 student: the same energy, forces and
    stress as the package plus its baseline, compiled once, remade when the package's
    record no longer matches."""
    from ionmix.models.network import compiled_network

    result, store = student
    folder = tmp_path / "copy"
    shutil.copytree(result.run_dir, folder, ignore=shutil.ignore_patterns("residual", "*.ckpt"))
    package = folder / "model.nequip.zip"
    frame = DatasetStore(store).select(replica=1)[0].atoms
    prov = _provenance(store)
    plain = load_model(package, frame, provenance=prov)
    fast = load_model(package, frame, provenance=prov, compiled=True)
    assert fast.model_id == plain.model_id.replace(" + ", " compiled + ", 1)
    assert fast.type_names == plain.type_names
    rng = np.random.default_rng(0)
    for _ in range(3):
        a = frame.copy()
        a.positions += rng.normal(0.0, 0.02, a.positions.shape)
        b = a.copy()
        a.calc, b.calc = plain.calc, fast.calc
        assert b.get_potential_energy() == pytest.approx(a.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-8)
        np.testing.assert_allclose(b.get_stress(), a.get_stress(), atol=1e-10)
    compiled = folder / "model.nequip.pt2"
    record = compiled.with_name("model.nequip.pt2.json")
    first = compiled.stat().st_mtime_ns
    assert compiled_network(package) == compiled and compiled.stat().st_mtime_ns == first
    stale = json.loads(record.read_text())
    record.write_text(json.dumps(dict(stale, package_sha256="0" * 64)))
    compiled_network(package)
    assert compiled.stat().st_mtime_ns != first
    assert json.loads(record.read_text()) == stale
    assert not list(folder.glob(".compiling-*"))


def test_structure_that_does_not_match_the_baseline_is_refused(student):
    result, store = student
    prov = _provenance(store)
    frame = DatasetStore(store).select(replica=1)[0].atoms
    other_scale = frame.copy()
    other_scale.info["charge_scale"] = 1.0
    with pytest.raises(BaselineError, match=r"charge_scale 1 differs .* \(0.8\)"):
        load_model(result.package_path, other_scale, provenance=prov)
    bare = frame.copy()
    bare.info.pop("molecules", None)
    for name in ("mol_id", "ion_name"):
        bare.arrays.pop(name, None)
    with pytest.raises(BaselineError, match="needs molecule information"):
        load_model(result.package_path, bare, provenance=prov)
    with pytest.raises(BaselineError, match="needs the structure"):
        load_model(result.package_path)


def test_baseline_charges_must_match_the_frames(tiny_sample):
    store = DatasetStore(tiny_sample / "frames.db")
    prov = store.provenance()
    frames = [f.atoms for f in store.select()[:2]]
    ions = [prov.ion_set(a) for a in frames]
    frames[1].info["charge_scale"] = 1.0
    with pytest.raises(BaselineError, match=r"charge scales \[0.8, 1.0\]"):
        baseline_for_frames("coulomb", frames, ions, "train.extxyz")
    del frames[1].info["charge_scale"]
    with pytest.raises(BaselineError, match="train.extxyz frame 1: no charge_scale"):
        baseline_for_frames("coulomb", frames, ions, "train.extxyz")
    with pytest.raises(BaselineError, match="unknown baseline 'ewald'"):
        baseline_for_frames("ewald", frames, ions, "train.extxyz")
    baseline = baseline_for_frames("coulomb", frames[:1], ions[:1], "train.extxyz")
    changed = {name: list(q) for name, q in baseline.ion_charges_e.items()}
    changed["PF6"][0] += 0.1
    other = Baseline("coulomb", charge_scale=0.8, ion_charges_e=changed)
    with pytest.raises(BaselineError, match="partial charges of ion PF6 differ"):
        other.check_structure(frames[0], ions[0], "frame")


def test_zbl_for_an_unknown_element_is_refused():
    from ionmix.models.baseline import zbl_pair_potential

    assert zbl_pair_potential(["C", "H", "Li"])["_target_"] == "nequip.nn.pair_potential.ZBL"
    with pytest.raises(BaselineError, match="Xx is not one"):
        zbl_pair_potential(["C", "Xx"])


def test_fine_tuning_with_another_baseline_is_refused(student, tmp_path):
    result, store = student
    from ionmix.train import train_from_store

    with pytest.raises(TrainConfigError, match="trained with baseline coulomb\\+zbl-"):
        train_from_store(store, DatasetStore(store).compositions(), n_train=3, n_val=1,
                         n_test=2, preset="cpu-tiny-allegro-npt", run_dir=tmp_path / "ft",
                         overrides={"max_epochs": 1}, baseline="none", say=None,
                         initial_model=result.package_path)


# --------------------------------------------------------------------------------------
# the summed calculator passes the battery


class TestStudentBattery(CalculatorBattery):
    """The battery on network (float64) + Coulomb baseline (torch-pme, float64) on an 86-atom
    frame of the tiny sample, as the factory builds it.

    Deviations measured on it (each test run with zero tolerance; the first quantity that
    differs is named), and the tolerances (~10x or more):
    - forces vs -dE/dx, ε = 1e-4 Å, 20 atoms: 4.8e-7 eV/Å (O(ε²) truncation).
    - stress vs (1/V) dE/dε, strain step 1e-5: 7.1e-11 eV/Å³ (both parts by autograd; the
      OpenMM baseline's finite-difference stress was 1.8e-6 to 6.8e-5 off here).
    - rotation 1.1e-13 eV; lattice shifts 3.4e-13 eV; permutation of whole molecules
      7.1e-15 eV/Å; 2x1x1 supercell 8.4e-14 eV/Å.
    - translation (the PME mesh is fixed in space): 6.7e-6 eV when first measured; 6.3e-5
      eV and 1.4e-4 eV/Å on 2026-12-06 (both students of the committee below alike: the
      baseline's share), so the tolerance is ~10x that.
    """

    n_fd_atoms = 20
    fd_force_atol_eV_per_A = 5e-6
    strain_step = 1e-5
    fd_stress_atol_eV_per_A3 = 1e-9
    rotation_tol = Tolerance(energy_eV=1e-10, force_eV_per_A=1e-9, stress_eV_per_A3=1e-9)
    translation_tol = Tolerance(energy_eV=6e-4, force_eV_per_A=1.5e-3, stress_eV_per_A3=5e-7)
    lattice_shift_tol = Tolerance(energy_eV=1e-10, force_eV_per_A=1e-9, stress_eV_per_A3=1e-10)
    permutation_tol = lattice_shift_tol
    extensivity_tol = Tolerance(energy_eV=1e-10, force_eV_per_A=1e-9, stress_eV_per_A3=1e-9)
    permutation = "molecules"

    @pytest.fixture(scope="class")
    @classmethod
    def structure(cls, tiny_sample):
        from ionmix.chemistry.topology import attach_molecules, molecules_of

        store = DatasetStore(tiny_sample / "frames.db")
        atoms = store.select(replica=1)[0].atoms
        ions = store.provenance().ion_set(atoms)
        # per-atom molecule arrays (which the battery's permutations and supercell follow),
        # not the store's run-length info
        attach_molecules(atoms, molecules_of(atoms), {n: ions[n].n_atoms for n in ions})
        del atoms.info["molecules"]
        return atoms

    #: the fixture of the student under test
    student_fixture = "student"

    @pytest.fixture(scope="class")
    @classmethod
    def calculator(cls, request, structure):
        result, store = request.getfixturevalue(cls.student_fixture)
        return load_model(result.package_path, structure, provenance=_provenance(store),
                          float64=True).calc


@pytest.fixture(scope="module")
def second_student(tiny_sample, tmp_path_factory):
    """Another member for a committee: the same baseline, seed 1."""
    from ionmix.train import train_from_store

    store = tiny_sample / "frames.db"
    return train_from_store(store, DatasetStore(store).compositions(), n_train=3, n_val=1,
                            n_test=2, preset="cpu-tiny-allegro-npt", seed=1,
                            run_dir=tmp_path_factory.mktemp("student-1"),
                            overrides={"max_epochs": 1, "model_dtype": "float64"},
                            baseline=BASELINE, say=None)


class TestCommitteeBattery(TestStudentBattery):
    """The battery on a committee of two students (seeds 0 and 1, float64) and their one
    Coulomb baseline, as `load_committee` builds it for the learning loop: the mean of the
    members' energies, forces and stress plus the baseline's, evaluated once.

    Deviations measured on the same 86-atom frame (2026-12-06): forces vs -dE/dx (ε = 1e-4
    Å, 20 atoms) 4.4e-7 eV/Å; stress vs (1/V) dE/dε (step 1e-5) 6.8e-11 eV/Å³; rotation
    0 eV; permutation of whole molecules 7.1e-15 eV/Å; 2x1x1 supercell 1.4e-14 eV/Å;
    translation 6.3e-5 eV, 1.4e-4 eV/Å (the baseline's PME mesh). Tolerances: the single
    student's (the same sources of error).
    """

    @pytest.fixture(scope="class")
    @classmethod
    def calculator(cls, student, second_student, structure):
        from ionmix.models import load_committee

        result, store = student
        return load_committee([result.package_path, second_student.package_path], structure,
                              provenance=_provenance(store), float64=True).calc


# --------------------------------------------------------------------------------------
# the intermolecular wall


def _liquid_frame(tiny_sample):
    store = DatasetStore(tiny_sample / "frames.db")
    atoms = store.select(replica=1)[0].atoms
    return atoms, store.provenance().ion_set(atoms)


def _pushed_onto_a_neighbour(atoms, distance_A: float):
    """A copy with its Li moved to `distance_A` from the nearest F of another molecule."""
    moved = atoms.copy()
    symbols = moved.get_chemical_symbols()
    li = symbols.index("Li")
    vectors = moved.get_distances(li, range(len(moved)), mic=True, vector=True)
    lengths = np.linalg.norm(vectors, axis=1)
    f = min((k for k, s in enumerate(symbols) if s == "F"), key=lambda k: lengths[k])
    moved.positions[li] += vectors[f] * (1.0 - distance_A / lengths[f])
    return moved, li, f


def test_wall_leaves_the_liquid_alone_and_repels_overlaps(tiny_sample):
    from ionmix.models.wall import IntermolecularWall, zbl_energy_eV
    from ionmix.testing import numerical_forces, numerical_stress

    atoms, ions = _liquid_frame(tiny_sample)
    wall = IntermolecularWall(ions)
    liquid = atoms.copy()
    liquid.calc = wall
    assert liquid.get_potential_energy() == 0.0  # no contact below 1.6 Å in the liquid
    assert not np.any(liquid.get_forces())
    pushed, li, f = _pushed_onto_a_neighbour(atoms, 1.0)
    pushed.calc = wall
    # at 1.0 Å the switch is 1: the pair's whole ZBL energy (and no other pair's)
    assert pushed.get_potential_energy() == pytest.approx(float(zbl_energy_eV(3.0, 9.0, 1.0)[0]))
    away = pushed.get_distance(li, f, mic=True, vector=True)
    assert np.dot(pushed.get_forces()[f], away) > 0  # F pushed away from Li
    # forces = -dE/dx and stress = (1/V) dE/dε by central differences: 1e-6 eV/Å, eV/Å³
    pushed, li, f = _pushed_onto_a_neighbour(atoms, 1.4)  # inside the switch
    pushed.calc = wall
    numeric = numerical_forces(wall, pushed, [li, f], 1e-5)
    np.testing.assert_allclose(pushed.get_forces()[[li, f]], numeric, atol=1e-6)
    from ase.stress import voigt_6_to_full_3x3_stress

    np.testing.assert_allclose(voigt_6_to_full_3x3_stress(pushed.get_stress()),
                               numerical_stress(wall, pushed, 1e-6), atol=1e-6)


def test_wall_baseline_is_recorded_and_not_exported_to_lammps(tiny_sample, tmp_path):
    from ionmix.export.lammps import LammpsExportError, write_lammps_inputs_for

    atoms, ions = _liquid_frame(tiny_sample)
    baseline = baseline_for_frames("coulomb+wall", [atoms], [ions], "frames")
    assert baseline.to_json()["wall"]["cutoff_A"] == pytest.approx(1.6)
    assert Baseline.from_json(baseline.to_json(), "record").key == baseline.key
    with pytest.raises(LammpsExportError, match="intermolecular wall .* cannot express"):
        write_lammps_inputs_for(atoms, ["C", "F", "H", "Li", "N", "P"], "allegro",
                                "model.nequip.pt2", tmp_path / "job", baseline=baseline,
                                ions=ions)
    assert not (tmp_path / "job").exists()


# --------------------------------------------------------------------------------------
# the force field's bonded terms


def test_bonded_part_is_the_force_fields_bonded_terms(tiny_sample):
    """Energy = the teacher's bonds + angles + torsions (its own term split, force groups of
    the whole force field); forces = −dE/dx; stress = (1/V) dE/dε (central differences),
    also with molecules wrapped across the box."""
    from ase.stress import voigt_6_to_full_3x3_stress

    from ionmix.models.baseline import bonded_calculator
    from ionmix.teachers.classical.terms import energy_terms_meV_per_atom
    from ionmix.testing import numerical_forces, numerical_stress

    atoms, ions = _liquid_frame(tiny_sample)
    baseline = baseline_for_frames("bonded", [atoms], [ions], "frames")
    bonded = bonded_calculator(baseline, ions)
    teacher = DatasetStore(tiny_sample / "frames.db").provenance().teacher(
        atoms, "classical").calculator(atoms)
    terms = energy_terms_meV_per_atom([atoms], teacher)
    expected_eV = sum(terms[k][0] for k in ("bonds", "angles", "torsions")) * len(atoms) / 1e3
    work = atoms.copy()
    work.calc = bonded
    assert work.get_potential_energy() == pytest.approx(expected_eV, abs=1e-6)
    assert abs(work.get_potential_energy()) > 0.1  # not nothing (eV)
    wrapped = atoms.copy()
    wrapped.wrap()
    assert not np.allclose(wrapped.positions, atoms.positions)  # some molecule is split
    wrapped.calc = bonded
    np.testing.assert_allclose(wrapped.get_stress(), work.get_stress(), atol=1e-12)
    picked = list(range(0, len(atoms), 9))
    np.testing.assert_allclose(wrapped.get_forces()[picked],
                               numerical_forces(bonded, wrapped, picked, 1e-5), atol=1e-6)
    np.testing.assert_allclose(voigt_6_to_full_3x3_stress(wrapped.get_stress()),
                               numerical_stress(bonded, wrapped, 1e-6), atol=1e-8)


def _assert_residual_plus_baseline_is_the_teacher(frames, residual, baseline, ion_sets):
    """Residual labels + a fresh baseline calculator give the teacher's labels back
    (1e-6 eV and eV/Å, 1e-8 eV/Å³)."""
    from ionmix.models.baseline import baseline_calculator

    for t, r, ions in zip(frames, residual, ion_sets, strict=True):
        work = t.copy()
        work.calc = baseline_calculator(baseline, ions)
        assert r.get_potential_energy() + work.get_potential_energy() == pytest.approx(
            t.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(r.get_forces() + work.get_forces(), t.get_forces(),
                                   atol=1e-6)
        np.testing.assert_allclose(r.get_stress() + work.get_stress(), t.get_stress(),
                                   atol=1e-8)


def test_bonded_residual_labels_plus_baseline_give_the_teachers_labels(tiny_sample):
    from ionmix.dataset.store import frame_hash
    from ionmix.models.baseline import BaselineCache, residual_frames

    store = DatasetStore(tiny_sample / "frames.db")
    frames = [f.atoms for f in store.select(replica=0)][:3]
    prov = store.provenance()
    ion_sets = [prov.ion_set(f) for f in frames]
    baseline = baseline_for_frames("coulomb+wall+bonded", frames, ion_sets, "frames")
    residual = residual_frames(frames, baseline, ion_sets)
    _assert_residual_plus_baseline_is_the_teacher(frames, residual, baseline, ion_sets)
    # the bonded part moves the labels (it is not the coulomb+wall residual)
    plain = residual_frames(frames[:1], baseline_for_frames("coulomb+wall", frames[:1],
                                                            ion_sets[:1], "frames"),
                            ion_sets[:1])
    assert np.abs(plain[0].get_forces() - residual[0].get_forces()).max() > 1.0  # eV/Å
    cache = BaselineCache(tiny_sample.parent / "bonded-cache.sqlite")
    residual_frames(frames[:1], baseline, ion_sets[:1], cache)
    assert cache.get(baseline.key, frame_hash(frames[0])) is not None


def test_bonded_baseline_is_recorded_checked_and_not_exported_to_lammps(tiny_sample,
                                                                         tmp_path):
    from ionmix.export.lammps import LammpsExportError, write_lammps_inputs_for
    from ionmix.models.baseline import bonded_terms_sha256

    atoms, ions = _liquid_frame(tiny_sample)
    baseline = baseline_for_frames("coulomb+wall+bonded", [atoms], [ions], "frames")
    record = baseline.to_json()["bonded"]
    assert set(record["ion_sha256"]) == {"Li", "EMIM", "PF6"}
    assert record["ion_sha256"]["EMIM"] == bonded_terms_sha256(ions["EMIM"])
    assert record["ion_sha256"]["EMIM"] != record["ion_sha256"]["PF6"]
    assert Baseline.from_json(baseline.to_json(), "record").key == baseline.key
    baseline.check_structure(atoms, ions, "structure")  # its own ions pass
    altered = Baseline.from_json({**baseline.to_json(), "bonded": {
        **record, "ion_sha256": {**record["ion_sha256"], "EMIM": "0" * 16}}}, "record")
    assert altered.key != baseline.key
    with pytest.raises(BaselineError, match="structure: the bonded terms of ion EMIM differ"):
        altered.check_structure(atoms, ions, "structure")
    bare = atoms.copy()
    for name in ("mol_id", "ion_name"):
        bare.arrays.pop(name, None)
    bare.info.pop("molecules", None)
    with pytest.raises(BaselineError, match="frames frame 0: a bonded baseline needs molecule"):
        baseline_for_frames("bonded", [bare], [ions], "frames")
    with pytest.raises(LammpsExportError, match="bonded terms .* cannot express"):
        write_lammps_inputs_for(atoms, ["C", "F", "H", "Li", "N", "P"], "allegro",
                                "model.nequip.pt2", tmp_path / "job",
                                baseline=baseline_for_frames("coulomb+bonded", [atoms],
                                                             [ions], "frames"), ions=ions)
    assert not (tmp_path / "job").exists()


def _tiny_student(tiny_sample, tmp_path_factory, baseline: str):
    """(TrainResult, store path) of a tiny student on `baseline` (1 epoch, float64)."""
    from ionmix.train import train_from_store

    store = tiny_sample / "frames.db"
    result = train_from_store(store, DatasetStore(store).compositions(), n_train=3, n_val=1,
                              n_test=2, preset="cpu-tiny-allegro-npt",
                              run_dir=tmp_path_factory.mktemp("student"),
                              overrides={"max_epochs": 1, "model_dtype": "float64"},
                              baseline=baseline, say=None)
    return result, store


@pytest.fixture(scope="module")
def bonded_student(tiny_sample, tmp_path_factory):
    """A tiny coulomb+wall+bonded student (`_tiny_student`)."""
    return _tiny_student(tiny_sample, tmp_path_factory, "coulomb+wall+bonded")


def test_bonded_students_reported_test_error_is_on_the_teachers_labels(bonded_student):
    result, store = bonded_student
    from ionmix.train import evaluate

    assert read_record(result.package_path).name == "coulomb+wall+bonded"
    ours = evaluate(result.package_path, result.run_dir / "data" / "test.extxyz",
                    provenance=_provenance(store))
    for key in ("energy_mae_meV_per_atom", "force_mae_meV_per_A", "stress_mae_meV_per_A3"):
        assert getattr(ours, key) == pytest.approx(result.metrics[key], rel=1e-4, abs=1e-4), key


# --------------------------------------------------------------------------------------
# the bonded prior refitted to the teacher (bonded-fit)


def _altered(ions, atoms) -> dict:
    """Every harmonic term type of `atoms` with k × 1.3 and x0 shifted (bonds +0.02 Å,
    angles +0.05 rad): springs a teacher might have instead of the force field's."""
    from ionmix.chemistry.topology import molecules_of
    from ionmix.teachers.classical.harmonic import harmonic_terms
    from ionmix.teachers.classical.system import make_system

    bonds, angles = harmonic_terms(make_system(molecules_of(atoms), atoms.cell.array,
                                               ions=ions, bonded_only=True))
    out = {key: (1.3 * k, r0 + 0.02) for *_, key, r0, k in bonds}
    out.update({key: (1.3 * k, t0 + 0.05) for *_, key, t0, k in angles})
    return out


def _labelled_by_altered_springs(frames, ion_sets, springs):
    """Copies of `frames` labelled by Coulomb + wall + the force field's torsions + harmonic
    bonds and angles with `springs` (energy, forces, stress)."""
    from ase.calculators.mixing import SumCalculator
    from ase.calculators.singlepoint import SinglePointCalculator

    from ionmix.models.baseline import baseline_calculator
    from ionmix.teachers.classical.calculator import ClassicalCalculator

    out = []
    for atoms, ions in zip(frames, ion_sets, strict=True):
        plain = baseline_for_frames("coulomb+wall", [atoms], [ions], "frames")
        work = atoms.copy()
        work.calc = SumCalculator([baseline_calculator(plain, ions), ClassicalCalculator(
            ions=ions, bonded_only=True, platform="Reference", bonded_parameters=springs)])
        labelled = atoms.copy()
        labelled.calc = SinglePointCalculator(labelled, energy=work.get_potential_energy(),
                                              forces=work.get_forces(),
                                              stress=work.get_stress())
        out.append(labelled)
    return out


def test_bonded_fit_recovers_the_springs_that_made_the_labels(tiny_sample):
    """Labels made with other springs than the force field's: the fit finds them (its
    design matrix is numpy geometry, the labels are OpenMM's), and residual + baseline
    gives the labels back."""
    from ionmix.models.baseline import baseline_calculator, residual_frames

    store = DatasetStore(tiny_sample / "frames.db")
    frames = [f.atoms for f in store.select(replica=0)][:3]
    prov = store.provenance()
    ion_sets = [prov.ion_set(f) for f in frames]
    springs = _altered(ion_sets[0], frames[0])
    labelled = _labelled_by_altered_springs(frames, ion_sets, springs)
    fitted = baseline_for_frames("coulomb+wall+bonded-fit", labelled, ion_sets, "frames")
    assert set(fitted.bonded_parameters) == set(springs)
    for key, (k, x0) in springs.items():
        assert fitted.bonded_parameters[key] == pytest.approx((k, x0), rel=1e-6), key
    residual = residual_frames(labelled, fitted, ion_sets)
    for t, r, ions in zip(labelled, residual, ion_sets, strict=True):
        assert np.abs(r.get_forces()).max() < 1e-5  # eV/Å: nothing left for a network
        work = t.copy()
        work.calc = baseline_calculator(fitted, ions)
        np.testing.assert_allclose(r.get_forces() + work.get_forces(), t.get_forces(),
                                   atol=1e-6)
        np.testing.assert_allclose(r.get_stress() + work.get_stress(), t.get_stress(),
                                   atol=1e-8)
    # the force field's own springs leave those differences to the network
    field = residual_frames(labelled[:1], baseline_for_frames(
        "coulomb+wall+bonded", labelled[:1], ion_sets[:1], "frames"), ion_sets[:1])
    assert np.abs(field[0].get_forces()).max() > 1.0  # eV/Å


def test_bonded_fit_is_recorded_keyed_and_checked(tiny_sample):
    from ionmix.teachers.classical.harmonic import BondedFitError, apply_parameters
    from ionmix.teachers.classical.system import make_system

    store = DatasetStore(tiny_sample / "frames.db")
    frames = [f.atoms for f in store.select(replica=0)][:2]
    ions = store.provenance().ion_set(frames[0])
    fitted = baseline_for_frames("bonded-fit", frames, [ions] * 2, "frames")
    again = Baseline.from_json(json.loads(json.dumps(fitted.to_json())), "record")
    assert again == fitted and again.key == fitted.key
    other = baseline_for_frames("bonded-fit", frames[:1], [ions], "frames")
    assert other.key != fitted.key  # other frames, other fit, another baseline
    given = baseline_for_frames("bonded-fit", frames[:1], [ions], "frames",
                                bonded_parameters=fitted.bonded_parameters)
    assert given.key == fitted.key  # a fine-tuned model keeps its parent's fit
    with pytest.raises(BaselineError, match="fitted bonded parameters go with a bonded-fit"):
        Baseline("bonded", ion_bonded_sha256=fitted.ion_bonded_sha256,
                 bonded_parameters=fitted.bonded_parameters)
    with pytest.raises(BaselineError, match="no record: a bonded-fit baseline is fitted to "
                                            "labelled frames; there are none"):
        baseline_for_frames("bonded-fit", frames, [ions] * 2, "no record", fit_count=0)
    missing = dict(fitted.bonded_parameters)
    key = next(k for k in missing if k.startswith("PF6 F-P"))
    del missing[key]
    from ionmix.chemistry.topology import molecules_of

    csys = make_system(molecules_of(frames[0]), frames[0].cell.array, ions=ions,
                       bonded_only=True)
    with pytest.raises(BondedFitError, match=f"model X: the fitted bonded prior has no term "
                                             f"'{key}'"):
        apply_parameters(csys, missing, "model X")


def test_a_bonded_fit_student_keeps_its_fit_when_fine_tuned(tiny_sample, tmp_path):
    from ionmix.train import train_from_store

    store = tiny_sample / "frames.db"
    comps = DatasetStore(store).compositions()
    common = dict(n_val=1, n_test=2, preset="cpu-tiny-allegro-npt",
                  overrides={"max_epochs": 1}, baseline="coulomb+wall+bonded-fit", say=None)
    parent = train_from_store(store, comps, n_train=3, run_dir=tmp_path / "parent", **common)
    record = read_record(parent.package_path)
    assert record.name == "coulomb+wall+bonded-fit" and record.bonded_parameters
    # other training frames, which a refit would turn into another baseline (refused)
    child = train_from_store(store, comps, n_train=5, run_dir=tmp_path / "child",
                             initial_model=parent.package_path, **common)
    assert read_record(child.package_path).key == record.key


@pytest.mark.parametrize("name", ["bonded", "bonded-fit"])
def test_training_takes_a_bonded_baseline_without_coulomb_or_wall(tiny_sample, name):
    """The training's baseline reads the frames' ion sets for bonded terms alone too (it
    read them only with Coulomb or a wall, and a bonded-only baseline failed on None)."""
    from ionmix.train.run import _baseline

    store = DatasetStore(tiny_sample / "frames.db")
    frames = [f.atoms for f in store.select(replica=0)][:2]
    under = _baseline(name, {"train": frames}, store.provenance(), None,
                      ["C", "F", "H", "Li", "N", "P"])
    assert under.name == name and under.bonded and not under.coulomb
    assert under.bonded_fit == (name == "bonded-fit")


# --------------------------------------------------------------------------------------
# the force field's dispersion beyond the network's cutoff (+tail)

TAIL = "coulomb+wall+bonded+tail"


def test_tail_is_the_homogeneous_lennard_jones_beyond_the_cutoff(tiny_sample):
    """E = K / V with K = 2π Σ_ab ∫_rc^∞ u_ab(r) r² dr (all atom pairs, g = 1): the closed
    form from the mixture's own Lennard-Jones force (per-atom A, C), and OpenMM's long-range
    correction of it (a numerical integral: within 0.5 %). No forces; the stress is
    (1/V) ∂E/∂ε; a box of twice the molecules in twice the volume has twice the tail."""
    import openmm
    from ase.stress import voigt_6_to_full_3x3_stress

    from ionmix.chemistry.topology import molecules_of
    from ionmix.models.tail import DispersionTail
    from ionmix.teachers.classical.system import make_system
    from ionmix.units import KJ_PER_MOL_IN_EV

    atoms, ions = _liquid_frame(tiny_sample)
    cutoff_A = 4.0
    calc = DispersionTail(ions, cutoff_A)
    work = atoms.copy()
    work.calc = calc
    volume_A3 = work.get_volume()
    k_eV_A3 = work.get_potential_energy() * volume_A3
    system = make_system(molecules_of(atoms), atoms.cell.array, ions=ions, cutoff_A=cutoff_A,
                         lj_switch_width_A=None).system
    lj = next(f for f in system.getForces() if isinstance(f, openmm.CustomNonbondedForce))
    assert lj.getEnergyFunction() == "A1*A2/r^12-C1*C2/r^6"  # OPLS's geometric rule
    names = [lj.getPerParticleParameterName(k) for k in range(2)]
    params = np.array([lj.getParticleParameters(i) for i in range(lj.getNumParticles())])
    a, c = params[:, names.index("A")].sum(), params[:, names.index("C")].sum()
    rc_nm = cutoff_A / 10.0
    closed_kj_nm3 = 2 * np.pi * (a**2 / (9 * rc_nm**9) - c**2 / (3 * rc_nm**3))
    assert k_eV_A3 < 0
    assert k_eV_A3 == pytest.approx(closed_kj_nm3 * KJ_PER_MOL_IN_EV * 1e3, rel=1e-9)
    # OpenMM's correction: the Lennard-Jones alone at this cutoff, with it minus without
    for k in reversed(range(system.getNumForces())):
        if not isinstance(system.getForce(k), openmm.CustomNonbondedForce):
            system.removeForce(k)
    energies = []
    for on in (True, False):
        lj.setUseLongRangeCorrection(on)
        context = openmm.Context(system, openmm.VerletIntegrator(1e-3),
                                 openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(atoms.positions / 10.0)
        energy = context.getState(getEnergy=True).getPotentialEnergy()
        energies.append(energy.value_in_unit(openmm.unit.kilojoule_per_mole) * KJ_PER_MOL_IN_EV)
    assert k_eV_A3 == pytest.approx((energies[0] - energies[1]) * volume_A3, rel=5e-3)
    assert not work.get_forces().any()
    # stress: (1/V) dE/dε by central differences, isotropic and shear
    for strain in (np.eye(3), np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]]) / 2):
        energies = []
        for sign in (1, -1):
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ (np.eye(3) + sign * 1e-5 * strain),
                              scale_atoms=True)
            strained.calc = calc
            energies.append(strained.get_potential_energy())
        numeric = (energies[0] - energies[1]) / 2e-5 / volume_A3
        analytic = np.sum(voigt_6_to_full_3x3_stress(work.get_stress()) * strain)
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-12)
    # a box with twice the molecules in twice the volume has twice the tail (extensive)
    double = atoms.repeat((2, 1, 1))
    double.info["molecules"] = ",".join([atoms.info["molecules"]] * 2)
    double.calc = DispersionTail(ions, cutoff_A)
    assert double.get_potential_energy() == pytest.approx(2 * work.get_potential_energy(),
                                                          rel=1e-9)


def test_tail_baseline_residual_labels_recorded_and_checked(tiny_sample, tmp_path):
    """Residual + baseline give the teacher's labels back; the record keeps the cutoff
    and the ions' Lennard-Jones terms; a missing cutoff, an ion with other Lennard-Jones
    terms and a LAMMPS export are refused, naming what is at fault."""
    from ionmix.export.lammps import LammpsExportError, write_lammps_inputs_for
    from ionmix.models.baseline import residual_frames

    store = DatasetStore(tiny_sample / "frames.db")
    frames = [f.atoms for f in store.select(replica=0)][:2]
    ion_sets = [store.provenance().ion_set(f) for f in frames]
    with pytest.raises(BaselineError, match="starts at the network's cutoff"):
        baseline_for_frames(TAIL, frames, ion_sets, "frames")
    baseline = baseline_for_frames(TAIL, frames, ion_sets, "frames", tail_cutoff_A=4.5)
    assert baseline.tail and baseline.bonded and baseline.coulomb and baseline.wall
    assert baseline.to_json()["tail"]["cutoff_A"] == 4.5
    assert set(baseline.to_json()["tail"]["ion_lj_sha256"]) == {"Li", "EMIM", "PF6"}
    assert Baseline.from_json(baseline.to_json(), "record").key == baseline.key
    other = baseline_for_frames(TAIL, frames, ion_sets, "frames", tail_cutoff_A=5.0)
    assert other.key != baseline.key
    _assert_residual_plus_baseline_is_the_teacher(
        frames, residual_frames(frames, baseline, ion_sets), baseline, ion_sets)
    # an ion whose Lennard-Jones terms the model was not trained with
    record = baseline.to_json()
    record["tail"]["ion_lj_sha256"]["PF6"] = "0" * 16
    with pytest.raises(BaselineError, match="Lennard-Jones terms of ion PF6 differ"):
        Baseline.from_json(record, "record").check_structure(frames[0], ion_sets[0], "frame")
    atoms, ions = _liquid_frame(tiny_sample)
    with pytest.raises(LammpsExportError, match="dispersion tail .* cannot express"):
        write_lammps_inputs_for(atoms, ["C", "F", "H", "Li", "N", "P"], "allegro",
                                "model.nequip.pt2", tmp_path / "job",
                                baseline=baseline_for_frames(TAIL, [atoms], [ions], "frames",
                                                             tail_cutoff_A=4.5), ions=ions)
    assert not (tmp_path / "job").exists()


@pytest.fixture(scope="module")
def tail_student(tiny_sample, tmp_path_factory):
    """A tiny coulomb+wall+bonded+tail student (`_tiny_student`)."""
    return _tiny_student(tiny_sample, tmp_path_factory, TAIL)


def test_tail_student_starts_its_tail_at_its_cutoff_and_reports_the_teachers_error(
        tail_student):
    from ionmix.train import evaluate
    from ionmix.train.presets import get_preset

    result, store = tail_student
    record = read_record(result.package_path)
    assert record.name == TAIL
    assert record.tail_cutoff_A == get_preset("cpu-tiny-allegro-npt").cutoff_radius_A
    ours = evaluate(result.package_path, result.run_dir / "data" / "test.extxyz",
                    provenance=_provenance(store))
    for key in ("energy_mae_meV_per_atom", "force_mae_meV_per_A", "stress_mae_meV_per_A3"):
        assert getattr(ours, key) == pytest.approx(result.metrics[key], rel=1e-4, abs=1e-4), key


def test_warm_start_under_another_baseline_only_when_asked(bonded_student, tmp_path):
    """A coulomb+wall+bonded student fine-tuned under +tail: refused (two baselines would
    mix), unless `rebaseline` says its weights only start the new network."""
    import json

    from ionmix.train import run_training

    result, store = bonded_student
    data = result.run_dir / "data"
    manifest = json.loads((result.run_dir / "data_manifest.json").read_text())
    common = dict(train_file=data / "train.extxyz", val_file=data / "val.extxyz",
                  test_file=data / "test.extxyz", type_names=manifest["type_names"],
                  preset="cpu-tiny-allegro-npt",
                  energy_shifts=manifest["energy_reference"]["per_type_energy_shifts_eV"],
                  overrides={"max_epochs": 1, "model_dtype": "float64"},
                  initial_model=result.package_path, baseline=TAIL,
                  provenance=_provenance(store), say=None)
    with pytest.raises(TrainConfigError, match="would mix two"):
        run_training(run_dir=tmp_path / "refused", **common)
    warm = run_training(run_dir=tmp_path / "warm", rebaseline=True, **common)
    assert read_record(warm.package_path).name == TAIL


class TestTailStudentBattery(TestStudentBattery):
    """The battery on network (float64) + Coulomb + wall + bonded terms + dispersion tail,
    as the factory builds it, on the same 86-atom frame: every part beside the network at
    once (it replaced the battery on coulomb+wall+bonded, its subset). Tolerances: the
    Coulomb student's, whose PME mesh dominates them; the bonded part is float64 with an
    exact virial, the tail K / V has no forces and an exact stress."""

    student_fixture = "tail_student"
