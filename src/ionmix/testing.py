"""The reliability battery every energy model in ionmix runs (design.md, convention 5),
installed with ionmix so that a user's own calculator (a new teacher, a student with
another baseline) can be held to the same checks: ``from ionmix.testing import
CalculatorBattery`` (needs pytest).

One class, :class:`CalculatorBattery`, checks an ASE calculator on a small periodic
structure against what any energy model must obey, whatever it is (a classical force
field, a trained NequIP/Allegro model, and later xTB or DFT teachers):

- forces = -dE/dx, by central differences of the energy (step ``fd_step_A``);
- stress = (1/V) dE/dε, by central differences over a symmetric strain ε applied to the
  cell and to every atom (step ``strain_step``), ASE's sign convention and Voigt order;
- rotation of positions and cell together: energy invariant, forces and stress covariant;
- translation of every atom by a vector that is not a lattice vector, then wrapping;
- lattice shifts: atoms moved by whole lattice vectors (neighbour images, periodic bonds);
- permutation of the atoms (or of whole molecules, for calculators that need the
  molecule order);
- extensivity: a 2x1x1 supercell has twice the energy, the same forces on equivalent
  atoms and the same stress.

Units: eV, Å, eV/Å, eV/Å³ throughout (ASE's).

How to add a model: in a test module, subclass the battery with a class named ``Test...``
(so pytest collects it) that provides two fixtures and sets the tolerances::

    from ionmix.testing import ROUNDING_FLOAT64, CalculatorBattery, Tolerance

    class TestXTBBattery(CalculatorBattery):
        # measured on this structure: FD forces max 3e-7 eV/Å, ... (write them here)

        fd_force_atol_eV_per_A = 3e-6
        fd_stress_atol_eV_per_A3 = 1e-6
        rotation_tol = Tolerance(energy_eV=1e-9, force_eV_per_A=1e-8, stress_eV_per_A3=1e-9)
        translation_tol = lattice_shift_tol = permutation_tol = extensivity_tol = rotation_tol
        permutation = "atoms"   # or "molecules"; or None with a permutation_skip_reason

        @pytest.fixture(scope="class")
        @classmethod            # pytest >= 9: class-scoped fixtures are classmethods
        def calculator(cls):
            return XTBCalculator(...)   # an ASE calculator: energy, forces (and stress)

        @pytest.fixture(scope="class")
        @classmethod
        def structure(cls):
            return build_box({"Li": 2, "PF6": 2}, seed=0)  # periodic Atoms, tens of atoms

Tolerances come from the noise measured for that model, not from what makes the test
pass: run the helpers below (``numerical_forces``, ``numerical_stress``, ``rotated``,
``permuted``, ``supercell``, ``energy_forces_stress``) on the structure, see how the
deviation scales (an O(ε²) truncation error shrinks 4x when the step halves; float64
rounding does not), write the measured values in the class docstring, and set each
tolerance ~10x above them. A deterministic float64 model obeys the symmetries to
rounding (``ROUNDING_FLOAT64``); a PME force field only to its Ewald accuracy under
translation; a finite-difference stress only to its step's error. A model that lacks a
property or a symmetry says why in ``stress_skip_reason``, ``permutation_skip_reason`` or
``extensivity_skip_reason``; a known defect gets a strict xfail on the overridden test
(``super().test_...(...)``) with the measured size in its reason, so that fixing it is
noticed. Never loosen a tolerance to cover a defect.

Each evaluation attaches the one ``calculator`` to a fresh copy of a structure, so the
calculator must accept structures of other sizes and orders (a supercell, a permutation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator
from scipy.spatial.transform import Rotation

__all__ = [
    "ROUNDING_FLOAT64",
    "CalculatorBattery",
    "Tolerance",
    "energy_forces_stress",
    "numerical_forces",
    "numerical_stress",
    "permuted",
    "rotated",
    "supercell",
]

#: The per-atom array that numbers molecules (ionmix.build's convention).
MOL_ID = "mol_id"


@dataclass(frozen=True)
class Tolerance:
    """Absolute tolerances of one comparison: total energy (eV), every force component
    (eV/Å) and every stress component (eV/Å³)."""

    energy_eV: float
    force_eV_per_A: float
    stress_eV_per_A3: float


#: Tolerance of a symmetry that a deterministic float64 model obeys exactly: only rounding
#: is left. Measured for NequIP and Allegro (packaged, and checkpoints evaluated in
#: float64) on 32-172 atom structures: <= 4.4e-15 eV, 2.7e-14 eV/Å, 2.4e-16 eV/Å³; the
#: margin (>= 35x) covers summation orders that change with the thread count.
ROUNDING_FLOAT64 = Tolerance(energy_eV=1e-12, force_eV_per_A=1e-12, stress_eV_per_A3=1e-14)


# --------------------------------------------------------------------------- helpers


def energy_forces_stress(
    calculator: Calculator, atoms: Atoms, stress: bool = True
) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Energy (eV), forces (eV/Å, (n, 3)) and stress (eV/Å³, full 3x3, or None) of a copy
    of ``atoms`` with ``calculator`` attached."""
    a = atoms.copy()
    a.calc = calculator
    energy = a.get_potential_energy()
    forces = a.get_forces()
    sigma = a.get_stress(voigt=False) if stress else None
    return float(energy), np.array(forces), None if sigma is None else np.array(sigma)


