"""Classical engine: OpenMM system from the ion library and the ASE calculator.

A tiny box (1 Li, 2 EMIM, 3 PF6: 60 atoms, ~9.6 Å) is packed once per module; the
double-precision 'Reference' platform keeps finite differences clean.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import openmm
import openmm.unit as u
import pytest
from ase.stress import voigt_6_to_full_3x3_stress

from ionmix.build import build_box
from ionmix.chemistry import load_ion, load_user_ion
from ionmix.chemistry.ions import LIBRARY_DIR, parse_itp
from ionmix.teachers.classical import (
    ClassicalCalculator,
    ClassicalSystemError,
    best_platform,
    make_context,
    make_system,
    make_system_for_atoms,
)
from ionmix.testing import (
    CalculatorBattery,
    Tolerance,
    energy_forces_stress,
    numerical_stress,
    supercell,
)
from ionmix.units import BAR_IN_EV_PER_A3, KJ_PER_MOL_IN_EV, NM_IN_ANGSTROM

# 1 kJ/mol per particle in eV, by hand: 1e3 J / (N_A * e) with ASE's CODATA 2014 constants
# N_A = 6.022140857e23 /mol, e = 1.6021766208e-19 C.
HAND_KJ_PER_MOL_IN_EV = 1e3 / (6.022140857e23 * 1.6021766208e-19)
COUNTS = {"Li": 1, "EMIM": 2, "PF6": 3}


@pytest.fixture(scope="module")
def box():
    """A packed 3-ion-pair box (ase.Atoms with mol_id / ion_name arrays)."""
    return build_box(COUNTS, seed=0)


@pytest.fixture(scope="module")
def labelled(box):
    """The box with a Reference-platform calculator and its energy, forces and stress."""
    atoms = box.copy()
    atoms.calc = ClassicalCalculator(platform="Reference")
    return atoms, atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()


def _fresh(atoms, **kwargs):
    a = atoms.copy()
    a.calc = ClassicalCalculator(platform="Reference", **kwargs)
    return a


# ------------------------------------------------------------------------------- units


def test_unit_constants_by_hand():
    assert KJ_PER_MOL_IN_EV == pytest.approx(HAND_KJ_PER_MOL_IN_EV, rel=1e-12)
    assert KJ_PER_MOL_IN_EV == pytest.approx(0.01036427, rel=1e-6)
    assert NM_IN_ANGSTROM == 10.0
    # 1 bar = 1e5 Pa; 1 eV/Å3 = 1.6021766208e-19 J / 1e-30 m3 = 1.6021766208e11 Pa
    assert BAR_IN_EV_PER_A3 == pytest.approx(1e5 / 1.6021766208e11, rel=1e-12)


def test_energy_and_forces_in_ase_units(box, labelled):
    atoms, energy, forces, _ = labelled
    csys = make_system_for_atoms(box)
    ctx = make_context(csys, platform="Reference")
    ctx.setPositions(box.positions / 10.0)  # Å -> nm
    state = ctx.getState(getEnergy=True, getForces=True)
    e_kj = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    f_kj_nm = state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
    assert energy == pytest.approx(e_kj * HAND_KJ_PER_MOL_IN_EV, rel=1e-9)
    np.testing.assert_allclose(
        forces, f_kj_nm * HAND_KJ_PER_MOL_IN_EV / 10.0, rtol=1e-9, atol=1e-12
    )
    assert forces.shape == (len(box), 3)


# ------------------------------------------------------------------ forces and stress


def test_stress_converged(box, labelled):
    _, _, _, stress = labelled
    # reference: tight PME (1e-6) and a small strain (1e-4); it agrees with tolerance 1e-8
    # and strain 1e-5 to 0.1 bar (measured), at 30x the cost
    converged = _fresh(box, ewald_error_tolerance=1e-6, strain_step=1e-4).get_stress()
    assert np.abs(stress - converged).max() < 10 * BAR_IN_EV_PER_A3
    # the packed box is compressed (2 Å contacts): positive pressure, negative ASE stress
    assert -converged[:3].mean() > 0


def test_pressure_matches_openmm_barostat_route(box, labelled):
    """OpenMM's own pressure (MonteCarloBarostat, atomic virial, zero velocities) = -trace/3."""
    _, _, _, stress = labelled
    csys = make_system_for_atoms(box)
    barostat = openmm.MonteCarloBarostat(1.0 * u.bar, 300.0 * u.kelvin)
    barostat.setScaleMoleculesAsRigid(False)  # atomic virial, as our stress
    csys.system.addForce(barostat)
    ctx = make_context(csys, platform="Reference")
    ctx.setPositions(box.positions / 10.0)
    ctx.setVelocities(np.zeros((len(box), 3)))
    openmm_bar = barostat.computeCurrentPressure(ctx).value_in_unit(u.bar)
    assert -stress[:3].mean() / BAR_IN_EV_PER_A3 == pytest.approx(openmm_bar, rel=1e-3)


