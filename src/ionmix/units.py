"""Unit conversions used across ionmix, each checked against a hand calculation in tests.

ionmix works in ASE units at every interface: energies in eV, lengths in Å, forces in eV/Å,
stress in eV/Å³, masses in amu (g/mol), time in fs where named. OpenMM speaks kJ/mol, nm
and bar; these constants are the only place the two meet.
"""

from __future__ import annotations

import numpy as np
from ase import units as _ase

#: 1 kJ/mol expressed in eV (per particle): 1e3 J / N_A / e.
KJ_PER_MOL_IN_EV: float = _ase.kJ / _ase.mol
#: 1 kcal/mol expressed in eV.
KCAL_PER_MOL_IN_EV: float = _ase.kcal / _ase.mol
#: 1 nm in Å.
NM_IN_ANGSTROM: float = 10.0
#: 1 bar expressed in eV/Å³ (1 bar = 1e5 Pa; 1 eV/Å³ = 160.2176634 GPa).
BAR_IN_EV_PER_A3: float = _ase.bar
#: 1 eV/Å³ in Pa.
EV_PER_A3_IN_PA: float = 1.0 / (_ase.Pascal)
#: grams per amu (1 / Avogadro's number).
AMU_IN_G: float = 1.0 / _ase.mol
#: 1 Å³ in cm³ and in m³.
A3_IN_CM3: float = 1e-24
A3_IN_M3: float = 1e-30
#: SI constants (exact since 2019) for the properties in SI units (κ_T, D, σ).
BOLTZMANN_J_PER_K: float = 1.380649e-23
ELEMENTARY_CHARGE_C: float = 1.602176634e-19
AVOGADRO_PER_MOL: float = 6.02214076e23
#: Coulomb's constant e²/(4πε₀) in eV·Å (ASE's CODATA: 14.3996 eV·Å), the energy of two
#: unit charges 1 Å apart.
COULOMB_CONSTANT_EV_A: float = _ase.Hartree * _ase.Bohr


def kj_per_mol_to_ev(energy_kj_per_mol):
    """kJ/mol → eV. Accepts scalars or arrays of any shape."""
    return np.asarray(energy_kj_per_mol) * KJ_PER_MOL_IN_EV


def kj_per_mol_nm_to_ev_per_angstrom(force_kj_per_mol_nm):
    """Force kJ mol⁻¹ nm⁻¹ → eV/Å. Any shape, e.g. (n_atoms, 3)."""
    return np.asarray(force_kj_per_mol_nm) * KJ_PER_MOL_IN_EV / NM_IN_ANGSTROM


def bar_to_ev_per_a3(pressure_bar):
    """Pressure in bar → eV/Å³ (ASE's pressure/stress unit)."""
    return np.asarray(pressure_bar) * BAR_IN_EV_PER_A3


def ev_per_a3_to_bar(pressure_ev_per_a3):
    """Pressure/stress in eV/Å³ → bar."""
    return np.asarray(pressure_ev_per_a3) / BAR_IN_EV_PER_A3


def density_g_per_cm3(total_mass_amu: float, volume_A3: float) -> float:
    """Mass density in g/cm³ from the total mass (amu = g/mol) and the volume (Å³)."""
    if volume_A3 <= 0:
        raise ValueError(f"volume must be positive, got {volume_A3} Å³")
    return total_mass_amu * AMU_IN_G / (volume_A3 * A3_IN_CM3)


def volume_A3_for_density(total_mass_amu: float, density_g_cm3: float) -> float:
    """Volume (Å³) that holds `total_mass_amu` at `density_g_cm3` (inverse of the above)."""
    if density_g_cm3 <= 0:
        raise ValueError(f"density must be positive, got {density_g_cm3} g/cm³")
    return total_mass_amu * AMU_IN_G / (density_g_cm3 * A3_IN_CM3)
