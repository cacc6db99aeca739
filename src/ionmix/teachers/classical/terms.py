"""The classical teacher's energy split into its force field's terms.

A student whose own energy stays flat while the teacher prices its run higher has put
strain into some degrees of freedom that the teacher would not. The terms name them
(docs/benchmarks.md, "Where the students leave the teacher's liquid": every early
student's EMIM⁺ torsions sat 8–11 meV/atom above the teacher's liquid):

* one entry per OpenMM force as `make_system` builds OPLS-AA: ``bonds``, ``angles``,
  ``torsions`` (Ryckaert–Bellemans), ``Lennard-Jones`` (a CustomNonbondedForce: the
  geometric combination rule), ``Lennard-Jones 1-4`` (its 1-4 pairs, a CustomBondForce);
* ``Coulomb``: the NonbondedForce's electrostatics alone (`keep_electrostatics_only`: the
  scaled charges by PME with the force field's exclusions), and ``NonbondedForce LJ``,
  the rest of that force (the dispersion correction; dropped when zero);
* ``torsion A-B-C-D``: the torsions again, by element quadruplet (ψ = φ − 180°,
  E = Σₙ Cₙ cosⁿψ, from the force's own coefficients).

The first two groups sum to the teacher's energy; the torsions by kind sum to
``torsions``. Units: meV per atom.
"""

from __future__ import annotations

import copy

import numpy as np
import openmm
import openmm.unit as u

from ionmix.chemistry.topology import molecules_of
from ionmix.teachers.classical.calculator import ClassicalCalculator
from ionmix.teachers.classical.system import (
    keep_electrostatics_only,
    make_context,
    make_system,
    openmm_cell,
)
from ionmix.units import KJ_PER_MOL_IN_EV

#: OpenMM's forces as `make_system` builds OPLS-AA, named by their term.
TERM_NAMES = {"HarmonicBondForce": "bonds", "HarmonicAngleForce": "angles",
              "RBTorsionForce": "torsions", "CustomNonbondedForce": "Lennard-Jones",
              "CustomBondForce": "Lennard-Jones 1-4", "NonbondedForce": "NonbondedForce"}


#: Names of the torsions by element quadruplet begin so (``torsion C-N-C-N``).
TORSION_KIND_PREFIX = "torsion "


def main_terms(terms: dict) -> dict:
    """The force field's terms of `energy_terms_meV_per_atom` (or of one of its rows): those
    that sum to the energy, without the torsions by kind."""
    return {k: v for k, v in terms.items() if not k.startswith(TORSION_KIND_PREFIX)}


def energy_terms_meV_per_atom(frames, calc: ClassicalCalculator) -> dict[str, np.ndarray]:
    """The energy of each of `frames` (one topology) by term, as `calc` prices it.

    Args:
        frames: periodic Atoms of one topology: the calculator's molecules, else those
            the first frame carries (``molecules_of``).
        calc: the classical teacher's calculator (its charge scale, cutoff, PME tolerance,
            LJ switch and ions), not an electrostatics-only one.

    Returns: term name → shape (n_frames,), meV/atom (the module docstring's terms).
    """
    if calc.electrostatics_only:
        raise ValueError("energy terms need the whole force field, not electrostatics only")
    kwargs = {"charge_scale": calc.charge_scale, "cutoff_A": calc.cutoff_A,
              "ewald_error_tolerance": calc.ewald_error_tolerance,
              "lj_switch_width_A": calc.lj_switch_width_A, "ions": calc.ions}
    molecules = calc.molecules if calc.molecules is not None else molecules_of(frames[0])
    csys = make_system(molecules, frames[0].cell.array, **kwargs)
    out = _force_terms(frames, csys, calc.platform)
    out.update(_torsions_by_kind(frames, csys.system))
    return {name: np.asarray(values) for name, values in out.items() if np.any(values)}


def _force_terms(frames, csys, platform) -> dict[str, list[float]]:
    names = []
    for index, force in enumerate(csys.system.getForces()):
        force.setForceGroup(index)
        names.append(TERM_NAMES.get(type(force).__name__, type(force).__name__))
    electrostatics = copy.deepcopy(csys.system)
    keep_electrostatics_only(electrostatics)
    whole = make_context(csys, platform=platform)
    coulomb = openmm.Context(electrostatics, openmm.VerletIntegrator(0.001),
                             whole.getPlatform())
    out: dict[str, list[float]] = {}
    for atoms in frames:
        box_A, rotation = openmm_cell(atoms.cell.array)
        for ctx in (whole, coulomb):
            ctx.setPeriodicBoxVectors(*[openmm.Vec3(*row) * 0.1 for row in box_A])  # nm
            ctx.setPositions(atoms.positions @ rotation * 0.1)
        row = {name: _kj_per_mol(whole.getState(getEnergy=True, groups={index}))
               for index, name in enumerate(names)}
        row["Coulomb"] = _kj_per_mol(coulomb.getState(getEnergy=True))
        row["NonbondedForce LJ"] = row.pop("NonbondedForce") - row["Coulomb"]
        for name, kj_per_mol in row.items():
            out.setdefault(name, []).append(kj_per_mol * KJ_PER_MOL_IN_EV * 1e3 / len(atoms))
    return out


def _kj_per_mol(state) -> float:
    return state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)


def _torsions_by_kind(frames, system: openmm.System) -> dict[str, list[float]]:
    rb = next((f for f in system.getForces() if isinstance(f, openmm.RBTorsionForce)), None)
    if rb is None or rb.getNumTorsions() == 0:
        return {}
    quads, coeffs = [], []
    for k in range(rb.getNumTorsions()):
        *quad, c0, c1, c2, c3, c4, c5 = rb.getTorsionParameters(k)
        quads.append(quad)
        coeffs.append([c.value_in_unit(u.kilojoule_per_mole) for c in (c0, c1, c2, c3, c4, c5)])
    symbols = frames[0].get_chemical_symbols()
    kinds = np.array(["-".join(symbols[i] for i in quad) for quad in quads])
    coeffs = np.asarray(coeffs)
    out: dict[str, list[float]] = {}
    for atoms in frames:
        cos_psi = -np.cos(np.radians(atoms.get_dihedrals(quads, mic=True)))
        energy_kj_per_mol = (coeffs * cos_psi[:, None] ** np.arange(6)).sum(axis=1)
        for kind in np.unique(kinds):
            total = energy_kj_per_mol[kinds == kind].sum() * KJ_PER_MOL_IN_EV * 1e3
            out.setdefault(TORSION_KIND_PREFIX + kind, []).append(total / len(atoms))
    return out