# ------------------------------------------------------------------- the reliability battery

#: OpenMM's long-range (dispersion) correction of the LJ force is not extensive: it counts
#: the pairs of one atom type as n(n+1)/2, so E(k copies) = k e + B with a size-independent
#: offset B. Measured on the 60-atom box: E(2x1x1) - 2 E = +7.0e-3 eV (all of it in
#: LennardJonesForce; every other force term agrees to 5e-14 eV), stress +3.8e-6 eV/Å3.
DISPERSION_CORRECTION_NOT_EXTENSIVE = (
    "OpenMM's LJ dispersion correction counts same-type pairs as n(n+1)/2: a constant "
    "offset of 7e-3 eV per 60-atom box (test_only_the_dispersion_correction_is_not_extensive)"
)

#: Stress tolerance of the teacher (eV/Å3): its stress is itself a central difference over
#: a strain of ±1e-3, so it carries that step's truncation error and the energy jumps of
#: pairs crossing the PME real-space cutoff (~2e-5 eV / (2e-3 V)). Measured against a
#: converged strain derivative (step 1e-5; 1e-6 agrees to 1e-10) on ten packed boxes
#: (seeds 0-4, cubic and sheared): median 2.5e-6, max 1.1e-5 (this box: 1.9e-6).
TEACHER_STRESS_ATOL = 3e-5


class TestClassicalBattery(CalculatorBattery):
    """The battery on the 60-atom box with the teacher's production settings (PME
    tolerance 5e-5, 1 Å LJ switch, strain step 1e-3), on the Reference platform (double
    precision; CPU/CUDA evaluate pair terms in single precision).

    Deviations measured on this box, and the tolerances (~10x; >= 50x where the deviation
    is float64 rounding, which depends on summation order):
    - forces vs -dE/dx, ε = 1e-4 Å, all 60 atoms: max 3.3e-7 eV/Å (median 2e-8), the
      O(ε²) truncation error (1.3e-6 at 2e-4, 8e-8 at 5e-5). A pair crossing the cutoff
      inside ±ε would cost 5e-3-1e-2 eV/Å (seen in 3 of 10 other packed boxes); none here.
    - stress vs (1/V) dE/dε: see TEACHER_STRESS_ATOL.
    - rotation: 6e-15 eV, 1.3e-13 eV/Å (the cell is rotated back into OpenMM's frame);
      stress 2.0e-6 eV/Å3 (the teacher's finite-difference stress, taken in another frame).
    - translation: the PME grid is not translation invariant; over 21 random vectors
      max 2.4e-5 eV, 1.3e-4 eV/Å, 1.1e-7 eV/Å3 (median 1e-5, 1e-4, 5e-8).
    - lattice shifts, permutation of whole molecules: <= 2.2e-14 eV, 1.5e-13 eV/Å,
      1.7e-14 eV/Å3.
    - extensivity: forces 2.3e-13 eV/Å; the energy is off by the dispersion correction
      (strict xfail; the 2x1x1 box is held to PME accuracy, as translations).
    """

    n_fd_atoms = 60  # all atoms of the box
    fd_force_atol_eV_per_A = 5e-6
    strain_step = 1e-5
    fd_stress_atol_eV_per_A3 = TEACHER_STRESS_ATOL
    rotation_tol = Tolerance(energy_eV=1e-12, force_eV_per_A=1e-11,
                             stress_eV_per_A3=TEACHER_STRESS_ATOL)
    translation_tol = Tolerance(energy_eV=1e-4, force_eV_per_A=5e-4, stress_eV_per_A3=5e-7)
    lattice_shift_tol = Tolerance(energy_eV=1e-12, force_eV_per_A=1e-11, stress_eV_per_A3=1e-12)
    permutation_tol = Tolerance(energy_eV=1e-12, force_eV_per_A=1e-11, stress_eV_per_A3=1e-12)
    extensivity_tol = translation_tol
    # the topology is built from the molecule order: permute whole molecules (any ion)
    permutation = "molecules"

    @pytest.fixture(scope="class")
    @classmethod
    def calculator(cls):
        return ClassicalCalculator(platform="Reference")

    @pytest.fixture(scope="class")
    @classmethod
    def structure(cls, box):
        return box

    @pytest.mark.xfail(strict=True, reason=DISPERSION_CORRECTION_NOT_EXTENSIVE)
    def test_extensivity(self, calculator, structure):
        super().test_extensivity(calculator, structure)


