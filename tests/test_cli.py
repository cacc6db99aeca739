"""The CLI, tested through a subprocess as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IONMIX = str(Path(sys.executable).parent / "ionmix")


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([IONMIX, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_help_lists_subcommands():
    out = run("--help")
    assert out.returncode == 0
    assert "plan" in out.stdout


def test_plan_json_seed_example():
    out = run("plan", "examples/li-emim-pf6.toml", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["min_compositions"] == 2
    assert data["training"]["sufficient"] is True
    assert sorted(c["LiPF6"] for c in data["recommended"]) == [0.4, 0.6]


def test_plan_report_is_readable():
    out = run("plan", "examples/li-emim-pf6.toml")
    assert out.returncode == 0, out.stderr
    assert "C = 2" in out.stdout and "Recommended" in out.stdout


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty"),
        ("[species]\nLi = 1\nPF6 = -1\n[units]\nLiPF6 = {Li = 1, PF6 = 2}\n", "not neutral"),
        ("[species]\nLi = 1\n[units]\nLiX = {Li = 1, X = 1}\n", "species 'X' is neither"),
    ],
)
def test_plan_user_error_is_one_line_without_traceback(tmp_path, text, match):
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    out = run("plan", str(spec))
    assert out.returncode == 2
    assert match in out.stderr and "bad.toml" in out.stderr
    assert "Traceback" not in out.stderr


def test_plan_missing_file():
    out = run("plan", "does-not-exist.toml")
    assert out.returncode == 2
    assert "does-not-exist.toml" in out.stderr


def test_sample_bad_config_is_a_user_error(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text("[mixture]\nunits = {LiPF6 = {Li = 1, PF6 = 1}, EMIMPF6 = {EMIM = 1, PF6 = 1}}"
                   "\ncompositions = [{LiPF6 = 0.33, EMIMPF6 = 0.67}]\nn_ion_pairs = 4\n")
    out = run("sample", str(cfg), "--out", str(tmp_path / "out"))
    assert out.returncode == 2
    assert "nearest valid fractions" in out.stderr and "Traceback" not in out.stderr


def test_train_unknown_composition_is_a_user_error(tmp_path):
    from ionmix.dataset import DatasetStore

    len(DatasetStore(tmp_path / "empty.db"))  # a store with no frames (created as an output)
    out = run("train", "--dataset", str(tmp_path / "empty.db"), "--composition",
              "LiPF6=0.5,EMIMPF6=0.5", "--out", str(tmp_path / "m"))
    assert out.returncode == 2
    assert "LiPF6=0.5,EMIMPF6=0.5 is not in" in out.stderr and "Traceback" not in out.stderr


def test_train_from_a_mistyped_store_path_is_refused(tmp_path):
    """Was: the mistyped path became a new empty database."""
    out = run("train", "--dataset", str(tmp_path / "typo.db"), "--composition",
              "LiPF6=0.5,EMIMPF6=0.5", "--out", str(tmp_path / "m"))
    assert out.returncode == 2 and "typo.db: no such dataset store" in out.stderr
    assert not (tmp_path / "typo.db").exists()


def test_transfer_unknown_key_is_a_user_error(tmp_path):
    cfg = tmp_path / "study.toml"
    cfg.write_text("[mixture]\nunits = {LiPF6 = {Li = 1, PF6 = 1}}\nn_ion_pairs = 4\n"
                   "[study]\nrecipies = [[0.5]]\n")
    out = run("transfer", str(cfg), "--out", str(tmp_path / "o"))
    assert out.returncode == 2
    assert "study.recipies: unknown key" in out.stderr


def test_props_eos_json_and_bad_table(tmp_path):
    import numpy as np

    from ionmix.properties.eos import tait_volume

    p = np.array([1.0, 1001, 2001, 3001, 4001, 5001])
    table = tmp_path / "pv.csv"
    table.write_text("pressure_bar,volume_A3\n" + "".join(
        f"{pi},{vi}\n" for pi, vi in zip(p, tait_volume(p, 5000.0, 900.0, 0.09), strict=True)))
    out = run("props", "eos", str(table), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["kappa_T_per_Pa"] == pytest.approx(0.09 / 900 / 1e5,
                                                                      rel=1e-4)
    table.write_text("pressure,volume\n1,2\n")
    out = run("props", "eos", str(table))
    assert out.returncode == 2 and "missing column" in out.stderr
