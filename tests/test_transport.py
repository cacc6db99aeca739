"""Transport analysis on synthetic trajectories with known answers, the CLI, bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest

from ionmix.chemistry.ions import load_ion
from ionmix.properties.transport import (
    A2_PER_PS_IN_CM2_PER_S,
    TransportError,
    compute_transport,
    prepare_transport,
    transport_analysis,
)
from synthetic_md import expected_L_A2_per_ps, walk_run

COUNTS = {"Li": 8, "EMIM": 24, "PF6": 32}
D_A2_PER_PS = {"Li": 0.01, "EMIM": 0.04, "PF6": 0.02}


@pytest.fixture(scope="module")
def walk(tmp_path_factory) -> Path:
    return walk_run(tmp_path_factory.mktemp("walk"), COUNTS, D_A2_PER_PS, n_frames=400)


@pytest.fixture(scope="module")
def walk_result(walk):
    return transport_analysis(walk.parent)


def _matrix(onsager: dict, species) -> tuple[np.ndarray, np.ndarray]:
    value = np.array([[onsager[a][b]["value"] for b in species] for a in species])
    error = np.array([[onsager[a][b]["error"] for b in species] for a in species])
    return value, error


def barycentric_d(counts: dict, d_A2_per_ps: dict, name: str) -> float:
    """D of a walker seen from the system's centre of mass, cm²/s:
    D_α (1 − 2 m_α/M) + Σ_β m_β² D_β / M² (the walks do not conserve momentum)."""
    m = {n: load_ion(n).mass_amu for n in counts}
    big_m = sum(counts[n] * m[n] for n in counts)
    s2 = sum(counts[n] * m[n] ** 2 * d_A2_per_ps[n] for n in counts) / big_m**2
    return (d_A2_per_ps[name] * (1 - 2 * m[name] / big_m) + s2) * A2_PER_PS_IN_CM2_PER_S


def test_diffusion_within_its_error(walk_result):
    """Each D recovers the walk's D within 3 stated standard errors."""
    for name in COUNTS:
        d = walk_result.diffusion_cm2_per_s[name]
        true = barycentric_d(COUNTS, D_A2_PER_PS, name)
        assert d["diffusive"], d
        assert abs(d["value"] - true) < 3 * d["error"], (name, d, true)
        assert 0 < d["error"] < 0.2 * true
        assert d["fit_window_ps"][1] == 50.0  # half of a quarter of the 400-ps run
    assert not walk_result.warnings
    assert walk_result.error_degrees_of_freedom == 3


def test_msd_figure_shows_each_species_and_the_fit_window(walk_result):
    from ionmix.report.transport import plot_msd

    ax = plot_msd(walk_result).axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert labels[0] == "fit window" and len(labels) == 1 + len(COUNTS)
    for name, label in zip(walk_result.curves["msd_A2"], labels[1:], strict=True):
        d = walk_result.diffusion_cm2_per_s[name]
        assert label.startswith(f"{name}: D = {d['value'] * 1e7:.2f} ± ")
    curve = ax.get_lines()[0]  # the first species' MSD, without lag 0 (log axes)
    np.testing.assert_allclose(curve.get_ydata(),
                               next(iter(walk_result.curves["msd_A2"].values()))[1:])
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")


def test_onsager_and_conductivity_match_the_construction(walk_result):
    """L_ij of independent walks: the centre-of-mass-frame expectation within 3σ; σ equals
    Nernst–Einstein within errors; transference numbers sum to 1."""
    r = walk_result
    species = list(COUNTS)
    total, err = _matrix(r.onsager_mol2_per_J_m_s["total"], species)
    kt_v = 6 * 1.380649e-23 * r.temperature_K * r.volume_A3 * 1e-30
    expected = expected_L_A2_per_ps(COUNTS, D_A2_PER_PS) * 6 * 1e-8 / kt_v / 6.02214076e23**2
    assert np.all(np.abs(total - expected) < 3.5 * err + 0.05 * np.abs(expected).max())
    self_, _ = _matrix(r.onsager_mol2_per_J_m_s["self"], species)
    distinct, _ = _matrix(r.onsager_mol2_per_J_m_s["distinct"], species)
    np.testing.assert_allclose(self_ + distinct, total, rtol=1e-12, atol=1e-30)
    assert np.all(self_[~np.eye(3, dtype=bool)] == 0)
    s, ne = r.conductivity_S_per_m, r.nernst_einstein_conductivity_S_per_m
    assert abs(s["value"] - ne["value"]) < 3 * np.hypot(s["error"], ne["error"])
    assert abs(r.conductivity_ratio["value"] - 1) < 3 * r.conductivity_ratio["error"]
    assert sum(t["value"] for t in r.transference_number.values()) == pytest.approx(1.0)
    # σ = e² Σ z z L (molar L × F²) ties the matrix to the conductivity
    z = np.array([r.charges_e[n] for n in species])
    faraday = 1.602176634e-19 * 6.02214076e23
    assert faraday**2 * z @ total @ z == pytest.approx(s["value"], rel=1e-10)
    assert r.charges_e == {"Li": pytest.approx(0.8), "EMIM": pytest.approx(0.8),
                           "PF6": pytest.approx(-0.8)}
    assert r.reference_frame.startswith("barycentric")
    assert r.yeh_hummer["applied"] is False


