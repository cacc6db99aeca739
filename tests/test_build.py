"""Box packing: exact counts, neutrality, no clashes, whole molecules, seeds, errors."""

from __future__ import annotations

import functools
import stat

import numpy as np
import pytest

import ionmix.build as build
from ionmix.build import BuildError, box_length_A, build_box
from ionmix.chemistry import IonLibraryError, load_ion
from ionmix.chemistry.ions import parse_itp
from ionmix.chemistry.topology import TopologyError
from ionmix.chemistry.topology import molecules_of as molecules_from_atoms
from ionmix.units import density_g_per_cm3

# (Li, EMIM, PF6) counts: 4-6 ion pairs across the Li-salt fraction range
COMPOSITIONS = [
    (0, 4, 4),
    (1, 3, 4),
    (2, 2, 4),
    (3, 1, 4),
    (4, 0, 4),
    (0, 5, 5),
    (1, 4, 5),
    (3, 2, 5),
    (5, 0, 5),
    (2, 4, 6),
]
SEEDS = [0, 1, 2]


def _counts(comp: tuple[int, int, int]) -> dict[str, int]:
    return {"Li": comp[0], "EMIM": comp[1], "PF6": comp[2]}


@functools.cache
def _box(comp: tuple[int, int, int], seed: int):
    return build_box(_counts(comp), seed=seed)


def _min_intermolecular_distance_A(atoms) -> float:
    """Smallest minimum-image distance between atoms of different molecules (cubic cell)."""
    x = atoms.positions
    length = atoms.cell.lengths()[0]
    d = x[:, None, :] - x[None, :, :]
    d -= length * np.round(d / length)
    r = np.linalg.norm(d, axis=-1)
    mol = atoms.arrays["mol_id"]
    r[mol[:, None] == mol[None, :]] = np.inf
    return float(r.min())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("comp", COMPOSITIONS, ids=lambda c: "Li{}-EMIM{}-PF6{}".format(*c))
def test_box(comp, seed):
    atoms = _box(comp, seed)
    counts = _counts(comp)
    expected_runs = tuple((name, n) for name, n in counts.items() if n > 0)
    assert molecules_from_atoms(atoms) == expected_runs
    ions = {name: load_ion(name) for name, _ in expected_runs}
    assert len(atoms) == sum(ions[name].n_atoms * n for name, n in expected_runs)
    # exact counts per ion and zero net charge
    mol = atoms.arrays["mol_id"]
    names = atoms.arrays["ion_name"]
    starts = np.r_[0, np.flatnonzero(np.diff(mol)) + 1]
    per_molecule = [str(names[s]) for s in starts]
    assert {n: per_molecule.count(n) for n in ions} == {n: c for n, c in expected_runs}
    assert sum(ions[n].charge for n in per_molecule) == 0
    # elements and masses in template order
    expected_symbols = [
        e for name, n in expected_runs for _ in range(n) for e in ions[name].elements
    ]
    assert atoms.get_chemical_symbols() == expected_symbols
    # packed at the requested density (g/cm3 from amu and Å3, see test_density_units)
    density = density_g_per_cm3(atoms.get_masses().sum(), atoms.get_volume())
    assert density == pytest.approx(build.DEFAULT_DENSITY_G_CM3, rel=1e-6)
    assert np.all(atoms.pbc) and atoms.cell.orthorhombic
    # no clashes between molecules, periodic images included
    assert _min_intermolecular_distance_A(atoms) > 1.5
    # molecules whole: bonded atoms are near each other without minimum image
    for start in starts:
        ion = ions[str(names[start])]
        itp = parse_itp(ion.itp_path)
        x = atoms.positions[start : start + ion.n_atoms]
        for (i, j), (b0_nm, _) in zip(itp.bonds, itp.bond_params, strict=True):
            assert abs(np.linalg.norm(x[i - 1] - x[j - 1]) - 10 * b0_nm) < 0.05


@pytest.mark.parametrize("comp", [COMPOSITIONS[1], COMPOSITIONS[7]])
def test_seed_determinism(comp):
    again = build_box(_counts(comp), seed=1)
    assert np.array_equal(again.positions, _box(comp, 1).positions)
    assert not np.allclose(_box(comp, 0).positions, _box(comp, 1).positions)
    assert not np.allclose(_box(comp, 1).positions, _box(comp, 2).positions)


def test_density_units():
    # 1 amu/Å3 = 1.66053906660 g/cm3 (1 amu = 1.66053906660e-24 g; 1 Å3 = 1e-24 cm3);
    # ionmix.units takes Avogadro's number from ase.units (CODATA 2014: 1.66053904e-24 g),
    # 1.6e-8 relative from the CODATA 2018 value
    assert density_g_per_cm3(1.0, 1.0) == pytest.approx(1.66053906660, rel=1e-7)
    # one Li + one PF6 (151.903 amu) at 1.2 g/cm3: V = 151.903 * 1.66053906660 / 1.2 Å3
    volume = 151.903 * 1.66053906660 / 1.2
    assert box_length_A({"Li": 1, "PF6": 1}, 1.2) == pytest.approx(volume ** (1 / 3), rel=1e-7)


def test_aliases_and_order():
    atoms = build_box({"[PF6]-": 2, "li+": 1, "C2mim": 1}, seed=3)
    assert molecules_from_atoms(atoms) == (("PF6", 2), ("Li", 1), ("EMIM", 1))
    assert atoms.get_chemical_symbols()[:7] == ["P"] + ["F"] * 6


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({}, "empty composition"),
        ({"Li": 0, "PF6": 0}, "all counts are zero"),
        ({"Li": -1, "PF6": 1}, "count of 'Li' must be a non-negative integer"),
        ({"Li": 1.5, "PF6": 1}, "count of 'Li' must be a non-negative integer"),
        ({"Li": 2, "EMIM": 1, "PF6": 2}, r"not neutral: net charge \+1 e from 2 x Li"),
        ({"EMIM": 1, "C2mim": 1, "PF6": 2}, "ion EMIM given twice"),
    ],
)
def test_bad_compositions(counts, message):
    with pytest.raises(BuildError, match=message):
        build_box(counts)


def test_unknown_ion():
    with pytest.raises(IonLibraryError, match="unknown ion 'Na'"):
        build_box({"Na": 1, "PF6": 1})


def test_packmol_failure_reports_output(tmp_path, monkeypatch):
    fake = tmp_path / "packmol"
    fake.write_text("#!/bin/sh\necho 'some packmol chatter'\necho 'ERROR: cannot pack'\nexit 171\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(build, "packmol_executable", lambda: fake)
    with pytest.raises(BuildError, match=r"(?s)exit status 171.*ERROR: cannot pack"):
        build_box({"Li": 1, "PF6": 1})


def test_molecules_need_arrays_or_info():
    atoms = _box(COMPOSITIONS[0], 0).copy()
    runs = molecules_from_atoms(atoms)
    del atoms.arrays["mol_id"]
    assert molecules_from_atoms(atoms) == runs  # the info string carries the same runs
    del atoms.info["molecules"]
    with pytest.raises(TopologyError, match="carries no molecule information"):
        molecules_from_atoms(atoms)
