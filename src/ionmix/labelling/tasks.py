"""Labelling tasks: module-level functions of (teacher, ions, frame, options) that return
labelled frames, so Dask can run them on any worker. They never touch the store: the
client is its single writer (`ionmix.labelling.run`).

Every task returns a list of `Label` (one per stored step), or the reason it has none (see
below); a teacher that does not converge or crashes never yields a label. A task's labels
are returned together, so a frame's AIMD or relaxation is stored whole or not at all.

Tasks (the paper's protocol for its second system, Goodwin et al. 2024, SI):

* ``single-point``: energy, forces and (where the teacher gives it) stress of the frame.
* ``aimd``: fixed-cell MD with the teacher from the frame (paper: 50 steps of ~1 fs) at the
  frame's temperature, velocities drawn from Maxwell–Boltzmann (seeded by the frame) and
  rescaled to the target whenever the instantaneous temperature leaves it by more than
  ``tolerance_K`` (paper: 10 K), as pw.x's ``ion_temperature = 'rescaling'`` does.
* ``relax``: fixed-cell relaxation (ASE's BFGS), ``relax_steps`` steps (paper: 10), each
  step stored.
* ``volume-scan``: the frame with molecule centres rescaled rigidly (`rescale_molecules`)
  to each linear ``scale`` (volume × scale³), one single point each.
* ``isolated-atom``: the teacher's energy of one atom of an element alone.

What a task gives back (a Dask result, so the client decides; see `_guard`):

* its labels (a list of `Label`);
* a `LabelFailure` when the *engine* failed on the frame (`engine_errors`: an SCF that did
  not converge, a pw.x or OpenMM crash, non-finite labels): the client records it. It is
  returned, not raised, so Dask does not log an expected outcome as a crashed task;
* a `LabelError` when the request cannot be labelled (an `InputError` of the teacher, e.g.
  a volume-scan cell below twice the classical cutoff): the client raises it, one line;
* anything else (ZeroDivisionError, TypeError, KeyError …) is a bug: raised, with its
  traceback, and never recorded as the frame's failure.
"""

from __future__ import annotations

import math
import numbers
import subprocess
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from ionmix.errors import InputError, RunError

#: Tasks that start from a frame (``isolated-atom`` starts from an element).
FRAME_TASKS = ("single-point", "aimd", "relax", "volume-scan")
#: Sampling keys a derived label keeps from its source frame (to split by replica etc.;
#: the charge scale, for a student's Coulomb baseline on the derived frames).
CARRIED_KEYS = ("composition", "molecules", "ion_set", "run_id", "frame_index", "replica",
                "temperature_K", "pressure_bar", "seed", "time_ps", "ensemble", "generation",
                "walker", "charge_scale", "cutoff_A")


class LabelError(InputError):
    """A labelling request that cannot start (bad task, option, selection or teacher)."""


class TeacherOutputError(RunError):
    """The teacher returned labels that cannot be stored (NaN or infinite energy, forces
    or stress, forces of the wrong shape): the engine failed on the frame."""


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
    """Options of the frame tasks (units in names; defaults are the paper's). Checked when
    made (`check_task_options`): a bad value is a `LabelError` naming the field.

    Attributes:
        n_steps: AIMD steps (≥ 1).
        timestep_fs: AIMD time step (fs, > 0).
        temperature_K: AIMD target (K, > 0); None: each frame's ``temperature_K``.
        tolerance_K: AIMD velocity rescaling window (K, ≥ 0).
        every: store every n-th AIMD step (1 ≤ every ≤ n_steps).
        relax_steps: relaxation steps stored, the starting frame included (≥ 1).
        fmax_eV_per_A: relaxation stops early below this largest force (eV/Å, ≥ 0).
        scales: volume-scan linear scale factors (each > 0, at least one, no repeats).
    """

    n_steps: int = 50
    timestep_fs: float = 1.0
    temperature_K: float | None = None
    tolerance_K: float = 10.0
    every: int = 1
    relax_steps: int = 10
    fmax_eV_per_A: float = 0.01
    scales: tuple[float, ...] = (0.96, 0.98, 1.0, 1.02, 1.04)

    def __post_init__(self):
        object.__setattr__(self, "scales", tuple(self.scales))  # a caller's list
        check_task_options(vars(self))
        # plain Python numbers (not numpy's): the options are recorded as JSON
        for f in ("n_steps", "every", "relax_steps"):
            object.__setattr__(self, f, int(getattr(self, f)))
        for f in ("timestep_fs", "tolerance_K", "fmax_eV_per_A"):
            object.__setattr__(self, f, float(getattr(self, f)))
        if self.temperature_K is not None:
            object.__setattr__(self, "temperature_K", float(self.temperature_K))
        object.__setattr__(self, "scales", tuple(float(x) for x in self.scales))