def test_error_bars_are_honest_over_seeds(tmp_path):
    """Over 12 independent walks, D(EMIM) lies within 2 stated errors of the truth in at
    least 2/3 of them (95 % expected; 30 seeds gave 97 % within 2 and 73 % within 1)."""
    counts, d_true = {"EMIM": 12, "PF6": 12}, {"EMIM": 0.04, "PF6": 0.02}
    true = barycentric_d(counts, d_true, "EMIM")
    hits = 0
    for seed in range(12):
        path = walk_run(tmp_path / f"s{seed}", counts, d_true, n_frames=240, seed=seed)
        d = compute_transport(prepare_transport(path)).diffusion_cm2_per_s["EMIM"]
        hits += abs(d["value"] - true) < 2 * d["error"]
    assert hits >= 8


def test_neutral_pairs_do_not_conduct(tmp_path):
    path = walk_run(tmp_path / "pairs", {"Li": 16, "PF6": 16}, {"Li": 0.03, "PF6": 0.03},
                    paired=True, n_frames=200)
    r = transport_analysis(path.parent)
    ne = r.nernst_einstein_conductivity_S_per_m["value"]
    assert ne > 0
    assert abs(r.conductivity_S_per_m["value"]) < 1e-9 * ne
    assert abs(r.conductivity_ratio["value"]) < 1e-9
    assert r.transference_number["Li"] == {"value": None, "error": None}
    assert any("transference numbers are undefined" in w for w in r.warnings)


def test_a_uniform_drift_changes_nothing(tmp_path):
    """The barycentric frame removes a drift of the whole box."""
    args = ({"Li": 8, "PF6": 8}, {"Li": 0.03, "PF6": 0.01})
    still = transport_analysis(walk_run(tmp_path / "a", *args, n_frames=160).parent)
    drift = transport_analysis(walk_run(tmp_path / "b", *args, n_frames=160,
                                        drift_A_per_ps=(0.05, -0.02, 0.01)).parent)
    for name in ("Li", "PF6"):
        assert drift.diffusion_cm2_per_s[name]["value"] == pytest.approx(
            still.diffusion_cm2_per_s[name]["value"], rel=1e-6)
    assert drift.conductivity_S_per_m["value"] == pytest.approx(
        still.conductivity_S_per_m["value"], rel=1e-6)
    # two species in the barycentric frame: t_+ = m_−/(m_+ + m_−), whatever the dynamics
    m_li, m_pf6 = load_ion("Li").mass_amu, load_ion("PF6").mass_amu
    assert still.transference_number["Li"]["value"] == pytest.approx(m_pf6 / (m_li + m_pf6))


def test_formal_charges_and_yeh_hummer(walk):
    scaled = transport_analysis(walk.parent)
    formal = transport_analysis(walk.parent, formal_charges=True, viscosity_Pa_s=0.01)
    assert formal.charge_scale == 1.0 and formal.charges_e["PF6"] == -1.0
    assert formal.conductivity_S_per_m["value"] == pytest.approx(
        scaled.conductivity_S_per_m["value"] / 0.64)
    assert formal.yeh_hummer["applied"]
    corr = formal.yeh_hummer["correction_cm2_per_s"]
    # k_B T ξ / (6 π η L) at 300 K, 0.01 Pa s, 30 Å
    assert corr == pytest.approx(1.380649e-23 * 300 * 2.837297 / (6 * np.pi * 0.01 * 30e-10)
                                 * 1e4)
    assert formal.diffusion_cm2_per_s["Li"]["value"] == pytest.approx(
        scaled.diffusion_cm2_per_s["Li"]["value"] + corr)


# --------------------------------------------------------------------------------------
# bad input