def test_only_the_dispersion_correction_is_not_extensive(box):
    """E(k copies) = k e + B: forces are extensive, the energy departs from it by a
    constant offset B, the same for 2 and 3 copies, and the LJ energy without OpenMM's
    dispersion correction is extensive."""
    calc = ClassicalCalculator(platform="Reference")
    e1, f1, _ = energy_forces_stress(calc, box, stress=False)
    e2, f2, _ = energy_forces_stress(calc, supercell(box, (2, 1, 1)), stress=False)
    e3, _, _ = energy_forces_stress(calc, supercell(box, (3, 1, 1)), stress=False)
    np.testing.assert_allclose(f2, np.concatenate([f1, f1]), atol=5e-4)  # PME accuracy
    offset_eV = 2 * e1 - e2
    assert 3 * e1 - e3 == pytest.approx(2 * offset_eV, abs=1e-4)
    assert abs(offset_eV) / len(box) < 1e-3  # eV/atom; measured 1.2e-4
    lj_kj_per_mol = []
    for atoms in (box, supercell(box, (2, 1, 1))):
        csys = make_system_for_atoms(atoms, cutoff_A=calc.cutoff_A)
        (lj,) = [f for f in csys.system.getForces() if f.getName() == "LennardJonesForce"]
        lj.setUseLongRangeCorrection(False)
        lj.setForceGroup(31)
        ctx = make_context(csys, platform="Reference")
        ctx.setPositions(atoms.positions / NM_IN_ANGSTROM)
        energy = ctx.getState(getEnergy=True, groups={31}).getPotentialEnergy()
        lj_kj_per_mol.append(energy.value_in_unit(u.kilojoule_per_mole))
    assert lj_kj_per_mol[1] == pytest.approx(2 * lj_kj_per_mol[0], abs=1e-9)


def test_sheared_cell_stress_is_strain_derivative(box, labelled):
    """The teacher's stress on two sheared cells equals the numerical strain derivative
    of its energy (eV/Å3): the same lattice written with b' = a + b (reduced back by the
    calculator: same energy, forces and stress as the box), and the box deformed by a
    simple shear (a triclinic box, rotated into OpenMM's lower-triangular frame)."""
    _, energy, forces, stress = labelled
    same_lattice = box.copy()
    cell = box.cell.array.copy()
    cell[1] += cell[0]
    same_lattice.set_cell(cell)
    deformed = box.copy()
    shear = np.eye(3)
    shear[1, 0], shear[2, 1] = 0.08, -0.06  # b_x = 0.08 b_y, c_y = -0.06 c_z
    deformed.set_cell(box.cell.array @ shear, scale_atoms=True)
    for name, atoms in (("b' = a + b", same_lattice), ("sheared", deformed)):
        calc = ClassicalCalculator(platform="Reference")
        e, f, s = energy_forces_stress(calc, atoms)
        numeric = numerical_stress(calc, atoms, 1e-5)
        # measured: 1.9e-6 (b' = a + b, as the box), 1.1e-5 (sheared)
        np.testing.assert_allclose(s, numeric, atol=TEACHER_STRESS_ATOL, err_msg=name)
        if atoms is same_lattice:
            assert e == pytest.approx(energy, abs=1e-10)
            np.testing.assert_allclose(f, forces, atol=1e-10)
            np.testing.assert_allclose(s, voigt_6_to_full_3x3_stress(stress), atol=1e-12)
        else:  # a real deformation: the stress changes (measured: by up to 4e-2 eV/Å3)
            assert np.abs(s - voigt_6_to_full_3x3_stress(stress)).max() > 1e-2


# --------------------------------------------------------------------------- contexts


def test_context_rebuilt_for_large_box_change(box):
    atoms = _fresh(box)
    atoms.get_potential_energy()
    first = atoms.calc._context
    atoms.set_cell(box.cell.array * 1.0005, scale_atoms=True)
    atoms.get_potential_energy()
    assert atoms.calc._context is first  # small change: same Context, positions/box updated
    atoms.set_cell(box.cell.array * 1.1, scale_atoms=True)
    e_expanded = atoms.get_potential_energy()
    assert atoms.calc._context is not first  # new PME grid for the new box
    fresh = atoms.copy()
    fresh.calc = ClassicalCalculator(platform="Reference", cutoff_A=atoms.calc.cutoff_A)
    assert e_expanded == pytest.approx(fresh.get_potential_energy(), abs=1e-9)