#: The TaskOptions fields each task uses: its labels depend on these and nothing else, so
#: they are what failure records and a store's option record compare.
TASK_OPTION_FIELDS: dict[str, tuple[str, ...]] = {
    "single-point": (),
    "aimd": ("n_steps", "timestep_fs", "temperature_K", "tolerance_K", "every"),
    "relax": ("relax_steps", "fmax_eV_per_A"),
    "volume-scan": ("scales",),
    "isolated-atoms": (),
}


def options_record(task: str, options: TaskOptions) -> dict[str, Any]:
    """The options `task` uses, JSON-able (``scales`` as a list): e.g. ``{"n_steps": 50,
    ...}`` for aimd, ``{}`` for a single point."""
    record = {f: getattr(options, f) for f in TASK_OPTION_FIELDS.get(task, ())}
    return {f: list(v) if isinstance(v, tuple) else v for f, v in record.items()}


def _is_count(value: Any) -> bool:
    """A whole number (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite real number (numpy's too), not a bool: NaN and inf are refused."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def check_task_options(values: Mapping[str, Any], names: Mapping[str, str] | None = None
                       ) -> None:
    """Refuse bad task options before anything is written or started: the one set of
    checks behind `TaskOptions` and ``ionmix label``.

    Args:
        values: TaskOptions fields (some or all) → value.
        names: how messages name a field; the CLI passes its options (``n_steps`` →
            ``--steps``). Default: the field's own name.

    Raises:
        LabelError: the first value at fault, named, with what it must be.
    """
    def name(f: str) -> str:
        return (names or {}).get(f, f)

    def refuse(f: str, rule: str, hint: str = "") -> None:
        raise LabelError(f"{name(f)} must be {rule} (got {values[f]!r})"
                         + (f"; {hint}" if hint else ""))

    for f in ("n_steps", "every", "relax_steps"):
        if f in values and not (_is_count(values[f]) and values[f] >= 1):
            refuse(f, "a whole number ≥ 1")
    if "timestep_fs" in values and not (_is_number(values["timestep_fs"])
                                        and values["timestep_fs"] > 0):
        refuse("timestep_fs", "> 0 fs")
    temperature = values.get("temperature_K")
    if temperature is not None and not (_is_number(temperature) and temperature > 0):
        refuse("temperature_K", "> 0 K",
               f"leave {name('temperature_K')} out to use each frame's temperature")
    for f, unit in (("tolerance_K", "K"), ("fmax_eV_per_A", "eV/Å")):
        if f in values and not (_is_number(values[f]) and values[f] >= 0):
            refuse(f, f"≥ 0 {unit}")
    if "scales" in values:
        _check_scales(values["scales"], name("scales"))
    n_steps, every = values.get("n_steps"), values.get("every")
    if _is_count(n_steps) and _is_count(every) and every > n_steps:
        raise LabelError(f"{name('every')} {every} is more than {name('n_steps')} {n_steps}: "
                         "no AIMD step would be stored")


def _check_scales(scales: Any, name: str) -> None:
    """Volume-scan scale factors: at least one, each a positive finite number, no repeats
    (a repeat would label one geometry twice under two label ids)."""
    scales = list(scales)
    if not scales:
        raise LabelError(f"{name}: give at least one scale factor, e.g. 0.98,1.0,1.02")
    for scale in scales:
        if not (_is_number(scale) and scale > 0):
            raise LabelError(f"{name}: every scale factor must be a number > 0 (got "
                             f"{scale!r} in {', '.join(map(str, scales))})")
    repeated = sorted({s for s in scales if scales.count(s) > 1})
    if repeated:
        raise LabelError(f"{name}: {', '.join(f'{s:g}' for s in repeated)} given more than "
                         "once")


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
    return _checked(atoms, results)


def _checked(atoms: Atoms, results: dict[str, Any]) -> Atoms:
    """A copy of `atoms` with `results` as its labels; TeacherOutputError (a failure of the
    frame, not of the run) if they cannot be stored (NaN, inf, wrong shape)."""
    from ionmix.dataset.frames import validate_labels

    out = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    out.calc = SinglePointCalculator(out, **results)
    try:
        validate_labels(out, "the teacher's result", error=TeacherOutputError)
    except TeacherOutputError as exc:
        # the usual cause is two atoms on top of each other: name them
        raise TeacherOutputError(f"{exc} ({closest_pair(atoms)})") from None
    return out


def closest_pair(atoms: Atoms) -> str:
    """The two closest atoms (minimum image), as "closest atoms: 12 (H) and 40 (F),
    0.31 Å apart"."""
    from ase.geometry import get_distances

    if len(atoms) < 2:
        return "one atom"
    _, d = get_distances(atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    np.fill_diagonal(d, np.inf)
    i, j = np.unravel_index(np.argmin(d), d.shape)
    i, j = sorted((int(i), int(j)))
    return (f"closest atoms: {i} ({atoms.symbols[i]}) and {j} ({atoms.symbols[j]}), "
            f"{d[i, j]:.2f} Å apart")


def _meta(source: Atoms, task: str, step: int, label_id: str) -> dict[str, Any]:
    meta = {k: source.info[k] for k in CARRIED_KEYS if k in source.info}
    meta.setdefault("composition", "")
    return {**meta, "task": task, "step": int(step), "source": source.info["label_id"],
            "label_id": label_id}


def label_id(source_id: str, task: str, step: int = 0) -> str:
    """Label id of step `step` of `task` started from the frame `source_id`."""
    return f"{source_id}|{task}|{step}"


def engine_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the engine failed on this frame" (recorded; the run goes
    on): ionmix's `RunError` (pw.x's `EspressoRunError`, `OpenMMRunError`,
    `TeacherOutputError`), ASE's calculator errors (``CalculationFailed``, ``SCFError``:
    tblite's SCF that did not converge), OpenMM's ``OpenMMException``, tblite's runtime
    error and a failed engine subprocess. Anything else is not the engine's doing."""
    from ase.calculators.calculator import CalculatorError

    errors: list[type[BaseException]] = [RunError, CalculatorError,
                                         subprocess.CalledProcessError]
    try:
        import openmm

        errors.append(openmm.OpenMMException)
    except ImportError:
        pass
    try:
        from tblite.exceptions import TBLiteRuntimeError

        errors.append(TBLiteRuntimeError)
    except ImportError:  # tblite is optional (the xtb teacher)
        pass
    return tuple(errors)


