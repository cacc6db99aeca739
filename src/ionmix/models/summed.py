"""A sum of calculators that evaluates each part once per geometry.

A student is a network plus its baseline's parts (Coulomb, wall, bonded terms, tail), added
up. ASE's `SumCalculator` adds them property by property: its mixer asks each part for the
one property requested, then for every property it can cache, each request a state check
(`ase.calculators.calculator.compare_atoms`: positions, cell, ... by ``allclose``). MD asks
for forces and then, for the barostat, for the stress: so a part that computes only what it
is asked (the classical bonded terms skip their virial unless the stress is wanted) runs
twice per step, and a five-part student makes ~40 state checks per step. Measured on the
188-atom box (`benchmarks/bench_summed.py`, docs/benchmarks.md), summing once per geometry
makes a compiled student's step 1.12x faster (the baseline's parts alone, 1.23x).

`Summed` is ASE's `SumCalculator` (same results, same ``*_contributions``) that asks every
part for energy, forces and stress together, once per geometry, and flattens nested sums.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.mixing import Mixer, SumCalculator

__all__ = ["Summed"]

#: What a student sums (eV; eV/Å, (n_atoms, 3); eV/Å³, Voigt (6,)).
SUMMED_PROPERTIES: tuple[str, ...] = ("energy", "free_energy", "forces", "stress")


class Summed(SumCalculator):
    """The sum of `parts` (ASE calculators), each evaluated once per geometry for every
    property all of them implement (see the module docstring). A part that is itself a
    `Summed` contributes its own parts."""

    def __init__(self, parts: Sequence) -> None:
        flat = []
        for part in parts:
            flat.extend(part.mixer.calcs if isinstance(part, Summed) else [part])
        super().__init__(flat)
        self.implemented_properties = [p for p in SUMMED_PROPERTIES
                                       if p in self.mixer.implemented_properties]

    def calculate(self, atoms, properties, system_changes) -> None:
        """Every implemented property of every part at `atoms`, summed."""
        missing = sorted(set(properties) - set(self.implemented_properties))
        if missing:
            raise PropertyNotImplementedError(f"{', '.join(missing)}: not computed by every "
                                              f"part of {self}")
        self.atoms = atoms.copy()  # for ASE's cache of these results
        wanted = self.implemented_properties
        parts = [_evaluate(part, atoms, wanted) for part in self.mixer.calcs]
        self.results = {}
        for prop in wanted:
            contributions = [part[prop] for part in parts]
            if prop == "stress":
                contributions = Mixer.make_stress_voigt(contributions)
            self.results[f"{prop}_contributions"] = contributions
            self.results[prop] = sum(contributions)


def _evaluate(calc, atoms, properties: Sequence[str]) -> dict:
    """`calc`'s results for `properties` at `atoms`, computed in one call when its cache
    lacks any (ASE's `get_property` semantics, for several properties at once)."""
    changes = calc.check_state(atoms)
    if changes:
        calc.atoms, calc.results = None, {}
    if any(prop not in calc.results for prop in properties):
        calc.atoms = atoms.copy()
        calc.calculate(atoms, list(properties), changes)
    absent = [prop for prop in properties if prop not in calc.results]
    if absent:
        raise PropertyNotImplementedError(f"{type(calc).__name__} did not compute "
                                          f"{', '.join(absent)}")
    return {prop: np.copy(calc.results[prop]) if isinstance(calc.results[prop], np.ndarray)
            else calc.results[prop] for prop in properties}
