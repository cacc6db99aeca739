"""The labelling stage with the xTB teacher (tblite) on a tiny box: labels equal a direct
tblite call, AIMD/relax labels belong to their geometries, resume relabels nothing,
failures are recorded (per job, engine failures only), isolated-atom energies are cached
and used by training; bad options, a missing input and a rerun with other options are
refused before any work, naming what the user typed."""

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
from ionmix.labelling import LabelError, TaskOptions, label, label_frames
from ionmix.teachers import TeacherError, make_teacher, teacher_spec

tblite = pytest.importorskip("tblite.ase", reason="tblite not installed: pip install tblite")

ONE_WORKER = ClusterConfig(workers=1)
BAD_SCF = {"kind": "xtb", "max_iterations": 2}  # xTB's SCF fails on every frame


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


@pytest.fixture(scope="module")
def scheduler():
    """Address of an in-process Dask cluster (one worker thread): no worker processes to
    start, so a labelling run takes about a second, and patched task code runs patched."""
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def invoke(*args):
    """`ionmix label ARGS` in this process; the result (exit code, output)."""
    from typer.testing import CliRunner

    from ionmix.cli import app

    return CliRunner().invoke(app, ["label", *map(str, args)])


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
    # replica 0 of the trained composition (3), replica 1 of both (2 each); not x=0.75's r0
    assert len(store.select(teacher=key, task="single-point")) == 3 + 2 * 2
    assert len(store.select(teacher=key, task="isolated-atom")) == 6
    train = ase.io.read(out / "data" / "x_0.25" / "train.extxyz", ":")
    assert {a.info["teacher"] for a in train} == {key}


# -- nothing silently wrong: options, failures, resume, input ---------------------------------

@pytest.mark.parametrize("extra,named", [
    (["--frames", "0"], "--frames must be ≥ 1 (got 0); leave it out to label every frame"),
    (["--frames", "-3"], "--frames"),
    (["--task", "aimd", "--steps", "0"], "--steps"),
    (["--task", "aimd", "--every", "0"], "--every"),
    (["--task", "aimd", "--steps", "5", "--every", "10"], "--every 10 is more than --steps 5"),
    (["--task", "aimd", "--timestep-fs", "-1"], "--timestep-fs"),
    (["--task", "aimd", "--timestep-fs", "0"], "--timestep-fs"),
    (["--task", "aimd", "--temperature-K", "0"], "--temperature-K"),
    (["--task", "aimd", "--temperature-K", "-300"], "--temperature-K"),
    (["--task", "relax", "--relax-steps", "-1"], "--relax-steps"),
    (["--task", "relax", "--relax-steps", "0"], "--relax-steps"),
    (["--task", "volume-scan", "--scales", "0,1"], "--scales"),
    (["--task", "volume-scan", "--scales", "-1"], "--scales"),
    (["--task", "volume-scan", "--scales", ""], "--scales"),
    (["--task", "volume-scan", "--scales", "1,1"], "--scales"),
    (["--replica", "-1"], "--replica"),
    (["--task", "singlepoint"], "--task 'singlepoint' is not a task; choose one of "
                                "single-point, aimd"),
    (["--teacher", "dft"], "--teacher 'dft' is not a teacher kind; choose one of classical"),
])
def test_cli_refuses_a_bad_option_by_name_before_any_work(frames_file, tmp_path, extra,
                                                          named):
    out = tmp_path / "o.db"
    args = {"--teacher": "xtb", "--task": "single-point", "--out": out}
    args.update(zip(extra[::2], extra[1::2], strict=True))
    result = invoke(frames_file, *[x for kv in args.items() for x in kv])
    assert result.exit_code == 2, result.output
    assert named in result.output and "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob("label-*"))  # nothing written


def test_cli_names_an_unknown_teacher_even_with_a_teacher_config(frames_file, tmp_path):
    config = tmp_path / "t.toml"
    config.write_text("[teacher]\n")
    result = invoke(frames_file, "--teacher", "dft", "--teacher-config", config, "--task",
                    "single-point", "--out", tmp_path / "o.db")
    assert result.exit_code == 2 and "--teacher 'dft'" in result.output, result.output


