"""Tests of ionmix.train: presets, energy references, validation, and a real tiny training.

Data are generated on the fly: 32-atom fcc Cu/Au boxes (7.2 Å cubes), rattled, labelled
with ASE's EMT (energy, forces, stress), at two compositions so that per-species energies
are identifiable. Training runs the real ``nequip-train`` and ``nequip-package``.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import warnings
from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from ionmix.design import fit_species_energies
from ionmix.models import load_calculator
from ionmix.models.network import NetworkDtypeError
from ionmix.testing import ROUNDING_FLOAT64, CalculatorBattery
from ionmix.train import (
    PRESETS,
    TrainConfigError,
    TrainDataError,
    apply_overrides,
    build_config,
    evaluate,
    get_preset,
    loss_curve,
    per_type_energy_shifts,
    run_training,
)

# nequip.utils.global_state.set_global_state() calls torch.jit.set_fusion_strategy, which
# torch >= 2.10 deprecates; it runs whenever a nequip model is loaded and is not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.set_fusion_strategy` is deprecated:DeprecationWarning"
)

TYPE_NAMES = ["Au", "Cu"]
#: Half of the 7.2 Å box is 3.6 Å: the tiny presets' cutoffs (4.5-5 Å) must be shortened.
R_MAX_A = 3.5
FAST = {"max_epochs": 2, "cutoff_radius": R_MAX_A}


def emt_frames(n_frames: int, seed: int, n_au: int = 8, stress: bool = True) -> list:
    """Rattled 2x2x2 fcc (a = 3.6 Å) Cu boxes with `n_au` Au atoms, EMT-labelled."""
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
        labels = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if stress:
            labels["stress"] = atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, **labels)
        atoms.info["composition"] = f"Au{n_au}Cu{32 - n_au}"
        frames.append(atoms)
    return frames


def write(path: Path, frames: list) -> Path:
    ase.io.write(path, frames, format="extxyz")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """train (6 frames), val (2), test (4; an independent 'replica': other seeds)."""
    d = tmp_path_factory.mktemp("emt")
    return {
        "train": write(d / "train.xyz", emt_frames(3, 1, 8) + emt_frames(3, 2, 16)),
        "val": write(d / "val.xyz", emt_frames(1, 3, 8) + emt_frames(1, 4, 16)),
        "test": write(d / "test.xyz", emt_frames(2, 5, 8) + emt_frames(2, 6, 16)),
    }


def train(data, run_dir, **kwargs):
    args = {
        "preset": "cpu-tiny-allegro",
        "energy_shifts": "fit",
        "seed": 7,
        "overrides": FAST,
        "say": None,
        # one torch thread: these systems are tiny, and other work on a shared 2-core
        # machine makes oversubscribed OpenMP threads 5-10x slower
        "num_threads": 1,
    }
    args.update(kwargs)
    return run_training(
        data["train"], data["val"], data["test"], TYPE_NAMES, run_dir=run_dir, **args
    )


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A real 2-epoch cpu-tiny-allegro run, packaged (~15 s on 2 cores)."""
    return train(data, tmp_path_factory.mktemp("run") / "allegro")


# --------------------------------------------------------------------------------------
# the trained model
# --------------------------------------------------------------------------------------


def test_run_writes_a_rerunnable_config_manifest_and_package(trained, data):
    run_dir = trained.run_dir
    for path in (trained.config_path, trained.manifest_path, trained.checkpoint_path,
                 trained.last_checkpoint_path, trained.package_path,
                 run_dir / "ionmix_train.json"):
        assert path.is_file(), path
    config = yaml.safe_load(trained.config_path.read_text())
    # one source of truth for shared values, absolute data paths, separate test file
    model = config["training_module"]["model"]
    assert model["r_max"] == "${cutoff_radius}" and config["cutoff_radius"] == R_MAX_A
    assert model["type_names"] == "${model_type_names}"
    assert config["data"]["transforms"][1]["r_max"] == "${cutoff_radius}"
    assert config["data"]["test_file_path"] == str(data["test"].resolve())
    assert config["run"] == ["train", "test"]
    assert set(model["per_type_energy_shifts"]) == set(TYPE_NAMES)
    manifest = json.loads(trained.manifest_path.read_text())
    assert manifest["energy_reference"]["mode"] == "fit"
    assert manifest["files"]["train"]["n_frames"] == 6
    assert len(manifest["files"]["test"]["frames"]) == 4
    assert all(len(f["sha256"]) == 64 for f in manifest["files"]["val"]["frames"])
    assert trained.metrics["epochs"] == 2


