"""The force field's dispersion beyond the network's cutoff, as a homogeneous-liquid tail.

A network of cutoff r_c sees no pair beyond r_c and not the volume. The classical teacher's
Lennard-Jones reaches further (its cutoff, 5.44 Å on the 188-atom Li/EMIM/PF6 box) and adds
a long-range correction for everything beyond, so its energy holds a cohesive part that
depends on the density of the whole box: on that box's sampled frames the Lennard-Jones
beyond 4.5 Å is −18.7 meV/atom on average and rises by 1.55 meV per Å³ of volume (−2.5 kbar).
The students learned all but 0.3–0.5 meV/Å³ of it from their local environment, and what
they missed is a free-energy lean toward larger boxes (docs/benchmarks.md,
`benchmarks/bench_dispersion_tail.py`). Putting the tail under the network takes it off
what the network must infer.

The tail is the Lennard-Jones of every pair beyond r_c in a homogeneous liquid (g(r) = 1):

    E_tail = K / V,   K = 2π Σ_a Σ_b ∫_{r_c}^∞ u_ab(r) r² dr   (a, b over all atoms)

the standard long-range correction (OpenMM's ``useLongRangeCorrection``, LAMMPS'
``pair_modify tail yes``) taken at the network's cutoff. On the frames above it equals the
teacher's Lennard-Jones beyond 4.5 Å to 0.13 meV/atom per frame, with 0.08 meV/Å³ of its
1.55 left in the difference. K depends only on how many of each ion the box holds, and is
computed in closed form from the force field's per-atom Lennard-Jones parameters (OpenMM's
own correction integrates a custom form numerically: 0.2 % apart, and not exactly
extensive). Forces are zero; the stress is σ_ii = −K / V² (σ = (1/V) ∂E/∂ε). Units: Å, eV,
eV/Å³ (ASE's).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from ionmix.units import KJ_PER_MOL_IN_EV, NM_IN_ANGSTROM

__all__ = ["DispersionTail", "lennard_jones_sha256", "tail_coefficient_eV_A3"]


#: the Lennard-Jones form of ionmix's topologies (GROMACS combination rule 3, geometric),
#: as OpenMM's GromacsTopFile writes it: per-particle A = √(4εσ¹²), C = √(4εσ⁶)
GEOMETRIC_LJ = "A1*A2/r^12-C1*C2/r^6"


def _ion_lennard_jones(ion) -> tuple[float, float, str]:
    """(Σ A, Σ C over the ion's atoms, in OpenMM units: √(kJ/mol)·nm⁶ and √(kJ/mol)·nm³;
    a 16-hex hash of the per-atom A and C), from a one-molecule OpenMM system; cached.

    ionmix's topologies combine geometrically (``[ defaults ] 1 3``): OpenMM then writes
    the Lennard-Jones as `GEOMETRIC_LJ` in a CustomNonbondedForce, or, for an ion of one
    atom type, as σ, ε in the NonbondedForce, where A = 2√ε σ⁶ and C = 2√ε σ³."""
    import openmm
    import openmm.unit as u

    from ionmix.models.baseline import BaselineError
    from ionmix.teachers.classical.system import make_system

    key = (ion.name, str(ion.itp_path))
    if key not in _ION_LJ:
        # keep the System referenced while its forces are read (they are views into it)
        system = make_system({ion.name: 1}, 30.0, ions={ion.name: ion}).system
        forces = system.getForces()
        custom = [f for f in forces if isinstance(f, openmm.CustomNonbondedForce)]
        if custom:
            if len(custom) != 1 or custom[0].getEnergyFunction() != GEOMETRIC_LJ:
                raise BaselineError(f"ion {ion.name}: the tail baseline needs the "
                                    f"Lennard-Jones form {GEOMETRIC_LJ}")
            lj = custom[0]
            names = [lj.getPerParticleParameterName(k) for k in range(2)]
            params = np.array([lj.getParticleParameters(i) for i in range(lj.getNumParticles())])
            a, c = params[:, names.index("A")], params[:, names.index("C")]
        else:
            plain = next(f for f in forces if isinstance(f, openmm.NonbondedForce))
            sigma_nm, eps_kj = np.array([
                (p[1].value_in_unit(u.nanometer), p[2].value_in_unit(u.kilojoule_per_mole))
                for p in (plain.getParticleParameters(i) for i in range(plain.getNumParticles()))
            ]).T
            a, c = 2.0 * np.sqrt(eps_kj) * sigma_nm**6, 2.0 * np.sqrt(eps_kj) * sigma_nm**3
        text = " ".join(f"{x:.12e}" for x in np.concatenate([a, c]))
        _ION_LJ[key] = (float(a.sum()), float(c.sum()),
                        hashlib.sha256(text.encode()).hexdigest()[:16])
    return _ION_LJ[key]


#: `_ion_lennard_jones` per (ion name, .itp path), computed once per process
_ION_LJ: dict[tuple[str, str], tuple[float, float, str]] = {}


def lennard_jones_sha256(ion) -> str:
    """A hash (16 hex) of one ion's Lennard-Jones terms as OpenMM builds them: what sets
    its tail."""
    return _ion_lennard_jones(ion)[2]


def tail_coefficient_eV_A3(molecules, ions: Mapping, cutoff_A: float) -> float:
    """K (eV·Å³) of a box of `molecules` ((ion name, count) pairs): with geometric
    combination, Σ_ab (A_a A_b / r¹² − C_a C_b / r⁶) over all atom pairs (each atom's own
    periodic images included, as g(r) = 1 counts them) integrates in closed form to
    K = 2π [(Σ A)² / (9 r_c⁹) − (Σ C)² / (3 r_c³)]."""
    sum_a = sum(count * _ion_lennard_jones(ions[name])[0] for name, count in molecules)
    sum_c = sum(count * _ion_lennard_jones(ions[name])[1] for name, count in molecules)
    rc_nm = cutoff_A / NM_IN_ANGSTROM
    k_kj_nm3 = 2.0 * np.pi * (sum_a**2 / (9.0 * rc_nm**9) - sum_c**2 / (3.0 * rc_nm**3))
    return k_kj_nm3 * KJ_PER_MOL_IN_EV * NM_IN_ANGSTROM**3


class DispersionTail(Calculator):
    """The tail (module docstring) as an ASE calculator: energy, forces (zero), stress.

    Args:
        ions: the structure's ion set (name → Ion): the force field's Lennard-Jones.
        cutoff_A: where the tail starts: the network's cutoff, Å.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, ions: Mapping, cutoff_A: float):
        super().__init__()
        self.ions = ions
        self.cutoff_A = float(cutoff_A)
        self._coefficients: dict[str, float] = {}  # molecules (encoded) → K, eV·Å³

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        from ionmix.chemistry.topology import encode_runs, molecules_of

        atoms = self.atoms
        molecules = molecules_of(atoms)
        key = encode_runs(molecules)
        if key not in self._coefficients:  # once per composition: K depends on nothing else
            self._coefficients[key] = tail_coefficient_eV_A3(molecules, self.ions, self.cutoff_A)
        k_eV_A3 = self._coefficients[key]
        volume_A3 = atoms.get_volume()
        energy = k_eV_A3 / volume_A3
        sigma = -k_eV_A3 / volume_A3**2
        self.results.update(energy=energy, free_energy=energy, forces=np.zeros((len(atoms), 3)),
                            stress=np.array([sigma, sigma, sigma, 0.0, 0.0, 0.0]))
