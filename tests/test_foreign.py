"""Trajectories from other engines (issue 26): a GROMACS .gro + .xtc and a LAMMPS data file +
dump, written from a known random walk with its positions wrapped into the box, give back
the transport of the unwrapped original; and the bad inputs users meet."""

from __future__ import annotations

import warnings

import ase.io
import numpy as np
import pytest

from ionmix.chemistry.ions import load_ion
from ionmix.properties.foreign import ForeignTrajectoryError, Topology, read_foreign_trajectory
from ionmix.properties.transport import (
    TransportError,
    compute_transport,
    prepare_transport,
)
from synthetic_md import walk_run

mda = pytest.importorskip("MDAnalysis")

COUNTS = {"Li": 6, "EMIM": 6, "PF6": 12}
D_A2_PER_PS = {"Li": 0.02, "EMIM": 0.05, "PF6": 0.03}
BOX_A = 16.0
#: GROMACS residue names of the ions (EMIM under a name of its own: mapped)
RESNAMES = {"Li": "LI", "EMIM": "IM2", "PF6": "PF6"}


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """The original, unwrapped run (ionmix's extxyz) and its frames."""
    path = walk_run(tmp_path_factory.mktemp("walk"), COUNTS, D_A2_PER_PS, n_frames=160,
                    box_A=BOX_A, seed=3)
    frames = ase.io.read(path, ":")
    # molecules leave the box: their wrapped positions jump by a box length
    assert max(np.abs(_wrapped(f) - f.positions).max() for f in frames) > 0.99 * BOX_A
    return path, frames


def _universe(frames, *, charges: bool):
    """An MDAnalysis Universe of the walk's atoms: residues = molecules."""
    mol = frames[0].arrays["mol_id"]
    names = [str(n) for n in frames[0].arrays["ion_name"]]
    n_res = int(mol.max()) + 1
    u = mda.Universe.empty(len(frames[0]), n_residues=n_res, atom_resindex=mol,
                           trajectory=True)
    symbols = frames[0].get_chemical_symbols()
    starts = np.r_[0, np.flatnonzero(np.diff(mol)) + 1]
    u.add_TopologyAttr("names", symbols)
    u.add_TopologyAttr("resnames", [RESNAMES[names[s]] for s in starts])
    u.add_TopologyAttr("resids", np.arange(1, n_res + 1))
    u.add_TopologyAttr("masses", frames[0].get_masses())
    types = {el: str(k + 1) for k, el in enumerate(sorted(set(symbols)))}
    u.add_TopologyAttr("types", [types[el] for el in symbols])
    if charges:
        q = np.concatenate([0.8 * np.asarray(load_ion(names[s]).partial_charges)
                            for s in starts])
        u.add_TopologyAttr("charges", q)
        for attr in ("bonds", "angles", "dihedrals", "impropers"):
            u.add_TopologyAttr(attr, [])
    u.dimensions = [BOX_A] * 3 + [90.0] * 3
    return u


def _wrapped(frame):
    atoms = frame.copy()
    atoms.wrap()
    return atoms.positions


def _transport(path, **kwargs):
    result = compute_transport(prepare_transport(path, **kwargs))
    return ({n: d["value"] for n, d in result.diffusion_cm2_per_s.items()},
            result.conductivity_S_per_m["value"])


def _write_gromacs(folder, frames):
    """top.gro (the first frame) and run.xtc of `frames`, wrapped, by MDAnalysis' writers;
    returns the Universe."""
    u = _universe(frames, charges=False)
    u.atoms.positions = _wrapped(frames[0])
    u.atoms.write(folder / "top.gro")
    with mda.Writer(str(folder / "run.xtc"), len(frames[0])) as writer:
        for frame in frames:
            u.atoms.positions = _wrapped(frame)
            u.trajectory.ts.time = frame.info["time_ps"]
            writer.write(u.atoms)
    return u


def test_gromacs_gro_and_xtc_give_the_unwrapped_transport(walk, tmp_path):
    path, frames = walk
    _write_gromacs(tmp_path, frames)
    top = Topology(tmp_path / "top.gro", {"IM2": "EMIM"})
    read = read_foreign_trajectory(tmp_path / "run.xtc", top)
    assert [f.info["time_ps"] for f in read] == [f.info["time_ps"] for f in frames]
    assert read[0].info["molecules"] == frames[0].info["molecules"]
    # a .gro holds no charges: formal charges on both sides
    d_ref, sigma_ref = _transport(path, formal_charges=True)
    d, sigma = _transport(tmp_path / "run.xtc", topology=top, temperature_K=300.0,
                          formal_charges=True)
    for name in COUNTS:  # .xtc keeps positions to 0.01 Å
        assert d[name] == pytest.approx(d_ref[name], rel=2e-3), name
    assert sigma == pytest.approx(sigma_ref, rel=2e-3)


def _write_dump(path, frames, steps):
    """A LAMMPS text dump (id mol type x y z, wrapped) of `frames` at `steps`."""
    symbols = frames[0].get_chemical_symbols()
    types = {el: k + 1 for k, el in enumerate(sorted(set(symbols)))}
    mol = frames[0].arrays["mol_id"] + 1
    with open(path, "w", encoding="utf-8") as fh:
        for frame, step in zip(frames, steps, strict=True):
            fh.write(f"ITEM: TIMESTEP\n{step}\nITEM: NUMBER OF ATOMS\n{len(frame)}\n"
                     f"ITEM: BOX BOUNDS pp pp pp\n" + f"0.0 {BOX_A}\n" * 3 +
                     "ITEM: ATOMS id mol type x y z\n")
            for k, (el, r) in enumerate(zip(symbols, _wrapped(frame), strict=True)):
                fh.write(f"{k + 1} {mol[k]} {types[el]} {r[0]:.8f} {r[1]:.8f} {r[2]:.8f}\n")


