"""Provenance: the records that give a frame's ``teacher`` and ``ion_set`` keys a meaning.

Frames carry short keys (``info["teacher"]``, ``info["ion_set"]``); the records behind them
(a teacher spec, an ion set with its user ions' files) travel beside the frames:

* in a dataset store, as the database's metadata (`DatasetStore.records`);
* beside any other file ionmix writes frames to (a built box, an MD run folder), as
  ``provenance.json`` in the same folder (`Provenance.write`).

`load_provenance` finds them for any input a stage accepts, and `Provenance.teacher`
rebuilds the teacher that labelled a frame, with its ions — so md, validate, props and the
transfer study's evaluation work on any frame the store holds, user ions included.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms

from ionmix.chemistry.ionset import IonSet
from ionmix.chemistry.topology import has_molecules, molecules_of
from ionmix.errors import InputError
from ionmix.files import atomic_write_json

FILE_NAME = "provenance.json"
#: Teacher name of frames written before teacher specs (the classical force field).
LEGACY_CLASSICAL = "classical"


class ProvenanceError(InputError):
    """A frame names a teacher or ion set whose record cannot be found."""


@dataclass
class Provenance:
    """Teacher specs and ion sets by key (JSON-able records)."""

    teachers: dict[str, dict] = field(default_factory=dict)
    ion_sets: dict[str, dict] = field(default_factory=dict)
    where: str = "<memory>"

    def add(self, teacher=None, ion_set: IonSet | None = None) -> Provenance:
        """Record a `TeacherSpec` and/or an `IonSet` (in place; returns self)."""
        if teacher is not None:
            self.teachers[teacher.key] = teacher.record()
        if ion_set is not None:
            self.ion_sets[ion_set.key] = ion_set.record
        return self

    def ion_set(self, atoms: Atoms) -> IonSet:
        """The ion set of a frame: its recorded ``ion_set``, else library ions of its
        molecules (frames from before ion sets, or boxes of library ions only)."""
        key = atoms.info.get("ion_set")
        if key is not None:
            if key not in self.ion_sets:
                raise ProvenanceError(
                    f"the frame names ion set {key!r}, which {self.where} does not record; "
                    f"keep {FILE_NAME} (or the store) with the frames")
            return IonSet.from_record(self.ion_sets[key])
        if len(self.ion_sets) == 1:
            return IonSet.from_record(next(iter(self.ion_sets.values())))
        names = {name for name, _ in molecules_of(atoms)} if has_molecules(atoms) else ()
        return IonSet.library(names)

    def teacher_spec(self, atoms: Atoms):
        """The spec of the teacher that labelled `atoms` (``info["teacher"]``); frames
        without one, or with the legacy name "classical", get the classical teacher with
        the frame's charge scale and cutoff."""
        from ionmix.teachers import teacher_spec

        key = atoms.info.get("teacher", LEGACY_CLASSICAL)
        if key in self.teachers:
            return teacher_spec(self.teachers[key], f"{self.where} teacher {key}")
        if key == LEGACY_CLASSICAL:
            return teacher_spec("classical", charge_scale=atoms.info.get("charge_scale"),
                                cutoff_A=atoms.info.get("cutoff_A"))
        raise ProvenanceError(f"the frame names teacher {key!r}, which {self.where} does not "
                              "record")

    def teacher(self, atoms: Atoms, spec=None, **engine_options):
        """The `Teacher` for `atoms`: `spec` if given (kind name, mapping or spec), else the
        frame's own; with the frame's ion set."""
        from ionmix.teachers import make_teacher, teacher_spec

        if spec is None:
            spec = self.teacher_spec(atoms)
        elif str(spec) == LEGACY_CLASSICAL and atoms.info.get("teacher", "").startswith(
                "classical"):
            spec = self.teacher_spec(atoms)  # "classical" = the classical teacher of the data
        else:
            spec = teacher_spec(spec, "--teacher")
        return make_teacher(spec, self.ion_set(atoms), **engine_options)

    def write(self, folder: str | os.PathLike) -> Path | None:
        """Write ``provenance.json`` into `folder` (nothing when there is nothing to say)."""
        if not self.teachers and not self.ion_sets:
            return None
        return atomic_write_json(Path(folder) / FILE_NAME,
                                 {"teachers": self.teachers, "ion_sets": self.ion_sets})


def load_provenance(path: str | os.PathLike) -> Provenance:
    """The records for frames read from `path`: a store's metadata, or ``provenance.json``
    in the folder of a file (or in the folder itself), or in the folder above it (a study
    folder such as `props density`'s, whose runs are its sub-folders). Empty if there is
    none."""
    path = Path(path)
    if path.suffix == ".db" and path.is_file():
        from ionmix.dataset.store import DatasetStore

        records = DatasetStore(path, must_exist=True).records()
        return Provenance(records["teachers"], records["ion_sets"], str(path))
    folder = path if path.is_dir() else path.parent
    file = next((f for f in (folder / FILE_NAME, folder.parent / FILE_NAME) if f.is_file()),
                None)
    if file is None:
        return Provenance(where=str(folder))
    try:
        data = json.loads(file.read_text())
        return Provenance(dict(data.get("teachers", {})), dict(data.get("ion_sets", {})),
                          str(file))
    except (ValueError, AttributeError) as exc:
        raise ProvenanceError(f"{file}: not a provenance file ({exc})") from None