def _energy(calculator: Calculator, atoms: Atoms) -> float:
    a = atoms.copy()
    a.calc = calculator
    return float(a.get_potential_energy())


def numerical_forces(
    calculator: Calculator, atoms: Atoms, indices: Sequence[int], step_A: float
) -> np.ndarray:
    """-dE/dx of the listed atoms by central differences with step ``step_A`` (Å).

    Returns an array (len(indices), 3), eV/Å.
    """
    out = np.zeros((len(indices), 3))
    for n, i in enumerate(indices):
        for k in range(3):
            energies = []
            for sign in (1.0, -1.0):
                moved = atoms.copy()
                moved.positions[i, k] += sign * step_A
                energies.append(_energy(calculator, moved))
            out[n, k] = -(energies[0] - energies[1]) / (2.0 * step_A)
    return out


def numerical_stress(calculator: Calculator, atoms: Atoms, strain_step: float) -> np.ndarray:
    """(1/V) dE/dε by central differences over a symmetric strain ε (dimensionless step
    ``strain_step``) applied to the cell and to every atom (``scale_atoms=True``).

    Returns the full 3x3 stress, eV/Å³, ASE's sign convention (positive under tension).
    For i != j the strain is ε_ij = ε_ji = h/2, so dE = V (σ_ij + σ_ji) h/2 = V σ_ij h.
    """
    volume = atoms.get_volume()
    sigma = np.zeros((3, 3))
    for i in range(3):
        for j in range(i, 3):
            energies = []
            for sign in (1.0, -1.0):
                strain = np.zeros((3, 3))
                strain[i, j] += sign * strain_step / 2.0
                strain[j, i] += sign * strain_step / 2.0
                deformed = atoms.copy()
                deformed.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
                energies.append(_energy(calculator, deformed))
            sigma[i, j] = sigma[j, i] = (energies[0] - energies[1]) / (2.0 * strain_step * volume)
    return sigma


#: A generic proper rotation (axis (1, 2, 3), 0.9 rad): no axis of the cell is kept.
ROTATION = Rotation.from_rotvec(0.9 * np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)).as_matrix()


def rotated(atoms: Atoms, rotation: np.ndarray = ROTATION) -> Atoms:
    """``atoms`` with positions and cell rotated together: r -> R r (rows: r @ R.T)."""
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ rotation.T)
    out.positions = atoms.positions @ rotation.T
    return out


def _molecules(atoms: Atoms) -> list[np.ndarray]:
    """Atom indices of each molecule, from the ``mol_id`` array (contiguous molecules)."""
    mol = np.asarray(atoms.arrays[MOL_ID])
    return [np.flatnonzero(mol == m) for m in dict.fromkeys(mol.tolist())]


def _renumber(atoms: Atoms, sizes: Sequence[int]) -> None:
    """Set ``mol_id`` to 0, 1, 2, ... for consecutive molecules of the given sizes."""
    atoms.arrays[MOL_ID] = np.repeat(np.arange(len(sizes)), sizes)


