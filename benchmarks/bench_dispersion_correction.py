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

``--part pairs`` does the same with the teacher's LJ pairs beyond 4.5 Å instead (energy,
forces and stress; `FarPairs`): the part of the unseen dispersion that depends on
structure. Run it into another OUT, with the same control:

    python benchmarks/bench_dispersion_correction.py prepare --part pairs --out runs/far-test
    python benchmarks/bench_epochs.py --loop runs/far-test --generation 3 --member 0 \
        --extra-epochs 30 --ps 0.5 --only longer --teacher-density 1.572 --out runs/far-test/bench
    python benchmarks/bench_dispersion_correction.py evaluate --part pairs --out runs/far-test \
        --control runs/lrc-control/model-0-plus30/model.nequip.zip
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


class VolumeCorrection(Calculator):
    """E = −A/V: the energy, no forces, stress A/V² on the diagonal (ASE's
    σ = (1/V) ∂E/∂ε; pressure −A/V²)."""

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, coefficient_eV_A3: float):
        super().__init__()
        self.coefficient = coefficient_eV_A3

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        volume = self.atoms.get_volume()
        self.results = {"energy": -self.coefficient / volume,
                        "forces": np.zeros((len(self.atoms), 3)),
                        "stress": np.array([1, 1, 1, 0, 0, 0]) * self.coefficient / volume**2}


class FarPairs(Calculator):
    """The teacher's LJ from pairs farther apart than `cutoff_A` (its switch and
    exclusions; `bench_molecule_forces.lj_beyond`'s force): energy, forces, and the stress
    by central differences of 1e-8 strains on the Reference platform (double precision;
    a strain that carried a pair across the step would add a jump, so a second step size
    checks it)."""

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, atoms, provenance, cutoff_A: float = 4.5):
        import openmm

        from ionmix.chemistry.topology import molecules_of
        from ionmix.teachers.classical.system import make_system

        super().__init__()
        c = provenance.teacher(atoms, "classical").calculator(atoms)
        csys = make_system(molecules_of(atoms), atoms.cell.array, charge_scale=c.charge_scale,
                           cutoff_A=c.cutoff_A, ewald_error_tolerance=c.ewald_error_tolerance,
                           lj_switch_width_A=c.lj_switch_width_A, ions=c.ions)
        lj = next(f for f in csys.system.getForces()
                  if isinstance(f, openmm.CustomNonbondedForce))
        far = copy.deepcopy(lj)
        first, *rest = far.getEnergyFunction().split(";")
        far.setEnergyFunction(";".join([f"step(r-{cutoff_A / 10})*({first})", *rest]))  # nm
        far.setUseLongRangeCorrection(False)
        from bench_molecule_forces import _context_of

        self.context = _context_of(csys.system, far)

    def _strained_energy(self, strain: np.ndarray) -> float:
        from bench_molecule_forces import _evaluate

        work = self.atoms.copy()
        deformation = np.eye(3) + strain
        work.set_cell(self.atoms.cell.array @ deformation, scale_atoms=False)
        work.positions = self.atoms.positions @ deformation
        return _evaluate(self.context, work)[0]

    def _stress(self, step: float) -> np.ndarray:
        stress = np.zeros((3, 3))
        for i in range(3):
            for j in range(i, 3):
                strain = np.zeros((3, 3))
                strain[i, j] = strain[j, i] = step / (2 if i != j else 1)
                stress[i, j] = stress[j, i] = (self._strained_energy(strain)
                                               - self._strained_energy(-strain)) / (2 * step)
        return stress / self.atoms.get_volume()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        from bench_molecule_forces import _evaluate

        super().calculate(atoms, properties, system_changes)
        energy, forces = _evaluate(self.context, self.atoms)
        stress = self._stress(1e-8)
        if np.abs(stress - self._stress(2e-8)).max() > 1e-6:  # a pair crossed: step again
            stress = self._stress(3e-8)
        self.results = {"energy": energy, "forces": forces,
                        "stress": stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]}