def test_no_molecule_information(tmp_path):
    path = walk_run(tmp_path / "bare", {"Li": 4, "PF6": 4}, {"Li": 0.02, "PF6": 0.02},
                    n_frames=40, molecule_info=False)
    with pytest.raises(TransportError, match="no molecule information"):
        prepare_transport(path)
    inp = prepare_transport(path, molecules="Li:4,PF6:4")
    assert inp.species == ("Li", "PF6") and inp.charge_scale == 1.0


def test_changing_atom_order(tmp_path):
    path = walk_run(tmp_path / "order", {"Li": 4, "PF6": 4}, {"Li": 0.02, "PF6": 0.02},
                    n_frames=40)
    frames = ase.io.read(path, ":")
    frames[7] = frames[7][np.r_[4:len(frames[7]), 0:4]]
    ase.io.write(path, frames, format="extxyz")
    with pytest.raises(TransportError, match="frame 7 has another number or order"):
        prepare_transport(path)


def _wrap_atoms(frames):
    """Positions wrapped into the box atom by atom (molecules split at the faces), as a
    LAMMPS dump without image flags holds them."""
    for f in frames:
        f.wrap()
    return frames


def _wrap_centres(frames, box_A):
    """Whole molecules put back into the box by their first atom (GROMACS -pbc mol)."""
    for f in frames:
        mol = f.arrays["mol_id"]
        for m in np.unique(mol):
            sel = mol == m
            f.positions[sel] -= np.floor(f.positions[sel][0] / box_A) * box_A
    return frames


@pytest.mark.parametrize("wrap", ["atoms", "centres"])
def test_wrapped_trajectory_gives_the_unwrapped_transport(tmp_path, wrap):
    """Wrapped (atom by atom, or whole molecules by centre) and unwrapped copies of one
    random walk give the same centres up to a shift that never changes (the first frame's
    wrapping), and the same transport."""
    counts, d = {"Li": 8, "PF6": 8}, {"Li": 0.03, "PF6": 0.02}
    path = walk_run(tmp_path / "walk", counts, d, n_frames=120, box_A=12.0)
    frames = ase.io.read(path, ":")
    wrapped = (_wrap_atoms if wrap == "atoms" else lambda f: _wrap_centres(f, 12.0))(
        ase.io.read(path, ":"))
    # molecules left the box and were put back: the files differ by box lengths
    assert np.abs(wrapped[-1].positions - frames[-1].positions).max() > 11.0
    moved = tmp_path / "wrapped"
    moved.mkdir()
    ase.io.write(moved / "trajectory.extxyz", wrapped, format="extxyz")
    (moved / "md.json").write_text((path.parent / "md.json").read_text())
    a, b = prepare_transport(path), prepare_transport(moved)
    shift = b.com_A - a.com_A
    np.testing.assert_allclose(shift - shift[:1], 0.0, atol=1e-9)
    ra, rb = compute_transport(a), compute_transport(b)
    for name in counts:
        assert rb.diffusion_cm2_per_s[name]["value"] == pytest.approx(
            ra.diffusion_cm2_per_s[name]["value"], rel=1e-9)
    assert rb.conductivity_S_per_m["value"] == pytest.approx(
        ra.conductivity_S_per_m["value"], rel=1e-6)


def test_a_step_too_long_to_unwrap_is_named(tmp_path):
    """A centre that moves a quarter of the box between saved frames may have crossed it
    either way: refused, naming the frames and the molecule."""
    path = walk_run(tmp_path / "wrapped", {"Li": 4, "PF6": 4}, {"Li": 0.01, "PF6": 0.01},
                    n_frames=20, box_A=12.0)
    frames = ase.io.read(path, ":")
    for f in frames[9:]:
        f.positions[4:11] += [3.5, 0.0, 0.0]  # PF6 number 4 (atoms 4-10) jumps at frame 9
    ase.io.write(path, _wrap_atoms(frames), format="extxyz")
    with pytest.raises(TransportError, match=r"molecule 4 \(PF6\) moves 3\.\d+ Å between "
                                             r"frames 8 and 9, more than 0.5 × half the box"):
        prepare_transport(path)


def test_a_molecule_that_cannot_be_made_whole_is_named(tmp_path):
    path = walk_run(tmp_path / "w", {"Li": 4, "PF6": 4}, {"Li": 0.01, "PF6": 0.01},
                    n_frames=10, box_A=12.0)
    frames = ase.io.read(path, ":")
    frames[0].positions[6] += [0.0, 3.0, 0.0]  # an F of molecule 4 (atoms 4-10) pulled off
    ase.io.write(path, frames, format="extxyz")
    with pytest.raises(TransportError, match=r"molecule 4 \(PF6\): atom 6 is not bonded"):
        prepare_transport(path)


