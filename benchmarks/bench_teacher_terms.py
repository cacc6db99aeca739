"""Where a student's run leaves the teacher's liquid: the classical teacher's energy, term
by term, along the student's trajectory against along the teacher's own NPT frames.

    .venv/bin/python benchmarks/bench_teacher_terms.py --store runs/learn-npt/frames.db \
        --trajectory runs/bench-epochs/md-trained-seed0/trajectory.extxyz

A student whose own energy stays flat while the teacher prices its run ~15 meV/atom higher
(docs/benchmarks.md, "Why the students' density sinks") has some degrees of freedom the
teacher finds too hot or too strained. Splitting the teacher's energy into its force
field's terms (bonds, angles, torsions, Lennard-Jones, Coulomb: OpenMM force groups, the
NonbondedForce split into its electrostatics, `keep_electrostatics_only`, and the rest)
names them, and the torsions by kind (element quadruplet). Reference: the teacher's own
NPT frames of the same composition (``--replica``, the last ``--reference-frames``),
whose term energies are the teacher's equilibrium at that temperature (e.g. ½ k_B T per
harmonic bond). Energies in meV per atom; the difference of the student's run (its second
half) from the reference, with the reference's spread. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np

from ionmix.units import KJ_PER_MOL_IN_EV

#: OpenMM's forces as GromacsTopFile builds OPLS-AA (geometric LJ combination rule: the LJ
#: is a CustomNonbondedForce, its 1-4 pairs a CustomBondForce), named by their term.
TERM_NAMES = {"HarmonicBondForce": "bonds", "HarmonicAngleForce": "angles",
              "RBTorsionForce": "torsions", "CustomNonbondedForce": "Lennard-Jones",
              "CustomBondForce": "Lennard-Jones 1-4", "NonbondedForce": "NonbondedForce"}


def term_energies_meV_per_atom(frames, system_kwargs: dict) -> dict[str, np.ndarray]:
    """The teacher's energy of each frame by term, shape (n_frames,) per term."""
    import openmm
    import openmm.unit as u

    from ionmix.chemistry.topology import molecules_of
    from ionmix.teachers.classical.system import (
        keep_electrostatics_only,
        make_context,
        make_system,
        openmm_cell,
    )

    csys = make_system(molecules_of(frames[0]), frames[0].cell.array, **system_kwargs)
    names = []
    for index, force in enumerate(csys.system.getForces()):
        force.setForceGroup(index)
        names.append(TERM_NAMES.get(type(force).__name__, type(force).__name__))
    elec = copy.deepcopy(csys.system)
    keep_electrostatics_only(elec)
    contexts = (make_context(csys, platform="CPU"),
                openmm.Context(elec, openmm.VerletIntegrator(0.001),
                               openmm.Platform.getPlatformByName("CPU")))
    out: dict[str, list[float]] = {}
    for atoms in frames:
        box_A, rotation = openmm_cell(atoms.cell.array)
        for ctx in contexts:
            ctx.setPeriodicBoxVectors(*[openmm.Vec3(*row) * 0.1 for row in box_A])
            ctx.setPositions(atoms.positions @ rotation * 0.1)  # nm
        row = {}
        for index, name in enumerate(names):
            state = contexts[0].getState(getEnergy=True, groups={index})
            row[name] = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        coulomb = contexts[1].getState(getEnergy=True).getPotentialEnergy()
        row["Coulomb"] = coulomb.value_in_unit(u.kilojoule_per_mole)
        row["NonbondedForce LJ"] = row.pop("NonbondedForce") - row["Coulomb"]  # 0 for OPLS
        for name, kj_mol in row.items():
            out.setdefault(name, []).append(kj_mol * KJ_PER_MOL_IN_EV * 1e3 / len(atoms))
    return {name: np.asarray(v) for name, v in out.items() if np.any(v)}


def torsion_energies_meV_per_atom(frames, system_kwargs: dict) -> dict[str, np.ndarray]:
    """The teacher's Ryckaert–Bellemans torsion energy of each frame by element quadruplet
    (e.g. ``C-N-C-N``), shape (n_frames,) per kind: E = Σₙ Cₙ cos ⁿψ, ψ = φ − 180°."""
    import openmm
    import openmm.unit as u

    from ionmix.chemistry.topology import molecules_of
    from ionmix.teachers.classical.system import make_system

    csys = make_system(molecules_of(frames[0]), frames[0].cell.array, **system_kwargs)
    rb = next(f for f in csys.system.getForces() if isinstance(f, openmm.RBTorsionForce))
    symbols = frames[0].get_chemical_symbols()
    quads, coeffs = [], []
    for k in range(rb.getNumTorsions()):
        *quad, c0, c1, c2, c3, c4, c5 = rb.getTorsionParameters(k)
        quads.append(quad)
        coeffs.append([c.value_in_unit(u.kilojoule_per_mole) for c in (c0, c1, c2, c3, c4, c5)])
    kinds = np.array(["-".join(symbols[i] for i in q) for q in quads])
    coeffs = np.asarray(coeffs)
    out: dict[str, list[float]] = {}
    for atoms in frames:
        cos_psi = -np.cos(np.radians(atoms.get_dihedrals(quads, mic=True)))
        energy_kj_mol = (coeffs * cos_psi[:, None] ** np.arange(6)).sum(axis=1)
        for kind in np.unique(kinds):
            total = energy_kj_mol[kinds == kind].sum()
            out.setdefault(f"torsion {kind}", []).append(total * KJ_PER_MOL_IN_EV * 1e3
                                                         / len(atoms))
    return {k: np.asarray(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--trajectory", type=Path, required=True, nargs="+")
    parser.add_argument("--replica", type=int, default=0)
    parser.add_argument("--reference-frames", type=int, default=40)
    args = parser.parse_args()
    for path in (args.store, *args.trajectory):
        if not path.is_file():
            parser.error(f"{path}: no such file")
    if args.reference_frames < 2:
        parser.error("--reference-frames must be ≥ 2")

    from ionmix.dataset import DatasetStore
    from ionmix.files import read_frames

    store = DatasetStore(args.store, must_exist=True)
    reference = [f.atoms for f in store.select(replica=args.replica, task="md")]
    reference = reference[-args.reference_frames:]
    teacher = store.provenance().teacher(reference[0], "classical")
    kwargs = teacher.system_kwargs()

    def terms(frames):
        return {**term_energies_meV_per_atom(frames, kwargs),
                **torsion_energies_meV_per_atom(frames, kwargs)}

    ref = terms(reference)
    result = {"reference": {"replica": args.replica, "n_frames": len(reference),
                            **{k: [float(v.mean()), float(v.std())] for k, v in ref.items()}},
              "runs": {}}
    for path in args.trajectory:
        frames = read_frames(path, ":", what="trajectory")
        run = terms(frames)
        half = len(frames) // 2
        result["runs"][str(path)] = {
            "n_frames": len(frames),
            "second_half_minus_reference_meV_per_atom": {
                k: float(v[half:].mean() - ref[k].mean()) for k, v in run.items()},
            "series_meV_per_atom": {k: [round(float(x), 2) for x in v] for k, v in run.items()},
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