def test_package_and_checkpoint_agree(trained, data):
    packaged = load_calculator(trained.package_path)
    checkpoint = load_calculator(trained.checkpoint_path)
    for atoms in ase.io.read(data["test"], ":"):
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = packaged, checkpoint
        assert abs(a.get_potential_energy() - b.get_potential_energy()) < 1e-4  # eV
        assert np.abs(a.get_forces() - b.get_forces()).max() <= 5e-5  # eV/Å, float32


def test_reported_test_mae_equals_mae_recomputed_from_package(trained, data):
    ours = evaluate(trained.package_path, data["test"], group_by="composition")
    # Same weights (best.ckpt's EMA), same float32 model, same MAE definitions; nequip
    # batches 2 frames where we run 1, which can only change float32 rounding (~1e-7).
    for key in ("energy_mae_meV_per_atom", "force_mae_meV_per_A", "stress_mae_meV_per_A3"):
        assert getattr(ours, key) == pytest.approx(trained.metrics[key], rel=1e-5, abs=1e-6), key
    assert ours.n_frames == 4 and ours.n_frames_with_stress == 4
    assert set(ours.force_mae_meV_per_A_by_element) == {"Au", "Cu"}
    assert set(ours.groups) == {"Au8Cu24", "Au16Cu16"}
    assert sum(g.n_frames for g in ours.groups.values()) == 4
    n_atoms = {el: 0 for el in TYPE_NAMES}
    for atoms in ase.io.read(data["test"], ":"):
        for s in atoms.get_chemical_symbols():
            n_atoms[s] += 1
    per_el = ours.force_mae_meV_per_A_by_element
    weighted = sum(per_el[el] * n_atoms[el] for el in TYPE_NAMES) / sum(n_atoms.values())
    assert weighted == pytest.approx(ours.force_mae_meV_per_A, rel=1e-12)


class TestTrainedCheckpointFloat64Battery(CalculatorBattery):
    """The battery (tests/battery.py) on the 2-epoch Allegro checkpoint (trained in float32)
    evaluated in float64, on the first EMT test frame (32 atoms, 7.2 Å cube, r_max 3.5 Å).

    Measured on this frame, and the tolerances (~10x; float64 rounding: ROUNDING_FLOAT64):
    - forces vs -dE/dx, ε = 1e-4 Å, all 32 atoms: max 5.5e-8 eV/Å (median 1.3e-8), the
      O(ε²) truncation error (5.5e-6 at ε = 1e-3).
    - stress vs (1/V) dE/dε, strain step 1e-4: 1.5e-8 eV/Å3 (1.5e-10 at 1e-5).
    - rotation, translation, lattice shifts, permutation, 2x1x1 supercell: <= 4.4e-15 eV,
      2.7e-14 eV/Å, 2.4e-16 eV/Å3.
    """

    n_fd_atoms = 3
    fd_force_atol_eV_per_A = 1e-6
    fd_stress_atol_eV_per_A3 = 2e-7
    rotation_tol = translation_tol = lattice_shift_tol = ROUNDING_FLOAT64
    permutation_tol = extensivity_tol = ROUNDING_FLOAT64

    @pytest.fixture(scope="class")
    @classmethod
    def calculator(cls, trained):
        return load_calculator(trained.checkpoint_path, float64=True)

    @pytest.fixture(scope="class")
    @classmethod
    def structure(cls, data):
        return ase.io.read(data["test"], 0)


