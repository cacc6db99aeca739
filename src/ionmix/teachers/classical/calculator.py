"""ASE calculator for the classical (OpenMM, OPLS) force field: energy, forces and stress.

The calculator keeps one OpenMM Context per topology and only updates positions and box
vectors between calls. Any cell works: it is rotated into OpenMM's lower-triangular frame
(forces and stress are rotated back) and lattice-reduced. The PME grid is chosen by OpenMM
when the Context is created; if a box width later drifts by more than 5 % from that
reference, the Context is rebuilt for the new box.

Stress is the central finite-difference derivative of the energy with respect to a small
homogeneous strain (``strain_step``, default 1e-3) applied to the cell and to *every atom*
(affine, atomic scaling; molecules deform with the box). This is the atomic virial stress,
the quantity an MLIP predicts from atomic positions and the one it should be trained on;
OpenMM's MonteCarloBarostat pressure uses the molecular virial (molecule centres scaled,
molecules rigid), which differs instantaneously but has the same equilibrium average.
Convention: ASE's, ``stress = (1/V) dE/d(strain)`` in Voigt order (xx, yy, zz, yz, xz, xy),
eV/Å³; positive under tension; pressure = -trace/3. No kinetic contribution.

Why a strain step of 1e-3 and not smaller: the PME real-space sum is truncated at the cutoff,
so the energy jumps by ~1e-6 eV whenever a pair crosses it, and the CPU platform evaluates
pair terms in single precision. With steps of 1e-5 these jumps and rounding errors are
divided by a tiny strain and give stress errors of hundreds of bar (340-atom box); with 1e-3
the error against a converged reference (Ewald tolerance 1e-8, step 1e-5, double precision)
is ~6-9 bar, the O(h^2) truncation error ~0.5 bar. 12 extra energy evaluations per stress.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import openmm
import openmm.unit as u
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from ionmix.chemistry.ions import Ion
from ionmix.chemistry.topology import molecules_of
from ionmix.teachers.classical.harmonic import apply_parameters
from ionmix.teachers.classical.system import (
    DEFAULT_CHARGE_SCALE,
    DEFAULT_EWALD_ERROR_TOLERANCE,
    DEFAULT_LJ_SWITCH_WIDTH_A,
    ClassicalSystem,
    ClassicalSystemError,
    make_context,
    make_system,
    max_cutoff_A,
    molecule_runs,
    openmm_cell,
)
from ionmix.units import KJ_PER_MOL_IN_EV, NM_IN_ANGSTROM

__all__ = ["ClassicalCalculator"]

#: Rebuild the OpenMM Context (new PME grid) when a box width changes by more than this.
REBUILD_RELATIVE_WIDTH_CHANGE: float = 0.05


class ClassicalCalculator(Calculator):
    """OPLS force field of the ion library, evaluated by OpenMM, as an ASE calculator.

    Args:
        molecules: composition runs ``{ion: count}`` or ``[(ion, count), ...]`` in atom order.
            Default: read from each frame (``ionmix.chemistry.topology.molecules_of``).
        charge_scale: factor on every partial charge (default 0.8).
        cutoff_A: real-space/LJ cutoff, Å; default min(12, 0.49 x shortest box width) of
            the first box seen. Kept fixed afterwards; a later box too small for it raises.
        ewald_error_tolerance: PME relative error tolerance.
        lj_switch_width_A: LJ switching width below the cutoff, Å (None: plain truncation).
        platform: OpenMM platform name ('Reference', 'CPU', 'CUDA', ...) or None for the
            best available. 'Reference' is double precision throughout (used by tests).
        platform_properties: OpenMM platform properties, e.g. ``{"Threads": "2"}`` or
            ``{"Precision": "double"}``.
        strain_step: strain amplitude of the finite-difference stress (dimensionless).
        ions: extra ions by name (e.g. from ``load_user_ion``).
        electrostatics_only: only the scaled charges' PME electrostatics with the force
            field's exclusions (`ionmix.teachers.classical.system.keep_electrostatics_only`):
            the Coulomb baseline of a student. Its real-space cutoff is rechosen (default
            rule) when a box becomes too small for it, since the PME total does not depend
            on it.
        bonded_only: only the force field's bonded terms (bonds, angles, torsions:
            `ionmix.teachers.classical.system.keep_bonded_only`): the bonded baseline of a
            student. No term depends on the cutoff, which follows the box likewise. Its
            stress is the exact virial of whole molecules (`_bonded_stress`), not a finite
            difference.
        bonded_parameters: with ``bonded_only``, the harmonic bonds' and angles' (k, x0)
            by term type (`ionmix.teachers.classical.harmonic`) instead of the force
            field's: a bonded prior refitted to a teacher. Torsions stay the force field's.

    Results: ``energy``/``free_energy`` (eV), ``forces`` (eV/Å, shape (n_atoms, 3)),
    ``stress`` (eV/Å³, Voigt 6-vector, ASE sign convention).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]
    default_parameters: dict = {}

    def __init__(
        self,
        molecules: Mapping[str, int] | Sequence[tuple[str, int]] | None = None,
        *,
        charge_scale: float = DEFAULT_CHARGE_SCALE,
        cutoff_A: float | None = None,
        ewald_error_tolerance: float = DEFAULT_EWALD_ERROR_TOLERANCE,
        lj_switch_width_A: float | None = DEFAULT_LJ_SWITCH_WIDTH_A,
        platform: str | None = None,
        platform_properties: Mapping[str, str] | None = None,
        strain_step: float = 1e-3,
        ions: Mapping[str, Ion] | None = None,
        electrostatics_only: bool = False,
        bonded_only: bool = False,
        bonded_parameters: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        self.molecules = None if molecules is None else molecule_runs(molecules, ions)
        self.charge_scale = float(charge_scale)
        self.cutoff_A = cutoff_A
        self.ewald_error_tolerance = float(ewald_error_tolerance)
        self.lj_switch_width_A = lj_switch_width_A
        self.platform = platform
        self.platform_properties = dict(platform_properties or {})
        self.strain_step = float(strain_step)
        self.ions = ions
        self.electrostatics_only = bool(electrostatics_only)
        self.bonded_only = bool(bonded_only)
        if self.electrostatics_only and self.bonded_only:
            raise ClassicalSystemError("electrostatics_only and bonded_only exclude each other")
        if bonded_parameters is not None and not self.bonded_only:
            raise ClassicalSystemError("bonded_parameters set the bonded terms of a "
                                       "bonded_only calculator; this one is not")
        self.bonded_parameters = None if bonded_parameters is None else dict(bonded_parameters)
        self.classical_system: ClassicalSystem | None = None
        self._context: openmm.Context | None = None
        self._reference_widths_A: np.ndarray | None = None
        # recorded by ASE (e.g. in a database row) as the calculator's parameters
        self.parameters.update(
            charge_scale=self.charge_scale,
            cutoff_A=cutoff_A,
            ewald_error_tolerance=self.ewald_error_tolerance,
            lj_switch_width_A=lj_switch_width_A,
            strain_step=self.strain_step,
            electrostatics_only=self.electrostatics_only,
            bonded_only=self.bonded_only,
        )

    #: What `set` may change (each is in ``parameters``); molecules and ions are the
    #: topology: a new calculator for another box.
    SETTABLE = ("charge_scale", "cutoff_A", "ewald_error_tolerance", "lj_switch_width_A",
                "strain_step", "electrostatics_only", "bonded_only")

    def set(self, **kwargs) -> dict:
        """ASE's contract: update ``parameters``, drop the results, and rebuild what depends
        on a changed value (the OpenMM system, at the next calculation). Returns the
        changed parameters; an unknown name is a `ClassicalSystemError`."""
        unknown = sorted(set(kwargs) - set(self.SETTABLE))
        if unknown:
            raise ClassicalSystemError(f"ClassicalCalculator.set: unknown parameter(s) "
                                       f"{unknown}; settable: {', '.join(self.SETTABLE)}")
        changed = super().set(**kwargs)
        if changed:
            self.reset()
            self.charge_scale = float(self.parameters["charge_scale"])
            self.cutoff_A = self.parameters["cutoff_A"]
            self.ewald_error_tolerance = float(self.parameters["ewald_error_tolerance"])
            self.lj_switch_width_A = self.parameters["lj_switch_width_A"]
            self.strain_step = float(self.parameters["strain_step"])
            self.electrostatics_only = bool(self.parameters["electrostatics_only"])
            self.bonded_only = bool(self.parameters["bonded_only"])
            self.classical_system, self._context, self._reference_widths_A = None, None, None
        return changed

    # ---------------------------------------------------------------- set-up

    def _setup(self, atoms) -> None:
        """Build the System (once per topology) and a Context for the current box."""
        if self.molecules is not None:
            molecules = self.molecules
        else:
            molecules = molecule_runs(molecules_of(atoms), self.ions)
        if (self.electrostatics_only or self.bonded_only) and \
                self.classical_system is not None and \
                self.classical_system.cutoff_A > max_cutoff_A(atoms.cell.array):
            # PME's total does not depend on the real-space cutoff (to its tolerance), and
            # bonded terms not at all, so either alone may follow a shrinking box with a
            # shorter one
            self.classical_system, self.cutoff_A = None, None
        if self.classical_system is None or self.classical_system.molecules != molecules:
            csys = make_system(
                molecules,
                atoms.cell.array,
                charge_scale=self.charge_scale,
                cutoff_A=self.cutoff_A,
                ewald_error_tolerance=self.ewald_error_tolerance,
                lj_switch_width_A=self.lj_switch_width_A,
                ions=self.ions,
                electrostatics_only=self.electrostatics_only,
                bonded_only=self.bonded_only,
            )
            if self.bonded_parameters is not None:
                apply_parameters(csys, self.bonded_parameters, "bonded_parameters")
            symbols = atoms.get_chemical_symbols()
            if len(symbols) != csys.n_atoms:
                raise ClassicalSystemError(
                    f"atoms has {len(symbols)} atoms, the composition {csys.molecules} has "
                    f"{csys.n_atoms}"
                )
            for i, (have, want) in enumerate(zip(symbols, csys.elements, strict=True)):
                if have != want:
                    raise ClassicalSystemError(
                        f"atom {i} is {have} but the topology {csys.molecules} has {want} there"
                    )
            self.classical_system = csys
            self.cutoff_A = csys.cutoff_A
            self.parameters["cutoff_A"] = csys.cutoff_A
            self._context = None
        self._ensure_context(atoms.cell.array)

    def _check_box(self, cell_A: np.ndarray) -> None:
        """Raise if the cell is too small for the (fixed) cutoff."""
        assert self.classical_system is not None
        limit = max_cutoff_A(cell_A)
        if self.classical_system.cutoff_A > limit:
            raise ClassicalSystemError(
                f"cutoff_A = {self.classical_system.cutoff_A:.4g} Å exceeds half the shortest "
                f"box width of this cell, {limit:.4g} Å; the box shrank below twice the cutoff"
            )

    def _ensure_context(self, cell_A: np.ndarray) -> None:
        self._check_box(cell_A)
        box_A, _ = openmm_cell(cell_A)
        widths = np.diag(box_A)
        if self._context is not None and self._reference_widths_A is not None:
            change = np.abs(widths / self._reference_widths_A - 1.0)
            if np.all(change <= REBUILD_RELATIVE_WIDTH_CHANGE):
                return
        assert self.classical_system is not None
        system = self.classical_system.system
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box_A / NM_IN_ANGSTROM])
        self._context = make_context(
            self.classical_system, platform=self.platform, properties=self.platform_properties
        )
        self._reference_widths_A = widths

    # ---------------------------------------------------------------- evaluation

    def _evaluate(
        self, positions_A: np.ndarray, cell_A: np.ndarray, forces: bool
    ) -> tuple[float, np.ndarray | None]:
        """Energy (eV) and optionally forces (eV/Å, (n, 3)) at the given positions and cell."""
        assert self.classical_system is not None and self._context is not None
        self._check_box(cell_A)
        box_A, rotation = openmm_cell(cell_A)
        box_nm = box_A / NM_IN_ANGSTROM
        self._context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box_nm])
        self._context.setPositions(positions_A @ rotation / NM_IN_ANGSTROM)
        state = self._context.getState(getEnergy=True, getForces=forces)
        energy_eV = (
            state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * KJ_PER_MOL_IN_EV
        )
        if not forces:
            return float(energy_eV), None
        f = state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
        f_eV_per_A = np.asarray(f) * KJ_PER_MOL_IN_EV / NM_IN_ANGSTROM
        return float(energy_eV), f_eV_per_A @ rotation.T

    def _stress(self, positions_A: np.ndarray, cell_A: np.ndarray) -> np.ndarray:
        """Finite-difference strain derivative of the energy, Voigt 6-vector (eV/Å³)."""
        h = self.strain_step
        volume = abs(np.linalg.det(cell_A))
        sigma = np.zeros((3, 3))
        for i in range(3):
            for j in range(i, 3):
                strain = np.zeros((3, 3))
                strain[i, j] = strain[j, i] = h
                e_plus, _ = self._evaluate(
                    positions_A @ (np.eye(3) + strain), cell_A @ (np.eye(3) + strain), False
                )
                e_minus, _ = self._evaluate(
                    positions_A @ (np.eye(3) - strain), cell_A @ (np.eye(3) - strain), False
                )
                # diagonal: dE/de_ii; off-diagonal: the symmetric strain moves e_ij and e_ji
                sigma[i, j] = sigma[j, i] = (e_plus - e_minus) / (
                    (2.0 if i == j else 4.0) * h * volume
                )
        return full_3x3_to_voigt_6_stress(sigma)

    def _bonded_stress(self, positions_A: np.ndarray, cell_A: np.ndarray,
                       forces_eV_per_A: np.ndarray) -> np.ndarray:
        """The stress of bonded terms alone, Voigt 6-vector (eV/Å³): σ = −(1/V) Σᵢ rᵢ ⊗ Fᵢ
        with each molecule made whole (minimum image from its first atom). Exact: every
        term lies within one molecule and its forces sum to zero, so where the molecule
        sits does not matter."""
        from ase.geometry import find_mic

        assert self.classical_system is not None
        whole = positions_A.copy()
        start = 0
        for name, count in self.classical_system.molecules:
            size = self.classical_system.ions[name].n_atoms
            for _ in range(count):
                sel = slice(start, start + size)
                arms, _ = find_mic(positions_A[sel] - positions_A[start], cell_A, pbc=True)
                whole[sel] = positions_A[start] + arms
                start += size
        virial = whole.T @ forces_eV_per_A
        sigma = -(virial + virial.T) / (2.0 * abs(np.linalg.det(cell_A)))
        return full_3x3_to_voigt_6_stress(sigma)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        """Compute the requested properties for ``atoms`` (see the class docstring)."""
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if not np.all(atoms.pbc):
            raise ClassicalSystemError("ClassicalCalculator needs a periodic cell (pbc all True)")
        self._setup(atoms)
        positions = atoms.get_positions()
        cell = atoms.cell.array.copy()
        energy, forces = self._evaluate(positions, cell, True)
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["forces"] = forces
        if "stress" in properties:
            self.results["stress"] = self._bonded_stress(positions, cell, forces) \
                if self.bonded_only else self._stress(positions, cell)
