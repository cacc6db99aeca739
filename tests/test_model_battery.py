"""The reliability battery for every energy model ionmix produces: trained NequIP and
Allegro models on a tiny real IL dataset (classical labels), in float64.

forces = −dE/dx, stress = strain derivative, rotation / translation / permutation
invariance, packaged vs checkpoint agreement. (The classical teacher runs the same checks in
test_classical.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.calculator import Calculator

from ionmix.dataset import DatasetStore

PRESETS = ["cpu-tiny-nequip", "cpu-tiny-allegro"]


@pytest.fixture(scope="module", params=PRESETS)
def model(request, tiny_sample, tmp_path_factory):
    """(preset, packaged float64 calculator, checkpoint calculator, a test frame)."""
    from ionmix.train import load_calculator, train_from_store

    run_dir = tmp_path_factory.mktemp(request.param)
    store = tiny_sample / "frames.db"
    comps = DatasetStore(store).compositions()
    result = train_from_store(store, comps, n_train=3, n_val=1, n_test=2, preset=request.param,
                              run_dir=run_dir, overrides={"max_epochs": 1,
                                                          "model_dtype": "float64"},
                              progress=None)
    package = load_calculator(result.package_path)
    checkpoint = load_calculator(result.checkpoint_path)
    frame = DatasetStore(store).select(replica=1)[0].atoms
    return request.param, package, checkpoint, frame


def _with(calc: Calculator, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms


def test_forces_are_minus_energy_gradient(model):
    _, calc, _, frame = model
    atoms = _with(calc, frame)
    forces = atoms.get_forces()
    rng = np.random.default_rng(0)
    eps = 1e-4
    for i in rng.choice(len(atoms), 4, replace=False):
        for d in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, d] += eps
            minus.positions[i, d] -= eps
            plus.calc = minus.calc = calc
            numeric = -(plus.get_potential_energy() - minus.get_potential_energy()) / (2 * eps)
            assert forces[i, d] == pytest.approx(numeric, abs=1e-5)


def test_stress_is_strain_derivative(model):
    from ase.calculators.fd import calculate_numerical_stress

    _, calc, _, frame = model
    atoms = _with(calc, frame)
    stress = atoms.get_stress()
    numeric = calculate_numerical_stress(atoms, eps=1e-5)
    np.testing.assert_allclose(stress, numeric, atol=1e-6)


def test_rotation_translation_permutation_invariance(model):
    _, calc, _, frame = model
    ref = _with(calc, frame)
    energy, forces = ref.get_potential_energy(), ref.get_forces()

    theta = 0.7
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0],
                    [0, 0, 1]])
    rotated = _with(calc, frame)
    rotated.set_cell(frame.cell.array @ rot.T)
    rotated.positions = frame.positions @ rot.T
    assert rotated.get_potential_energy() == pytest.approx(energy, abs=1e-8)
    np.testing.assert_allclose(rotated.get_forces(), forces @ rot.T, atol=1e-8)

    shifted = _with(calc, frame)
    shifted.positions += np.array([1.3, -2.1, 0.4])
    assert shifted.get_potential_energy() == pytest.approx(energy, abs=1e-8)

    perm = np.random.default_rng(1).permutation(len(frame))
    permuted = _with(calc, frame[perm])
    assert permuted.get_potential_energy() == pytest.approx(energy, abs=1e-8)
    np.testing.assert_allclose(permuted.get_forces(), forces[perm], atol=1e-8)


def test_packaged_and_checkpoint_agree(model):
    _, package, checkpoint, frame = model
    a, b = _with(package, frame), _with(checkpoint, frame)
    np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=5e-5)
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-5)