def test_fine_tuning_starts_from_the_given_package(trained, data, tmp_path):
    """With a vanishing learning rate, an epoch of fine-tuning leaves the package's
    predictions as they were: the weights came from it, not from a random start."""
    tuned = train(data, tmp_path / "tuned", initial_model=trained.package_path,
                  overrides={**FAST, "max_epochs": 1, "learning_rate": 1e-12})
    model = yaml.safe_load(tuned.config_path.read_text())["training_module"]["model"]
    assert model == {"_target_": "nequip.model.ModelFromPackage",
                     "package_path": str(trained.package_path.resolve())}
    manifest = json.loads(tuned.manifest_path.read_text())
    assert manifest["initial_model"] == str(trained.package_path.resolve())
    parent, child = load_calculator(trained.package_path), load_calculator(tuned.package_path)
    for atoms in ase.io.read(data["test"], ":"):
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = parent, child
        assert abs(a.get_potential_energy() - b.get_potential_energy()) < 1e-4  # eV
        assert np.abs(a.get_forces() - b.get_forces()).max() <= 5e-5  # eV/Å, float32
    with pytest.raises(TrainConfigError, match="no-such.nequip.zip"):
        train(data, tmp_path / "bad", initial_model=tmp_path / "no-such.nequip.zip")


def test_float32_package_refuses_float64(trained):
    with pytest.raises(NetworkDtypeError, match="model_dtype"):
        load_calculator(trained.package_path, float64=True)


def test_same_seed_same_loss_curve(trained, data, tmp_path):
    lines: list[str] = []
    again = train(data, tmp_path / "same", package=False, say=lines.append)
    assert [line.split(" [")[0] for line in lines if line.startswith("epoch")] == [
        "epoch 1/2", "epoch 2/2"
    ]
    assert again.package_path is None
    assert loss_curve(again.run_dir) == loss_curve(trained.run_dir)
    assert again.metrics == trained.metrics


@pytest.mark.slow
def test_different_seed_different_loss_curve(trained, data, tmp_path):
    other = train(data, tmp_path / "other", package=False, seed=8)
    assert loss_curve(other.run_dir) != loss_curve(trained.run_dir)


def test_finished_run_is_not_retrained(trained, data, monkeypatch):
    """A second call on a finished run starts no nequip-train / nequip-package subprocess
    and rewrites no file of the run directory (checkpoints, metrics, config, package)."""
    run_module = importlib.import_module("ionmix.train.run")
    started: list[list[str]] = []

    def no_subprocess(cmd, *args, **kwargs):
        started.append(list(cmd))
        raise AssertionError(f"a finished run started {cmd[0]}")

    monkeypatch.setattr(run_module, "_run_subprocess", no_subprocess)
    files = sorted(p for p in trained.run_dir.rglob("*") if p.is_file())
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in files}
    lines: list[str] = []
    again = train(data, trained.run_dir, say=lines.append)
    after = {p: (p.stat().st_mtime_ns, p.stat().st_size)
             for p in trained.run_dir.rglob("*") if p.is_file()}
    assert started == []
    assert after == before
    assert lines == [f"{trained.run_dir}: already trained, nothing to do"]
    assert again == trained and not again.resumed


def test_reused_run_dir_with_other_settings_is_refused(trained, data):
    with pytest.raises(TrainConfigError, match="learning_rate"):
        train(data, trained.run_dir, overrides={**FAST, "learning_rate": 0.1})


# --------------------------------------------------------------------------------------
# bad inputs, all caught before training starts
# --------------------------------------------------------------------------------------


def test_unknown_preset_is_named(data, tmp_path):
    with pytest.raises(TrainConfigError, match="no-such-preset"):
        train(data, tmp_path, preset="no-such-preset")


def test_unknown_override_key_is_named(data, tmp_path):
    with pytest.raises(TrainConfigError, match="training_module.model.num_layerz"):
        train(data, tmp_path, overrides={"training_module.model.num_layerz": 2})
    assert not any(tmp_path.iterdir())


def test_species_missing_from_type_names(data, tmp_path):
    with pytest.raises(TrainDataError, match=r"train file .*train.xyz: species \['Au'\]"):
        run_training(data["train"], data["val"], data["test"], ["Cu"], preset="cpu-tiny-allegro",
                     energy_shifts={"Cu": 0.0}, run_dir=tmp_path, overrides=FAST, say=None)


def test_frame_without_forces_is_named(data, tmp_path):
    frames = emt_frames(3, 11)
    frames[2].calc = SinglePointCalculator(frames[2], energy=frames[2].get_potential_energy())
    bad = write(tmp_path / "val_noforces.xyz", frames)
    with pytest.raises(TrainDataError, match=r"val file .*val_noforces.xyz, frame 2: no forces"):
        train({**data, "val": bad}, tmp_path / "run")


