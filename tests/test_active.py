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
from ase.calculators.mixing import SumCalculator

from conftest import TINY_SAMPLE_TOML
from ionmix.active import CommitteeCalculator, ExplorationStop, TrustWindow, select
from ionmix.active.explore import start_indices
from ionmix.active.loop import LearnSettings, load_learn_config
from ionmix.active.select import descriptor, farthest_points
from ionmix.config import ConfigError
from ionmix.errors import InputError
from ionmix.train import get_preset


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


def test_a_member_drives_and_the_committee_is_asked_every_nth_call():
    """drive_member: the results are that member's; the deviation (and the guard) come
    from the whole committee on calls 0, n, 2n, … only."""
    members = [EMT(), LennardJones(sigma=2.3, epsilon=0.4, rc=4.5)]
    calc = CommitteeCalculator(members, drive_member=1, deviation_every=3)
    seen = []
    for k in range(5):
        atoms = bulk("Cu", cubic=True) * (2, 2, 2)
        atoms.rattle(0.02 * (k + 1), seed=k)
        own = atoms.copy()
        own.calc = members[1]
        atoms.calc = calc
        np.testing.assert_allclose(atoms.get_forces(), own.get_forces(), atol=1e-12)
        assert atoms.get_potential_energy() == pytest.approx(own.get_potential_energy())
        np.testing.assert_allclose(atoms.get_stress(), own.get_stress(), atol=1e-12)
        seen.append("max_force_deviation_eV_per_A" in calc.results)
    assert seen == [True, False, False, True, False]
    with pytest.raises(ValueError, match="1 unless a member drives"):
        CommitteeCalculator(members, deviation_every=2)
    from pydantic import ValidationError

    from ionmix.active.explore import WalkerSpec

    with pytest.raises(ValidationError, match="needs drive"):
        WalkerSpec(kind="npt", deviation_every_steps=10)
    with pytest.raises(ValueError, match="not one of the 2"):
        CommitteeCalculator(members, drive_member=2)


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


def _scaled_copper(scales):
    base = bulk("Cu", cubic=True) * (2, 2, 2)
    frames = []
    for k, scale in enumerate(scales):
        f = base.copy()
        f.set_cell(base.cell * scale, scale_atoms=True)
        f.rattle(1e-3, seed=k)
        frames.append(f)
    return frames


def test_frames_above_hi_are_selected_when_the_teacher_is_cheap():
    window = TrustWindow(0.1, 0.5)
    frames = _scaled_copper([1.0, 1.05, 1.1, 1.15, 1.2])
    dev = [0.05, 0.3, 0.4, 0.9, 2.0]  # accurate, 2 candidates, 2 above hi
    off = select(frames, dev, window, max_frames=10)
    assert off.chosen == [1, 2]  # today's rule: above hi is "failed", never labelled
    assert all(r.startswith("candidate") for r in off.reasons)
    on = select(frames, dev, window, max_frames=10, label_above_hi=True)
    assert on.chosen == [1, 2, 3, 4]
    assert on.categories == off.categories  # the shares do not change, only what is labelled
    why = dict(zip(on.chosen, on.reasons, strict=True))
    assert why[4].startswith("above hi") and "first pick" in why[4]  # largest deviation
    assert why[3].startswith("above hi") and "farthest-point" in why[3]
    assert why[1].startswith("candidate") and "farthest-point" in why[1]
    # still thinned and capped: the largest deviation first, then the farthest frame
    assert select(frames, dev, window, max_frames=2, label_above_hi=True).chosen == [1, 4]
    # a deviation that is not a number (a member blew up) is never labelled
    assert select(frames, [*dev[:4], np.nan], window, 10, label_above_hi=True).chosen == [
        1, 2, 3]


@pytest.mark.parametrize("teacher, setting, expected", [
    ("classical", None, True), ("xtb", None, True), ("espresso", None, False),
    ("classical", "false", False), ("espresso", "true", True)])
