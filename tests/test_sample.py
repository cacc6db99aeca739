"""Classical sampling: counts, metadata, labels, resume without duplicates, bad configs."""

from __future__ import annotations

import numpy as np
import pytest

from ionmix.chemistry import IonLibraryError
from ionmix.chemistry.topology import molecules_of
from ionmix.config import ConfigError, SampleConfig, load_sample_config, parse_model
from ionmix.dataset import DatasetStore, composition_key
from ionmix.design import DesignError
from ionmix.sampling import plan_sampling, sample, sample_run
from ionmix.teachers.classical import ClassicalCalculator
from ionmix.units import density_g_per_cm3

BASE = {
    "mixture": {"units": {"LiPF6": {"Li": 1, "PF6": 1}, "EMIMPF6": {"EMIM": 1, "PF6": 1}},
                "compositions": [{"LiPF6": 0.5, "EMIMPF6": 0.5}], "n_ion_pairs": 4},
    "sampling": {"equilibration_ps": 0.2, "max_equilibration_ps": 0.2, "production_ps": 0.4,
                 "snapshot_interval_ps": 0.1,
                 "replicas": 1, "seed": 3},
}


def cfg(**changes) -> SampleConfig:
    data = {"mixture": dict(BASE["mixture"]), "sampling": dict(BASE["sampling"])}
    for key, value in changes.items():
        section, _, name = key.partition("__")
        data[section][name] = value
    return parse_model(SampleConfig, data, "test.toml")


def test_tiny_study_has_both_replicas_and_teacher_labels(tiny_sample):
    store = DatasetStore(tiny_sample / "frames.db")
    assert len(store) == 2 * 2 * 8
    for comp in store.compositions():
        for replica in (0, 1):
            frames = store.select(comp, replica=replica)
            assert [f.info["frame_index"] for f in frames] == list(range(8))
    frame = store.select(replica=1)[3]
    spec = store.provenance().teacher_spec(frame.atoms)
    assert frame.info["teacher"] == spec.key and spec.kind == "classical"
    assert spec.params["charge_scale"] == frame.info["charge_scale"] == 0.8
    assert spec.params["cutoff_A"] == frame.info["cutoff_A"]
    assert frame.info["task"] == "md" and frame.info["ion_set"] in store.records()["ion_sets"]
    assert frame.info["n_Li"] + frame.info["n_EMIM"] == frame.info["n_PF6"] == 4
    # The stored labels are the force field's own: recompute them on the stored geometry.
    atoms = frame.atoms.copy()
    atoms.calc = ClassicalCalculator(molecules_of(frame.atoms), charge_scale=0.8,
                                     cutoff_A=frame.info["cutoff_A"])
    np.testing.assert_allclose(atoms.get_forces(), frame.atoms.get_forces(), atol=2e-4)
    np.testing.assert_allclose(atoms.get_stress(), frame.atoms.get_stress(), atol=1e-6)
    assert atoms.get_potential_energy() == pytest.approx(frame.atoms.get_potential_energy(),
                                                         abs=1e-4)