def test_truncated_file_and_nan_energy_are_named(data, tmp_path):
    lines = data["train"].read_text().splitlines(keepends=True)
    n_atoms = int(lines[0])
    truncated = tmp_path / "truncated.xyz"
    # the first frame whole, then the second's header and 3 of its atom lines: a cut that
    # is inside a frame whatever the numbers' widths (half the text once ended on a frame)
    truncated.write_text("".join(lines[: (n_atoms + 2) + 2 + 3]))
    with pytest.raises(TrainDataError, match=r"train file .*truncated.xyz cannot be read"):
        train({**data, "train": truncated}, tmp_path / "run")
    frames = emt_frames(2, 13)
    frames[1].calc = SinglePointCalculator(frames[1], energy=float("nan"),
                                           forces=frames[1].get_forces())
    nan = write(tmp_path / "nan.xyz", frames)
    with pytest.raises(TrainDataError, match=r"nan.xyz, frame 1: energy is not finite"):
        train({**data, "test": nan}, tmp_path / "run")


def test_empty_file_is_named(data, tmp_path):
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    with pytest.raises(TrainDataError, match=r"test file .*empty.xyz is empty"):
        train({**data, "test": empty}, tmp_path / "run")


def test_cutoff_longer_than_half_box_is_named(data, tmp_path):
    with pytest.raises(TrainDataError, match=r"frame 0: cutoff r_max = 4.5 Å .* \(3.6 Å"):
        train(data, tmp_path, overrides={"max_epochs": 1})  # preset r_max 4.5 Å


def test_stress_preset_needs_stress_labels(data, tmp_path):
    no_stress = write(tmp_path / "train_nostress.xyz", emt_frames(4, 12, stress=False))
    with pytest.raises(TrainDataError, match=r"frame 0: no stress label"):
        train({**data, "train": no_stress}, tmp_path / "run", preset="cpu-tiny-allegro-722")


def test_energy_shifts_must_match_type_names(data, tmp_path):
    with pytest.raises(TrainConfigError, match=r"missing \['Au'\]"):
        train(data, tmp_path, energy_shifts={"Cu": 0.0})


# --------------------------------------------------------------------------------------
# presets and overrides (no training)
# --------------------------------------------------------------------------------------


def _config(preset: str, **overrides):
    return build_config(
        preset, train_file="t.xyz", val_file="v.xyz", test_file="x.xyz",
        type_names=["C", "F", "H", "Li", "N", "P"],
        per_type_energy_shifts_eV=dict.fromkeys(["C", "F", "H", "Li", "N", "P"], 0.0),
        seed=3, run_dir="/tmp/r", overrides=overrides,
    )


def test_paper_presets_carry_the_papers_hyperparameters():
    nequip = _config("paper-nequip-transfer")
    model = nequip["training_module"]["model"]
    assert model["_target_"] == "nequip.model.NequIPGNNModel"
    assert (nequip["cutoff_radius"], model["l_max"], model["num_layers"]) == (5.0, 1, 5)
    assert model["num_features"] == [16, 8] and model["parity"] is True  # 16x0o+16x0e+8x1o+8x1e
    assert (nequip["learning_rate"], nequip["batch_size"]) == (0.05, 5)
    transfer = _config("paper-allegro-transfer")
    assert transfer["training_module"]["model"]["_target_"] == "allegro.model.AllegroModel"
    assert (transfer["cutoff_radius"], transfer["training_module"]["model"]["l_max"],
            transfer["training_module"]["model"]["num_layers"]) == (6.0, 2, 2)
    assert (transfer["learning_rate"], transfer["batch_size"]) == (5e-4, 1)
    assert get_preset("paper-allegro-transfer").val_fraction == 0.2
    p722 = _config("paper-allegro-722")
    assert (p722["cutoff_radius"], p722["learning_rate"], p722["batch_size"]) == (7.0, 1e-3, 4)
    assert p722["loss_coeffs"] == {"total_energy": 1.0, "forces": 1.0, "stress": 100.0}
    assert p722["training_module"]["loss"]["_target_"] == "nequip.train.EnergyForceStressLoss"
    assert {"cpu-tiny-nequip", "cpu-tiny-allegro", "cpu-tiny-allegro-722"} <= set(PRESETS)


