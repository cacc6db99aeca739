"""The force field's harmonic bonds and angles by term type: read them from an OpenMM
system, and set them to other parameters (a bonded prior refitted to a teacher,
`ionmix.models.bonded_fit`).

A term type is one force-field parameter set of one ion, named by a key such as
``"PF6 F-P r0=1.6060"`` or ``"EMIM C-N-C θ0=108.00"`` (ion, elements, the force field's
equilibrium value; two parameter sets that share all three are one type, fitted together).
Units: bonds k in eV/Å², r0 in Å; angles k in eV/rad², θ0 in rad
(energy ½ k (x − x0)², OpenMM's convention).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import openmm

from ionmix.errors import InputError
from ionmix.units import KJ_PER_MOL_IN_EV, NM_IN_ANGSTROM

__all__ = ["BondedFitError", "apply_parameters", "harmonic_terms"]


class BondedFitError(InputError):
    """A bonded prior that cannot be fitted or applied as asked."""


def _atom_ions(csys) -> list[str]:
    """Ion name of every atom of a `ClassicalSystem`, in atom order."""
    return [name for name, count in csys.molecules
            for _ in range(count * csys.ions[name].n_atoms)]


def harmonic_terms(csys) -> tuple[list, list]:
    """The harmonic bonds and angles of a `ClassicalSystem` (`make_system`), by term type.

    Returns:
        bonds ``[(force index, term index, (i, j), key, r0_A, k_eV_per_A2)]`` and angles
        ``[(force index, term index, (i, j, k), key, theta0_rad, k_eV_per_rad2)]``; a key
        names the ion, the elements and the force field's equilibrium value, e.g.
        ``"PF6 F-P r0=1.6060"`` or ``"EMIM C-N-C θ0=108.00"``.
    """
    ion, el = _atom_ions(csys), csys.elements
    bonds, angles = [], []
    for f, force in enumerate(csys.system.getForces()):
        if isinstance(force, openmm.HarmonicBondForce):
            for n in range(force.getNumBonds()):
                i, j, r0, k = force.getBondParameters(n)
                r0_A = r0.value_in_unit(openmm.unit.nanometer) * NM_IN_ANGSTROM
                k_eV = k.value_in_unit(k.unit) * KJ_PER_MOL_IN_EV / NM_IN_ANGSTROM**2
                key = f"{ion[i]} {'-'.join(sorted((el[i], el[j])))} r0={r0_A:.4f}"
                bonds.append((f, n, (i, j), key, r0_A, k_eV))
        elif isinstance(force, openmm.HarmonicAngleForce):
            for n in range(force.getNumAngles()):
                i, j, k_, t0, k = force.getAngleParameters(n)
                t0_rad = t0.value_in_unit(openmm.unit.radian)
                a, b = sorted((el[i], el[k_]))
                key = f"{ion[j]} {a}-{el[j]}-{b} θ0={np.degrees(t0_rad):.2f}"
                angles.append((f, n, (i, j, k_), key, t0_rad,
                               k.value_in_unit(k.unit) * KJ_PER_MOL_IN_EV))
    return bonds, angles


def apply_parameters(csys, parameters: Mapping[str, Sequence[float]], where: str) -> None:
    """Set the harmonic bonds and angles of `csys` (in place) to fitted `parameters`
    (key → (k, x0), `harmonic_terms` units); BondedFitError naming `where` and the first
    term type the fit does not have."""
    bonds, angles = harmonic_terms(csys)
    forces = csys.system.getForces()
    for f, n, atoms, key, _, _ in bonds + angles:
        if key not in parameters:
            raise BondedFitError(f"{where}: the fitted bonded prior has no term {key!r} (it "
                                 "was fitted on frames without it)")
        k, x0 = (float(v) for v in parameters[key])
        if len(atoms) == 2:
            forces[f].setBondParameters(n, *atoms, x0 / NM_IN_ANGSTROM,
                                        k / KJ_PER_MOL_IN_EV * NM_IN_ANGSTROM**2)
        else:
            forces[f].setAngleParameters(n, *atoms, x0, k / KJ_PER_MOL_IN_EV)
