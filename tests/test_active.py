"""Active learning: committee statistics, the trust window and selection, bad configs
refused before work, and a tiny real loop (2 generations, 2 models, 1 epoch) that resumes."""

from __future__ import annotations

import json
import shutil

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones

from conftest import TINY_SAMPLE_TOML
from ionmix.active import CommitteeCalculator, ExplorationStop, TrustWindow, select
from ionmix.active.loop import load_learn_config
from ionmix.active.select import descriptor, farthest_points
from ionmix.config import ConfigError
from ionmix.errors import InputError


def test_committee_mean_and_deviation_match_a_direct_computation():
    atoms = bulk("Cu", cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=1)
    members = [EMT(), LennardJones(sigma=2.3, epsilon=0.4, rc=4.5)]
    forces = []
    for member in members:
        a = atoms.copy()
        a.calc = member
        forces.append(a.get_forces())
    atoms.calc = CommitteeCalculator(members)
    mean = (forces[0] + forces[1]) / 2
    np.testing.assert_allclose(atoms.get_forces(), mean, atol=1e-12)
    dev = np.linalg.norm(forces[0] - mean, axis=1)  # two members: |F_k − F̄| is the same
    np.testing.assert_allclose(atoms.calc.results["force_deviation_eV_per_A"], dev, atol=1e-12)
    assert atoms.calc.results["max_force_deviation_eV_per_A"] == pytest.approx(dev.max())
    assert atoms.get_stress().shape == (6,)


def test_committee_guard_stops_exploration():
    atoms = bulk("Cu", cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=1)
    atoms.calc = CommitteeCalculator([EMT(), LennardJones(sigma=2.3, epsilon=0.4, rc=4.5)],
                                     stop_above_eV_per_A=1e-6)
    with pytest.raises(ExplorationStop, match="above the upper trust level"):
        atoms.get_potential_energy()
    atoms.calc = CommitteeCalculator([EMT(), EMT()], density_window_g_cm3=(1.0, 2.0))
    with pytest.raises(ExplorationStop, match="left the window"):
        atoms.get_potential_energy()
    with pytest.raises(ValueError, match="at least 2 models"):
        CommitteeCalculator([EMT()])


def test_committee_records_the_frames_it_starts_to_disagree_on():
    """Frames at or above the lower trust level are kept (up to the one that stops a
    walker), with their deviation; frames below it are not."""
    calc = CommitteeCalculator([EMT(), LennardJones(sigma=2.3, epsilon=0.4, rc=4.5)],
                               record_above_eV_per_A=0.0, max_recorded=2)
    deviations = []
    for k in range(3):
        atoms = bulk("Cu", cubic=True) * (2, 2, 2)
        atoms.rattle(0.02 * (k + 1), seed=k)
        atoms.calc = calc
        atoms.get_potential_energy()
        deviations.append(calc.results["max_force_deviation_eV_per_A"])
    assert [f.info["max_force_deviation_eV_per_A"] for f in calc.recorded] == deviations[1:]
    assert all(f.calc is None for f in calc.recorded)
    strict = CommitteeCalculator([EMT(), EMT()], record_above_eV_per_A=1e-3)
    atoms.calc = strict
    atoms.get_potential_energy()  # identical members: no deviation, nothing recorded
    assert not strict.recorded


