"""The labelling stage with the xTB teacher (tblite) on a tiny box: labels equal a direct
tblite call, AIMD/relax labels belong to their geometries, resume relabels nothing,
failures are recorded, isolated-atom energies are cached and used by training."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from ionmix.build import build_box
from ionmix.cluster import ClusterConfig
from ionmix.dataset import DatasetStore
from ionmix.dataset.provenance import Provenance
from ionmix.labelling import TaskOptions, label, label_frames
from ionmix.teachers import TeacherError, make_teacher, teacher_spec

tblite = pytest.importorskip("tblite.ase", reason="tblite not installed: pip install tblite")

ONE_WORKER = ClusterConfig(workers=1)


def direct(atoms, **params):
    """Energy (eV) and forces (eV/Å) of a bare tblite call with the teacher's defaults."""
    work = atoms.copy()
    work.calc = tblite.TBLite(method="GFN2-xTB", verbosity=0, charge=0, **params)
    return work.get_potential_energy(), work.get_forces()


@pytest.fixture(scope="module")
def frames_file(tmp_path_factory):
    """Three frames of a 2-ion-pair box (Li/EMIM/PF6, 41 atoms) as extxyz."""
    root = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    frames = []
    for seed in range(3):
        atoms = build_box({"Li": 1, "EMIM": 1, "PF6": 2}, seed=seed, density_g_cm3=1.3)
        atoms.positions += rng.normal(0, 0.02, atoms.positions.shape)
        atoms.info["temperature_K"] = 300.0
        frames.append(atoms)
    path = root / "frames.extxyz"
    ase.io.write(path, frames)
    return path


def test_single_point_equals_a_direct_tblite_call(frames_file, tmp_path):
    summary = label(frames_file, "xtb", "single-point", tmp_path / "xtb.db", cluster=ONE_WORKER)
    assert (summary.labelled, summary.failed, summary.n_labels) == (3, 0, 3)
    stored = DatasetStore(tmp_path / "xtb.db").select(teacher=summary.teacher)
    for frame, source in zip(stored, ase.io.read(frames_file, ":"), strict=True):
        energy, forces = direct(source)
        assert frame.atoms.get_potential_energy() == pytest.approx(energy, abs=1e-6)
        np.testing.assert_allclose(frame.atoms.get_forces(), forces, atol=1e-5)
        assert frame.info["task"] == "single-point" and frame.info["molecules"]
        assert frame.atoms.calc.results["stress"].shape == (6,)


def test_aimd_and_relax_labels_belong_to_their_geometries(frames_file, tmp_path):
    out = tmp_path / "xtb.db"
    opts = TaskOptions(n_steps=3, relax_steps=3, tolerance_K=10.0)
    for task in ("aimd", "relax"):
        summary = label(frames_file, "xtb", task, out, n_frames=1, options=opts,
                        cluster=ONE_WORKER)
        assert summary.labelled == 1 and summary.failed == 0
    store = DatasetStore(out)
    md = store.select(task="aimd")
    assert [f.info["step"] for f in md] == [1, 2, 3]
    relax = store.select(task="relax")
    energies = [f.atoms.get_potential_energy() for f in relax]
    assert len(relax) == 3 and energies[-1] < energies[0]
    for frame in md + relax:
        energy, forces = direct(frame.atoms)
        assert frame.atoms.get_potential_energy() == pytest.approx(energy, abs=1e-6)
        np.testing.assert_allclose(frame.atoms.get_forces(), forces, atol=1e-5)
    # the MD moved the atoms; its source frame is named on every step
    first = ase.io.read(frames_file, 0)
    assert np.abs(md[-1].atoms.positions - first.positions).max() > 1e-3
    assert {f.info["source"] for f in md} == {"frames.extxyz#0"}


def test_an_interrupted_run_resumes_without_relabelling(frames_file, tmp_path):
    out = tmp_path / "xtb.db"

    def interrupt(done, total, what):
        if done == 1:
            raise KeyboardInterrupt  # as when a user stops the run

    with pytest.raises(KeyboardInterrupt):
        label(frames_file, "xtb", "single-point", out, cluster=ONE_WORKER, progress=interrupt)
    stored_before = {f.info["label_id"] for f in DatasetStore(out).select()}
    assert len(stored_before) == 1
    summary = label(frames_file, "xtb", "single-point", out, cluster=ONE_WORKER)
    assert (summary.skipped, summary.labelled) == (1, 2)
    ids = [f.info["label_id"] for f in DatasetStore(out).select()]
    assert len(ids) == len(set(ids)) == 3


def test_a_failed_scf_is_recorded_not_stored(frames_file, tmp_path):
    config = {"kind": "xtb", "max_iterations": 2}
    out = tmp_path / "xtb.db"
    summary = label(frames_file, config, "single-point", out, n_frames=1, cluster=ONE_WORKER)
    assert (summary.labelled, summary.failed) == (0, 1)
    assert "SCF not converged" in summary.failures["frames.extxyz#0"]
    assert DatasetStore(out).select() == []
    work = out.parent / f"label-{summary.teacher}"
    assert json.loads((work / "failures.json").read_text())
    assert "Traceback" in next((work / "failures").iterdir()).read_text()
    again = label(frames_file, config, "single-point", out, n_frames=1, cluster=ONE_WORKER)
    assert (again.skipped, again.failed) == (1, 0)  # not retried unless asked
    retried = label(frames_file, config, "single-point", out, n_frames=1, cluster=ONE_WORKER,
                    retry_failed=True)
    assert retried.failed == 1