def test_task_options_and_selection_are_checked_for_library_callers_too(frames_file,
                                                                         tmp_path):
    with pytest.raises(LabelError, match=r"^every must be a whole number ≥ 1 \(got 0\)"):
        TaskOptions(every=0)
    with pytest.raises(LabelError, match="scales"):
        TaskOptions(scales=())
    with pytest.raises(LabelError, match=r"n_frames must be ≥ 1 \(got 0\)"):
        label(frames_file, "xtb", "single-point", tmp_path / "o.db", n_frames=0)
    assert not (tmp_path / "o.db").exists()


def test_a_missing_input_is_named_never_created(tmp_path):
    missing = tmp_path / "typo.db"
    result = invoke(missing, "--teacher", "xtb", "--task", "single-point", "--out",
                    tmp_path / "o.db")
    assert result.exit_code == 2 and str(missing) in result.output, result.output
    assert "Traceback" not in result.output
    assert not missing.exists() and not (tmp_path / "o.db").exists()
    with pytest.raises(LabelError, match="typo.db: no such file"):
        label(missing, "xtb", "single-point", tmp_path / "o.db")
    assert not missing.exists()


def test_a_failure_skips_only_the_same_job(frames_file, tmp_path, scheduler):
    """Failures are recorded per (teacher, task, options, store): a frame whose AIMD failed
    is still single-pointed, and labelled into another store."""
    one = {"n_frames": 1, "scheduler": scheduler}
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    aimd = TaskOptions(n_steps=1)
    first = label(frames_file, BAD_SCF, "aimd", a, options=aimd, **one)
    assert (first.failed, first.skipped) == (1, 0)
    again = label(frames_file, BAD_SCF, "aimd", a, options=aimd, **one)
    assert (again.failed, again.skipped) == (0, 1)
    assert "SCF not converged" in again.failed_before["frames.extxyz#0"]
    for task, store, options in (("single-point", a, None), ("aimd", b, aimd),
                                 ("aimd", a, TaskOptions(n_steps=2))):
        other = label(frames_file, BAD_SCF, task, store, options=options, **one)
        assert (other.failed, other.skipped) == (1, 0), (task, store, options)
    work = tmp_path / f"label-{first.teacher}"
    records = json.loads((work / "failures.json").read_text())["failures"]
    assert len(records) == 4 and all((work / r["detail"]).exists() for r in records)


def test_failures_of_the_first_format_skip_nothing(frames_file, tmp_path, scheduler):
    """An old failures.json ({frame id: reason}, shared by every job) is read, kept, and no
    longer skips frames."""
    work = tmp_path / f"label-{teacher_spec('xtb').key}"
    work.mkdir()
    (work / "failures.json").write_text(json.dumps({"frames.extxyz#0": "old reason"}))
    summary = label(frames_file, "xtb", "single-point", tmp_path / "x.db", n_frames=1,
                    scheduler=scheduler)
    assert (summary.labelled, summary.skipped) == (1, 0)
    assert "old reason" in (work / "failures.json").read_text()  # kept for the record


def test_a_bug_in_a_task_is_raised_not_recorded(frames_file, tmp_path, scheduler,
                                                monkeypatch):
    from ionmix.labelling import tasks

    def broken(*args, **kwargs):
        return 1 / 0

    monkeypatch.setattr(tasks, "_labelled", broken)
    with pytest.raises(ZeroDivisionError):
        label(frames_file, "xtb", "single-point", tmp_path / "x.db", n_frames=1,
              scheduler=scheduler)
    work = tmp_path / f"label-{teacher_spec('xtb').key}"
    assert not (work / "failures.json").exists()


def test_a_teachers_input_error_stops_the_run_naming_the_frame(frames_file, tmp_path,
                                                               scheduler):
    """A cell shrunk below twice the classical cutoff is the request's fault, not a failure
    of the frame: one LabelError naming the frame, nothing recorded against it."""
    with pytest.raises(LabelError, match=r"frames.extxyz#0: cutoff_A = .* exceeds half"):
        label(frames_file, "classical", "volume-scan", tmp_path / "c.db", n_frames=1,
              options=TaskOptions(scales=(1.0, 0.8)), scheduler=scheduler)
    assert not list(tmp_path.glob("label-*/failures.json"))


