"""The reliability battery (tests/battery.py) on every model family ionmix trains: NequIP
and Allegro, trained tiny (1 epoch, float64) on a real IL dataset (classical labels), and
evaluated as packaged. Plus: packaged and checkpoint models agree.

The structure is a sampled frame (x = 0.25, replica 1: 1 Li, 3 EMIM, 4 PF6; 86 atoms,
11.4 Å cube; the tiny presets' cutoffs are 4.5-5 Å).

Deviations measured on it (NequIP / Allegro), and the tolerances (~10x, rounded up; float64
rounding: battery.ROUNDING_FLOAT64):
- forces vs -dE/dx, ε = 1e-4 Å, 29 atoms: max 1.0e-8 / 6.1e-8 eV/Å, the O(ε²) truncation
  error (1.0e-6 / 6.1e-6 at ε = 1e-3, 1.5e-10 / 6.2e-10 at 1e-5).
- stress vs (1/V) dE/dε, strain step 1e-4: 3.1e-10 / 2.7e-10 eV/Å3 (O(h²): 3e-8 at 1e-3).
- rotation, translation, lattice shifts, permutation, 2x1x1 supercell: float64 rounding,
  <= 3.6e-15 eV, 1.3e-14 eV/Å, 4.7e-17 eV/Å3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator

from ionmix.dataset import DatasetStore
from ionmix.testing import ROUNDING_FLOAT64, CalculatorBattery


@dataclass(frozen=True)
class Trained:
    """A tiny trained model: packaged (float64) and checkpoint calculators, a test frame."""

    preset: str
    package: Calculator
    checkpoint: Calculator
    frame: Atoms


def _train(preset: str, tiny_sample, tmp_path_factory) -> Trained:
    from ionmix.models import load_calculator
    from ionmix.train import train_from_store

    run_dir = tmp_path_factory.mktemp(preset)
    store = tiny_sample / "frames.db"
    comps = DatasetStore(store).compositions()
    result = train_from_store(store, comps, n_train=3, n_val=1, n_test=2, preset=preset,
                              run_dir=run_dir, overrides={"max_epochs": 1,
                                                          "model_dtype": "float64"},
                              say=None)
    frame = DatasetStore(store).select(replica=1)[0].atoms
    return Trained(preset, load_calculator(result.package_path),
                   load_calculator(result.checkpoint_path), frame)


@pytest.fixture(scope="module")
def nequip(tiny_sample, tmp_path_factory) -> Trained:
    return _train("cpu-tiny-nequip", tiny_sample, tmp_path_factory)


@pytest.fixture(scope="module")
def allegro(tiny_sample, tmp_path_factory) -> Trained:
    return _train("cpu-tiny-allegro", tiny_sample, tmp_path_factory)


class TestNequIPBattery(CalculatorBattery):
    """cpu-tiny-nequip, packaged, float64."""

    n_fd_atoms = 4
    fd_force_atol_eV_per_A = 2e-7
    fd_stress_atol_eV_per_A3 = 5e-9
    rotation_tol = translation_tol = lattice_shift_tol = ROUNDING_FLOAT64
    permutation_tol = extensivity_tol = ROUNDING_FLOAT64

    @pytest.fixture(scope="class")
    @classmethod
    def calculator(cls, nequip):
        return nequip.package

    @pytest.fixture(scope="class")
    @classmethod
    def structure(cls, nequip):
        return nequip.frame


class TestAllegroBattery(CalculatorBattery):
    """cpu-tiny-allegro, packaged, float64."""

    n_fd_atoms = 4
    fd_force_atol_eV_per_A = 1e-6
    fd_stress_atol_eV_per_A3 = 5e-9
    rotation_tol = translation_tol = lattice_shift_tol = ROUNDING_FLOAT64
    permutation_tol = extensivity_tol = ROUNDING_FLOAT64

    @pytest.fixture(scope="class")
    @classmethod
    def calculator(cls, allegro):
        return allegro.package

    @pytest.fixture(scope="class")
    @classmethod
    def structure(cls, allegro):
        return allegro.frame


def _with(calc: Calculator, atoms: Atoms) -> Atoms:
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms


@pytest.mark.parametrize("family", ["nequip", "allegro"])
def test_packaged_and_checkpoint_agree(family, request):
    model: Trained = request.getfixturevalue(family)
    a, b = _with(model.package, model.frame), _with(model.checkpoint, model.frame)
    np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=5e-5)
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-5)
