"""Torsion scans of the perfluoropentanoate anion: classical (CL&P + analogues) vs GFN2-xTB.

The anion's force field borrows four terms from analogues (see
src/ionmix/chemistry/library/C4F9CO2/ion.toml); two of them are torsions about the
carboxylate-side bonds:

- C1-C4 (carboxyl C – α-C), analogue O2-CO-CF-CF (from CT-CT-CO-O2);
- C4-C5 (α-C – β-C), analogue CF-CF-CF-CO and F-CF-CF-CO (from the fluoroalkyl CT terms);
- C5-C8 (β-C – γ-C), a control: every term about it is in il.ff.

Each scan sets the dihedral in steps of `--step` degrees (isolated anion, no periodicity)
and relaxes every other degree of freedom with that dihedral held (ASE FixInternals, BFGS
to `--fmax`), separately with each energy model, then compares the relative energies of
the relaxed profiles: the classical force field with unscaled charges (as published; the
intramolecular 1-4 and longer-range terms use them), the same with charges × 0.7 (the
liquid's scale, which scales those intramolecular terms too), and GFN2-xTB (tblite,
charge -1, through ionmix's xtb teacher). Each point starts from the previous relaxed geometry. The
profile is the whole torsional energy about the bond (every torsion, 1-4 and longer-range
interaction across it), which is what the analogue terms must get right. (A rigid scan is
not used: turning a perfluoroalkyl fragment rigidly through the eclipsed region makes
F···F and F···O contacts of hundreds of kJ/mol in both models.)

Usage: .venv/bin/python benchmarks/bench_fomim_torsions.py [--step 15] [--fmax 0.02]
       [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from ionmix.chemistry import load_ion
from ionmix.teachers.classical.system import scale_charges
from ionmix.units import KJ_PER_MOL_IN_EV

#: (name, the dihedral reported (1-based atoms), the bond rotated (1-based)).
SCANS = (
    ("O2-C1-C4-C5 (O2-CO-CF-CF analogue)", (2, 1, 4, 5), (1, 4)),
    ("C1-C4-C5-C8 (CF-CF-CF-CO analogue)", (1, 4, 5, 8), (4, 5)),
    # control: a bond whose every term is in il.ff (CF-CF-CF-CF, F-CF-CF-F, ...), to tell
    # the analogues' error from the general CL&P/OPLS vs xTB difference of CF2-CF2 torsions
    ("C4-C5-C8-C11 (control: il.ff CF-CF-CF-CF)", (4, 5, 8, 11), (5, 8)),
)


def anion() -> tuple[Atoms, list[tuple[int, int]]]:
    """The template anion (Å) and its bonds (0-based)."""
    ion = load_ion("C4F9CO2")
    atoms = Atoms(ion.elements, positions=ion.template_positions())
    bonds = [(i - 1, j - 1) for i, j in ion.topology().bonds]
    return atoms, bonds


def side_of(bonds, j: int, k: int, n: int) -> np.ndarray:
    """Atoms (0-based) reached from k without crossing the bond j-k."""
    nb = [set() for _ in range(n)]
    for a, b in bonds:
        nb[a].add(b)
        nb[b].add(a)
    seen, stack = {k}, [k]
    while stack:
        a = stack.pop()
        for b in nb[a] - {j} - seen:
            seen.add(b)
            stack.append(b)
    return np.array(sorted(seen))


class ClassicalAnion(Calculator):
    """The force field of the isolated anion (no cutoff) as an ASE calculator: energy (eV)
    and forces (eV/Å) from OpenMM's Reference platform; every charge times
    `charge_scale` (1-4 charge products times its square), as in a scaled-charge liquid."""

    implemented_properties = ("energy", "forces")

    def __init__(self, charge_scale: float = 1.0) -> None:
        super().__init__()
        import openmm
        import openmm.app as app

        from ionmix.teachers.classical.system import write_top

        with tempfile.TemporaryDirectory() as tmp:
            top_path = Path(tmp) / "anion.top"
            write_top([("C4F9CO2", 1)], {"C4F9CO2": load_ion("C4F9CO2")}, top_path)
            system = app.GromacsTopFile(str(top_path)).createSystem(
                nonbondedMethod=app.NoCutoff)
        scale_charges(system, charge_scale)  # the classical teacher's own scaling
        self._ctx = openmm.Context(system, openmm.VerletIntegrator(0.001),
                                   openmm.Platform.getPlatformByName("Reference"))

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        import openmm.unit as u

        super().calculate(atoms, properties, system_changes)
        self._ctx.setPositions(self.atoms.positions / 10.0)  # Å -> nm
        state = self._ctx.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        forces = state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
        self.results = {"energy": energy * KJ_PER_MOL_IN_EV,
                        "forces": np.asarray(forces) * KJ_PER_MOL_IN_EV / 10.0}


def xtb_calculator(atoms: Atoms):
    """GFN2-xTB through ionmix's xtb teacher, charge -1."""
    from ionmix.teachers import make_teacher, teacher_spec

    teacher = make_teacher(teacher_spec({"kind": "xtb", "charge": -1}))
    a = atoms.copy()
    a.info["molecules"] = "C4F9CO2:1"
    a.arrays["mol_id"] = np.zeros(len(a), dtype=int)
    a.arrays["ion_name"] = np.array(["C4F9CO2"] * len(a))
    return teacher.calculator(a)