def test_tumbling_molecules_are_not_wrapping(tmp_path):
    """Outer atoms of a rotating molecule may move far between frames; only centres and
    whole molecules are checked."""
    path = walk_run(tmp_path / "tumble", {"EMIM": 4, "PF6": 4}, {"EMIM": 0.01, "PF6": 0.01},
                    n_frames=40, box_A=12.0)
    frames = ase.io.read(path, ":")
    for k, f in enumerate(frames):
        mol = f.arrays["mol_id"]
        sel = mol == 0
        centre = f.positions[sel].mean(axis=0)
        f.positions[sel] = centre + (f.positions[sel] - centre) * (-1) ** k  # inversion
    ase.io.write(path, frames, format="extxyz")
    assert prepare_transport(path).com_A.shape == (40, 8, 3)


def test_no_diffusive_regime_is_a_warning_not_a_silent_number(tmp_path):
    path = walk_run(tmp_path / "cage", {"Li": 8, "PF6": 8}, {"Li": 0.0, "PF6": 0.0},
                    n_frames=120, cage_A=0.5)
    r = transport_analysis(path.parent)
    assert all(not d["diffusive"] for d in r.diffusion_cm2_per_s.values())
    assert any("no diffusive regime" in w for w in r.warnings)


def test_missing_temperature_and_uneven_times(tmp_path):
    path = walk_run(tmp_path / "noT", {"Li": 4, "PF6": 4}, {"Li": 0.02, "PF6": 0.02},
                    n_frames=40, temperature_K=None)
    with pytest.raises(TransportError, match="temperature"):
        prepare_transport(path)
    assert prepare_transport(path, temperature_K=350).temperature_K == 350
    frames = ase.io.read(path, ":")
    frames[10].info["time_ps"] = 10.5
    ase.io.write(path, frames, format="extxyz")
    with pytest.raises(TransportError, match="evenly spaced"):
        prepare_transport(path, temperature_K=350)


def test_too_short(tmp_path):
    path = walk_run(tmp_path / "short", {"Li": 4, "PF6": 4}, {"Li": 0.02, "PF6": 0.02},
                    n_frames=20)
    with pytest.raises(TransportError, match="needs ≥ 4 lags"):
        transport_analysis(path.parent)