class Plus(Calculator):
    """The sum of two calculators' energy, forces and stress."""

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, first, second):
        super().__init__()
        self.parts = (first, second)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        out = {"energy": 0.0, "forces": 0.0, "stress": 0.0}
        for calc in self.parts:
            work = self.atoms.copy()
            work.calc = calc
            out["energy"] += work.get_potential_energy()
            out["forces"] = out["forces"] + work.get_forces()
            out["stress"] = out["stress"] + work.get_stress()
        self.results = out


def prepare(loop: Path, generation: int, out: Path, part: str) -> None:
    """OUT as a loop folder whose generation's labels lack `part` (energy, forces and
    stress of `part_calculator`); the other files are links to the loop's."""
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
    calc = None
    for split in ("train", "val", "test"):
        frames = read_frames(loop / gen / "data" / f"{split}.extxyz", ":", what="data")
        for atoms in frames:
            calc = calc or part_calculator(part, atoms, provenance, out)
            work = atoms.copy()
            work.calc = calc
            info = dict(atoms.info)
            atoms.calc = SinglePointCalculator(
                atoms, energy=atoms.get_potential_energy() - work.get_potential_energy(),
                forces=atoms.get_forces() - work.get_forces(),
                stress=atoms.get_stress() - work.get_stress())
            atoms.info.update(info)
        atomic_write_extxyz(frames, out / gen / "data" / f"{split}.extxyz")


def part_calculator(part: str, atoms, provenance, out: Path) -> Calculator:
    """The part's calculator; the correction's A is written to (and then read from)
    ``OUT/lrc.json``."""
    if part == "pairs":
        return FarPairs(atoms, provenance)
    record = out / "lrc.json"
    if not record.is_file():
        record.write_text(json.dumps({"A_eV_A3": correction_coefficient(atoms, provenance)}))
    return VolumeCorrection(json.loads(record.read_text())["A_eV_A3"])


def evaluate(out: Path, control: Path, frames_path: Path, member: int, part: str) -> dict:
    from ionmix.models import load_model

    frames, provenance = frames_with_molecules(frames_path, 1)
    teacher = provenance.teacher(frames[0], "classical").calculator(frames[0])
    ref = forces_of(teacher, frames)
    part_calc = part_calculator(part, frames[0], provenance, out)
    trained = out / "bench" / f"model-{member}-plus30" / "model.nequip.zip"
    rows = {}
    for label, package, with_part in [
            ("control: fine-tuned on the labels", control, False),
            (f"fine-tuned on the labels less the {part}, + the {part}", trained, True),
            (f"the same without the {part} added back", trained, False)]:
        calc = load_model(package, frames[0], provenance=provenance).calc
        calc = Plus(calc, part_calc) if with_part else calc
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
    p.add_argument("--part", choices=("correction", "pairs"), default="correction",
                   help="the volume-only correction, or the LJ pairs beyond 4.5 Å")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    gen = f"gen-{args.generation:03d}"
    if args.stage == "prepare" and not (args.loop / gen / "data" / "train.extxyz").is_file():
        p.error(f"--loop {args.loop} --generation {args.generation}: no {gen}/data there")
    trained = args.out / "bench" / f"model-{args.member}-plus30" / "model.nequip.zip"
    if args.stage == "evaluate" and not trained.is_file():
        p.error(f"--out {args.out}: no fine-tuned student at {trained} (run bench_epochs.py "
                "as the docstring says)")
    if args.stage == "evaluate" and not args.frames.is_file():
        p.error(f"--frames {args.frames}: no such file")
    if args.stage == "prepare":
        prepare(args.loop, args.generation, args.out, args.part)
    else:
        if args.control is None or not args.control.is_file():
            p.error(f"--control {args.control}: the control's package is needed")
        evaluate(args.out, args.control, args.frames, args.member, args.part)


if __name__ == "__main__":
    main()