def test_only_engine_errors_are_a_frames_failure():
    import openmm
    from ase.calculators.calculator import CalculationFailed

    from ionmix.labelling.tasks import LabelFailure, _checked, _guard

    def raising(exc):
        def run():
            raise exc
        return run

    for engine in (CalculationFailed("SCF not converged"), openmm.OpenMMException("NaN")):
        failure = _guard("f#0", raising(engine))
        assert isinstance(failure, LabelFailure) and failure.reason.startswith(
            type(engine).__name__) and "Traceback" in failure.detail
    refused = _guard("f#0", raising(TeacherError("no pseudopotential for Li")))
    assert isinstance(refused, LabelError) and "f#0: no pseudopotential" in str(refused)
    for bug in (ZeroDivisionError(), TypeError("x"), KeyError("temperature_K")):
        with pytest.raises(type(bug)):
            _guard("f#0", raising(bug))
    atoms = ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    nan = _guard("f#0", lambda: _checked(atoms, {"energy": float("nan"),
                                                  "forces": np.zeros((2, 3))}))
    assert isinstance(nan, LabelFailure) and "energy is not finite" in nan.reason


def test_a_rerun_with_other_options_is_refused_by_name(frames_file, tmp_path, scheduler):
    """A store keeps one set of options per (teacher, task): --steps 2 after --steps 1 is
    refused (not answered with the 1-step labels); the same options resume."""
    out = tmp_path / "x.db"
    base = [frames_file, "--teacher", "xtb", "--out", out, "--frames", "1", "--scheduler",
            scheduler]
    first = invoke(*base, "--task", "aimd", "--steps", "1")
    assert first.exit_code == 0, first.output
    again = invoke(*base, "--task", "aimd", "--steps", "1", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] == 1
    other = invoke(*base, "--task", "aimd", "--steps", "2")
    assert other.exit_code == 2 and "Traceback" not in other.output, other.output
    assert "made with --steps 1; this run asks for --steps 2" in other.output
    assert "another store (--out)" in other.output
    scan = invoke(*base, "--task", "volume-scan", "--scales", "1.0")
    assert scan.exit_code == 0, scan.output
    wider = invoke(*base, "--task", "volume-scan", "--scales", "0.99,1.0")
    assert wider.exit_code == 2 and "--scales 1" in wider.output, wider.output
    assert len(DatasetStore(out).select()) == 2  # the 1-step AIMD and the one scale
    elsewhere = label(frames_file, "xtb", "aimd", tmp_path / "y.db", n_frames=1,
                      options=TaskOptions(n_steps=2), scheduler=scheduler)
    assert elsewhere.n_labels == 2


def test_a_frame_without_temperature_needs_one_for_aimd(tmp_path):
    atoms = build_box({"Li": 1, "EMIM": 1, "PF6": 2}, seed=0, density_g_cm3=1.3)
    atoms.info["label_id"] = "cold"
    with pytest.raises(LabelError, match="cold: the frame has no temperature_K"):
        label_frames([atoms], Provenance(), "xtb", "aimd", tmp_path / "x.db")


def test_failed_frames_are_reported_once_plainly(frames_file, tmp_path):
    """One plain line per failed frame (no rich markup, no Dask worker traceback)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    config = tmp_path / "bad.toml"
    config.write_text("[teacher]\nmax_iterations = 2\n\n[cluster]\nworkers = 1\n")
    out = subprocess.run([str(Path(sys.executable).parent / "ionmix"), "label",
                          str(frames_file), "--teacher", "xtb", "--teacher-config",
                          str(config), "--task", "single-point", "--frames", "2", "--out",
                          str(tmp_path / "x.db")], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "COLUMNS": "60"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert sorted(ln for ln in lines if ln.startswith("failed ")) == [
        f"failed frames.extxyz#{i}: CalculationFailed: SCF not converged in 2 cycles"
        for i in (0, 1)]
    assert "[/]" not in out.stdout and "[yellow]" not in out.stdout
    assert "Traceback" not in out.stderr and "Compute Failed" not in out.stderr


def test_non_finite_teacher_labels_name_the_closest_atoms():
    """Was: overlapping atoms reported without naming them."""
    import numpy as np
    from ase import Atoms

    from ionmix.labelling.tasks import TeacherOutputError, _checked

    atoms = Atoms("HFLi", positions=[[0, 0, 0], [0.2, 0, 0], [3, 0, 0]], cell=[10, 10, 10],
                  pbc=True)
    results = {"energy": float("nan"), "forces": np.zeros((3, 3))}
    with pytest.raises(TeacherOutputError, match=r"closest atoms: 0 \(H\) and 1 \(F\), 0.20 Å"):
        _checked(atoms, results)