def test_overrides_follow_interpolations_and_can_add_keys():
    config = _config(
        "cpu-tiny-nequip",
        **{
            "training_module.optimizer.lr": 0.02,  # is ${learning_rate}: set at the source
            "training_module.model.num_layers": 2,
            "trainer.callbacks.1.patience": "${max_epochs}",
            "+trainer.max_time": "00:00:10:00",
            "model_dtype": "float64",
        },
    )
    assert config["learning_rate"] == 0.02
    assert config["training_module"]["optimizer"]["lr"] == "${learning_rate}"
    assert config["training_module"]["model"]["num_layers"] == 2
    assert config["trainer"]["callbacks"][1]["patience"] == "${max_epochs}"
    assert config["trainer"]["max_time"] == "00:00:10:00"
    assert config["training_module"]["model"]["model_dtype"] == "${model_dtype}"
    assert config["model_dtype"] == "float64"
    with pytest.raises(TrainConfigError, match="'trainer.max_time'"):
        apply_overrides(config, {"trainer.max_time": 1, "+trainer.max_time": 2})
    with pytest.raises(TrainConfigError, match="model_dtype"):
        _config("cpu-tiny-nequip", model_dtype="float16")
    with pytest.raises(TrainConfigError, match="trainer.callbacks.7"):
        _config("cpu-tiny-nequip", **{"trainer.callbacks.7.patience": 1})


# --------------------------------------------------------------------------------------
# energy references
# --------------------------------------------------------------------------------------


def _synthetic(counts: list[tuple[int, int]], mu: tuple[float, float]) -> list:
    frames = []
    for n_au, n_cu in counts:
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))[: n_au + n_cu]
        atoms.set_chemical_symbols(["Au"] * n_au + ["Cu"] * n_cu)
        atoms.calc = SinglePointCalculator(atoms, energy=n_au * mu[0] + n_cu * mu[1])
        frames.append(atoms)
    return frames


