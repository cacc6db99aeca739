"""RDFs and coordination numbers: an ideal gas (g = 1), a lattice with known shells, the
CLI, bad selections."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms

from ionmix.chemistry.topology import attach_molecules
from ionmix.properties.structure import StructureAnalysisError, parse_pair, structure_analysis
from synthetic_md import walk_run


def test_ideal_gas_rdf_is_one(tmp_path):
    path = walk_run(tmp_path / "gas", {"Li": 60, "PF6": 60}, {"Li": 1.0, "PF6": 1.0},
                    n_frames=60, box_A=24.0)
    r = structure_analysis(path.parent, ["Li-@PF6"], bin_width_A=0.5)
    pair = r.pairs["Li-@PF6"]
    g = np.asarray(pair["g"])
    rr = np.asarray(pair["r_A"])
    assert abs(g[rr > 4].mean() - 1) < 0.05
    # running coordination = density × sphere volume for an ideal gas
    n_at_10 = pair["coordination"][int(np.searchsorted(rr, 10.0))]
    assert n_at_10 == pytest.approx(60 / 24.0**3 * 4 / 3 * np.pi * 10.25**3, rel=0.1)
    assert r.r_max_A == 12.0


def _rocksalt(tmp_path: Path, n_frames: int = 6) -> Path:
    """Li⁺ and 'PF6' centres on a rock-salt lattice (a = 5 Å; nearest unlike neighbour
    2.5 Å, six of them), small random displacements per frame."""
    from ionmix.chemistry.ions import load_ion

    pf6 = load_ion("PF6")
    rng = np.random.default_rng(0)
    n = 4
    sites = np.array([(i, j, k) for i in range(2 * n) for j in range(2 * n)
                      for k in range(2 * n)]) * 2.5
    parity = (sites / 2.5).sum(axis=1).astype(int) % 2
    li_sites, an_sites = sites[parity == 0], sites[parity == 1]
    frames = []
    for k in range(n_frames):
        jitter = rng.normal(scale=0.05, size=sites.shape)
        li = li_sites + jitter[: len(li_sites)]
        an = an_sites + jitter[len(li_sites):]
        # a tiny PF6 (scaled template) so its F do not reach the Li shell
        pos = np.concatenate([li] + [c + 0.2 * pf6.template_positions() for c in an])
        atoms = Atoms(["Li"] * len(li) + list(pf6.elements) * len(an), positions=pos,
                      cell=[5.0 * n] * 3, pbc=True)
        atoms.set_masses(np.r_[[6.94] * len(li), np.tile(pf6.masses, len(an))])
        attach_molecules(atoms, [("Li", len(li)), ("PF6", len(an))], {"Li": 1, "PF6": 7})
        atoms.info["time_ps"] = float(k)
        frames.append(atoms)
    path = tmp_path / "lattice" / "trajectory.extxyz"
    path.parent.mkdir()
    ase.io.write(path, frames, format="extxyz")
    return path


def test_lattice_first_shell(tmp_path):
    path = _rocksalt(tmp_path)
    r = structure_analysis(path, ["Li-P@PF6", "@Li-@PF6", "Li-Li"], bin_width_A=0.1,
                           out_dir=tmp_path / "out")
    for name in ("Li-P@PF6", "@Li-@PF6"):
        pair = r.pairs[name]
        assert 2.5 < pair["first_shell_A"] < 3.5
        c = pair["first_shell_coordination"]
        assert c["value"] == pytest.approx(6.0)
        assert c["distribution"] == {"6": 1.0}
        assert pair["per_frame_coordination"] == [6.0] * 6
    assert 3.5 < r.pairs["Li-Li"]["first_shell_A"] < 4.5  # 12 Li at 3.54 Å
    assert r.pairs["Li-Li"]["first_shell_coordination"]["value"] == pytest.approx(12.0)
    assert (tmp_path / "out" / "rdf.png").stat().st_size > 0
    from ionmix.report.transport import plot_rdf

    g_axis, n_axis = plot_rdf(r).axes
    assert g_axis.get_legend_handles_labels()[1] == ["Li-P@PF6", "@Li-@PF6", "Li-Li"]
    np.testing.assert_allclose(n_axis.get_lines()[2].get_ydata(),
                               r.pairs["Li-Li"]["coordination"])
    shells = [line.get_xdata()[0] for line in g_axis.get_lines()[1::2]]  # axvlines
    assert shells == pytest.approx([r.pairs[n]["first_shell_A"] for n in r.pairs])
    saved = json.loads((tmp_path / "out" / "structure.json").read_text())
    assert saved["pairs"]["@Li-@PF6"]["first_shell_coordination"]["value"] == 6.0


def test_bad_selections(tmp_path):
    path = _rocksalt(tmp_path, n_frames=2)
    with pytest.raises(StructureAnalysisError, match="matches nothing"):
        structure_analysis(path, ["Li-Cl"])
    with pytest.raises(StructureAnalysisError, match="use A-B"):
        parse_pair("Li")
    with pytest.raises(StructureAnalysisError, match="exceeds half"):
        structure_analysis(path, ["Li-Li"], r_max_A=50.0)


def test_cli_structure_json(tmp_path):
    path = _rocksalt(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.run([str(Path(sys.executable).parent / "ionmix"), "props", "structure",
                           str(path.parent), "--pairs", "Li-P@PF6", "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["pairs"]["Li-P@PF6"]["first_shell_coordination"]["value"] == 6.0
    assert (path.parent / "structure" / "rdf.png").is_file()
