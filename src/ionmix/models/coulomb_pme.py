"""The Coulomb baseline by torch-pme: energy, forces and stress from one autograd pass.

`CoulombPME` computes the same quantity as the OpenMM Coulomb baseline
(``coulomb_calculator(baseline, ions)``, `ionmix.models.baseline`): the frame's point charges
(the ion set's partial charges x the charge scale) summed by PME, with the force field's
exclusions (within a molecule, pairs 1-2 and 1-3 bonds apart excluded, 1-4 pairs x 0.5,
every other pair in full). The charges and the exceptions are read from the very OpenMM
System the baseline uses (`ionmix.teachers.classical.system.make_system` with
``electrostatics_only``), so the two agree by construction:

    E = E_PME(all pairs, torch-pme) + k_e Σ_exceptions (c_ij - q_i q_j) / r_ij

where c_ij is the exception's charge product in the OpenMM NonbondedForce (0 for an
excluded pair, 0.5 q_i q_j for a 1-4 pair), r_ij the minimum-image distance (the pairs are
within a molecule, far below half a box) and k_e Coulomb's constant in eV·Å.

Forces and stress are derivatives of that energy by autograd (float64): the positions and
the cell are deformed by ``(I + ε)`` with ε = 0 and ``stress = (1/V) dE/dε`` (ASE's sign
convention, Voigt order xx, yy, zz, yz, xz, xy, eV/Å³), symmetrised. One energy evaluation
and one backward pass per call, where the OpenMM calculator needs 13 PME evaluations for a
stress (a central finite difference over 6 strain components).

The mesh sum is torch-pme's P3M (`torchpme.P3MCalculator`: B-spline charge assignment of
order 5, smooth PME-style deconvolution), with its influence function evaluated along the
cell axes (`_CellAxesP3MFilter`: torch-pme 0.5's is right only for cells along x, y, z).
On the same 32³ mesh it is 3-10x more accurate than torch-pme's Lagrange-interpolated
`PMECalculator`, and its energy is a smooth function of the positions (Lagrange
interpolation is only continuous). Its parameters (`choose_pme_settings`) follow an
accuracy target, the RMS force error of torch-pme's error bounds
(`torchpme.tuning.p3m.P3MErrorBounds`), in eV/Å: the real-space cutoff is
min(12 Å, 0.49 x the shortest box width) as in the classical code (its very rule), the
mesh the coarsest power of two (torch-pme's meshes are powers of two) on which some
smearing meets the target, the smearing the one that minimises the bound there. The
parameters are chosen with the first box and kept (the energy stays a smooth function of
the geometry); they are rechosen only when the molecules change or the box shrinks below
twice the cutoff. The mesh spacing sits in the middle of its power-of-two bracket, so the
mesh itself changes only if a box edge grows or shrinks by about a third.

Units at the interface are ASE's: Å, e, eV, eV/Å, eV/Å³.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torchpme
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.geometry import find_mic
from ase.stress import full_3x3_to_voigt_6_stress
from torchpme.lib.kspace_filter import P3MKSpaceFilter
from torchpme.tuning.p3m import P3MErrorBounds
from vesin import NeighborList

from ionmix.chemistry.ions import Ion
from ionmix.chemistry.topology import molecules_of
from ionmix.errors import InputError
from ionmix.teachers.classical.system import default_cutoff_A, max_cutoff_A

__all__ = [
    "COULOMB_CONSTANT_EV_A",
    "DEFAULT_FORCE_ACCURACY_EV_PER_A",
    "CoulombPME",
    "CoulombPMEError",
    "CoulombTopology",
    "PMESettings",
    "choose_pme_settings",
    "coulomb_energy_eV",
    "coulomb_topology",
    "max_cutoff_A",
]

#: Coulomb's constant 1/(4 π ε0) in eV·Å/e² (torch-pme's; OpenMM's, through ionmix.units,
#: differs by < 3e-8 relative: < 1e-6 eV on these boxes).
COULOMB_CONSTANT_EV_A: float = torchpme.prefactors.eV_A
#: RMS force error target of the PME sum, eV/Å (torch-pme's P3M error bounds, which are
#: estimates: 2x optimistic on 50 atoms). On the 50-, 86- and 188-atom Li/EMIM/PF6 boxes it
#: gives a 32³ mesh and errors against a converged Ewald sum of 1.4e-5, 3.7e-6, 1.8e-6 eV;
#: RMS 2.3e-5, 1.3e-5, 9.4e-6 eV/Å; 1.1e-7, 2.5e-8, 5.2e-8 eV/Å³. OpenMM at Ewald tolerance
#: 5e-5: 9e-5, 7e-5, 3e-4 eV; 2.7e-5, 1.4e-5, 1.7e-5 eV/Å; 2-8e-6 eV/Å³ (finite-difference
#: stress); at 1e-5: 1.5e-5-5e-5 eV, 2.6e-6-5e-6 eV/Å, 0.3-1.5e-6 eV/Å³. A target of 3e-6
#: takes a 64³ mesh: 1-2e-6 eV/Å RMS, 3-4x the cost.
DEFAULT_FORCE_ACCURACY_EV_PER_A: float = 1e-5
#: P3M charge-assignment order (B-splines of degree 4, the most torch-pme offers).
INTERPOLATION_NODES: int = 5


class CoulombPMEError(InputError):
    """A structure the torch-pme Coulomb baseline cannot evaluate (cell, topology)."""


# --------------------------------------------------------------------------------------
# what is summed: charges and exceptions, from the OpenMM System of the baseline


@dataclass(frozen=True)
class CoulombTopology:
    """The charges of a box and its intramolecular exceptions, as OpenMM's baseline has them.

    Attributes:
        molecules: ordered runs ``((ion_name, count), ...)``: the atom order.
        elements: element symbol per atom, length n_atoms.
        charges_e: scaled partial charges, shape (n_atoms,), e.
        pairs: atom index pairs (i, j) of the exceptions, shape (n_pairs, 2), int.
        pair_charge_products_e2: the charge product each exception keeps, shape (n_pairs,),
            e²: 0 for an excluded pair (1-2, 1-3), 0.5 q_i q_j for a 1-4 pair.
    """

    molecules: tuple[tuple[str, int], ...]
    elements: tuple[str, ...]
    charges_e: np.ndarray
    pairs: np.ndarray
    pair_charge_products_e2: np.ndarray

    @property
    def n_atoms(self) -> int:
        return len(self.charges_e)

    def pair_weights(self) -> np.ndarray:
        """Each exception's weight c_ij / (q_i q_j) (0 excluded, 0.5 for 1-4), shape
        (n_pairs,); NaN where q_i q_j = 0."""
        full = self.charges_e[self.pairs[:, 0]] * self.charges_e[self.pairs[:, 1]]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(full != 0, self.pair_charge_products_e2 / full, np.nan)


def coulomb_topology(molecules, cell_A, charge_scale: float,
                     ions: Mapping[str, Ion] | None = None) -> CoulombTopology:
    """The charges and exceptions of the OpenMM Coulomb baseline's System for `molecules`.

    Args:
        molecules: ``[(ion, count), ...]`` runs in atom order (or ``{ion: count}``).
        cell_A: the box (3x3 row vectors, Å); only needed to build the System.
        charge_scale: factor on the ion set's partial charges.
        ions: the structure's ion set (extra ions by name, looked up before the library).
    """
    import openmm.unit as u

    from ionmix.teachers.classical.system import make_system

    csys = make_system(molecules, cell_A, charge_scale=charge_scale, ions=ions,
                       electrostatics_only=True)
    (nb,) = csys.system.getForces()
    pairs, products = [], []
    for k in range(nb.getNumExceptions()):
        i, j, qq, _, _ = nb.getExceptionParameters(k)
        pairs.append((i, j))
        products.append(qq.value_in_unit(u.elementary_charge**2))
    return CoulombTopology(molecules=csys.molecules, elements=csys.elements,
                           charges_e=csys.charges_e(),
                           pairs=np.array(pairs, dtype=np.int64).reshape(-1, 2),
                           pair_charge_products_e2=np.array(products, dtype=float))


# --------------------------------------------------------------------------------------
# PME parameters from an accuracy target


@dataclass(frozen=True)
class PMESettings:
    """torch-pme parameters of one box (lengths in Å).

    Attributes:
        cutoff_A: real-space cutoff (neighbour list), Å.
        smearing_A: width σ of the Gaussians that split 1/r (Ewald α = 1/(√2 σ)), Å.
        mesh_spacing_A: torch-pme's ``mesh_spacing``; the mesh has 2^ceil(log2(2 L / h + 1))
            points along an edge of length L.
        interpolation_nodes: P3M charge-assignment order (mesh points per axis per atom).
        force_accuracy_eV_per_A: the RMS force error target they were chosen for, eV/Å.
        estimated_error_eV_per_A: torch-pme's error bound for them, eV/Å.
    """

    cutoff_A: float
    smearing_A: float
    mesh_spacing_A: float
    interpolation_nodes: int
    force_accuracy_eV_per_A: float
    estimated_error_eV_per_A: float


def choose_pme_settings(charges_e: np.ndarray, cell_A: np.ndarray,
                        force_accuracy_eV_per_A: float = DEFAULT_FORCE_ACCURACY_EV_PER_A,
                        cutoff_A: float | None = None,
                        interpolation_nodes: int = INTERPOLATION_NODES) -> PMESettings:
    """Cutoff, smearing and mesh for `charges_e` (shape (n_atoms,), e) in the box `cell_A`
    (3x3 row vectors, Å) that meet an RMS force error target (eV/Å) by torch-pme's P3M
    error bounds; deterministic (no timing runs).

    The cutoff is `cutoff_A` or min(12 Å, 0.49 x the shortest box width). The mesh is the
    coarsest power of two (points along the shortest edge) for which some smearing meets
    the target; the smearing is the one that minimises the bound on that mesh.
    """
    cell = torch.as_tensor(np.asarray(cell_A, float))
    charges = torch.as_tensor(np.asarray(charges_e, float)).reshape(-1, 1)
    positions = torch.zeros((len(charges), 3), dtype=torch.float64)  # only their count counts
    if cutoff_A is None:
        cutoff_A = default_cutoff_A(cell_A)
    _check_cutoff(cutoff_A, cell_A)
    bounds = P3MErrorBounds(charges, cell, positions)
    # the bounds are for prefactor 1 (Gaussian units, e²/Å²)
    bound_eV_per_A = lambda smearing, spacing: COULOMB_CONSTANT_EV_A * torch.sqrt(  # noqa: E731
        bounds.err_rspace(smearing, torch.tensor(cutoff_A)) ** 2
        + bounds.err_kspace(smearing, spacing, torch.tensor(interpolation_nodes)) ** 2)
    smearings_A = torch.linspace(cutoff_A / 6.0, cutoff_A / 2.0, 400, dtype=torch.float64)
    shortest_edge_A = float(torch.linalg.norm(cell, dim=1).min())
    for points in (2**k for k in range(2, 10)):
        # the bounds' spacing L / (2 L / h + 1) is then L / points along the shortest edge
        errors = bound_eV_per_A(smearings_A, torch.tensor(2.0 * shortest_edge_A / (points - 1)))
        best = int(torch.argmin(errors))
        if errors[best] <= force_accuracy_eV_per_A:
            break
    else:
        raise CoulombPMEError(f"no PME mesh up to 512 points per edge meets a force accuracy "
                              f"of {force_accuracy_eV_per_A:g} eV/Å")
    # torch-pme gives 2^ceil(log2(2 L / h + 1)) points along an edge L: put 2 L / h + 1 in
    # the middle of (points / 2, points] so that the mesh stays as the box changes
    spacing_A = 2.0 * shortest_edge_A / (0.75 * points - 1.0)
    return PMESettings(cutoff_A=float(cutoff_A), smearing_A=float(smearings_A[best]),
                       mesh_spacing_A=spacing_A, interpolation_nodes=interpolation_nodes,
                       force_accuracy_eV_per_A=float(force_accuracy_eV_per_A),
                       estimated_error_eV_per_A=float(errors[best]))


def _check_cutoff(cutoff_A: float, cell_A) -> None:
    limit = max_cutoff_A(cell_A)
    if not 0 < cutoff_A <= limit:
        raise CoulombPMEError(f"cutoff_A = {cutoff_A:.4g} Å must be positive and at most half "
                              f"the shortest box width, {limit:.4g} Å")


class _CellAxesP3MFilter(P3MKSpaceFilter):
    """torch-pme 0.5's P3M influence function (point charges, ``mode=0``: 1 / |U(k)|², U the
    Fourier transform of the B-spline charge assignment) with U evaluated along the cell
    axes.

    The assignment is a product of B-splines along the cell vectors a_i, with n_i mesh
    points each, so U(k) = Π_i sinc(k·a_i / (2 n_i))^p, where k·a_i / n_i = 2π m_i / n_i
    does not depend on the cell. torch-pme 0.5 instead multiplies the Cartesian components
    of k by |a_i| / n_i, which is the same only for a cell whose vectors lie along x, y
    and z: measured against a converged Ewald sum on 86 atoms, a sheared cell was off by
    6e-3 eV and 4e-3 eV/Å, a rotated cubic one by 7e-5 eV, and on every cell the stress
    picked up the derivative of that factor under shear (7e-6 eV/Å³ on 188 atoms; 8e-8
    with this filter). Checked in tests/test_coulomb_pme.py on a triclinic cell.
    """

    def _compute_influence(self, kvectors: torch.Tensor) -> torch.Tensor:
        kh = (kvectors @ self.cell.T).detach() / self.ns_mesh  # 2π m_i / n_i, (nx, ny, nz, 3)
        assignment_sq = self._charge_assignment(kh)
        masked = torch.where(assignment_sq == 0, 1.0, assignment_sq)
        return torch.where(assignment_sq == 0, 0.0, torch.reciprocal(masked))


def pme_calculator(settings: PMESettings) -> torchpme.P3MCalculator:
    """A float64 torch-pme P3M calculator in eV (prefactor k_e) for `settings`, with the
    cell-axes influence function (`_CellAxesP3MFilter`)."""
    potential = torchpme.CoulombPotential(smearing=settings.smearing_A,
                                          prefactor=COULOMB_CONSTANT_EV_A)
    calculator = torchpme.P3MCalculator(potential, mesh_spacing=settings.mesh_spacing_A,
                                        interpolation_nodes=settings.interpolation_nodes)
    # the arguments P3MCalculator gives its own filter
    calculator.kspace_filter = _CellAxesP3MFilter(
        cell=torch.eye(3), ns_mesh=torch.ones(3, dtype=torch.int64),
        interpolation_nodes=settings.interpolation_nodes, kernel=calculator.potential,
        mode=0, differential_order=2, fft_norm="backward", ifft_norm="forward")
    return calculator.to(dtype=torch.float64)


# --------------------------------------------------------------------------------------
# the energy as a torch function of positions and cell


def coulomb_energy_eV(calculator: torchpme.P3MCalculator, charges_e: torch.Tensor,
                      positions_A: torch.Tensor, cell_A: torch.Tensor,
                      neighbor_pairs: torch.Tensor, neighbor_shifts: torch.Tensor,
                      exception_pairs: torch.Tensor, exception_shifts: torch.Tensor,
                      exception_delta_e2: torch.Tensor) -> torch.Tensor:
    """The baseline's energy (eV, a 0-d tensor), differentiable in positions and cell.

    Args:
        calculator: from `pme_calculator`.
        charges_e: (n_atoms, 1), e.
        positions_A: (n_atoms, 3), Å. cell_A: (3, 3), row vectors, Å.
        neighbor_pairs, neighbor_shifts: half neighbour list within the cutoff, (n_nl, 2)
            indices and (n_nl, 3) integer lattice shifts (r_ij = x_j - x_i + S @ cell).
        exception_pairs, exception_shifts: the exceptions, (n_exc, 2) and the lattice
            shifts of their minimum images, (n_exc, 3).
        exception_delta_e2: (n_exc,), e²: the charge product each exception keeps minus
            the full q_i q_j.
    """
    distances_A = _pair_distances_A(positions_A, cell_A, neighbor_pairs, neighbor_shifts)
    potentials = calculator(charges=charges_e, cell=cell_A, positions=positions_A,
                            neighbor_indices=neighbor_pairs, neighbor_distances=distances_A)
    energy_pme = (charges_e * potentials).sum()
    r_exc_A = _pair_distances_A(positions_A, cell_A, exception_pairs, exception_shifts)
    energy_exceptions = COULOMB_CONSTANT_EV_A * (exception_delta_e2 / r_exc_A).sum()
    return energy_pme + energy_exceptions


def _pair_distances_A(positions_A, cell_A, pairs, shifts) -> torch.Tensor:
    vectors = positions_A[pairs[:, 1]] - positions_A[pairs[:, 0]] + shifts @ cell_A
    return torch.linalg.norm(vectors, dim=1)


def minimum_image_shifts(positions_A: np.ndarray, cell_A: np.ndarray,
                         pairs: np.ndarray) -> np.ndarray:
    """Integer lattice shifts S, shape (n_pairs, 3), that make x_j - x_i + S @ cell the
    minimum image of each pair (any cell, by ``ase.geometry.find_mic``)."""
    raw = positions_A[pairs[:, 1]] - positions_A[pairs[:, 0]]
    mic, _ = find_mic(raw, cell_A, pbc=True)
    return np.rint((mic - raw) @ np.linalg.inv(cell_A))


# --------------------------------------------------------------------------------------
# the ASE calculator


class CoulombPME(Calculator):
    """The Coulomb baseline (point charges by PME, the force field's exclusions) by
    torch-pme, float64, as an ASE calculator.

    Args:
        charge_scale: factor on the ion set's partial charges (the baseline's).
        ions: the structure's ion set (Ion objects by name), as for the OpenMM baseline.
        force_accuracy_eV_per_A: RMS force error target of the PME sum, eV/Å.
        cutoff_A: real-space cutoff, Å; default min(12, 0.49 x shortest box width) of the
            first box seen, rechosen when a box is too small for it.

    The molecules are read from each frame (`molecules_of`); the topology (charges and
    exceptions, from OpenMM) is rebuilt when they change.

    Results: ``energy``/``free_energy`` (eV), ``forces`` (eV/Å, (n_atoms, 3)), ``stress``
    (eV/Å³, Voigt 6-vector, ASE's sign convention).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]
    default_parameters: dict = {}

    def __init__(self, *, charge_scale: float, ions: Mapping[str, Ion] | None = None,
                 force_accuracy_eV_per_A: float = DEFAULT_FORCE_ACCURACY_EV_PER_A,
                 cutoff_A: float | None = None) -> None:
        super().__init__()
        self.charge_scale = float(charge_scale)
        self.ions = ions
        self.force_accuracy_eV_per_A = float(force_accuracy_eV_per_A)
        self.requested_cutoff_A = cutoff_A
        self.topology: CoulombTopology | None = None
        self._molecules: tuple | None = None  # the runs as the frame spelled them
        self.settings: PMESettings | None = None
        self._pme: torchpme.P3MCalculator | None = None
        self._neighbors: NeighborList | None = None
        self.parameters.update(charge_scale=self.charge_scale, cutoff_A=cutoff_A,
                               force_accuracy_eV_per_A=self.force_accuracy_eV_per_A)

    @classmethod
    def for_baseline(cls, baseline, ions: Mapping[str, Ion], **kwargs) -> CoulombPME | None:
        """The Coulomb part of a `ionmix.models.baseline.Baseline` (None if it has none)."""
        if not baseline.coulomb:
            return None
        return cls(charge_scale=baseline.charge_scale, ions=ions, **kwargs)

    # ---------------------------------------------------------------- set-up

    def _setup(self, atoms: Atoms) -> None:
        """(Re)build the topology when the molecules change and the PME settings when the
        box is too small for their cutoff."""
        molecules = molecules_of(atoms)
        if self.topology is None or molecules != self._molecules:
            self.topology = coulomb_topology(molecules, atoms.cell.array, self.charge_scale,
                                             self.ions)
            self._molecules = molecules
            self.settings = None
        _check_elements(self.topology, atoms)
        cell = atoms.cell.array
        if self.settings is not None and (self.requested_cutoff_A is None
                                          and self.settings.cutoff_A > max_cutoff_A(cell)):
            self.settings = None
        if self.settings is None:
            self.settings = choose_pme_settings(self.topology.charges_e, cell,
                                                self.force_accuracy_eV_per_A,
                                                self.requested_cutoff_A)
            self._pme = pme_calculator(self.settings)
            self._neighbors = NeighborList(cutoff=self.settings.cutoff_A, full_list=False)
            self.parameters["cutoff_A"] = self.settings.cutoff_A
        _check_cutoff(self.settings.cutoff_A, cell)

    # ---------------------------------------------------------------- evaluation

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        """Energy, forces and stress of `atoms` (see the class docstring)."""
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if not np.all(atoms.pbc):
            raise CoulombPMEError("CoulombPME needs a periodic cell (pbc all True)")
        self._setup(atoms)
        energy, forces, stress = self._energy_forces_stress(atoms.positions, atoms.cell.array)
        self.results.update(energy=energy, free_energy=energy, forces=forces, stress=stress)

    def _energy_forces_stress(self, positions_A: np.ndarray, cell_A: np.ndarray):
        """Energy (eV), forces (eV/Å, (n, 3)) and stress (eV/Å³, Voigt (6,)) by autograd."""
        topo = self.topology
        i, j, shifts = self._neighbors.compute(points=positions_A, box=cell_A, periodic=True,
                                               quantities="ijS")
        full_e2 = topo.charges_e[topo.pairs[:, 0]] * topo.charges_e[topo.pairs[:, 1]]
        positions = _f64(positions_A).requires_grad_(True)
        strain = torch.zeros((3, 3), dtype=torch.float64, requires_grad=True)
        deformation = torch.eye(3, dtype=torch.float64) + strain
        energy = coulomb_energy_eV(
            self._pme, _f64(topo.charges_e).reshape(-1, 1), positions @ deformation,
            _f64(cell_A) @ deformation,
            torch.as_tensor(np.stack([i, j], axis=1).astype(np.int64)), _f64(shifts),
            torch.as_tensor(topo.pairs),
            _f64(minimum_image_shifts(positions_A, cell_A, topo.pairs)),
            _f64(topo.pair_charge_products_e2 - full_e2))
        d_positions, d_strain = torch.autograd.grad(energy, (positions, strain))
        sigma = d_strain.numpy() / abs(float(np.linalg.det(cell_A)))
        stress = full_3x3_to_voigt_6_stress(0.5 * (sigma + sigma.T))
        return float(energy.detach()), -d_positions.numpy(), stress


def _f64(array) -> torch.Tensor:
    """A float64 tensor of a numpy array (shared memory where possible)."""
    return torch.as_tensor(np.asarray(array, dtype=np.float64))


def _check_elements(topology: CoulombTopology, atoms: Atoms) -> None:
    symbols = atoms.get_chemical_symbols()
    if len(symbols) != topology.n_atoms:
        raise CoulombPMEError(f"atoms has {len(symbols)} atoms, the composition "
                              f"{topology.molecules} has {topology.n_atoms}")
    for k, (have, want) in enumerate(zip(symbols, topology.elements, strict=True)):
        if have != want:
            raise CoulombPMEError(f"atom {k} is {have} but the topology {topology.molecules} "
                                  f"has {want} there")