def test_trust_window_and_diverse_selection():
    with pytest.raises(InputError, match="0 < lo < hi"):
        TrustWindow(0.3, 0.1)
    window = TrustWindow(0.1, 0.5)
    assert window.classify([0.05, 0.1, 0.3, 0.5, 0.9]).tolist() == [
        "accurate", "candidate", "candidate", "failed", "failed"]
    base = bulk("Cu", cubic=True) * (2, 2, 2)
    frames = []
    for k in range(6):  # pairs of near-identical frames at three lattice scales
        f = base.copy()
        f.set_cell(base.cell * (1 + 0.05 * (k // 2)), scale_atoms=True)
        f.rattle(1e-4, seed=k)
        frames.append(f)
    dev = [0.2, 0.21, 0.22, 0.23, 0.24, 0.6]  # the last one failed
    sel = select(frames, dev, window, max_frames=3)
    assert sel.categories.count("candidate") == 5 and sel.share("failed") == pytest.approx(1 / 6)
    assert sel.chosen[-1] == 4  # the largest candidate deviation is picked first
    # diversity: never both members of a near-identical pair
    assert len({k // 2 for k in sel.chosen}) == len(sel.chosen) == 3
    vectors = np.array([descriptor(f, ["Cu"]) for f in frames])
    assert farthest_points(vectors, 2, 0)[1] not in (0, 1)  # not the near-copy of frame 0


LEARN_TOML = TINY_SAMPLE_TOML + """
[learn]
committee = 2
preset = "cpu-tiny-allegro-npt"
overrides = {max_epochs = 1}
fine_tune_epochs = 1
n_train = 3
n_val = 1
n_test = 2
max_generations = 2
trust_lo_eV_per_A = 0.001
trust_hi_eV_per_A = 100.0
max_new_frames = 2

[[learn.explore]]
kind = "npt"
n_steps = 20
trajectory_interval_steps = 5

[[learn.explore]]
kind = "volume-scan"
scales = [0.97, 1.03]
n_frames = 1

[[learn.explore]]
kind = "anneal"
temperature_high_K = 450.0
n_cycles = 1
n_steps = 20
trajectory_interval_steps = 5

[cluster]
workers = 1
"""


@pytest.mark.parametrize("change, message", [
    (("committee = 2", "committee = 1"), "committee"),
    (("trust_lo_eV_per_A = 0.001", "trust_lo_eV_per_A = 200.0"), "0 < lo < hi"),
    (("n_steps = 20", "n_steps = 20\ntemperature_K = -5"), "temperature_K"),
    (("temperature_high_K = 450.0", "temperature_high_K = 250.0"), "temperature_high_K"),
    (("preset = \"cpu-tiny-allegro-npt\"", "preset = \"cpu-tiny-allegro\""),
     "trains no stress"),
])
def test_bad_learn_configs_are_refused_before_work(tmp_path, change, message):
    from ionmix.active import run_learning

    path = tmp_path / "learn.toml"
    path.write_text(LEARN_TOML.replace(*change))
    with pytest.raises((ConfigError, InputError), match=message):
        run_learning(load_learn_config(path), tmp_path / "out", say=lambda line: None)
    assert not (tmp_path / "out" / "frames.db").exists()


def test_tiny_loop_runs_two_generations_and_resumes(tiny_sample, tmp_path):
    from ionmix.active import run_learning
    from ionmix.dataset import DatasetStore

    config = tmp_path / "learn.toml"
    config.write_text(LEARN_TOML)
    out = tmp_path / "out"
    shutil.copytree(tiny_sample, out)  # the initial sampling is already on disk
    lines: list[str] = []
    result = run_learning(load_learn_config(config), out, say=lines.append)
    assert len(result.generations) == 2 and "budget" in result.stopped_because
    store = DatasetStore(out / "frames.db")
    learned = store.select(task="active-learning")
    assert 1 <= len(learned) <= 4 and {f.info["generation"] for f in learned} <= {0, 1}
    first = json.loads((out / "gen-000" / "summary.json").read_text())
    assert first["n_explored"] > 0 and set(first["walkers"]) == {
        "w0-npt-300K-1bar", "w1-volume-scan", "w2-anneal-300-450K-1bar"}
    # the anneal walker's two segments: cold then hot, the second continuing the first
    anneal = out / "gen-000" / "explore" / "w2-anneal-300-450K-1bar"
    assert first["walkers"]["w2-anneal-300-450K-1bar"]["status"] == "done", first["walkers"]
    targets = [json.loads((anneal / f"segment-{k}" / "md.json").read_text())[
        "settings"]["temperature_K"] for k in (0, 1)]
    assert targets == [300.0, 450.0]
    assert set(first["wall_s"]) == {"data", "train", "explore", "select", "label"}
    assert all(t >= 0 for t in first["wall_s"].values())
    second = json.loads((out / "gen-001" / "summary.json").read_text())
    # generation 1 fine-tunes generation 0's models (model k from model k)
    for k in range(2):
        manifest = json.loads((out / "gen-001" / "models" / f"model-{k}" /
                               "data_manifest.json").read_text())
        assert manifest["initial_model"] == str(
            out / "gen-000" / "models" / f"model-{k}" / "model.nequip.zip")
    assert second["n_train_frames"] == first["n_train_frames"] + first["frames_added"]
    assert (out / "report.md").read_text().startswith("# Active learning")
    assert (out / "generations.png").stat().st_size > 0
    # a rerun finds everything on disk: nothing is trained, explored or labelled again
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("model.nequip.zip")}
    again = run_learning(load_learn_config(config), out, say=lines.append)
    assert again.generations == result.generations
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model.nequip.zip")} == mtimes
    assert len(DatasetStore(out / "frames.db").select(task="active-learning")) == len(learned)

    # the final committee as one model for md/props: the mean of its members
    from ionmix.md import MDError, make_calculator

    models = out / "gen-001" / "models"
    committee = make_calculator(models)
    members = [make_calculator(p) for p in sorted(models.glob("model-*/model.nequip.zip"))]
    atoms = learned[0].atoms.copy()
    energies = []
    for calc in [committee, *members]:
        atoms.calc = calc
        energies.append(atoms.get_potential_energy())
    assert energies[0] == pytest.approx(np.mean(energies[1:]), abs=1e-6)
    assert all(m.ionmix_model_id in committee.ionmix_model_id for m in members)
    # the default trust window: calibrated on the committee's own test frames
    from ionmix.active.loop import LearnSettings, _trust_window

    calibration = tmp_path / "calibration"
    calibration.mkdir()
    test_file = out / "gen-001" / "data" / "test.extxyz"
    records = [{"package_path": str(p)} for p in sorted(models.glob("model-*/*.nequip.zip"))]
    window = _trust_window(LearnSettings(), records, str(test_file), calibration)
    direct = []
    for atoms in ase.io.read(test_file, ":"):
        atoms.calc = committee
        atoms.get_potential_energy()
        direct.append(committee.results["force_deviation_eV_per_A"].max())
    assert window.lo_eV_per_A == pytest.approx(np.percentile(direct, 95), rel=1e-6)
    assert window.hi_eV_per_A == pytest.approx(3 * window.lo_eV_per_A)
    assert _trust_window(LearnSettings(trust_lo_eV_per_A=10.0, trust_hi_eV_per_A=20.0),
                         records, str(test_file), calibration) == window  # kept on disk

    lonely = tmp_path / "lonely"
    shutil.copytree(models / "model-0", lonely / "model-0")
    with pytest.raises(MDError, match="found 1"):
        make_calculator(lonely)