def test_lammps_data_and_dump_give_the_unwrapped_transport(walk, tmp_path):
    """Molecules named by their formula among --ions; charges (× 0.8) from the data file;
    a restart that wrote steps 1000–1400 again keeps the later copies, with a warning."""
    path, frames = walk
    u = _universe(frames, charges=True)
    u.atoms.positions = _wrapped(frames[0])
    u.trajectory.ts.data["molecule_tag"] = frames[0].arrays["mol_id"] + 1
    u.atoms.write(tmp_path / "system.data")
    steps = [100 * k for k in range(len(frames))]
    restart = frames[10:15]  # the restart from step 1000 wrote these again
    _write_dump(tmp_path / "run.lammpstrj", frames[:15] + restart + frames[15:],
                steps[:15] + steps[10:15] + steps[15:])
    top = Topology(tmp_path / "system.data", ions=("Li", "EMIM", "PF6"))
    said = []
    read = read_foreign_trajectory(tmp_path / "run.lammpstrj", top, warn=said.append)
    assert len(read) == len(frames) and [f.info["step"] for f in read] == steps
    assert said and "1000–1400 appear twice" in said[0]
    assert read[0].info["charge_scale"] == pytest.approx(0.8)
    d_ref, sigma_ref = _transport(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TransportError, match="give the time between saved frames"):
            prepare_transport(tmp_path / "run.lammpstrj", topology=top, temperature_K=300.0)
        d, sigma = _transport(tmp_path / "run.lammpstrj", topology=top, temperature_K=300.0,
                              time_step_ps=1.0)
    for name in COUNTS:
        assert d[name] == pytest.approx(d_ref[name], rel=1e-6), name
    assert sigma == pytest.approx(sigma_ref, rel=1e-6)


def test_foreign_bad_inputs_are_named(walk, tmp_path):
    path, frames = walk
    u = _write_gromacs(tmp_path, frames[:3])
    # a residue name the ion set does not hold
    with pytest.raises(ForeignTrajectoryError, match="residue 'IM2' names no ion"):
        read_foreign_trajectory(tmp_path / "run.xtc", Topology(tmp_path / "top.gro"))
    # a topology with other atoms than the trajectory
    u.atoms[:-7].write(tmp_path / "short.gro")
    with pytest.raises(ForeignTrajectoryError, match="short.gro"):
        read_foreign_trajectory(tmp_path / "run.xtc",
                                Topology(tmp_path / "short.gro", {"IM2": "EMIM"}))
    # frames out of time order (not a restart: step 300 was never written before)
    _write_dump(tmp_path / "bad.lammpstrj", frames[:3], [0, 400, 300])
    u = _universe(frames, charges=True)
    u.trajectory.ts.data["molecule_tag"] = frames[0].arrays["mol_id"] + 1
    u.atoms.write(tmp_path / "system.data")
    with pytest.raises(ForeignTrajectoryError, match="step/time 300 follows 400"):
        read_foreign_trajectory(tmp_path / "bad.lammpstrj",
                                Topology(tmp_path / "system.data", ions=("Li", "EMIM", "PF6")))
    # a nameless molecule no candidate matches
    with pytest.raises(ForeignTrajectoryError, match=r"molecule \d+ \(1 atoms, 6.94 u\) "
                                                     "matches no ion among EMIM, PF6"):
        read_foreign_trajectory(tmp_path / "bad.lammpstrj",
                                Topology(tmp_path / "system.data", ions=("EMIM", "PF6")))


def test_cli_reads_a_lammps_run_for_transport_and_structure(walk, tmp_path):
    import json

    from typer.testing import CliRunner

    from ionmix.cli import app

    path, frames = walk
    u = _universe(frames, charges=True)
    u.atoms.positions = _wrapped(frames[0])
    u.trajectory.ts.data["molecule_tag"] = frames[0].arrays["mol_id"] + 1
    u.atoms.write(tmp_path / "system.data")
    _write_dump(tmp_path / "run.lammpstrj", frames, [100 * k for k in range(len(frames))])
    common = ["--topology", str(tmp_path / "system.data"), "--ions", "Li,EMIM,PF6", "--json"]
    out = CliRunner().invoke(app, ["props", "transport", str(tmp_path / "run.lammpstrj"),
                                   "-T", "300", "--time-step-ps", "1", *common, "--out",
                                   str(tmp_path / "transport")])
    assert out.exit_code == 0, out.output
    d_ref, _ = _transport(path)
    got = json.loads(out.stdout)["diffusion_cm2_per_s"]
    assert {n: got[n]["value"] for n in COUNTS} == pytest.approx(d_ref, rel=1e-6)
    out = CliRunner().invoke(app, ["props", "structure", str(tmp_path / "run.lammpstrj"),
                                   "--pairs", "@EMIM-@PF6", *common, "--out",
                                   str(tmp_path / "structure")])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["n_frames"] == len(frames)
    out = CliRunner().invoke(app, ["props", "summary", str(tmp_path / "run.lammpstrj"),
                                   *common])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    mass_g = frames[0].get_masses().sum() / 6.02214076e23
    # the data file keeps masses to 1e-6 u
    assert summary["density_g_cm3"] == pytest.approx(mass_g / (BOX_A * 1e-8) ** 3, rel=1e-6)
    assert summary["molecules"] == COUNTS and summary["varying_cell"] is False
    bad = CliRunner().invoke(app, ["props", "transport", str(tmp_path / "run.lammpstrj"),
                                   "--residue-map", "IM2=EMIM"])
    assert bad.exit_code == 2 and "--residue-map and --ions go with --topology" in bad.output