def relaxed_scan(atoms: Atoms, calc, dihedral0: list[int], moving: np.ndarray,
                 angles_deg: np.ndarray, fmax: float) -> tuple[np.ndarray, np.ndarray]:
    """Energies (kJ/mol, relative to the lowest) and the held dihedral at each angle."""
    from ase.constraints import FixInternals
    from ase.optimize import BFGS

    current = atoms.copy()
    energies, held = [], []
    for angle in angles_deg:
        current.set_constraint()
        mask = np.zeros(len(current), dtype=bool)
        mask[moving] = True
        current.set_dihedral(*dihedral0, angle, mask=mask)
        current.set_constraint(FixInternals(dihedrals_deg=[[float(angle), dihedral0]]))
        current.calc = calc
        BFGS(current, logfile=None).run(fmax=fmax, steps=500)
        energies.append(current.get_potential_energy() / KJ_PER_MOL_IN_EV)
        held.append(current.get_dihedral(*dihedral0))
    e = np.asarray(energies)
    return e - e.min(), np.asarray(held)


def scan(step_deg: float, fmax: float) -> list[dict]:
    atoms, bonds = anion()
    results = []
    for name, dihedral, (j, k) in SCANS:
        d0 = [x - 1 for x in dihedral]
        moving = side_of(bonds, j - 1, k - 1, len(atoms))
        start = atoms.get_dihedral(*d0)
        angles = (start + np.arange(0.0, 360.0, step_deg)) % 360.0
        e_ff, phi = relaxed_scan(atoms, ClassicalAnion(), d0, moving, angles, fmax)
        e_ff07, _ = relaxed_scan(atoms, ClassicalAnion(0.7), d0, moving, angles, fmax)
        e_xtb, _ = relaxed_scan(atoms, xtb_calculator(atoms), d0, moving, angles, fmax)
        order = np.argsort(phi)
        phi, e_ff, e_ff07, e_xtb = phi[order], e_ff[order], e_ff07[order], e_xtb[order]
        results.append({
            "scan": name, "dihedral_deg": [round(float(p), 1) for p in phi],
            "classical_kj_mol": e_ff.round(2).tolist(), "xtb_kj_mol": e_xtb.round(2).tolist(),
            "classical_scale07_kj_mol": e_ff07.round(2).tolist(),
            "classical_scale07_max_kj_mol": float(e_ff07.max()),
            "classical_scale07_min_at_deg": float(phi[int(np.argmin(e_ff07))]),
            "rms_difference_scale07_kj_mol": float(np.sqrt(np.mean((e_ff07 - e_xtb) ** 2))),
            "rms_difference_kj_mol": float(np.sqrt(np.mean((e_ff - e_xtb) ** 2))),
            "max_abs_difference_kj_mol": float(np.max(np.abs(e_ff - e_xtb))),
            "classical_max_kj_mol": float(e_ff.max()), "xtb_max_kj_mol": float(e_xtb.max()),
            "classical_min_at_deg": float(phi[int(np.argmin(e_ff))]),
            "xtb_min_at_deg": float(phi[int(np.argmin(e_xtb))]),
        })
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--step", type=float, default=15.0, help="degrees")
    ap.add_argument("--fmax", type=float, default=0.02, help="eV/Å, relaxation threshold")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    results = scan(args.step, args.fmax)
    for r in results:
        print(f"\n{r['scan']}: RMS(classical - xTB) {r['rms_difference_kj_mol']:.2f} kJ/mol "
              f"(max {r['max_abs_difference_kj_mol']:.1f}); barrier "
              f"{r['classical_max_kj_mol']:.1f} vs {r['xtb_max_kj_mol']:.1f} kJ/mol; "
              f"minimum at {r['classical_min_at_deg']:.0f} vs {r['xtb_min_at_deg']:.0f} deg")
        print(f"  charges x 0.7: RMS {r['rms_difference_scale07_kj_mol']:.2f} kJ/mol, barrier "
              f"{r['classical_scale07_max_kj_mol']:.1f} kJ/mol, minimum at "
              f"{r['classical_scale07_min_at_deg']:.0f} deg")
        print("  phi(deg)  classical  classical x0.7  xTB (kJ/mol)")
        for p, a, c, b in zip(r["dihedral_deg"], r["classical_kj_mol"],
                              r["classical_scale07_kj_mol"], r["xtb_kj_mol"], strict=True):
            print(f"  {p:7.1f}  {a:9.2f}  {c:14.2f}  {b:7.2f}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