def permuted(atoms: Atoms, mode: str, seed: int = 1) -> tuple[Atoms, np.ndarray]:
    """A reordered copy of ``atoms`` and the order used (``new = atoms[order]``).

    mode ``"atoms"``: any permutation of the atoms. mode ``"molecules"``: whole molecules
    (from ``mol_id``) in a random order, each molecule's atoms kept in order, ``mol_id``
    renumbered; for calculators that build a topology from the molecule order.
    """
    rng = np.random.default_rng(seed)
    if mode == "atoms":
        order = rng.permutation(len(atoms))
        while len(atoms) > 1 and np.array_equal(order, np.arange(len(atoms))):
            order = rng.permutation(len(atoms))  # a small structure can draw the identity
        return atoms[order], order
    if mode != "molecules":
        raise ValueError(f"permutation mode must be 'atoms' or 'molecules', not {mode!r}")
    molecules = _molecules(atoms)
    shuffled = [molecules[m] for m in rng.permutation(len(molecules))]
    order = np.concatenate(shuffled)
    out = atoms[order]
    if MOL_ID in atoms.arrays:
        _renumber(out, [len(m) for m in shuffled])
    return out, order


def supercell(atoms: Atoms, repeats: tuple[int, int, int] = (2, 1, 1)) -> Atoms:
    """``atoms.repeat(repeats)`` with ``mol_id`` (if present) renumbered so that every
    copy of a molecule is a molecule of its own. Copy k holds atoms k*n ... (k+1)*n - 1."""
    out = atoms.repeat(repeats)
    if MOL_ID in atoms.arrays:
        sizes = [len(m) for m in _molecules(atoms)]
        _renumber(out, sizes * int(np.prod(repeats)))
    return out


