"""Labelling tasks: module-level functions of (teacher, ions, frame, options) that return
labelled frames, so Dask can run them on any worker. They never touch the store: the
client is its single writer (`ionmix.labelling.run`).

Every task returns a list of `Label` (one per stored step) or raises `LabelFailure` with the
reason; a teacher that does not converge or crashes never yields a label. A task's labels
are returned together, so a frame's AIMD or relaxation is stored whole or not at all.

Tasks (the paper's protocol for its second system, Goodwin et al. 2024, SI):

* ``single-point``: energy, forces and (where the teacher gives it) stress of the frame.
* ``aimd``: fixed-cell MD with the teacher from the frame (paper: 50 steps of ~1 fs) at the
  frame's temperature, velocities drawn from Maxwell–Boltzmann (seeded by the frame) and
  rescaled to the target whenever the instantaneous temperature leaves it by more than
  ``tolerance_K`` (paper: 10 K), as pw.x's ``ion_temperature = 'rescaling'`` does.
* ``relax``: fixed-cell relaxation (ASE's BFGS), ``n_steps`` steps (paper: 10), each step
  stored.
* ``volume-scan``: the frame with molecule centres rescaled rigidly (`rescale_molecules`)
  to each linear ``scale`` (volume × scale³), one single point each.
* ``isolated-atom``: the teacher's energy of one atom of an element alone.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from ionmix.errors import RunError

#: Tasks that start from a frame (``isolated-atom`` starts from an element).
FRAME_TASKS = ("single-point", "aimd", "relax", "volume-scan")
#: Sampling keys a derived label keeps from its source frame (to split by replica etc.;
#: the charge scale, for a student's Coulomb baseline on the derived frames).
CARRIED_KEYS = ("composition", "molecules", "ion_set", "run_id", "frame_index", "replica",
                "temperature_K", "pressure_bar", "seed", "time_ps", "ensemble", "generation",
                "walker", "charge_scale", "cutoff_A")


class LabelFailure(RunError):
    """The teacher failed on a frame (no SCF convergence, a crash); the label is not stored.

    Attributes:
        label_id: the frame's label id; reason: one line; detail: traceback or output tail.
    """

    def __init__(self, label_id: str, reason: str, detail: str = ""):
        super().__init__(f"{label_id}: {reason}")
        self.label_id, self.reason, self.detail = label_id, reason, detail

    def __reduce__(self):  # travels back from Dask workers with its fields
        return (LabelFailure, (self.label_id, self.reason, self.detail))


@dataclass
class Label:
    """One labelled frame: Atoms with the labels on a SinglePointCalculator, and metadata
    for the store (task, step, source, label_id and the carried keys)."""

    atoms: Atoms
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskOptions:
    """Options of the frame tasks (units in names; defaults are the paper's).

    Attributes:
        n_steps: AIMD steps (50) or relaxation steps (10; used when task is relax and
            ``relax_steps`` is None).
        timestep_fs: AIMD time step.
        temperature_K: AIMD target; None: the frame's ``temperature_K``.
        tolerance_K: AIMD velocity rescaling window.
        every: store every n-th AIMD step.
        relax_steps: relaxation steps.
        fmax_eV_per_A: relaxation stops early below this largest force.
        scales: volume-scan linear scale factors.
    """

    n_steps: int = 50
    timestep_fs: float = 1.0
    temperature_K: float | None = None
    tolerance_K: float = 10.0
    every: int = 1
    relax_steps: int = 10
    fmax_eV_per_A: float = 0.01
    scales: tuple[float, ...] = (0.96, 0.98, 1.0, 1.02, 1.04)


def _teacher(spec_record: dict, ions_record: dict | None):
    from ionmix.chemistry.ionset import IonSet
    from ionmix.teachers import make_teacher

    return make_teacher(spec_record, IonSet.from_record(ions_record) if ions_record else None)


def _labelled(atoms: Atoms, calc, with_stress: bool) -> Atoms:
    """A copy of `atoms` with the teacher's labels (energy, forces, stress if periodic)."""
    work = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    work.calc = calc
    results = {"energy": work.get_potential_energy(), "forces": work.get_forces()}
    if with_stress and all(work.pbc):
        results["stress"] = work.get_stress()
    out = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    out.calc = SinglePointCalculator(out, **results)
    return out


def _meta(source: Atoms, task: str, step: int, label_id: str) -> dict[str, Any]:
    meta = {k: source.info[k] for k in CARRIED_KEYS if k in source.info}
    meta.setdefault("composition", "")
    return {**meta, "task": task, "step": int(step), "source": source.info["label_id"],
            "label_id": label_id}


def label_id(source_id: str, task: str, step: int = 0) -> str:
    """Label id of step `step` of `task` started from the frame `source_id`."""
    return f"{source_id}|{task}|{step}"


def _guard(source_id: str, fn):
    """Run `fn`, turning any teacher exception into a LabelFailure with its traceback."""
    try:
        return fn()
    except LabelFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - any engine error is this frame's failure
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        raise LabelFailure(source_id, reason, traceback.format_exc()) from None


def single_point(spec: dict, ions: dict | None, frame: Atoms, opts: TaskOptions,
                 workdir: str | None = None) -> list[Label]:
    """One label: the frame itself."""
    teacher = _teacher(spec, ions)
    sid = frame.info["label_id"]

    def run():
        calc = teacher.calculator(frame, **_workdir(teacher, workdir))
        return [Label(_labelled(frame, calc, teacher.provides_stress),
                      _meta(frame, "single-point", 0, label_id(sid, "single-point")))]
    return _guard(sid, run)


def _workdir(teacher, workdir: str | None) -> dict:
    """Calculator keyword for teachers that write files (espresso): their run folder."""
    return {"directory": workdir} if workdir and getattr(teacher, "uses_directory", False) \
        else {}


def volume_scan(spec: dict, ions: dict | None, frame: Atoms, opts: TaskOptions,
                workdir: str | None = None) -> list[Label]:
    """One label per scale: molecule centres (and cell) scaled by it, molecules rigid."""
    from ionmix.chemistry.ionset import IonSet
    from ionmix.chemistry.topology import MOL_ID_ARRAY, attach_molecules, molecules_of
    from ionmix.sampling import rescale_molecules

    teacher = _teacher(spec, ions)
    sid = frame.info["label_id"]
    sized = frame.copy()
    ion_set = IonSet.from_record(ions) if ions else None
    if MOL_ID_ARRAY not in sized.arrays:
        sizes = {n: ion_set[n].n_atoms for n, _ in molecules_of(frame)} if ion_set else {}
        attach_molecules(sized, molecules_of(frame), sizes)

    def run():
        calc = teacher.calculator(frame, **_workdir(teacher, workdir))
        labels = []
        for k, scale in enumerate(opts.scales):
            scaled = frame.copy()
            scaled.positions = rescale_molecules(frame.positions, sized.arrays[MOL_ID_ARRAY],
                                                 frame.get_masses(), scale)
            scaled.set_cell(frame.cell.array * scale)
            meta = _meta(frame, "volume-scan", k, label_id(sid, "volume-scan", k))
            labels.append(Label(_labelled(scaled, calc, teacher.provides_stress), meta))
        return labels
    return _guard(sid, run)


def _seed(frame: Atoms) -> int:
    from ionmix.dataset.store import frame_hash

    return int(frame_hash(frame)[:8], 16)


def aimd(spec: dict, ions: dict | None, frame: Atoms, opts: TaskOptions,
         workdir: str | None = None) -> list[Label]:
    """Fixed-cell velocity-Verlet MD with velocity rescaling (see the module docstring)."""
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    teacher = _teacher(spec, ions)
    sid = frame.info["label_id"]
    target_K = opts.temperature_K or float(frame.info.get("temperature_K", 300.0))

    def run():
        atoms = Atoms(frame.numbers, frame.positions, cell=frame.cell, pbc=frame.pbc)
        atoms.set_masses(frame.get_masses())
        atoms.calc = teacher.calculator(frame, **_workdir(teacher, workdir))
        MaxwellBoltzmannDistribution(atoms, temperature_K=target_K,
                                     rng=np.random.default_rng(_seed(frame)))
        Stationary(atoms)
        dyn = VelocityVerlet(atoms, timestep=opts.timestep_fs * units.fs)
        labels = []
        for step in range(1, opts.n_steps + 1):
            dyn.run(1)
            if abs(atoms.get_temperature() - target_K) > opts.tolerance_K:
                atoms.set_momenta(atoms.get_momenta()
                                  * np.sqrt(target_K / atoms.get_temperature()))
            if step % opts.every == 0:
                labels.append(Label(_snapshot(atoms, teacher.provides_stress),
                                    _meta(frame, "aimd", step, label_id(sid, "aimd", step))))
        return labels
    return _guard(sid, run)


def _snapshot(atoms: Atoms, with_stress: bool) -> Atoms:
    """The current state with the labels the calculator already computed for it."""
    out = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if with_stress and all(atoms.pbc):
        results["stress"] = atoms.get_stress()
    out.calc = SinglePointCalculator(out, **results)
    return out


def relax(spec: dict, ions: dict | None, frame: Atoms, opts: TaskOptions,
          workdir: str | None = None) -> list[Label]:
    """Fixed-cell BFGS relaxation; each evaluated geometry is one label (step 0 = frame)."""
    from ase.optimize import BFGS

    teacher = _teacher(spec, ions)
    sid = frame.info["label_id"]

    def run():
        atoms = Atoms(frame.numbers, frame.positions, cell=frame.cell, pbc=frame.pbc)
        atoms.calc = teacher.calculator(frame, **_workdir(teacher, workdir))
        labels = []

        def record():
            step = len(labels)
            labels.append(Label(_snapshot(atoms, teacher.provides_stress),
                                _meta(frame, "relax", step, label_id(sid, "relax", step))))
        opt = BFGS(atoms, logfile=None)
        opt.attach(record, interval=1)
        opt.run(fmax=opts.fmax_eV_per_A, steps=opts.relax_steps - 1)
        return labels
    return _guard(sid, run)


def isolated_atom(spec: dict, element: str, workdir: str | None = None) -> list[Label]:
    """The teacher's isolated-atom energy of `element` as a one-atom label (zero forces)."""
    teacher = _teacher(spec, None)
    lid = f"isolated-atom|{element}"

    def run():
        # teachers that write files (pw.x) run in the task's folder, kept on failure
        where = {"directory": workdir} if workdir and teacher.uses_directory else {}
        energy = teacher.isolated_atom_energy_eV(element, **where)
        atom = Atoms(element, positions=[[0.0, 0.0, 0.0]])
        atom.calc = SinglePointCalculator(atom, energy=energy, forces=np.zeros((1, 3)))
        return [Label(atom, {"task": "isolated-atom", "composition": "", "step": 0,
                             "label_id": lid})]
    return _guard(lid, run)


#: task name → function(spec, ions, frame, options, workdir)
FRAME_TASK_FUNCTIONS = {"single-point": single_point, "aimd": aimd, "relax": relax,
                        "volume-scan": volume_scan}
