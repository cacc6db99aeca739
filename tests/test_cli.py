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
        ("[species]\nLi = 1\n[units]\nLiX = {Li = 1, X = 1}\n", "unknown species 'X'"),
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