def test_label_above_hi_auto_means_a_cheap_teacher(tmp_path, teacher, setting, expected):
    text = LEARN_TOML + f'\n[teacher]\nkind = "{teacher}"\n'
    if setting is not None:
        text = text.replace("max_new_frames = 2", f"max_new_frames = 2\nlabel_above_hi = {setting}")
    path = tmp_path / "learn.toml"
    path.write_text(text)
    assert load_learn_config(path).label_above_hi() is expected


def test_walker_copies_start_from_spread_frames():
    from ionmix.active.explore import WalkerSpec, start_indices

    assert start_indices(201, 1) == [200]  # one walker: the last frame, as before
    assert start_indices(201, 3) == [200, 150, 100]  # spread over the settled half
    assert start_indices(2, 3) == [1, 1, 1]  # too few frames: the seeds still differ
    with pytest.raises(ValueError, match="no frames"):
        start_indices(0, 1)
    assert WalkerSpec(kind="npt").copy_names(0) == ["w0-npt-300K-1bar"]
    assert WalkerSpec(kind="anneal", n_starts=2).copy_names(1) == [
        "w1-anneal-300-500K-1bar-s0", "w1-anneal-300-500K-1bar-s1"]
    with pytest.raises(ValueError, match="n_starts"):
        WalkerSpec(kind="volume-scan", n_starts=2)


@pytest.mark.parametrize("teacher, setting, minimised", [
    ("classical", None, False), ("xtb", None, True), ("espresso", None, True),
    ("classical", "true", True), ("xtb", "false", False)])
def test_walker_starts_are_minimised_when_the_teacher_is_not_the_sampler(
        tmp_path, teacher, setting, minimised):
    """The sampler's frames are thermal for the classical teacher (left as they are) but
    strained for another (minimised under the walker's model before velocities are drawn);
    only the first segment: later ones continue the dynamics."""
    from ionmix.active.explore import segment_settings

    text = LEARN_TOML + f'\n[teacher]\nkind = "{teacher}"\n'
    if setting is not None:
        text = text.replace('kind = "npt"', f'kind = "npt"\nminimise_start = {setting}')
    path = tmp_path / "learn.toml"
    path.write_text(text)
    cfg = load_learn_config(path)
    walker = next(w for w in cfg.learn.explore if w.kind == "npt")
    resolved = walker.resolved(cfg.classical_teacher)
    assert resolved.minimise_start is minimised
    first = segment_settings(resolved, 0, 300.0, 100, velocity_seed=3)
    assert first.minimise is (True if minimised else None)  # None: md's rule, as before
    assert first.initial_velocities == "maxwell" and first.seed == 3
    later = segment_settings(resolved, 1, 450.0, 100, velocity_seed=3)
    assert later.minimise is None and later.initial_velocities == "keep"


def test_issue_22_example_reuses_the_settled_sampling():
    import tomllib
    from pathlib import Path

    examples = Path(__file__).resolve().parents[1] / "examples"
    cfg = load_learn_config(examples / "learn-li-emim-pf6-npt.toml")
    settled = tomllib.loads((examples / "sample-li-emim-pf6-settled.toml").read_text())
    learn = tomllib.loads((examples / "learn-li-emim-pf6-npt.toml").read_text())
    assert all(learn[k] == settled[k] for k in ("mixture", "sampling", "teacher"))
    npt = [w for w in cfg.learn.explore if w.kind == "npt"]
    # one member-driven walker per member: each member's own NPT run is explored
    assert [(w.n_starts, w.drive) for w in npt] == [(cfg.learn.committee, "member")]
    assert 10.0 <= npt[0].n_steps * npt[0].timestep_fs / 1000 <= 20.0  # ps
    assert {w.kind for w in cfg.learn.explore} == {"npt", "anneal", "volume-scan"}
    assert cfg.label_above_hi() and cfg.learn.committee == 4
    assert cfg.learn.max_generations * cfg.learn.max_new_frames <= 600