def test_fit_recovers_per_species_energies_when_identifiable():
    frames = _synthetic([(8, 24), (16, 16), (4, 28)], (-3.0, -5.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shifts = per_type_energy_shifts("fit", TYPE_NAMES, frames=frames)
    assert shifts == pytest.approx({"Au": -3.0, "Cu": -5.0})


def test_fit_warns_and_names_undetermined_combination():
    frames = _synthetic([(8, 24), (8, 24)], (-3.0, -5.0))
    with pytest.warns(UserWarning, match=r"3\*mu\[Au\] - mu\[Cu\]"):
        shifts = per_type_energy_shifts("fit", TYPE_NAMES, frames=frames)
    # the determined combination (8 μ_Au + 24 μ_Cu) is exact, the other one is zero
    assert 8 * shifts["Au"] + 24 * shifts["Cu"] == pytest.approx(8 * -3.0 + 24 * -5.0)
    assert 3 * shifts["Au"] - shifts["Cu"] == pytest.approx(0.0, abs=1e-9)
    # with isolated-atom energies, the undetermined part is taken from them instead
    with pytest.warns(UserWarning, match="isolated-atom energies"):
        fixed = per_type_energy_shifts("fit", TYPE_NAMES, frames=frames,
                                       isolated_atom_energies_eV={"Au": -3.0, "Cu": -5.0})
    assert fixed == pytest.approx({"Au": -3.0, "Cu": -5.0})


def test_design_fit_reports_null_space_and_custom_fitter_is_checked():
    counts = np.array([[8.0, 24.0, 0.0], [16.0, 16.0, 0.0]])  # third species never seen
    energies = counts @ np.array([-3.0, -5.0, -7.0])
    fit = fit_species_energies(counts, energies, ("Au", "Cu", "Ag"))
    mu, undetermined = fit.mu_eV, fit.undetermined_directions
    assert mu == pytest.approx([-3.0, -5.0, 0.0])
    assert undetermined.shape == (1, 3)
    assert np.abs(undetermined[0]) == pytest.approx([0.0, 0.0, 1.0])
    with pytest.warns(UserWarning, match=r"mu\[Ag\]"):
        shifts = per_type_energy_shifts(
            "fit", ["Au", "Cu", "Ag"], frames=_synthetic([(8, 24), (16, 16)], (-3.0, -5.0)),
            fit=lambda c, e, s, reference_eV=None: fit_species_energies(
                c, e, s, reference_eV).mu_eV,
        )
    assert shifts == pytest.approx({"Au": -3.0, "Cu": -5.0, "Ag": 0.0})


def test_mean_and_isolated_atoms_modes():
    frames = _synthetic([(8, 24), (16, 16)], (-3.0, -5.0))
    with pytest.warns(UserWarning, match="mean per-atom energy"):
        mean = per_type_energy_shifts("mean", TYPE_NAMES, frames=frames)
    assert mean["Au"] == mean["Cu"] == pytest.approx(np.mean([(-24 - 120) / 32, (-48 - 80) / 32]))
    zeros = per_type_energy_shifts("isolated-atoms", TYPE_NAMES,
                                   isolated_atom_energies_eV={"Au": 0.0, "Cu": 0.0})
    assert zeros == {"Au": 0.0, "Cu": 0.0}
    with pytest.raises(TrainConfigError, match="isolated_atom_energies_eV"):
        per_type_energy_shifts("isolated-atoms", TYPE_NAMES)
    with pytest.raises(TrainConfigError, match="'median'"):
        per_type_energy_shifts("median", TYPE_NAMES, frames=frames)


# --------------------------------------------------------------------------------------
# slower end-to-end checks
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_float64_nequip_package_and_resume(data, tmp_path):
    """cpu-tiny-nequip trained in float64: the package itself is float64 and exact
    finite-difference forces hold; raising max_epochs continues from last.ckpt."""
    overrides = {**FAST, "model_dtype": "float64"}
    first = train(data, tmp_path / "nequip64", preset="cpu-tiny-nequip", overrides=overrides)
    calc = load_calculator(first.package_path, float64=True)
    atoms = ase.io.read(data["test"], 0)
    atoms.calc = calc
    forces = atoms.get_forces()
    eps = 1e-4
    for i, k in ((0, 0), (9, 2)):
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.calc = calc
            moved.positions[i, k] += sign * eps
            energies.append(moved.get_potential_energy())
        assert -(energies[0] - energies[1]) / (2 * eps) == pytest.approx(forces[i, k], abs=1e-6)
    curve = loss_curve(first.run_dir)
    longer = train(data, tmp_path / "nequip64", preset="cpu-tiny-nequip",
                   overrides={**overrides, "max_epochs": 3})
    assert longer.resumed
    assert loss_curve(longer.run_dir)[:2] == curve and len(loss_curve(longer.run_dir)) == 3
    assert longer.package_path.is_file()


@pytest.mark.slow
def test_stress_preset_trains_and_reports_stress(data, tmp_path):
    # no validation file: the preset's 80/20 split of the training file is used
    result = run_training(
        data["train"], None, data["test"], TYPE_NAMES, preset="cpu-tiny-allegro-722",
        energy_shifts="fit", run_dir=tmp_path / "a722", seed=1, overrides=FAST, say=None,
    )
    assert "stress_mae_meV_per_A3" in result.metrics
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["split"] == {"from": "train", "n_train": 5, "n_val": 1, "seed": 1}
    ours = evaluate(result.package_path, data["test"])
    assert ours.stress_mae_meV_per_A3 == pytest.approx(
        result.metrics["stress_mae_meV_per_A3"], rel=1e-5)


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("setpriv") is None,
                    reason="needs Linux and util-linux's setpriv (PR_SET_PDEATHSIG)")
def test_killed_parent_leaves_no_orphan_training(tmp_path):
    """SIGKILL the process running `_run_subprocess` (as when a job is killed): the child
    (nequip-train in real use; `sleep` here) must die too, not keep writing to the run."""
    import os
    import signal
    import subprocess
    import time

    script = (
        "import sys; from pathlib import Path; from ionmix.train.run import _run_subprocess\n"
        f"_run_subprocess(['sleep', '120'], Path({str(tmp_path)!r}), "
        f"Path({str(tmp_path / 'log.txt')!r}), 'sleep')\n")
    parent = subprocess.Popen([sys.executable, "-c", script])
    child_pid = None
    for _ in range(100):
        out = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True)
        if out.stdout.strip():
            child_pid = int(out.stdout.split()[0])
            break
        time.sleep(0.1)
    assert child_pid is not None, "the child never started"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    for _ in range(50):
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        # a zombie (dead, not yet reaped by init) also counts as gone
        if Path(f"/proc/{child_pid}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        os.kill(child_pid, signal.SIGKILL)
        raise AssertionError("the training subprocess outlived its killed parent")


def _trim_threshold_in_worker_and_child(log_dir: str) -> tuple[str | None, str]:
    """(the worker's MALLOC_TRIM_THRESHOLD_, what a `_run_subprocess` child sees)."""
    import os
    from pathlib import Path

    from ionmix.train.run import _run_subprocess

    out = _run_subprocess(["sh", "-c", "echo T=${MALLOC_TRIM_THRESHOLD_-unset}"],
                          Path(log_dir), Path(log_dir) / "log.txt", "env probe")
    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), out


