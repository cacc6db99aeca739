"""A user ion travels with the data: sample → transfer evaluation → md (classical) →
validate → export-lammps, with the user's ion files deleted after sampling (the stages
must rebuild the ion from what the store records, not from the user's folder)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ionmix.chemistry.ions import LIBRARY_DIR
from ionmix.dataset import DatasetStore
from ionmix.transferability import load_study_config, run_study

IONMIX = str(Path(sys.executable).parent / "ionmix")

STUDY = """
[mixture]
units = {LiX = {Li = 1, MyBF4 = 1}, EMIMX = {EMIM = 1, MyBF4 = 1}}
compositions = [{LiX = 0.25, EMIMX = 0.75}, {LiX = 0.75, EMIMX = 0.25}]
n_ion_pairs = 4
charge_scale = 0.8
user_ions = {MyBF4 = {itp = "ITP", coordinates = "PDB"}}

[sampling]
temperature_K = 300.0
equilibration_ps = 0.3
production_ps = 0.4
snapshot_interval_ps = 0.1
seed = 3

[study]
recipes = [[0.25]]
n_train = 2
n_val = 1
n_test = 2
preset = "cpu-tiny-allegro"
overrides = {max_epochs = 1}
"""


def cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([IONMIX, *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def user_ion_study(tmp_path_factory):
    """A transfer study whose anion is a user ion (BF4's files under another name), run
    once; then the user's ion folder is deleted."""
    root = tmp_path_factory.mktemp("user-ion")
    ion_dir = root / "my-ion"
    ion_dir.mkdir()
    itp = (LIBRARY_DIR / "BF4" / "BF4.itp").read_text().replace("BF4 ", "MyBF4 ", 1)
    (ion_dir / "MyBF4.itp").write_text(itp)
    shutil.copy(LIBRARY_DIR / "BF4" / "BF4.pdb", ion_dir / "MyBF4.pdb")
    config = root / "study.toml"
    config.write_text(STUDY.replace("ITP", str(ion_dir / "MyBF4.itp"))
                      .replace("PDB", str(ion_dir / "MyBF4.pdb")))
    result = run_study(load_study_config(config), root / "out", say=lambda line: None)
    shutil.rmtree(ion_dir)  # from here on, only the store knows the ion
    return root, result


def test_store_records_the_user_ion(user_ion_study):
    root, result = user_ion_study
    assert not result.failed, result.failed
    store = DatasetStore(root / "out" / "frames.db")
    records = store.records()
    (ion_set,) = records["ion_sets"].values()
    assert ion_set["MyBF4"]["source"] == "user" and "[ atoms ]" in ion_set["MyBF4"]["itp"]
    assert ion_set["Li"]["source"] == "library"
    frame = store.select()[0]
    assert frame.info["ion_set"] in records["ion_sets"]
    assert frame.info["teacher"] in records["teachers"]
    # the transfer study's evaluation split the model's energy into ions, MyBF4 included
    evaluation = json.loads(next((root / "out" / "models").glob("*/evaluation.json"))
                            .read_text())
    assert any("MyBF4" in f.get("ion_energy_pred_eV", {}) for f in evaluation["frames"])


def test_md_validate_and_export_with_the_user_ion(user_ion_study, tmp_path, monkeypatch):
    root, result = user_ion_study
    monkeypatch.setenv("IONMIX_CACHE", str(tmp_path / "cache"))  # a fresh machine's cache
    db = str(root / "out" / "frames.db")
    comp = "LiX=0.25,EMIMX=0.75"
    out = cli("md", db, "--model", "classical", "--out", str(tmp_path / "run"),
              "--composition", comp, "--ensemble", "nvt", "--steps", "10", "--log-every", "5",
              "--trajectory-every", "5")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cache" / "ions").is_dir()  # MyBF4 rebuilt from the store's record
    out = cli("validate", str(tmp_path / "run"), "--frames", "3", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["force_mae_meV_per_A"] < 1e-3  # the teacher vs itself
    model = str(next((root / "out" / "models").glob("*/model.nequip.zip")))
    out = cli("export-lammps", db, "--model", model, "--composition", comp, "--out",
              str(tmp_path / "lammps"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "lammps" / "system.data").stat().st_size > 0


def test_teacher_transport_run_with_the_user_ion(user_ion_study, tmp_path):
    """The teacher's native OpenMM transport run takes the stored ion set (the user's files
    are gone) and records it beside its trajectory, where `props transport` finds it."""
    from ionmix.dataset.provenance import load_provenance
    from ionmix.properties.transport import prepare_transport
    from ionmix.teachers.classical.transport_run import (
        TransportRunSettings,
        classical_transport_run,
    )

    root, _ = user_ion_study
    store = DatasetStore(root / "out" / "frames.db")
    frame = store.select()[0].atoms
    ions = store.provenance().ion_set(frame)
    classical_transport_run(frame, tmp_path, TransportRunSettings(
        timestep_fs=2.0, hydrogen_mass_amu=3.024, equilibration_ps=1.0, production_ps=4.0,
        frame_interval_ps=0.5, cutoff_A=4.5), ions=ions)  # a 4-pair box shrinks under NPT
    assert load_provenance(tmp_path).ion_set(frame).key == ions.key
    inp = prepare_transport(tmp_path)
    assert "MyBF4" in inp.species and len(inp.time_ps) == 9
