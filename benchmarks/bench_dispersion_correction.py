"""Issue 22: is the students' pressure bias the teacher's long-range dispersion correction?

The classical teacher's LJ long-range correction is E = −A/V (a term of the volume alone,
no forces; −1.9 kbar of molecular pressure on the 188-atom Li/EMIM/PF6 box), which a
4.5-Å network can only mimic through local density. This takes it out of the labels and
puts it back exactly, then compares the student's molecular pressure bias with a control
trained the same way on the untouched labels (`bench_molecule_forces.errors` on the
teacher's liquid):

    python benchmarks/bench_dispersion_correction.py prepare --loop runs/learn-npt \
        --generation 3 --out runs/lrc-test
    python benchmarks/bench_epochs.py --loop runs/lrc-test --generation 3 --member 0 \
        --extra-epochs 30 --ps 0.5 --only longer --teacher-density 1.572 --out runs/lrc-test/bench
    python benchmarks/bench_epochs.py --loop runs/learn-npt --generation 3 --member 0 \
        --extra-epochs 30 --ps 0.5 --only longer --teacher-density 1.572 --out runs/lrc-control
    python benchmarks/bench_dispersion_correction.py evaluate --out runs/lrc-test \
        --control runs/lrc-control/model-0-plus30/model.nequip.zip \
        --frames runs/teacher-ase-npt/trajectory.extxyz

``prepare`` makes OUT a loop folder whose generation's data carry the labels less the
correction (energy + A/V, stress − A/V²·1; the other files are links to the loop's), and
writes A to ``OUT/lrc.json``. ``evaluate`` prints the table and writes ``OUT/eval.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

sys.path.insert(0, str(Path(__file__).parent))
from bench_molecule_forces import errors, forces_of, frames_with_molecules, markdown  # noqa: E402


def correction_coefficient(atoms, provenance) -> float:
    """A (eV·Å³) of the teacher's LJ long-range correction E = −A/V on `atoms`' topology:
    its CustomNonbondedForce with and without the correction, one frame."""
    import openmm
    import openmm.unit as u

    from ionmix.chemistry.topology import molecules_of
    from ionmix.teachers.classical.system import make_system, openmm_cell
    from ionmix.units import kj_per_mol_to_ev

    c = provenance.teacher(atoms, "classical").calculator(atoms)
    csys = make_system(molecules_of(atoms), atoms.cell.array, charge_scale=c.charge_scale,
                       cutoff_A=c.cutoff_A, ewald_error_tolerance=c.ewald_error_tolerance,
                       lj_switch_width_A=c.lj_switch_width_A, ions=c.ions)
    lj = next(f for f in csys.system.getForces() if isinstance(f, openmm.CustomNonbondedForce))
    box, rotation = openmm_cell(atoms.cell.array)
    energies = []
    for with_correction in (True, False):
        system = openmm.System()
        for i in range(csys.system.getNumParticles()):
            system.addParticle(csys.system.getParticleMass(i))
        force = copy.deepcopy(lj)
        force.setUseLongRangeCorrection(with_correction)
        system.addForce(force)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                                 openmm.Platform.getPlatformByName("Reference"))
        context.setPeriodicBoxVectors(*[openmm.Vec3(*row) * 0.1 for row in box])  # nm
        context.setPositions(atoms.positions @ rotation * 0.1)
        energies.append(float(kj_per_mol_to_ev(context.getState(getEnergy=True)
                                                .getPotentialEnergy()
                                                .value_in_unit(u.kilojoule_per_mole))))
    return -(energies[0] - energies[1]) * atoms.get_volume()


class PlusCorrection(Calculator):
    """A student plus E = −A/V: energy, no forces, stress A/V² on the diagonal (ASE's
    σ = (1/V) ∂E/∂ε; pressure −A/V²)."""

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, inner, coefficient_eV_A3: float):
        super().__init__()
        self.inner, self.coefficient = inner, coefficient_eV_A3

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        work = self.atoms.copy()
        work.calc = self.inner
        volume = work.get_volume()
        self.results = {
            "energy": work.get_potential_energy() - self.coefficient / volume,
            "forces": work.get_forces(),
            "stress": work.get_stress() + np.array([1, 1, 1, 0, 0, 0]) * self.coefficient
            / volume**2}


def prepare(loop: Path, generation: int, out: Path) -> float:
    from ase.calculators.singlepoint import SinglePointCalculator

    from ionmix.dataset.provenance import load_provenance
    from ionmix.dataset.store import atomic_write_extxyz
    from ionmix.files import read_frames

    gen = f"gen-{generation:03d}"
    (out / gen / "data").mkdir(parents=True, exist_ok=True)
    links = [(out / name, loop / name) for name in ("learn-config.json", "frames.db",
                                                     "baseline-cache.sqlite")]
    links.append((out / gen / "models", loop / gen / "models"))
    for link, target in links:
        if not link.exists():
            link.symlink_to(target.resolve())
    provenance = load_provenance(loop / "frames.db")
    coefficient = None
    for split in ("train", "val", "test"):
        frames = read_frames(loop / gen / "data" / f"{split}.extxyz", ":", what="data")
        for atoms in frames:
            coefficient = coefficient or correction_coefficient(atoms, provenance)
            volume = atoms.get_volume()
            info = dict(atoms.info)
            atoms.calc = SinglePointCalculator(
                atoms, energy=atoms.get_potential_energy() + coefficient / volume,
                forces=atoms.get_forces(),
                stress=atoms.get_stress(voigt=False) - np.eye(3) * coefficient / volume**2)
            atoms.info.update(info)
        atomic_write_extxyz(frames, out / gen / "data" / f"{split}.extxyz")
    (out / "lrc.json").write_text(json.dumps({"A_eV_A3": coefficient}))
    return coefficient


def evaluate(out: Path, control: Path, frames_path: Path, member: int) -> dict:
    from ionmix.models import load_model

    coefficient = json.loads((out / "lrc.json").read_text())["A_eV_A3"]
    frames, provenance = frames_with_molecules(frames_path, 1)
    teacher = provenance.teacher(frames[0], "classical").calculator(frames[0])
    ref = forces_of(teacher, frames)
    trained = out / "bench" / f"model-{member}-plus30" / "model.nequip.zip"
    rows = {}
    for label, package, add_back in [
            ("control: fine-tuned on the labels", control, False),
            ("fine-tuned on the labels less the correction, + the correction", trained, True),
            ("the same without the correction added back", trained, False)]:
        calc = load_model(package, frames[0], provenance=provenance).calc
        calc = PlusCorrection(calc, coefficient) if add_back else calc
        rows[label] = errors(forces_of(calc, frames), ref, frames)
    (out / "eval.json").write_text(json.dumps(rows, indent=1))
    print(markdown(rows))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=("prepare", "evaluate"))
    p.add_argument("--loop", type=Path, default=Path("runs/learn-npt"))
    p.add_argument("--generation", type=int, default=3)
    p.add_argument("--member", type=int, default=0)
    p.add_argument("--control", type=Path, help="evaluate: the control's package")
    p.add_argument("--frames", type=Path, default=Path("runs/teacher-ase-npt/trajectory.extxyz"))
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    if args.stage == "prepare":
        print("A =", prepare(args.loop, args.generation, args.out), "eV·Å³")
    else:
        if args.control is None or not args.control.is_file():
            p.error(f"--control {args.control}: the control's package is needed")
        evaluate(args.out, args.control, args.frames, args.member)


if __name__ == "__main__":
    main()