def test_issue_22_xtb_example_is_four_ion_pairs_labelled_by_xtb():
    from pathlib import Path

    from ionmix.sampling import plan_sampling

    examples = Path(__file__).resolve().parents[1] / "examples"
    cfg = load_learn_config(examples / "learn-xtb-li-emim-pf6.toml")
    plan = plan_sampling(cfg.sample_config())  # the classical sampler's plan
    assert cfg.teacher["kind"] == "xtb" and cfg.label_above_hi()
    assert [sum(run.counts.values()) for run in plan.runs] == [8, 8]  # 4 ion pairs
    assert cfg.learn.converged_accurate_share >= 0.9
    assert any(w.kind == "npt" for w in cfg.learn.explore)


def test_walker_density_is_a_block_average_after_equilibration():
    """A ±8 % barostat ring (the benchmark's MTK walker; period 1.3 ps, so 1-ps blocks do
    not fit it exactly) after a transient: the block mean finds the density within its
    error, where a mean over part of a period is off; the transient is discarded."""
    from ionmix.active.explore import block_density

    time_ps = np.arange(2000) * 0.005  # 10 ps logged every 5 fs
    rng = np.random.default_rng(0)
    rho = 1.55 * (1 + 0.08 * np.sin(2 * np.pi * time_ps / 1.3))
    rho += rng.normal(0.0, 0.003, rho.size)
    rho[:300] -= 0.1 * (1 - time_ps[:300] / 1.5)  # starts 0.1 g/cm³ low, settles in 1.5 ps
    rec = block_density(rho, time_ps, block_ps=1.0)
    assert rec["density_equilibration_ps"] >= 2.0 - 1e-9  # at least the first fifth
    assert rec["density_block_ps"] == pytest.approx(1.0)
    assert rec["density_n_blocks"] == int((10.0 - rec["density_equilibration_ps"]) // 1.0)
    means = np.array(rec["density_block_means_g_cm3"])
    assert means.size == rec["density_n_blocks"]
    assert rec["density_g_cm3"] == pytest.approx(means.mean())
    g = rec["density_blocks_statistical_inefficiency"]
    assert rec["density_err_g_cm3"] == pytest.approx(
        means.std(ddof=1) / np.sqrt(means.size) * np.sqrt(g))
    assert abs(rec["density_g_cm3"] - 1.55) < 2 * rec["density_err_g_cm3"] < 0.025
    # a plain mean over a part of a period is off by more than that
    assert abs(rho[-150:].mean() - 1.55) > 2 * rec["density_err_g_cm3"]
    # a 1.5-ps walker gives < 2 blocks after its equilibration: no density, and says so
    short = block_density(rho[:300], time_ps[:300], block_ps=1.0)
    assert "density_g_cm3" not in short and short["density_n_blocks"] < 2
    assert "too short" in short["density_note"]


def _npt_walker(rho=None, err=0.004, n_blocks=5, kind="npt"):
    record = {"kind": kind, "status": "done", "reason": "", "density_n_blocks": n_blocks}
    if rho is not None:
        record.update(density_g_cm3=rho, density_err_g_cm3=err)
    return record


def test_convergence_compares_block_densities_within_two_combined_errors():
    from ionmix.active import loop

    def gens(before, now, share=0.95):
        return [{"accurate_share": share, "walkers": before},
                {"accurate_share": share, "walkers": now}]

    s = loop.LearnSettings()
    anneal = {"kind": "anneal", "status": "stopped"}  # never compared
    before = {"a-s0": _npt_walker(1.550), "a-s1": _npt_walker(1.548), "b": anneal}
    close = {"a-s0": _npt_walker(1.556), "a-s1": _npt_walker(1.545), "b": anneal}
    why = loop._converged(s, gens(before, close))  # 0.006 ≤ 2 × 0.0057
    assert why.startswith("converged") and "1.5560 ± 0.0040 vs 1.5500 ± 0.0040" in why
    assert not loop._converged(s, gens(before, {**close, "a-s1": _npt_walker(1.560)}))
    assert not loop._converged(s, gens(before, close, share=0.5))
    assert not loop._converged(s, gens(before, close)[1:])  # one generation is no comparison
    # no block density (too short for 2 blocks, stopped, or a record from before block
    # averaging) is no evidence: not converged, and the comparison says why
    short = {"kind": "npt", "status": "done", "density_n_blocks": 0,
             "density_note": "too short for a block density"}
    stopped = {"kind": "npt", "status": "stopped", "reason": "max force deviation 2 eV/Å"}
    old_style = {"kind": "npt", "status": "done", "density_g_cm3": 1.55,
                 "density_err_g_cm3": 0.004}
    for bad in (short, stopped, old_style):
        assert not loop._converged(s, gens(before, {**close, "a-s1": bad}))
    entries = loop.compare_densities({**close, "a-s1": short}, before)
    assert [e["walker"] for e in entries] == ["a-s0", "a-s1"]
    assert entries[0]["agree"] and not entries[1]["agree"]
    assert "too short" in entries[1]["note"] and "too short" in loop.describe_comparison(entries)
    assert entries[0]["combined_err_g_cm3"] == pytest.approx(np.hypot(0.004, 0.004))


LEARN_TOML = TINY_SAMPLE_TOML + """
[learn]
committee = 2
preset = "cpu-tiny-allegro-npt"
overrides = {max_epochs = 1}
fine_tune_epochs = 1
fine_tune_overrides = {"loss_coeffs.total_energy" = 7.0}
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
n_starts = 2

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
    (("fine_tune_epochs = 1\n", ""), "set fine_tune_epochs too"),
    (("total_energy\" = 7.0", "total_enrgy\" = 7.0"), "fine_tune_overrides.*total_enrgy"),
    (("total_energy\" = 7.0", "total_energy\" = -7.0"),
     "fine_tune_overrides.*loss_coeffs.total_energy must be a number >= 0"),
])
def test_bad_learn_configs_are_refused_before_work(tmp_path, change, message):
    from ionmix.active import run_learning

    path = tmp_path / "learn.toml"
    path.write_text(LEARN_TOML.replace(*change))
    with pytest.raises((ConfigError, InputError), match=message):
        run_learning(load_learn_config(path), tmp_path / "out", say=lambda line: None)
    assert not (tmp_path / "out" / "frames.db").exists()


def test_a_committee_run_keeps_its_deviation_in_the_trajectory(tmp_path):
    """`ionmix md` with a committee: each trajectory frame carries the deviation the
    committee computed at that step, equal to the committee's on that frame afresh (the
    loop's selection reads it instead of evaluating the committee again)."""
    from ionmix.md import MDSettings, run_md

    atoms = bulk("Cu", cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=1)

    def members():
        return [EMT(), LennardJones(sigma=2.3, epsilon=0.4, rc=4.5)]

    settings = MDSettings(ensemble="nvt", temperature_K=300.0, n_steps=8, timestep_fs=1.0,
                          log_interval_steps=2, trajectory_interval_steps=4)
    run_md(atoms, CommitteeCalculator(members()), settings, tmp_path / "run")
    frames = ase.io.read(tmp_path / "run" / "trajectory.extxyz", ":")
    assert len(frames) == 3
    for frame in frames:
        fresh = frame.copy()
        fresh.calc = CommitteeCalculator(members())
        fresh.get_potential_energy()
        assert frame.info["max_force_deviation_eV_per_A"] == pytest.approx(
            fresh.calc.results["max_force_deviation_eV_per_A"], rel=1e-6)
        assert frame.info["energy_std_eV"] == pytest.approx(fresh.calc.results["energy_std_eV"],
                                                            rel=1e-6)
    plain = tmp_path / "plain"
    run_md(atoms, EMT(), settings, plain)  # one model: no committee keys
    assert "max_force_deviation_eV_per_A" not in ase.io.read(plain / "trajectory.extxyz").info


def test_a_rerun_with_another_loop_config_is_refused_before_work(tmp_path):
    """A loop folder holds one loop: a rerun may extend it (max_generations) or move it
    ([cluster]), not change how its generations are made."""
    import json

    from ionmix.active import run_learning
    from ionmix.active.loop import LOOP_CONFIG_NAME

    out = tmp_path / "out"
    out.mkdir()
    first = tmp_path / "first.toml"
    first.write_text(LEARN_TOML)
    (out / LOOP_CONFIG_NAME).write_text(json.dumps(
        load_learn_config(first).model_dump(mode="json")))
    changed = tmp_path / "changed.toml"
    changed.write_text(LEARN_TOML.replace("committee = 2", "committee = 3"))
    with pytest.raises(ConfigError, match="committee = 2 → 3"):
        run_learning(load_learn_config(changed), out, say=lambda line: None)
    assert not (out / "frames.db").exists()


def test_a_generations_walkers_keep_the_network_form_their_exploration_began_with(tmp_path):
    """compiled_walkers may change between runs of a loop; a generation whose exploration
    has begun keeps its form (a walker resumed in the other would be refused by its MD
    restart check: another model id)."""
    from ionmix.active.loop import (
        LOOP_CONFIG_NAME,
        WALKER_FORM_NAME,
        _check_same_loop,
        _walker_form,
    )

    fresh, recorded, legacy = (tmp_path / name for name in ("g0", "g1", "g2"))
    assert _walker_form(fresh, True) is True
    assert json.loads((fresh / "explore" / WALKER_FORM_NAME).read_text()) == {"compiled": True}
    assert _walker_form(fresh, False) is True  # recorded: kept
    assert _walker_form(recorded, False) is False and _walker_form(recorded, True) is False
    (legacy / "explore" / "w0-npt-300K-1bar-s0").mkdir(parents=True)  # begun, no record
    assert _walker_form(legacy, True) is False
    # and the setting itself may change on a rerun of the same loop folder
    first = tmp_path / "first.toml"
    first.write_text(LEARN_TOML)
    out = tmp_path / "out"
    out.mkdir()
    (out / LOOP_CONFIG_NAME).write_text(json.dumps(
        load_learn_config(first).model_dump(mode="json")))
    changed = tmp_path / "changed.toml"
    changed.write_text(LEARN_TOML.replace("fine_tune_epochs = 1",
                                          "fine_tune_epochs = 1\ncompiled_walkers = true"))
    cfg = load_learn_config(changed)
    assert cfg.learn.compiled_walkers is True
    _check_same_loop(cfg, out)  # no error


@pytest.mark.slow
def test_compiled_walkers_run_the_members_compiled_forms(tiny_sample, tmp_path):
    """compiled_walkers: each member is compiled once, before the walkers start, and every
    MD walker's run records the compiled model (minutes: two nequip-compile runs)."""
    from ionmix.active import run_learning
    from ionmix.active.loop import WALKER_FORM_NAME

    config = tmp_path / "learn.toml"
    config.write_text(LEARN_TOML.replace("max_generations = 2", "max_generations = 1")
                      .replace("fine_tune_epochs = 1", "fine_tune_epochs = 1\n"
                               "compiled_walkers = true"))
    out = tmp_path / "out"
    shutil.copytree(tiny_sample, out)
    lines: list[str] = []
    run_learning(load_learn_config(config), out, say=lines.append)
    gen = out / "gen-000"
    assert json.loads((gen / "explore" / WALKER_FORM_NAME).read_text()) == {"compiled": True}
    assert sum("compiled form ready" in line for line in lines) == 2
    assert len(list((gen / "models").glob("model-*/model.nequip.pt2"))) == 2
    runs = [p.parent for p in (gen / "explore").rglob("md.json")]
    assert len(runs) >= 3  # two NPT walkers and the anneal's segments
    for run in runs:
        assert " compiled" in json.loads((run / "md.json").read_text())["model_id"], run


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
        "w0-npt-300K-1bar-s0", "w0-npt-300K-1bar-s1", "w1-volume-scan",
        "w2-anneal-300-450K-1bar"}
    # two NPT copies: the last sampled frame (seed 0) and one from the middle (seed 1)
    copies = [first["walkers"][f"w0-npt-300K-1bar-s{k}"] for k in (0, 1)]
    assert [c["velocity_seed"] for c in copies] == [0, 1]
    composition = {f.info["label_id"]: f.info["composition"]
                   for f in store.select(replica=0)}[copies[0]["start_frame"]]
    replica0 = store.select(composition, replica=0)
    assert [c["start_frame"] for c in copies] == [
        replica0[i].info["label_id"] for i in start_indices(len(replica0), 2)]
    assert copies[0]["start_frame"] == replica0[-1].info["label_id"]
    for k in (0, 1):
        md = json.loads((out / "gen-000" / "explore" / f"w0-npt-300K-1bar-s{k}" /
                         "md.json").read_text())
        assert md["settings"]["seed"] == k
    # a walker's run is an md run: validate and props find its teacher and ions beside it
    from ionmix.dataset.provenance import load_provenance

    walker = out / "gen-000" / "explore" / "w0-npt-300K-1bar-s0"
    start = ase.io.read(walker / "trajectory.extxyz", 0)
    assert load_provenance(walker).teacher_spec(start).key == start.info["teacher"]
    # a 10-fs walker is no density evidence, and the summary says so
    assert "too short" in copies[0]["density_note"]
    # every selected frame says why; the window here has nothing above hi
    selection = json.loads((out / "gen-000" / "selection.json").read_text())
    assert selection["label_above_hi"] is True  # "auto" with the classical teacher
    assert len(selection["reasons"]) == len(selection["chosen"]) >= 1
    assert all(r.startswith("candidate") for r in selection["reasons"])
    assert first["frames_selected_above_hi"] == 0
    assert len(first["teacher_max_force_eV_per_A"]["candidate"]) == first["frames_added"]
    # the walkers' frames carry their committee's deviation, and selection uses it: the
    # committee run again on a walker's last frame gives the selection's value
    from ionmix.models import load_committee

    candidates = ase.io.read(walker / "candidates.extxyz", ":")
    assert all("max_force_deviation_eV_per_A" in f.info for f in candidates)
    committee = load_committee(
        [str(out / "gen-000" / "models" / f"model-{k}" / "model.nequip.zip") for k in (0, 1)],
        candidates[-1], provenance=store.provenance()).calc
    last = candidates[-1].copy()
    last.calc = committee
    last.get_potential_energy()
    index = selection["walkers"].index("w0-npt-300K-1bar-s0") + len(candidates) - 1
    assert selection["deviations_eV_per_A"][index] == pytest.approx(
        committee.results["max_force_deviation_eV_per_A"], rel=1e-4)
    # the anneal walker's two segments: cold then hot, the second continuing the first
    anneal = out / "gen-000" / "explore" / "w2-anneal-300-450K-1bar"
    assert first["walkers"]["w2-anneal-300-450K-1bar"]["status"] == "done", first["walkers"]
    targets = [json.loads((anneal / f"segment-{k}" / "md.json").read_text())[
        "settings"]["temperature_K"] for k in (0, 1)]
    assert targets == [300.0, 450.0]
    assert set(first["wall_s"]) == {"data", "train", "explore", "select", "label"}
    assert all(t >= 0 for t in first["wall_s"].values())
    second = json.loads((out / "gen-001" / "summary.json").read_text())
    assert [e["agree"] for e in second["density_comparison"]] == [False, False]
    assert "no evidence" in result.stopped_because and "too short" in result.stopped_because
    # generation 1 fine-tunes generation 0's models (model k from model k), with the
    # fine-tuning overrides on top of the loop's (generation 0 keeps the preset's weight)
    import yaml

    for k in range(2):
        manifest = json.loads((out / "gen-001" / "models" / f"model-{k}" /
                               "data_manifest.json").read_text())
        assert manifest["initial_model"] == str(
            out / "gen-000" / "models" / f"model-{k}" / "model.nequip.zip")
        weights = [yaml.safe_load((out / f"gen-00{g}" / "models" / f"model-{k}" /
                                   "config.yaml").read_text())["loss_coeffs"]["total_energy"]
                   for g in (0, 1)]
        preset = get_preset("cpu-tiny-allegro-npt")
        assert weights == [preset.loss_coeffs["total_energy"], 7.0]
    assert second["n_train_frames"] == first["n_train_frames"] + first["frames_added"]
    assert (out / "report.md").read_text().startswith("# Active learning")
    assert (out / "generations.png").stat().st_size > 0
    from ionmix.report.active import plot_generations

    shares, _, _ = plot_generations([first, second]).axes
    accurate = shares.get_lines()[0]
    np.testing.assert_allclose(accurate.get_xdata(), [0, 1])
    np.testing.assert_allclose(accurate.get_ydata(),
                               [first["accurate_share"], second["accurate_share"]])
    # a rerun finds everything on disk: nothing is trained, explored or labelled again
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("model.nequip.zip")}
    again = run_learning(load_learn_config(config), out, say=lines.append)
    assert again.generations == result.generations
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model.nequip.zip")} == mtimes
    assert len(DatasetStore(out / "frames.db").select(task="active-learning")) == len(learned)
    # fine_tune_epochs may change between runs, for generations not yet trained: one
    # stopped after its training (no summary yet) keeps the epochs it was trained with
    assert second["committee_epochs"] == [1, 1]
    (out / "gen-001" / "summary.json").unlink()
    longer = tmp_path / "longer.toml"
    longer.write_text(LEARN_TOML.replace("fine_tune_epochs = 1", "fine_tune_epochs = 3"))
    resumed = run_learning(load_learn_config(longer), out, say=lines.append)
    assert resumed.generations[1]["committee_epochs"] == [1, 1]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model.nequip.zip")} == mtimes
    assert len(DatasetStore(out / "frames.db").select(task="active-learning")) == len(learned)

    # the final committee as one model for md/props: the mean of its members
    from ionmix.models import ModelError, load_model

    models = out / "gen-001" / "models"
    atoms = learned[0].atoms.copy()
    provenance = DatasetStore(out / "frames.db").provenance()
    loaded = load_model(models, atoms, provenance=provenance)
    committee = loaded.calc
    loaded_members = [load_model(p, atoms, provenance=provenance)
                      for p in sorted(models.glob("model-*/model.nequip.zip"))]
    members = [m.calc for m in loaded_members]
    energies = []
    for calc in [committee, *members]:
        atoms.calc = calc
        energies.append(atoms.get_potential_energy())
    # each member is network + the loop's default baseline; the committee adds it once
    assert all(isinstance(m, SumCalculator) for m in members)
    assert f"{LearnSettings().baseline}-" in loaded.model_id
    assert energies[0] == pytest.approx(np.mean(energies[1:]), abs=1e-6)
    # the committee's id names every member's network and their one baseline
    assert all(m.model_id.split(" + ")[0] in loaded.model_id for m in loaded_members)
    # the default trust window: calibrated on the committee's own test frames
    from ionmix.active.loop import _trust_window

    calibration = tmp_path / "calibration"
    calibration.mkdir()
    test_file = out / "gen-001" / "data" / "test.extxyz"
    records = [{"package_path": str(p)} for p in sorted(models.glob("model-*/*.nequip.zip"))]
    window = _trust_window(LearnSettings(), records, str(test_file), calibration, provenance)
    direct = []
    for atoms in ase.io.read(test_file, ":"):
        atoms.calc = committee
        atoms.get_potential_energy()
        direct.append(committee.results["force_deviation_eV_per_A"].max())
    assert window.lo_eV_per_A == pytest.approx(np.percentile(direct, 95), rel=1e-6)
    assert window.hi_eV_per_A == pytest.approx(3 * window.lo_eV_per_A)
    assert _trust_window(LearnSettings(trust_lo_eV_per_A=10.0, trust_hi_eV_per_A=20.0),
                         records, str(test_file), calibration, provenance) == window  # kept

    lonely = tmp_path / "lonely"
    shutil.copytree(models / "model-0", lonely / "model-0")
    with pytest.raises(ModelError, match="found 1"):
        load_model(lonely, atoms)