# --------------------------------------------------------------------------------------
# CLI


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    ionmix = str(Path(sys.executable).parent / "ionmix")
    return subprocess.run([ionmix, *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_cli_transport_json(walk, tmp_path):
    proc = _cli("props", "transport", str(walk.parent), "--json", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    for key in ("diffusion_cm2_per_s", "conductivity_S_per_m",
                "nernst_einstein_conductivity_S_per_m", "onsager", "onsager_mol2_per_J_m_s",
                "transference_number"):
        assert key in data
    assert set(data["diffusion_cm2_per_s"]["Li"]) >= {"value", "error"}
    assert set(data["transference_number"]["PF6"]) == {"value", "error"}
    assert set(data["conductivity_S_per_m"]) == {"value", "error"}
    assert data["temperature_K"] == 300.0
    assert (tmp_path / "msd.png").stat().st_size > 0
    assert (tmp_path / "transport.json").is_file()


def test_cli_bad_input_exits_2(tmp_path):
    path = walk_run(tmp_path / "bare", {"Li": 4, "PF6": 4}, {"Li": 0.02, "PF6": 0.02},
                    n_frames=40, molecule_info=False)
    proc = _cli("props", "transport", str(path), "--json")
    assert proc.returncode == 2
    assert "no molecule information" in proc.stderr


def test_openmm_teacher_run_is_readable(tmp_path):
    """The OpenMM teacher's transport run writes what `prepare_transport` reads: unwrapped
    frames with time_ps and molecule arrays, md.json with the temperature, the ion set."""
    from ionmix.build import build_box
    from ionmix.teachers.classical.transport_run import (
        TransportRunSettings,
        classical_transport_run,
    )

    atoms = build_box({"Li": 1, "EMIM": 3, "PF6": 4}, density_g_cm3=1.2, seed=1)
    classical_transport_run(atoms, tmp_path, TransportRunSettings(
        temperature_K=350.0, timestep_fs=2.0, hydrogen_mass_amu=3.024, equilibration_ps=2.0,
        production_ps=8.0, frame_interval_ps=0.5, cutoff_A=4.5))
    inp = prepare_transport(tmp_path)
    assert inp.temperature_K == 350.0
    assert inp.time_ps[-1] == pytest.approx(8.0) and len(inp.time_ps) == 17
    assert inp.species == ("Li", "EMIM", "PF6")
    np.testing.assert_allclose(inp.charges_e, [0.8, 0.8, -0.8])
    md = json.loads((tmp_path / "md.json").read_text())
    assert md["status"] == "done" and 200 < md["mean_temperature_K"] < 500


def test_molecules_given_in_the_wrong_order_are_named(tmp_path):
    """Right counts, wrong order (was: blamed on wrapped positions)."""
    from ionmix.properties.transport import read_trajectory

    path = walk_run(tmp_path / "bare", {"Li": 4, "PF6": 4}, {"Li": 0.1, "PF6": 0.1},
                    n_frames=5)
    frames = ase.io.read(path, ":")
    for f in frames:  # a foreign trajectory: no molecule information
        f.arrays.pop("mol_id", None)
        f.arrays.pop("ion_name", None)
        f.info.pop("molecules", None)
    ase.io.write(path, frames, format="extxyz")
    assert len(read_trajectory(path, "Li:4,PF6:4")) == 5  # the file's own order
    with pytest.raises(TransportError, match=r"molecule 0 \(PF6, atoms 0–6\) holds Li"):
        read_trajectory(path, "PF6:4,Li:4")


def test_unwrapping_follows_a_box_that_changes_under_npt():
    """Barostat dynamics: each step scales the in-box coordinates with the box (as an NPT
    integrator does), adds a thermal step, and the file keeps them wrapped. Reducing each
    displacement with the current cell (Kulke & Vermaas) recovers the true path exactly;
    image counts would add n·ΔL for every atom n boxes out."""
    from ase import Atoms

    from ionmix.properties.unwrap import continuous_centres_A

    rng = np.random.default_rng(4)
    n_atoms, n_frames = 20, 200
    edges = 15.0 * (1 + 0.03 * np.sin(np.arange(n_frames) / 9.0))  # ±3 % box breathing
    wrapped = rng.uniform(0, edges[0], size=(n_atoms, 3))
    true = [wrapped.copy()]
    frames = [Atoms(["Li"] * n_atoms, positions=wrapped, cell=[edges[0]] * 3, pbc=True)]
    for k in range(1, n_frames):
        step = wrapped * (edges[k] / edges[k - 1] - 1) + rng.normal(0, 0.4, (n_atoms, 3))
        true.append(true[-1] + step)
        wrapped = np.mod(wrapped + step, edges[k])
        frames.append(Atoms(["Li"] * n_atoms, positions=wrapped, cell=[edges[k]] * 3,
                            pbc=True))
    mol = np.arange(n_atoms)
    centres = continuous_centres_A(frames, mol, ["Li"] * n_atoms, np.full(n_atoms, 6.94))
    np.testing.assert_allclose(centres, np.array(true), atol=1e-9)
    assert np.abs(np.array(true)).max() > 1.5 * edges.max()  # atoms crossed the boundary


def test_a_thermally_stretched_bond_still_joins_its_molecule():
    """A C–H bond stretched as a 350-K liquid stretches it (1.14 × the covalent radii,
    beyond ASE's usual 1.1 ×) still joins the H to its molecule, for unwrapping and for the
    MD bond guard (was: an OpenMM transport run refused in 1 of ~30 first frames)."""
    from ase.data import covalent_radii

    from ionmix.build import build_box
    from ionmix.md import covalent_bonds
    from ionmix.properties.unwrap import bond_tree, make_whole

    atoms = build_box({"EMIM": 2, "PF6": 2}, density_g_cm3=1.2, seed=1)
    symbols = atoms.get_chemical_symbols()
    h = symbols.index("H")
    c = int(np.argmin([atoms.get_distance(h, k, mic=True) if symbols[k] == "C" else np.inf
                       for k in range(len(atoms))]))
    r_sum_A = covalent_radii[6] + covalent_radii[1]
    bond = atoms.get_distance(c, h, mic=True, vector=True)
    atoms.positions[h] = atoms.positions[c] + bond / np.linalg.norm(bond) * 1.14 * r_sum_A
    whole = atoms.positions.copy()
    mol = np.asarray(atoms.arrays["mol_id"])
    tree = bond_tree(atoms, mol, ["EMIM", "EMIM", "PF6", "PF6"])
    wrapped = atoms.copy()
    wrapped.wrap()
    rebuilt = make_whole(wrapped.positions, atoms.cell.array, tree)
    shift = rebuilt - whole  # whole molecules move by lattice vectors only
    for m in range(4):
        np.testing.assert_allclose(shift[mol == m], shift[mol == m][:1].repeat((mol == m).sum(), 0),
                                   atol=1e-9)
    i, j, _ = covalent_bonds(atoms)
    assert {c, h} in [{a, b} for a, b in zip(i.tolist(), j.tolist(), strict=True)]