def _reason(exc: BaseException) -> str:
    """One line: the exception's type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _guard(source_id: str, fn):
    """Run `fn` and return its labels. An engine failure (`engine_errors`) comes back as a
    LabelFailure with its traceback, a teacher's InputError as a LabelError naming the
    frame: both returned, not raised (see the module docstring). Any other exception is a
    bug: raised, never recorded as the frame's failure."""
    try:
        return fn()
    except LabelFailure as exc:
        return exc
    except InputError as exc:
        return LabelError(f"{source_id}: {exc}")
    except engine_errors() as exc:
        return LabelFailure(source_id, _reason(exc), traceback.format_exc())


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
    from ionmix.chemistry.topology import (
        MOL_ID_ARRAY,
        attach_molecules,
        molecules_of,
        scaled_frame,
    )

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
            scaled = scaled_frame(frame, scale, sized.arrays[MOL_ID_ARRAY])
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
    from ase.md import velocitydistribution as vd
    from ase.md.verlet import VelocityVerlet

    teacher = _teacher(spec, ions)
    sid = frame.info["label_id"]
    # the run refuses (before submitting) a frame without temperature_K and no target
    target_K = opts.temperature_K if opts.temperature_K is not None \
        else float(frame.info["temperature_K"])

    def run():
        atoms = Atoms(frame.numbers, frame.positions, cell=frame.cell, pbc=frame.pbc)
        atoms.set_masses(frame.get_masses())
        atoms.calc = teacher.calculator(frame, **_workdir(teacher, workdir))
        rng = np.random.default_rng(_seed(frame))
        if hasattr(vd, "thermalize_momenta"):  # ASE ≥ 3.29; the older name is deprecated
            vd.thermalize_momenta(atoms, target_K, rng=rng)
        else:
            vd.MaxwellBoltzmannDistribution(atoms, temperature_K=target_K, rng=rng)
        vd.Stationary(atoms)
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
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if with_stress and all(atoms.pbc):
        results["stress"] = atoms.get_stress()
    return _checked(atoms, results)


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