def test_training_subprocess_from_a_dask_worker_drops_the_trim_threshold(tmp_path):
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_ in its workers (2x slower nequip-train):
    the worker has it, the training subprocess it starts must not."""
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        in_worker, child = client.submit(_trim_threshold_in_worker_and_child,
                                         str(tmp_path)).result()
    assert in_worker is not None, "Dask's nanny no longer sets the threshold: retire this test"
    assert "T=unset" in child


def test_subprocess_env_drops_the_trim_threshold_and_sets_threads(monkeypatch):
    from ionmix.runtime import record, subprocess_env

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    env = subprocess_env(3, HYDRA_FULL_ERROR="1")
    assert "MALLOC_TRIM_THRESHOLD_" not in env
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert env["HYDRA_FULL_ERROR"] == "1"
    assert record()["MALLOC_TRIM_THRESHOLD_"] == "65536"  # recorded where it is set


def _worker_trim_threshold() -> str | None:
    import os

    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_ionmix_workers_start_without_the_trim_threshold(monkeypatch):
    """ionmix's LocalClusters leave out the nanny's MALLOC_TRIM_THRESHOLD_ (it turns off
    glibc's dynamic mmap threshold: kernel time in every torch/OpenMM task), even when an
    earlier nanny left it in this process's environment; the environment is restored."""
    import os

    from ionmix.cluster import ClusterConfig, dask_client

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # as an earlier nanny leaves it
    with dask_client(ClusterConfig(workers=1)) as client:
        assert client.submit(_worker_trim_threshold, pure=False).result() is None
        assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"


def test_a_missing_allocator_falls_back_with_one_line(monkeypatch, caplog):
    import logging

    from ionmix import runtime

    monkeypatch.setitem(runtime.ALLOCATORS, "absentmalloc",
                        ("libabsentmalloc.so.9", "libabsentmalloc9"))
    monkeypatch.setenv("IONMIX_ALLOCATOR", "absentmalloc")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    runtime.allocator_preload.cache_clear()
    with caplog.at_level(logging.WARNING, logger="ionmix.runtime"):
        env = runtime.subprocess_env(1)
        runtime.subprocess_env(1)  # asked again: no second line
    runtime.allocator_preload.cache_clear()
    assert "LD_PRELOAD" not in env
    assert [r.getMessage() for r in caplog.records] == [
        "IONMIX_ALLOCATOR=absentmalloc: libabsentmalloc.so.9 is not installed (Debian: apt "
        "install libabsentmalloc9); using glibc's malloc"]


def test_a_preloaded_allocator_is_what_the_subprocess_runs_with(monkeypatch, tmp_path):
    import ctypes.util
    import subprocess
    import sys

    from ionmix import runtime

    if ctypes.util.find_library("jemalloc") is None:
        pytest.skip("libjemalloc2 is not installed")
    monkeypatch.setenv("IONMIX_ALLOCATOR", "jemalloc")
    runtime.allocator_preload.cache_clear()
    env = runtime.subprocess_env(1)
    runtime.allocator_preload.cache_clear()
    maps = subprocess.run([sys.executable, "-c", "print(open('/proc/self/maps').read())"],
                          env=env, capture_output=True, text=True, check=True).stdout
    assert "libjemalloc.so.2" in maps