# ------------------------------------------------------------------------ charge scaling


def test_charge_scaling(box):
    csys = make_system_for_atoms(box)
    assert csys.charge_scale == 0.8
    assert csys.charges_e().sum() == pytest.approx(0.0, abs=1e-12)
    emim = load_ion("EMIM")
    for scale in (0.8, 0.7, 1.0):
        single = make_system({"EMIM": 1}, 20.0, charge_scale=scale)
        charges = single.charges_e()
        assert charges.sum() == pytest.approx(scale, abs=1e-12)
        np.testing.assert_allclose(charges, scale * np.array(emim.partial_charges), atol=1e-12)
    # 1-4 exceptions: Coulomb x fudgeQQ 0.5 x s^2 (scaled once); LJ x 0.5, geometric rules
    single = make_system({"EMIM": 1}, 20.0, charge_scale=0.8)
    itp = parse_itp(emim.itp_path)
    q = np.array(emim.partial_charges)
    nb = next(f for f in single.system.getForces() if isinstance(f, openmm.NonbondedForce))
    lj14 = next(f for f in single.system.getForces() if f.getName() == "LennardJonesExceptions")
    pairs14 = {frozenset(p) for p in ((i - 1, j - 1) for i, j in itp.pairs)}
    bonded = {frozenset((i - 1, j - 1)) for i, j in itp.bonds}
    n14 = 0
    for k in range(nb.getNumExceptions()):
        i, j, qq, _, _ = nb.getExceptionParameters(k)
        qq = qq.value_in_unit(u.elementary_charge**2)
        if frozenset((i, j)) in pairs14:
            n14 += 1
            assert qq == pytest.approx(0.5 * 0.8**2 * q[i] * q[j], abs=1e-12)
        else:
            assert qq == 0.0
            assert frozenset((i, j)) not in bonded or qq == 0.0
    assert n14 == len(pairs14) == 36 == lj14.getNumBonds()
    i, j, (c6, c12) = lj14.getBondParameters(0)
    ti, tj = (itp.atomtypes[itp.atoms[x].type] for x in (i, j))
    sigma = np.sqrt(ti.sigma_nm * tj.sigma_nm)
    eps = 0.5 * np.sqrt(ti.epsilon_kj_per_mol * tj.epsilon_kj_per_mol)
    assert (c6, c12) == pytest.approx((4 * eps * sigma**6, 4 * eps * sigma**12), rel=1e-12)


def test_no_constraints_and_pme(box):
    csys = make_system_for_atoms(box)
    assert csys.system.getNumConstraints() == 0
    masses = [csys.system.getParticleMass(i).value_in_unit(u.dalton) for i in range(len(box))]
    np.testing.assert_allclose(masses, box.get_masses(), rtol=1e-12)
    nb = next(f for f in csys.system.getForces() if isinstance(f, openmm.NonbondedForce))
    assert nb.getNonbondedMethod() == openmm.NonbondedForce.PME
    lj = next(f for f in csys.system.getForces() if f.getName() == "LennardJonesForce")
    assert lj.getUseLongRangeCorrection() and lj.getUseSwitchingFunction()
    assert lj.getCutoffDistance().value_in_unit(u.angstrom) == pytest.approx(csys.cutoff_A)
    assert csys.cutoff_A == pytest.approx(0.49 * box.cell.lengths()[0])
    assert "1       3          yes        0.5      0.5" in csys.top_text


# -------------------------------------------------------------------------------- errors


def test_cutoff_longer_than_half_box():
    with pytest.raises(ClassicalSystemError, match=r"cutoff_A = 6 Å exceeds half .*: 5 Å"):
        make_system({"Li": 1, "PF6": 1}, 10.0, cutoff_A=6.0)
    with pytest.raises(ClassicalSystemError, match=r"cutoff_A = 12 Å exceeds half .*: 4\.5 Å"):
        make_system({"Li": 1, "PF6": 1}, [9.0, 20.0, 20.0], cutoff_A=12.0)


def test_box_shrinking_below_cutoff(box):
    atoms = _fresh(box, cutoff_A=4.7)
    atoms.get_potential_energy()
    atoms.set_cell(box.cell.array * 0.9, scale_atoms=True)
    with pytest.raises(ClassicalSystemError, match=r"cutoff_A = 4\.7 Å exceeds half"):
        atoms.get_potential_energy()


