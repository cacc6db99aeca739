"""The teacher interface: what labels frames (energy, forces, stress) for training.

A teacher is described by a `TeacherSpec` — a kind (``classical``, later ``xtb``,
``espresso``) and its parameters — that can be pickled to a Dask worker, written to TOML or
JSON, and hashed into a stable `TeacherSpec.key`. The key is stored with every label, so a
store can hold labels from several teachers and no stage mixes them by accident.

A `Teacher` built from a spec (`make_teacher`) gives:

* `Teacher.calculator(atoms)`: an ASE calculator for that structure (eV, eV/Å, eV/Å³);
* `Teacher.provides_stress`: whether NPT exploration and stress training can use it;
* `Teacher.isolated_atom_energy_eV(element)`: the energy of one atom of that element
  alone, the reference training's ``isolated-atoms`` energy shifts use (the paper found
  these essential when training on several compositions). Each teacher states it; none is
  silently 0.

Every kind registers itself in `TEACHER_KINDS`; its ``Params`` pydantic model forbids
unknown keys and fills defaults, so two specs that mean the same teacher have the same key.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ionmix.errors import InputError


class TeacherError(InputError):
    """A teacher spec or a structure the teacher cannot label; names the key or species."""


class TeacherSpec(BaseModel):
    """Kind + parameters of a teacher; hashable, picklable, JSON-able.

    Build one with `teacher_spec` (which validates and fills defaults), not directly.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    params: dict[str, Any] = {}

    @property
    def key(self) -> str:
        """Stable label key, e.g. ``classical-3f2a9c1b2d4e``: kind + 12 hex digits of the
        sha256 of the canonical JSON of (kind, params), less the kind's `Teacher.key_ignores`
        (how to launch the engine or where its files are; they do not change a label)."""
        ignored = getattr(TEACHER_KINDS.get(self.kind), "key_ignores", frozenset())
        params = {k: v for k, v in self.params.items() if k not in ignored}
        text = json.dumps({"kind": self.kind, "params": params}, sort_keys=True)
        return f"{self.kind}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    def record(self) -> dict:
        """JSON-able form (``{"kind": ..., "params": {...}}``)."""
        return {"kind": self.kind, "params": dict(self.params)}

    def describe(self) -> str:
        """One line for reports: kind and its parameters."""
        params = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()) if v is not None)
        return f"{self.kind} ({params}) [{self.key}]"


class Teacher(ABC):
    """A labelling method built from a spec. Subclasses set ``kind``, ``Params`` and
    ``provides_stress`` and implement `calculator` and `isolated_atom_energy_eV`."""

    kind: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    provides_stress: ClassVar[bool]

    def __init__(self, spec: TeacherSpec, ions: Mapping | None = None):
        self.spec = spec
        self.params = self.Params(**spec.params)
        self.ions = ions

    #: True for teachers that write files (their calculator takes ``directory=``).
    uses_directory: ClassVar[bool] = False
    #: Parameters left out of the spec key: they say how to run the engine (command, MPI
    #: ranks) or where its files are, not what it computes (e.g. the pseudopotentials'
    #: directory, whose files are recorded by checksum instead).
    key_ignores: ClassVar[frozenset[str]] = frozenset()

    def check_frame(self, atoms) -> None:  # noqa: B027 - optional hook, no-op by default
        """Raise TeacherError if this teacher cannot label `atoms` (before any work)."""

    def check_total_charge(self, atoms, expected_e: int, parameter: str) -> None:
        """TeacherError if the frame's ions (its molecules, charges from the ion set) do not
        add up to `expected_e`; frames without molecule information are not checked."""
        from ionmix.chemistry.topology import has_molecules, molecules_of

        if self.ions is None or not has_molecules(atoms):
            return
        charge = sum(self.ions[name].charge * n for name, n in molecules_of(atoms))
        if charge != expected_e:
            raise TeacherError(
                f"the frame's ions ({atoms.info.get('molecules')}) have total charge "
                f"{charge:+d} e, but the {self.kind} teacher expects {expected_e:+d} "
                f"(set {parameter} in the teacher spec)")

    @abstractmethod
    def calculator(self, atoms):
        """An ASE calculator that labels `atoms` (and frames of the same system)."""

    @abstractmethod
    def isolated_atom_energy_eV(self, element: str) -> float:
        """Energy of one isolated atom of `element` (eV), by this teacher's definition."""

    def isolated_atom_energies_eV(self, elements: Iterable[str]) -> dict[str, float]:
        """`isolated_atom_energy_eV` for each element, sorted by element symbol."""
        return {el: float(self.isolated_atom_energy_eV(el)) for el in sorted(set(elements))}

    @property
    def key(self) -> str:
        return self.spec.key

    def describe(self) -> str:
        return self.spec.describe()


#: kind → Teacher subclass; filled by each kind's module (see `ionmix.teachers`).
TEACHER_KINDS: dict[str, type[Teacher]] = {}


def register(cls: type[Teacher]) -> type[Teacher]:
    """Class decorator adding a Teacher subclass to `TEACHER_KINDS`."""
    TEACHER_KINDS[cls.kind] = cls
    return cls


def teacher_spec(data: Mapping[str, Any] | str | TeacherSpec, source: str = "teacher",
                 **defaults: Any) -> TeacherSpec:
    """Validate a teacher description and fill its defaults.

    Args:
        data: a kind name (``"classical"``), a mapping ``{"kind": ..., <params>...}`` (the
            TOML ``[teacher]`` table: parameters beside ``kind``), a mapping ``{"kind": ...,
            "params": {...}}`` (the recorded form), or a spec.
        source: where the description came from, for error messages (file or option).
        defaults: parameter values used where `data` gives none (e.g. a study's charge
            scale and cutoff for the classical teacher).

    Raises:
        TeacherError: unknown kind, unknown parameter keys or bad values, naming them.
    """
    if isinstance(data, TeacherSpec):
        data = data.record()
    if isinstance(data, str):
        data = {"kind": data}
    data = dict(data)
    kind = data.pop("kind", None)
    if kind not in TEACHER_KINDS:
        raise TeacherError(f"{source}: unknown teacher kind {kind!r}; available: "
                           f"{', '.join(sorted(TEACHER_KINDS))}")
    params = dict(data.pop("params", {}))
    params.update(data)
    merged = {**{k: v for k, v in defaults.items() if v is not None}, **params}
    try:
        model = TEACHER_KINDS[kind].Params(**merged)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        raise TeacherError(f"{source}: teacher {kind!r}: {problems}") from None
    return TeacherSpec(kind=kind, params=model.model_dump(mode="json"))


def make_teacher(spec: TeacherSpec | Mapping | str, ions: Mapping | None = None,
                 **options: Any) -> Teacher:
    """A Teacher from a spec; `ions` is the study's ion set where the teacher needs it;
    `options` are engine options that do not change the labels (e.g. an OpenMM platform)."""
    spec = teacher_spec(spec)
    return TEACHER_KINDS[spec.kind](spec, ions, **options)