def test_resume_after_interruption_no_duplicates(tmp_path):
    npt = {"sampling__production_ensemble": "npt"}  # a volume that changes between snapshots
    config = cfg(**npt)

    class Interrupt(Exception):
        pass

    def stop_after_two(run, k):
        if k == 1:
            raise Interrupt

    # one run in this process (sample() runs them in Dask workers), stopped after 2 frames
    plan = plan_sampling(config)
    store = DatasetStore(tmp_path / "frames.db")
    store.register(plan.teacher, plan.ions)
    with pytest.raises(Interrupt):
        sample_run(plan.runs[0], config, plan, tmp_path, store, on_snapshot=stop_after_two)
    (run_id,) = {f.info["run_id"] for f in store.select()}
    assert store.frame_indices(run_id) == [0, 1]
    (result,) = sample(config, tmp_path)
    assert result.resumed_from == 2
    # 0.2 ps is too short to see a plateau: the run says so, and where to change it
    assert "max_equilibration_ps" in result.equilibration_warning
    assert store.frame_indices(run_id) == [0, 1, 2, 3]
    times = [f.info["time_ps"] for f in store.select(run_id=run_id)]
    np.testing.assert_allclose(times, [0.1, 0.2, 0.3, 0.4])
    # The mean density is over all four stored snapshots, those before the interruption
    # too (was: the last snapshot's density on a finished run)
    stored = [density_g_per_cm3(float(f.atoms.get_masses().sum()), f.atoms.get_volume())
              for f in store.select(run_id=run_id)]
    assert result.mean_density_g_cm3 == pytest.approx(np.mean(stored), rel=1e-12)
    # A finished run is not redone.
    (again,) = sample(config, tmp_path)
    assert again.resumed_from == 4 and len(store) == 4
    assert np.ptp(stored) > 0  # so that the last one alone would not do
    assert again.mean_density_g_cm3 == pytest.approx(np.mean(stored), rel=1e-12)
    # Another teacher or protocol may not be mixed into the same folder.
    with pytest.raises(ConfigError, match="sampling.*temperature_K.*310"):
        sample(cfg(sampling__temperature_K=310.0, **npt), tmp_path)
    with pytest.raises(ConfigError, match="charge_scale"):
        sample(cfg(mixture__charge_scale=0.7, **npt), tmp_path)


def test_seeds_are_stable_and_distinct():
    plan = plan_sampling(cfg(sampling__replicas=2))
    again = plan_sampling(cfg(sampling__replicas=2))
    other = plan_sampling(cfg(sampling__replicas=2, sampling__seed=4))
    assert [r.seed for r in plan.runs] == [r.seed for r in again.runs]
    assert plan.runs[0].seed != plan.runs[1].seed
    assert [r.seed for r in plan.runs] != [r.seed for r in other.runs]


def test_counts_from_grid():
    plan = plan_sampling(cfg(mixture__compositions=None, mixture__grid_step=0.25,
                             mixture__n_ion_pairs=4))
    counts = [r.counts for r in plan.runs]
    assert {"Li": 1, "PF6": 4, "EMIM": 3} in counts
    assert all(c.get("Li", 0) + c.get("EMIM", 0) == c["PF6"] for c in counts)


@pytest.mark.parametrize("changes, error, match", [
    ({"mixture__compositions": [{"LiPF6": 0.33, "EMIMPF6": 0.67}]}, DesignError,
     r"nearest valid fractions: 0\.25 \(1 LiPF6\) or 0\.5 \(2 LiPF6\)"),
    ({"mixture__units": {"NaPF6": {"Na": 1, "PF6": 1}}}, IonLibraryError, "unknown ion 'Na'"),
    ({"mixture__units": {"X": {"Li": 2, "PF6": 1}}}, DesignError, "unit 'X' is not neutral"),
    ({"sampling__cutoff_A": 9.0}, ConfigError, "cutoff_A = 9.0"),
    ({"sampling__temprature_K": 300}, ConfigError, "sampling.temprature_K: unknown key"),
    ({"sampling__temperature_K": -5}, ConfigError, "sampling.temperature_K"),
    ({"sampling__max_equilibration_ps": 0.1}, ConfigError,
     r"max_equilibration_ps \(0.1\) is below equilibration_ps \(0.2\)"),
    ({"mixture__n_ion_pairs": None}, ConfigError, "exactly one of n_ion_pairs or n_ions"),
    ({"mixture__n_ion_pairs": None, "mixture__n_ions": 9}, ConfigError,
     "n_ions = 9 at .* gives 4.5 formula units, not a whole number"),
    ({"mixture__n_ion_pairs": None, "mixture__n_ions": 6}, ConfigError,
     r"n_ions = 6 at .* gives 3 formula units: LiPF6 = 0.5 with 3 units gives 1.5 LiPF6"),
])
def test_bad_sampling_config(changes, error, match):
    with pytest.raises(error, match=match):
        plan_sampling(cfg(**changes))