def test_a_frame_of_the_wrong_charge_is_refused_before_work(tmp_path):
    atoms = build_box({"Li": 1, "EMIM": 1, "PF6": 2}, seed=0)
    li = atoms.arrays["ion_name"] == "Li"
    atoms = atoms[~li]  # one Li+ taken out: net charge -1
    atoms.info.update(molecules="EMIM:1,PF6:2", label_id="charged")
    del atoms.arrays["mol_id"], atoms.arrays["ion_name"]
    with pytest.raises(TeacherError, match=r"total charge -1 e, but the xtb teacher expects"):
        label_frames([atoms], Provenance(), "xtb", "single-point", tmp_path / "x.db")
    assert not (tmp_path / "label-x").exists()


def test_isolated_atom_energies_are_cached_stored_and_used_by_training(frames_file, tmp_path,
                                                                      monkeypatch):
    from ionmix.train.from_store import teacher_isolated_atom_energies

    monkeypatch.setenv("IONMIX_CACHE", str(tmp_path / "cache"))
    spec = teacher_spec("xtb")
    energies = make_teacher(spec).isolated_atom_energies_eV(["P", "F"])
    assert energies["F"] == pytest.approx(direct(ase.Atoms("F"))[0], abs=1e-6)
    assert (tmp_path / "cache" / "isolated-atoms" / f"{spec.key}.json").exists()
    out = tmp_path / "xtb.db"
    summary = label(frames_file, spec, "isolated-atoms", out, cluster=ONE_WORKER)
    assert summary.labelled == 6  # C, F, H, Li, N, P
    store = DatasetStore(out)
    # a stored isolated-atom label takes precedence over the teacher's own computation
    marker = ase.Atoms("B", positions=[[0, 0, 0]])
    marker.calc = SinglePointCalculator(marker, energy=-1.234, forces=np.zeros((1, 3)))
    store.add_frames([marker], [{"teacher": spec.key, "task": "isolated-atom",
                                 "composition": "", "label_id": "isolated-atom|B"}])
    frame = store.select(task="isolated-atom")[0].atoms
    used = teacher_isolated_atom_energies(store, spec.key, ["B", "F"], frame)
    assert used == {"B": -1.234, "F": pytest.approx(energies["F"], abs=1e-9)}


def test_teacher_spec_with_unknown_keys_is_refused(frames_file, tmp_path):
    with pytest.raises(TeacherError, match="acuracy"):
        label(frames_file, {"kind": "xtb", "acuracy": 0.1}, "single-point", tmp_path / "x.db")


def test_cli_label_with_a_teacher_config(frames_file, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "ionmix")
    config = tmp_path / "xtb.toml"
    config.write_text('[teacher]\naccuracy = 0.5\n\n[cluster]\nworkers = 1\n')
    args = [exe, "label", str(frames_file), "--teacher", "xtb", "--teacher-config",
            str(config), "--task", "single-point", "--frames", "1", "--out",
            str(tmp_path / "x.db"), "--json"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["labelled"] == 1 and summary["teacher"] == teacher_spec(
        {"kind": "xtb", "accuracy": 0.5}).key
    config.write_text('[teacher]\nkind = "classical"\n')
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "kind = 'classical' but --teacher is 'xtb'" in out.stderr
    config.write_text('[teachers]\n')
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "unknown table(s) ['teachers']" in out.stderr


@pytest.mark.slow  # ~2 min alone (10 xTB frames, one Allegro epoch); 5 min on a loaded machine
def test_a_study_trains_on_its_xtb_teacher(tiny_sample, tmp_path):
    """[teacher] kind = "xtb": the classical sampler's frames that the splits use are
    labelled by xTB, and the models learn those labels (never the classical ones)."""
    import shutil

    from conftest import TINY_SAMPLE_TOML
    from ionmix.transferability import load_study_config, run_study

    config = tmp_path / "study.toml"
    config.write_text(TINY_SAMPLE_TOML + """
[teacher]
kind = "xtb"

[cluster]
workers = 2

[study]
recipes = [[0.25]]
n_train = 2
n_val = 1
n_test = 2
preset = "cpu-tiny-allegro"
overrides = {max_epochs = 1}
""")
    out = tmp_path / "out"
    shutil.copytree(tiny_sample, out)  # the same sampled frames
    result = run_study(load_study_config(config), out, say=lambda line: None)
    assert not result.failed
    key = teacher_spec("xtb").key
    assert key in (out / "report.md").read_text()
    store = DatasetStore(out / "frames.db")
    assert len(store.select(teacher=key, task="single-point")) == 2 * (3 + 2)
    assert len(store.select(teacher=key, task="isolated-atom")) == 6
    train = ase.io.read(out / "data" / "x_0.25" / "train.extxyz", ":")
    assert {a.info["teacher"] for a in train} == {key}
