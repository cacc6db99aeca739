"""Every stage's output is valid input to the next, through the CLI as a user chains them,
and the CLI maps ionmix's errors to exit statuses in one place."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ase.io
import pytest

IONMIX = str(Path(sys.executable).parent / "ionmix")

BUILD_TOML = """
[mixture]
units = {BMIMBF4 = {BMIM = 1, BF4 = 1}, LiBF4 = {Li = 1, BF4 = 1}}
compositions = [{BMIMBF4 = 0.666667, LiBF4 = 0.333333}]
n_ion_pairs = 3
charge_scale = 0.8
"""


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([IONMIX, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """`ionmix build` of a composition written in thirds (3 ion pairs: 2 + 1)."""
    root = tmp_path_factory.mktemp("built")
    (root / "build.toml").write_text(BUILD_TOML)
    out = cli("build", str(root / "build.toml"), "--out", str(root / "boxes"))
    assert out.returncode == 0, out.stderr
    (box,) = sorted((root / "boxes").glob("*_r0.extxyz"))
    return box


def test_built_box_carries_molecules_and_provenance(built):
    atoms = ase.io.read(built)
    assert atoms.info["molecules"] == "BMIM:2,BF4:3,Li:1"
    assert list(atoms.arrays["mol_id"][:1]) == [0]
    provenance = json.loads((built.parent / "provenance.json").read_text())
    assert atoms.info["teacher"] in provenance["teachers"]
    assert atoms.info["ion_set"] in provenance["ion_sets"]


def test_built_box_runs_md_then_props_on_its_trajectory(built, tmp_path):
    """build → md (classical) → props density on the MD trajectory (OpenMM teacher)."""
    out = cli("md", str(built), "--model", "classical", "--out", str(tmp_path / "md"),
              "--ensemble", "nvt", "--steps", "10", "--log-every", "5",
              "--trajectory-every", "5")
    assert out.returncode == 0, out.stderr
    # not a terminal: plain progress lines (stage, done/total, elapsed), start and end
    progress = [line for line in out.stderr.splitlines() if "elapsed" in line]
    assert progress and progress[0].startswith("md") and "10/10" in progress[-1], out.stderr
    out = cli("props", "density", str(tmp_path / "md" / "trajectory.extxyz"), "--model",
              "classical", "--engine", "openmm", "--out", str(tmp_path / "rho"),
              "--temperatures", "300", "--steps", "2000", "--log-every", "20", "--json")
    assert out.returncode == 0, out.stderr
    (point,) = json.loads(out.stdout)["points"]
    assert 0.5 < point["density_g_cm3"] < 3.0


APP = """
import sys
import typer
from ionmix.cli._common import IonmixGroup
from ionmix.errors import InputError, RunError
from ionmix.md import MDBlowUp
app = typer.Typer(cls=IonmixGroup)
KIND = {{"input": InputError, "run": RunError, "blowup": MDBlowUp, "bug": KeyError}}
@app.callback()
def root():
    pass
@app.command()
def go():
    raise KIND["{kind}"]("[sampling] the culprit")
app(["go"])
"""


@pytest.mark.parametrize("kind, status, label", [
    ("input", 2, "error: [sampling] the culprit"), ("run", 1, "failed: [sampling] the culprit"),
    ("blowup", 3, "blew up: [sampling] the culprit")])
def test_cli_maps_errors_to_exit_statuses(kind, status, label):
    out = subprocess.run([sys.executable, "-c", APP.format(kind=kind)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == status and label in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_keeps_the_traceback_of_a_bug():
    out = subprocess.run([sys.executable, "-c", APP.format(kind="bug")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and "Traceback" in out.stderr and "KeyError" in out.stderr


@pytest.mark.parametrize("name", ["demo-study", "paper-study", "xtb-study", "dft-study"])
def test_example_study_configs_are_valid(name):
    """Every shipped study config parses; its teacher spec names only known keys."""
    from ionmix.teachers.base import TEACHER_KINDS
    from ionmix.transferability import load_study_config

    cfg = load_study_config(Path(__file__).parents[1] / "examples" / f"{name}.toml")
    kind = cfg.teacher.get("kind", "classical")
    params = {k: v for k, v in cfg.teacher.items() if k != "kind"}
    unknown = set(params) - set(TEACHER_KINDS[kind].Params.model_fields)
    assert not unknown, unknown
