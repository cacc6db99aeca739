"""A short-ranged repulsive wall between molecules: ZBL, switched off before any contact the
liquid makes.

Why not nequip's ZBL (the ``zbl`` baseline): it acts on every pair within the network's
r_max, bonds included, where it is large (C–H at 1.09 Å: 3.0 eV and 8.9 eV/Å; P–F at 1.6 Å:
5.7 eV and 16 eV/Å; ~80 eV per EMIM⁺), and the network must learn to cancel it; issue 22's
ablation measured the students' test force error three times higher with it. A wall
between atoms of *different* molecules, switched off by 1.6 Å, leaves every bond and every
contact of the liquid alone (the closest in the training frames: Li–F ≈ 1.8 Å, H–H ≈ 2 Å)
and repels only where no frame goes: the overlaps the students fell into (Li⁺ into PF6⁻
at 0.7 Å from P, H–H at 0.6–0.7 Å).

    E = Σ_{i<j, mol(i) ≠ mol(j)} E_ZBL(r_ij) · S(r_ij)

with the universal ZBL screening (Ziegler, Biersack, Littmark; LAMMPS ``pair_style zbl``'s
form) and S = 1 below `WALL_SWITCH_ON_A`, 0 from `WALL_CUTOFF_A`, a quintic smoothstep
between (continuous energy, forces and force derivatives). Forces and the virial stress are
analytic. Units: Å, eV, eV/Å, eV/Å³ (ASE's).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from vesin import NeighborList

from ionmix.units import COULOMB_CONSTANT_EV_A

__all__ = ["WALL_CUTOFF_A", "WALL_SWITCH_ON_A", "IntermolecularWall", "zbl_energy_eV"]

#: the wall is whole below this distance, Å
WALL_SWITCH_ON_A = 1.2
#: and zero from this one, Å
WALL_CUTOFF_A = 1.6
#: ZBL universal screening function: coefficients and exponents (a = 0.46850 Å / (Z1^0.23 +
#: Z2^0.23))
_PHI_C = np.array([0.18175, 0.50986, 0.28022, 0.02817])
_PHI_D = np.array([3.19980, 0.94229, 0.40290, 0.20162])


def zbl_energy_eV(z1, z2, r_A):
    """ZBL energy (eV) and its derivative dE/dr (eV/Å) of pairs with atomic numbers z1, z2 at
    distances r_A (arrays of one shape)."""
    a = 0.46850 / (np.power(z1, 0.23) + np.power(z2, 0.23))
    x = r_A / a
    expo = np.exp(-np.multiply.outer(x, _PHI_D))
    phi = expo @ _PHI_C
    dphi_dr = -(expo * _PHI_D) @ _PHI_C / a
    prefactor = COULOMB_CONSTANT_EV_A * z1 * z2
    energy = prefactor * phi / r_A
    return energy, prefactor * (dphi_dr / r_A - phi / r_A**2)


def _switch(r_A):
    """S(r) and dS/dr: 1 below the switch-on distance, 0 from the cutoff, quintic between."""
    t = np.clip((r_A - WALL_SWITCH_ON_A) / (WALL_CUTOFF_A - WALL_SWITCH_ON_A), 0.0, 1.0)
    s = 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t**2)
    ds = -30.0 * t**2 * (1.0 - t) ** 2 / (WALL_CUTOFF_A - WALL_SWITCH_ON_A)
    return s, ds


class IntermolecularWall(Calculator):
    """The wall (module docstring) as an ASE calculator: energy, forces, stress.

    Args:
        ions: the structure's ion set (name → Ion): molecule sizes, to read molecules from
            a frame's ``molecules`` info when it has no ``mol_id`` array.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, ions: Mapping | None = None):
        super().__init__()
        self.ions = ions

    def _molecule_index(self, atoms: Atoms) -> np.ndarray:
        from ionmix.chemistry.topology import MOL_ID_ARRAY, molecules_of

        if MOL_ID_ARRAY in atoms.arrays:
            return np.asarray(atoms.arrays[MOL_ID_ARRAY])
        sizes = [self.ions[name].n_atoms for name, count in molecules_of(atoms)
                 for _ in range(count)]
        return np.repeat(np.arange(len(sizes)), sizes)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        mol = self._molecule_index(atoms)
        # vesin's full list (each pair as (i, j) and (j, i)); ~10x faster than ASE's here
        i, j, r, d = NeighborList(cutoff=WALL_CUTOFF_A, full_list=True).compute(
            points=atoms.positions, box=atoms.cell.array, periodic=bool(all(atoms.pbc)),
            quantities="ijdD")
        keep = mol[i] != mol[j]
        i, j, r, d = i[keep], j[keep], r[keep], d[keep]
        z = atoms.numbers
        e_zbl, de_zbl = zbl_energy_eV(z[i].astype(float), z[j].astype(float), r)
        s, ds = _switch(r)
        # every pair appears as (i, j) and (j, i): half of each
        energy = 0.5 * float(np.sum(e_zbl * s))
        de_dr = 0.5 * (de_zbl * s + e_zbl * ds)
        pair_force = -(de_dr / r)[:, None] * d  # force on j from the pair, along d = r_j − r_i
        forces = np.zeros((len(atoms), 3))
        np.add.at(forces, j, pair_force)
        np.add.at(forces, i, -pair_force)
        self.results.update(energy=energy, free_energy=energy, forces=forces)
        if all(atoms.pbc):
            virial = d.T @ (-pair_force)  # Σ d ⊗ dE/dd
            sigma = virial / atoms.get_volume()
            sigma = 0.5 * (sigma + sigma.T)
            self.results["stress"] = sigma.flat[[0, 4, 8, 5, 2, 1]]