def test_atom_order_must_match_topology(box):
    atoms = box.copy()
    atoms.calc = ClassicalCalculator(molecules=[("PF6", 3), ("Li", 1), ("EMIM", 2)])
    with pytest.raises(ClassicalSystemError, match="atom 0 is Li but the topology"):
        atoms.get_potential_energy()


def test_conflicting_atom_types(tmp_path):
    # BF4's fluorine type renamed back to the published 'F': clashes with PF6's 'F'
    shutil.copy(LIBRARY_DIR / "BF4" / "BF4.pdb", tmp_path / "bf4.pdb")
    text = (LIBRARY_DIR / "BF4" / "BF4.itp").read_text()
    (tmp_path / "bf4.itp").write_text(re.sub(r"\bFB\b", "F", text))
    user = load_user_ion(tmp_path / "bf4.itp", tmp_path / "bf4.pdb", name="BF4x")
    with pytest.raises(ClassicalSystemError, match=r"atom type 'F' is defined differently in"):
        make_system({"EMIM": 2, "PF6": 1, "BF4x": 1}, 20.0, ions={"BF4x": user})


def test_best_platform():
    assert best_platform().getName() in ("CUDA", "CPU")


def test_left_handed_cell_and_keywords(box, labelled):
    _, energy, _, _ = labelled
    flipped = box.copy()
    flipped.set_cell(box.cell.array * np.array([[1.0], [1.0], [-1.0]]))  # same lattice
    flipped.calc = ClassicalCalculator(platform="Reference")
    assert flipped.get_potential_energy() == pytest.approx(energy, abs=1e-8)
    with pytest.raises(TypeError):
        ClassicalCalculator(cutoff=5.0)  # misspelled keyword: rejected, not ignored


# ------------------------------------------------------------------ ASE's set() contract

def test_set_changes_the_force_field_and_drops_the_results(box, labelled):
    """ASE's contract: set() updates `parameters` and the next results are those of a
    calculator built with the new value (it used to change nothing)."""
    atoms = box.copy()
    atoms.calc = ClassicalCalculator(platform="Reference")
    assert atoms.get_potential_energy() == pytest.approx(labelled[1], abs=1e-9)
    changed = atoms.calc.set(charge_scale=1.0)
    assert changed == {"charge_scale": 1.0} and atoms.calc.parameters["charge_scale"] == 1.0
    assert atoms.calc.results == {}
    full = _fresh(box, charge_scale=1.0)
    assert atoms.get_potential_energy() == pytest.approx(full.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), full.get_forces(), atol=1e-9)
    assert atoms.calc.set(charge_scale=1.0) == {}   # the same value: nothing to redo


def test_set_names_an_unknown_parameter(box):
    calc = ClassicalCalculator(platform="Reference")
    with pytest.raises(ClassicalSystemError, match=r"unknown parameter\(s\) \['charge'\]"):
        calc.set(charge=1.0)


def test_energy_terms_sum_to_the_energy_with_the_calculators_own_molecules(tiny_sample):
    """A library caller's frames may carry no molecule info: the terms then take the
    calculator's molecules, and still sum to its energy (torsions by kind to torsions)."""
    from ionmix.chemistry.topology import molecules_of
    from ionmix.dataset import DatasetStore
    from ionmix.teachers.classical import ClassicalCalculator
    from ionmix.teachers.classical.terms import energy_terms_meV_per_atom

    frame = DatasetStore(tiny_sample / "frames.db").select(task="md")[-1].atoms
    calc = ClassicalCalculator(molecules_of(frame), charge_scale=0.8, platform="Reference")
    bare = frame.copy()
    bare.info = {}
    for key in [k for k in bare.arrays if k not in ("numbers", "positions")]:
        del bare.arrays[key]
    terms = {k: v[0] for k, v in energy_terms_meV_per_atom([bare], calc).items()}
    bare.calc = calc
    energy_meV_per_atom = 1e3 * bare.get_potential_energy() / len(bare)
    main = sum(v for k, v in terms.items() if not k.startswith("torsion "))
    assert main == pytest.approx(energy_meV_per_atom, abs=1e-6)
    assert sum(v for k, v in terms.items() if k.startswith("torsion ")) == pytest.approx(
        terms["torsions"], abs=1e-6)
    with pytest.raises(ValueError, match="whole force field"):
        energy_terms_meV_per_atom([bare], ClassicalCalculator(
            molecules_of(frame), electrostatics_only=True))