def _assert_close(name: str, actual, expected, atol: float) -> None:
    """assert_allclose with atol only, and the largest deviation in the message."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    dev = float(np.max(np.abs(actual - expected)))
    assert dev <= atol, f"{name}: max deviation {dev:.3g} > tolerance {atol:.3g}"


# --------------------------------------------------------------------------- the battery

_REQUIRED = (
    "fd_force_atol_eV_per_A",
    "fd_stress_atol_eV_per_A3",
    "rotation_tol",
    "translation_tol",
    "lattice_shift_tol",
    "permutation_tol",
    "extensivity_tol",
)


class CalculatorBattery:
    """Checks every energy model must pass; see the module docstring for how to add one.

    Subclasses (named ``Test...``) provide the fixtures ``calculator`` (an ASE calculator)
    and ``structure`` (a small periodic ``ase.Atoms``), and set these class attributes:

    Attributes:
        fd_step_A: central-difference displacement for forces, Å.
        fd_atoms: indices of the atoms whose forces are differentiated; None: ``n_fd_atoms``
            atoms drawn with seed 0.
        n_fd_atoms: how many atoms, when ``fd_atoms`` is None (all if >= the atom count).
        fd_force_atol_eV_per_A: |F - (-dE/dx)| allowed, per component, eV/Å.
        strain_step: symmetric-strain step of the numerical stress (dimensionless).
        fd_stress_atol_eV_per_A3: |σ - (1/V) dE/dε| allowed, per component, eV/Å³.
        rotation_tol, translation_tol, lattice_shift_tol, permutation_tol, extensivity_tol:
            :class:`Tolerance` of each symmetry check (extensivity: the supercell's energy
            against twice the structure's).
        translation_A: the translation, Å (not a lattice vector).
        permutation: ``"atoms"`` (any order), ``"molecules"`` (whole molecules, from the
            ``mol_id`` array), or None with ``permutation_skip_reason`` saying why.
        stress_skip_reason: set (and the stress checks are skipped) for a model without
            stress; None: stress is checked everywhere.
        extensivity_skip_reason: set to skip the supercell check, saying why.
    """

    fd_step_A: float = 1e-4
    fd_atoms: Sequence[int] | None = None
    n_fd_atoms: int = 4
    strain_step: float = 1e-4
    translation_A: tuple[float, float, float] = (3.1, -7.7, 12.9)
    permutation: str | None = "atoms"
    permutation_skip_reason: str | None = None
    stress_skip_reason: str | None = None
    extensivity_skip_reason: str | None = None

    fd_force_atol_eV_per_A: float
    fd_stress_atol_eV_per_A3: float
    rotation_tol: Tolerance
    translation_tol: Tolerance
    lattice_shift_tol: Tolerance
    permutation_tol: Tolerance
    extensivity_tol: Tolerance

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__.startswith("Test"):
            missing = [name for name in _REQUIRED if not hasattr(cls, name)]
            if missing:
                raise TypeError(f"{cls.__name__} must set {', '.join(missing)} (battery.py)")
            if cls.permutation is None and not cls.permutation_skip_reason:
                raise TypeError(f"{cls.__name__}: permutation = None needs a "
                                "permutation_skip_reason")

    # fixtures the subclass must override
    @pytest.fixture
    def calculator(self) -> Calculator:
        raise NotImplementedError("the subclass provides the `calculator` fixture")

    @pytest.fixture
    def structure(self) -> Atoms:
        raise NotImplementedError("the subclass provides the `structure` fixture")

    # -------------------------------------------------------------------- helpers

    @property
    def _stress(self) -> bool:
        return self.stress_skip_reason is None

    def _check(self, name: str, tol: Tolerance, ref, other, forces_map=None,
               stress_map=None) -> None:
        """Compare (energy, forces, stress) of ``other`` with ``ref`` mapped by the symmetry."""
        e0, f0, s0 = ref
        e1, f1, s1 = other
        _assert_close(f"{name}: energy (eV)", e1, e0, tol.energy_eV)
        _assert_close(f"{name}: forces (eV/Å)", f1, f0 if forces_map is None else forces_map(f0),
                      tol.force_eV_per_A)
        if self._stress:
            _assert_close(f"{name}: stress (eV/Å³)", s1,
                          s0 if stress_map is None else stress_map(s0), tol.stress_eV_per_A3)

    # ---------------------------------------------------------------------- tests

    def test_forces_are_minus_energy_gradient(self, calculator, structure):
        _, forces, _ = energy_forces_stress(calculator, structure, stress=False)
        indices = self.fd_atoms
        if indices is None and self.n_fd_atoms >= len(structure):
            indices = range(len(structure))
        elif indices is None:
            rng = np.random.default_rng(0)
            indices = sorted(rng.choice(len(structure), self.n_fd_atoms, replace=False))
        numeric = numerical_forces(calculator, structure, indices, self.fd_step_A)
        _assert_close("forces vs -dE/dx (eV/Å)", forces[list(indices)], numeric,
                      self.fd_force_atol_eV_per_A)

    def test_stress_is_strain_derivative(self, calculator, structure):
        if not self._stress:
            pytest.skip(self.stress_skip_reason)
        _, _, stress = energy_forces_stress(calculator, structure)
        numeric = numerical_stress(calculator, structure, self.strain_step)
        _assert_close("stress vs (1/V) dE/dε (eV/Å³)", stress, numeric,
                      self.fd_stress_atol_eV_per_A3)
        _assert_close("stress symmetric (eV/Å³)", stress, stress.T, 1e-12)

    def test_rotation_invariance(self, calculator, structure):
        ref = energy_forces_stress(calculator, structure, self._stress)
        other = energy_forces_stress(calculator, rotated(structure), self._stress)
        self._check("rotation", self.rotation_tol, ref, other,
                    forces_map=lambda f: f @ ROTATION.T,
                    stress_map=lambda s: ROTATION @ s @ ROTATION.T)

    def test_translation_invariance(self, calculator, structure):
        ref = energy_forces_stress(calculator, structure, self._stress)
        moved = structure.copy()
        moved.translate(self.translation_A)
        moved.wrap()
        other = energy_forces_stress(calculator, moved, self._stress)
        self._check("translation", self.translation_tol, ref, other)

    def test_lattice_shift_invariance(self, calculator, structure):
        ref = energy_forces_stress(calculator, structure, self._stress)
        shifted = structure.copy()
        rng = np.random.default_rng(2)
        shifts = rng.integers(-2, 3, size=(len(structure), 3))  # whole lattice vectors
        shifted.positions += shifts @ structure.cell.array
        other = energy_forces_stress(calculator, shifted, self._stress)
        self._check("lattice shifts", self.lattice_shift_tol, ref, other)

    def test_permutation_invariance(self, calculator, structure):
        if self.permutation is None:
            pytest.skip(self.permutation_skip_reason)
        ref = energy_forces_stress(calculator, structure, self._stress)
        reordered, order = permuted(structure, self.permutation)
        assert not np.array_equal(order, np.arange(len(structure)))
        other = energy_forces_stress(calculator, reordered, self._stress)
        self._check(f"permutation of {self.permutation}", self.permutation_tol, ref, other,
                    forces_map=lambda f: f[order])

    def test_extensivity(self, calculator, structure):
        if self.extensivity_skip_reason is not None:
            pytest.skip(self.extensivity_skip_reason)
        e0, f0, s0 = energy_forces_stress(calculator, structure, self._stress)
        other = energy_forces_stress(calculator, supercell(structure, (2, 1, 1)), self._stress)
        self._check("2x1x1 supercell", self.extensivity_tol, (2.0 * e0, f0, s0), other,
                    forces_map=lambda f: np.concatenate([f, f]))
