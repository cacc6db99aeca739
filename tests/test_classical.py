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
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
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


def test_forces_are_minus_energy_gradient(box):
    # A tight Ewald tolerance shrinks the (tiny) energy jumps of pairs crossing the
    # real-space cutoff, so central differences can be compared tightly.
    atoms = _fresh(box, ewald_error_tolerance=1e-6)
    forces = atoms.get_forces()
    iatoms = [0, 4, 11, 39, 59]  # Li, EMIM H and N, PF6 P and F
    numerical = calculate_numerical_forces(atoms, eps=5e-4, iatoms=iatoms)
    np.testing.assert_allclose(numerical, forces[iatoms], atol=2e-4, rtol=1e-4)


def test_forces_default_settings(box, labelled):
    _, _, forces, _ = labelled
    atoms = _fresh(box)
    iatoms = [0, 2, 20, 45]
    numerical = calculate_numerical_forces(atoms, eps=1e-4, iatoms=iatoms)
    err = np.abs(numerical - forces[iatoms])
    # cutoff crossings of the PME real-space sum cost at most a few 1e-2 eV/Å in a
    # single finite difference (an energy jump of ~1e-6 eV); typical agreement is 1e-6
    assert np.median(err) < 1e-4
    assert err.max() < 0.05


def test_stress_matches_ase_numerical_stress(box, labelled):
    _, _, _, stress = labelled
    atoms = _fresh(box, strain_step=1e-3)
    numerical = calculate_numerical_stress(atoms, eps=1e-3)
    np.testing.assert_allclose(stress, numerical, atol=2e-6)  # 2e-6 eV/Å3 = 3 bar


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


# -------------------------------------------------------------------------- invariances


def test_translation_and_wrapping_invariance(box, labelled):
    _, energy, forces, stress = labelled
    wrapped = _fresh(box)
    wrapped.positions += box.cell.array[0] * 0.5  # move molecules across the faces...
    wrapped.wrap()  # ...and split them: bonded terms are periodic, so nothing changes
    assert wrapped.get_potential_energy() == pytest.approx(energy, abs=1e-9)
    np.testing.assert_allclose(wrapped.get_forces(), forces, atol=1e-9)
    np.testing.assert_allclose(wrapped.get_stress(), stress, atol=1e-10)
    moved = _fresh(box)
    moved.translate([3.1, -7.7, 12.9])
    # a PME grid is not translation invariant: equal to PME accuracy (tolerance 5e-5)
    assert moved.get_potential_energy() == pytest.approx(energy, abs=3e-5)
    np.testing.assert_allclose(moved.get_forces(), forces, atol=5e-4)
    np.testing.assert_allclose(moved.get_stress(), stress, atol=1e-6)


def test_rotation_and_lattice_invariance(box, labelled):
    _, energy, forces, stress = labelled
    angle = 0.7
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    ) @ np.array([[1, 0, 0], [0, np.cos(0.4), -np.sin(0.4)], [0, np.sin(0.4), np.cos(0.4)]])
    rotated = box.copy()
    rotated.set_cell(box.cell.array @ rot.T)
    rotated.positions = box.positions @ rot.T
    rotated.calc = ClassicalCalculator(platform="Reference")
    # PME errors depend slightly on the grid's orientation: compare at its accuracy
    assert rotated.get_potential_energy() == pytest.approx(energy, abs=2e-4)
    np.testing.assert_allclose(rotated.get_forces(), forces @ rot.T, atol=2e-3)
    np.testing.assert_allclose(
        rotated.get_stress(voigt=False), rot @ voigt_6_to_full_3x3_stress(stress) @ rot.T, atol=5e-6
    )
    # the same lattice written with b' = a + b (a triclinic cell): reduced back, same energy
    sheared = box.copy()
    cell = box.cell.array.copy()
    cell[1] += cell[0]
    sheared.set_cell(cell)
    sheared.calc = ClassicalCalculator(platform="Reference")
    assert sheared.get_potential_energy() == pytest.approx(energy, abs=1e-8)
    assert np.isfinite(stress).all()


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
