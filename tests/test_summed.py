"""`ionmix.models.summed.Summed`: a student's parts summed as ASE's `SumCalculator` sums them,
each part computed once per geometry.

Frames: the classical tiny sample (Li/EMIM/PF6, charges x 0.8), its 86-atom frame; the parts
are the default baseline's (Coulomb by torch-pme, the intermolecular wall, the force
field's bonded terms, the dispersion tail).
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, PropertyNotImplementedError
from ase.calculators.mixing import SumCalculator

from ionmix.dataset import DatasetStore
from ionmix.models.baseline import baseline_calculator, baseline_for_frames
from ionmix.models.summed import Summed

BASELINE = "coulomb+wall+bonded+tail"


@pytest.fixture(scope="module")
def frame_and_baseline(tiny_sample):
    store = DatasetStore(tiny_sample / "frames.db")
    atoms = store.select(replica=1)[0].atoms
    ions = store.provenance().ion_set(atoms)
    baseline = baseline_for_frames(BASELINE, [atoms], [ions], "test", tail_cutoff_A=4.5)
    return atoms, baseline, ions


def _counted(parts: list) -> dict:
    """Wrap each part's `calculate` to count its calls; returns the counts by class name."""
    counts = {}
    for part in parts:
        name = type(part).__name__
        counts[name] = 0
        original = part.calculate

        def counted(*args, _original=original, _name=name, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        part.calculate = counted
    return counts


def _md_asks(calc, atoms) -> tuple:
    """What an MTK NPT step asks, in its order: forces, stress (the barostat), energy."""
    work = atoms.copy()
    work.calc = calc
    return work.get_forces(), work.get_stress(), work.get_potential_energy()


def test_summed_is_ases_sum_with_each_part_computed_once(frame_and_baseline):
    atoms, baseline, ions = frame_and_baseline
    summed = baseline_calculator(baseline, ions)
    assert isinstance(summed, Summed) and len(summed.mixer.calcs) == 4
    ase_sum = SumCalculator(baseline_calculator(baseline, ions).mixer.calcs)  # its own parts
    counts = _counted(summed.mixer.calcs)
    ase_counts = _counted(ase_sum.mixer.calcs)
    rng = np.random.default_rng(0)
    previous = None
    for _ in range(2):  # two geometries: a new one is computed anew, not read from the cache
        geometry = atoms.copy()
        geometry.positions += rng.normal(scale=0.02, size=geometry.positions.shape)
        ours, theirs = _md_asks(summed, geometry), _md_asks(ase_sum, geometry)
        for mine, reference in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(mine, reference, rtol=0, atol=1e-12)
        if previous is not None:
            assert not np.allclose(ours[0], previous[0])
        previous = ours
    assert counts == dict.fromkeys(counts, 2)  # once per geometry
    assert ase_counts["ClassicalCalculator"] == 4  # ASE's: forces, then again for the stress
    assert summed.results["energy_contributions"][0] == pytest.approx(
        summed.mixer.calcs[0].results["energy"])


class _NoStress(Calculator):
    """Zero energy and forces, no stress."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": 0.0, "free_energy": 0.0,
                        "forces": np.zeros((len(self.atoms), 3))}


def test_nested_sums_are_flattened_and_a_missing_property_is_named(frame_and_baseline):
    atoms, baseline, ions = frame_and_baseline
    nested = Summed([baseline_calculator(baseline, ions), _NoStress()])
    assert [type(p).__name__ for p in nested.mixer.calcs] == [
        "CoulombPME", "IntermolecularWall", "ClassicalCalculator", "DispersionTail", "_NoStress"]
    assert "stress" not in nested.implemented_properties
    work = atoms.copy()
    work.calc = nested
    assert np.isfinite(work.get_forces()).all()
    with pytest.raises(PropertyNotImplementedError, match="stress"):
        work.get_stress()