def test_config_file_errors_name_file(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("[mixture]\nunits = {LiPF6 = {Li = 1, PF6 = 1}}\nn_ion_pairs = 4\n[samplng]\n")
    with pytest.raises(ConfigError, match="broken.toml: samplng: unknown key"):
        load_sample_config(p)


THIRDS_TOML = """
[mixture]
units = {{BMIMBF4 = {{BMIM = 1, BF4 = 1}}, LiBF4 = {{Li = 1, BF4 = 1}}}}
compositions = [{comp}]
{size}
"""


@pytest.mark.parametrize("comp", [
    "{BMIMBF4 = 0.666667, LiBF4 = 0.333333}",  # issue 13: refused before
    '{BMIMBF4 = "2/3", LiBF4 = "1/3"}',
    '{BMIMBF4 = 0.6667, LiBF4 = "1/3"}',
])
@pytest.mark.parametrize("size, n_units", [("n_ion_pairs = 3", 3), ("n_ions = 12", 6)])
def test_thirds_sample_whole_counts(tmp_path, comp, size, n_units):
    p = tmp_path / "thirds.toml"
    p.write_text(THIRDS_TOML.format(comp=comp, size=size))
    plan = plan_sampling(load_sample_config(p))
    k = n_units // 3
    assert [r.counts for r in plan.runs] == [{"BMIM": 2 * k, "Li": k, "BF4": 3 * k}] * 2
    # The store's composition key keeps 6 significant digits of what was given.
    typed = "0.6667" if "0.6667," in comp else "0.666667"
    assert composition_key(plan.runs[0].composition) == f"BMIMBF4={typed},LiBF4=0.333333"


def test_bad_fraction_string_names_key(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text(THIRDS_TOML.format(comp='{BMIMBF4 = "two thirds", LiBF4 = "1/3"}',
                                    size="n_ion_pairs = 3"))
    with pytest.raises(ConfigError, match=r"bad.toml: mixture.compositions: .*composition 1: "
                                          r"fraction of 'BMIMBF4' must "
                                          r"be a number or a fraction such as \"2/3\""):
        load_sample_config(p)


def test_thirds_refused_with_other_values_suggested():
    with pytest.raises(DesignError) as info:
        plan_sampling(cfg(mixture__compositions=[{"LiPF6": 0.333333, "EMIMPF6": 0.666667}]))
    assert str(info.value).endswith("nearest valid fractions: 0.25 (1 LiPF6) or 0.5 (2 LiPF6)")


def test_a_folder_from_before_new_settings_resumes(tmp_path):
    """sample-config.json written before teacher_key and max_equilibration_ps existed: the
    same settings otherwise, so the folder is accepted; a changed setting is still refused."""
    import json

    from ionmix.sampling import _check_same_teacher, plan_sampling

    cfg = parse_model(SampleConfig, BASE, "test")
    plan = plan_sampling(cfg)
    record = {**cfg.model_dump(mode="json"), "resolved_cutoff_A": plan.cutoff_A,
              "teacher_key": plan.teacher.key}
    old = json.loads(json.dumps(record))
    del old["teacher_key"], old["sampling"]["max_equilibration_ps"]
    (tmp_path / "sample-config.json").write_text(json.dumps(old))
    _check_same_teacher(tmp_path / "sample-config.json", record)  # accepted
    old["sampling"]["temperature_K"] = 350.0
    (tmp_path / "sample-config.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="temperature_K"):
        _check_same_teacher(tmp_path / "sample-config.json", record)


def test_two_samplings_with_the_same_seed_are_identical(tmp_path):
    """Each run on one OpenMM thread, the runs side by side (Dask): the same config and
    seed give the same frames, to the bit (with 2 threads they were 4 Å apart in 2 ps)."""
    config = cfg(sampling__replicas=2)
    for out in ("a", "b"):
        sample(config, tmp_path / out)
    first, second = (DatasetStore(tmp_path / out / "frames.db").select() for out in "ab")
    assert len(first) == len(second) == 8
    for x, y in zip(first, second, strict=True):
        assert x.info["label_id"] == y.info["label_id"]
        assert np.array_equal(x.atoms.positions, y.atoms.positions)
        assert x.atoms.get_potential_energy() == y.atoms.get_potential_energy()


def test_hydrogen_mass_repartitioning_keeps_every_molecule_mass():
    from ionmix.build import build_box
    from ionmix.teachers.classical import make_system_for_atoms, repartition_hydrogen_mass

    atoms = build_box({"Li": 1, "EMIM": 2, "PF6": 3}, density_g_cm3=1.2, seed=1)
    csys = make_system_for_atoms(atoms, cutoff_A=4.0)
    physical = np.array([csys.system.getParticleMass(i)._value for i in range(len(atoms))])
    repartition_hydrogen_mass(csys.system, csys.elements, 3.024)
    moved = np.array([csys.system.getParticleMass(i)._value for i in range(len(atoms))])
    is_h = np.array(csys.elements) == "H"
    assert is_h.sum() == 2 * 11
    np.testing.assert_allclose(moved[is_h], 3.024)
    mol_id = atoms.arrays["mol_id"]
    for m in np.unique(mol_id):
        assert moved[mol_id == m].sum() == pytest.approx(physical[mol_id == m].sum(), abs=1e-9)
    # only carbons bonded to H lose mass; Li, P and F keep theirs
    changed = np.flatnonzero(~np.isclose(moved, physical))
    assert {csys.elements[i] for i in changed} == {"H", "C"}
    assert csys.masses_amu == tuple(physical)    # the recorded (physical) masses stay


def test_sampling_with_repartitioned_hydrogen_masses(tmp_path):
    """2 fs steps with H at 3.024 u: the run is stable, its labels are the physical
    teacher's, and the masses really changed the dynamics (same seed, other positions)."""
    light = cfg(sampling__timestep_fs=2.0)
    heavy = cfg(sampling__timestep_fs=2.0, sampling__hydrogen_mass_amu=3.024)
    for out, config in (("light", light), ("heavy", heavy)):
        sample(config, tmp_path / out)
    a, b = (DatasetStore(tmp_path / out / "frames.db").select() for out in ("light", "heavy"))
    assert len(a) == len(b) == 4
    assert not np.allclose(a[-1].atoms.positions, b[-1].atoms.positions, atol=1e-3)
    frame = b[-1]
    atoms = frame.atoms.copy()
    atoms.calc = ClassicalCalculator(molecules_of(frame.atoms), charge_scale=0.8,
                                     cutoff_A=frame.info["cutoff_A"])
    np.testing.assert_allclose(atoms.get_forces(), frame.atoms.get_forces(), atol=2e-4)
    assert DatasetStore(tmp_path / "heavy" / "frames.db").select()[0].atoms.get_masses()[
        np.array(frame.atoms.get_chemical_symbols()) == "H"] == pytest.approx(1.008, abs=1e-3)
    recorded = (tmp_path / "heavy" / "sample-config.json").read_text()
    assert '"hydrogen_mass_amu": 3.024' in recorded


@pytest.mark.parametrize("value", [0.5, 1.0, 6.0])
def test_hydrogen_mass_out_of_range_is_named(value):
    with pytest.raises(ConfigError, match="hydrogen_mass_amu"):
        cfg(sampling__hydrogen_mass_amu=value)


def test_the_client_waits_between_looks_at_the_store(tmp_path, monkeypatch):
    """Runs side by side: after the first run ends, the client still looks at the store
    once per poll interval (it used to wait on the finished run and poll in a busy loop,
    taking most of a core from the sampling workers)."""
    import time

    from ionmix import sampling

    looks = []
    real = sampling._report_snapshots
    monkeypatch.setattr(sampling, "_POLL_S", 0.5)
    monkeypatch.setattr(sampling, "_report_snapshots",
                        lambda *a: (looks.append(time.monotonic()), real(*a)))
    start = time.monotonic()
    sample(cfg(sampling__replicas=3), tmp_path)   # 3 runs on at most 2 workers
    elapsed = time.monotonic() - start
    assert len(looks) <= elapsed / 0.5 + 3, (len(looks), elapsed)
