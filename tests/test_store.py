"""The dataset store: inserts, rejection of bad rows, transactions, selection, splits."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from ionmix.dataset import (
    DatasetError,
    DatasetStore,
    atomic_write_extxyz,
    composition_key,
    equally_spaced,
    run_frames,
    split_by_replica,
    split_counts,
)

COMP_A = {"LiPF6": 0.4, "EMIMPF6": 0.6}
COMP_B = {"LiPF6": 0.6, "EMIMPF6": 0.4}


def labelled(seed: int, n_cells: int = 2):
    """A small rattled Cu cell labelled by EMT (energy, forces, stress)."""
    atoms = bulk("Cu", cubic=True).repeat(n_cells)
    atoms.rattle(0.05, seed=seed)
    atoms.calc = EMT()
    results = {
        "energy": atoms.get_potential_energy(),
        "forces": atoms.get_forces(),
        "stress": atoms.get_stress(),
    }
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def meta(run_id: str, i: int, comp=COMP_A, replica=0):
    return {"run_id": run_id, "frame_index": i, "composition": composition_key(comp),
            "temperature_K": 300.0, "replica": replica, "seed": replica, "time_ps": 20.0 * i,
            "teacher": "emt", "charge_scale": 0.8}


@pytest.fixture
def store(tmp_path):
    return DatasetStore(tmp_path / "frames.db")


def test_roundtrip_preserves_labels_and_metadata(store):
    atoms = labelled(0)
    (row_id,) = store.add_frames([atoms], [meta("a-r0", 0)], counts={"Li": 8, "EMIM": 12})
    (frame,) = store.select(COMP_A)
    assert frame.row_id == row_id
    np.testing.assert_allclose(frame.atoms.positions, atoms.positions)
    np.testing.assert_allclose(frame.atoms.get_forces(), atoms.get_forces())
    np.testing.assert_allclose(frame.atoms.get_stress(), atoms.get_stress())
    assert frame.atoms.get_potential_energy() == pytest.approx(atoms.get_potential_energy())
    assert frame.info["n_Li"] == 8 and frame.info["x_LiPF6"] == pytest.approx(0.4)
    assert frame.info["teacher"] == "emt" and frame.info["charge_scale"] == 0.8


@pytest.mark.parametrize("defect, match", [
    ("nan_energy", "energy is not finite"),
    ("inf_force", "force on atom 3 is not finite"),
    ("no_forces", "missing forces"),
    ("short_forces", "atom-count mismatch"),
    ("no_energy", "no energy"),
])
def test_bad_rows_rejected_with_frame_named(store, defect, match):
    atoms = labelled(1)
    results = dict(atoms.calc.results)
    if defect == "nan_energy":
        results["energy"] = np.nan
    elif defect == "inf_force":
        results["forces"] = results["forces"].copy()
        results["forces"][3, 1] = np.inf
    elif defect == "no_forces":
        del results["forces"]
    elif defect == "short_forces":
        results["forces"] = results["forces"][:-1]
    elif defect == "no_energy":
        del results["energy"]
    atoms.calc = SinglePointCalculator(atoms, **results)
    with pytest.raises(DatasetError, match=match) as exc:
        store.add_frames([atoms], [meta("bad-run", 7)])
    assert "frame 7 of run bad-run" in str(exc.value)
    assert len(store) == 0


def test_insert_is_transactional(store):
    good = labelled(2)
    bad = labelled(3)
    bad.calc = SinglePointCalculator(bad, energy=np.nan, forces=bad.get_forces())
    with pytest.raises(DatasetError, match="frame 1"):
        store.add_frames([good, bad], [meta("r", 0), meta("r", 1)])
    assert len(store) == 0  # the good frame was not written either


def test_duplicates_rejected_or_skipped(store):
    store.add_frames([labelled(4)], [meta("r", 0)])
    with pytest.raises(DatasetError, match="already stored"):
        store.add_frames([labelled(4)], [meta("r", 0)])
    ids = store.add_frames([labelled(4), labelled(5)], [meta("r", 0), meta("r", 1)],
                           skip_existing=True)
    assert len(ids) == 1 and store.frame_indices("r") == [0, 1]


def test_metadata_keys_checked(store):
    m = meta("r", 0)
    del m["teacher"]
    with pytest.raises(DatasetError, match="lacks \\['teacher'\\]"):
        store.add_frames([labelled(6)], [m])
    m = meta("r", 0) | {"temprature_K": 3}
    with pytest.raises(DatasetError, match="temprature_K"):
        store.add_frames([labelled(6)], [m])


def _fill(store, n=10):
    for comp in (COMP_A, COMP_B):
        for replica in (0, 1):
            run = f"{composition_key(comp)}-r{replica}"
            frames = [labelled(100 * replica + i, 1) for i in range(n)]
            store.add_frames(frames, [meta(run, i, comp, replica) for i in range(n)])


def test_select_and_split(store):
    _fill(store)
    assert len(store.select(COMP_B, replica=1)) == 10
    assert store.compositions() == sorted([composition_key(COMP_A), composition_key(COMP_B)])
    split = split_by_replica(store, [COMP_A, COMP_B], n_train=4, n_val=1, n_test=5, seed=3)
    assert (len(split.train), len(split.val), len(split.test)) == (8, 2, 10)
    assert all(f.info["replica"] == 0 for f in split.train + split.val)
    assert all(f.info["replica"] == 1 for f in split.test)
    ids = [f.row_id for f in split.train + split.val]
    assert len(set(ids)) == len(ids)
    again = split_by_replica(store, [COMP_A, COMP_B], 4, 1, 5, seed=3)
    other = split_by_replica(store, [COMP_A, COMP_B], 4, 1, 5, seed=4)
    assert [f.row_id for f in again.val] == [f.row_id for f in split.val]
    assert [f.row_id for f in other.val] != [f.row_id for f in split.val]
    with pytest.raises(DatasetError, match="only 10 are stored"):
        split_by_replica(store, [COMP_A], 10, 1, 0)


def test_split_of_a_relabelling_teacher_keeps_the_sampled_frames(store):
    """Another teacher's split takes the frames picked along the sampled run (those the
    labeller was given), each as relabelled: a label that failed is left out, never
    replaced by a neighbouring frame; a teacher with no labels there is an error."""
    _fill(store)
    key_a, key_b = composition_key(COMP_A), composition_key(COMP_B)
    counts = split_counts([key_a], [key_a, key_b], n_train=3, n_val=2, n_test=5)
    assert counts == {(key_a, 1): 5, (key_b, 1): 5, (key_a, 0): 5}
    to_label = {(k, r): run_frames(store, k, r, n, "emt") for (k, r), n in counts.items()}
    assert [f.info["frame_index"] for f in to_label[key_a, 0]] == [0, 2, 4, 6, 8]
    for (key, replica), frames in to_label.items():
        done = [f for f in frames if (key, replica, f.info["frame_index"]) != (key_a, 0, 4)]
        comp = COMP_A if key == key_a else COMP_B
        store.add_frames([labelled(1000 + 100 * replica + f.info["frame_index"], 1)
                          for f in done],
                         [meta(f.info["run_id"], f.info["frame_index"], comp, replica)
                          | {"teacher": "xtb", "task": "single-point",
                             "label_id": f.info["label_id"]} for f in done])
    split = split_by_replica(store, [COMP_A], 3, 2, 5, seed=None, teacher="xtb")
    assert [f.info["frame_index"] for f in split.train + split.val] == [0, 2, 6, 8]
    assert [f.info["frame_index"] for f in split.test] == [0, 2, 4, 6, 8]
    assert {f.info["teacher"] for f in split.train + split.val + split.test} == {"xtb"}
    with pytest.raises(DatasetError, match="teacher dft labelled none of the 5 frames"):
        split_by_replica(store, [COMP_A], 3, 2, 5, teacher="dft")


def test_equally_spaced():
    frames = list(range(10))
    assert equally_spaced(frames, 5) == [0, 2, 4, 6, 8]
    assert equally_spaced(frames, 3) == [0, 3, 6]


def test_extxyz_export_roundtrip(store, tmp_path):
    _fill(store, 3)
    frames = store.select(COMP_A, replica=0)
    path = atomic_write_extxyz(frames, tmp_path / "out" / "train.extxyz")
    back = ase.io.read(path, ":")
    assert len(back) == 3
    np.testing.assert_allclose(back[1].get_forces(), frames[1].atoms.get_forces())
    np.testing.assert_allclose(back[1].get_stress(), frames[1].atoms.get_stress())
    assert not list(path.parent.glob(".*.tmp"))
    with pytest.raises(DatasetError, match="empty"):
        atomic_write_extxyz([], tmp_path / "empty.extxyz")


def test_start_structure_sampled_at_a_temperature(store, tmp_path):
    """`load_structure(..., sampled_at_K=T)`: the last frame of the lowest replica sampled at
    T, in a store holding several temperatures (runs sort T300K < T450K < T600K)."""
    from ionmix.dataset.structures import StructureError, load_structure

    frames = [labelled(seed) for seed in range(6)]
    metas = []
    for k, temperature in enumerate((300.0, 300.0, 450.0, 450.0, 600.0, 600.0)):
        m = meta(f"A_T{temperature:g}K_r0", k % 2)
        m["temperature_K"] = temperature
        metas.append(m)
    store.add_frames(frames, metas)
    db = tmp_path / "frames.db"
    np.testing.assert_allclose(load_structure(db, sampled_at_K=450.0).positions,
                               frames[3].positions)
    np.testing.assert_allclose(load_structure(db).positions, frames[5].positions)
    with pytest.raises(StructureError, match="no MD frames of .* sampled at 350 K"):
        load_structure(db, sampled_at_K=350.0)
