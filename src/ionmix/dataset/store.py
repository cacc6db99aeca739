"""The dataset store: labelled frames in an ASE database, one row per frame.

Any ASE database URL works (a SQLite file by default, e.g. ``runs/study/frames.db``;
``postgresql://user:pw@host/db`` for a shared server). Each row holds positions, cell,
energy (eV), forces (eV/Å) and, where labelled, stress (eV/Å³, Voigt order
xx, yy, zz, yz, xz, xy), plus the metadata below as key-value pairs so that frames can be
selected with ASE's own query language too (``ase db frames.db composition=...``).

Metadata keys. Core (every frame): ``teacher`` (the teacher's spec key, see
`ionmix.teachers.TeacherSpec.key`), ``task`` (one of `TASKS`), ``composition`` (canonical
"LiPF6=0.4,EMIMPF6=0.6"; may be empty for an isolated atom), ``label_id`` (unique per
teacher: "<run_id>/<frame_index>" for MD snapshots, "<source>/<task>/<step>" for derived
labels) and, where the frame is made of ions, ``molecules`` ("Li:2,PF6:4,EMIM:2", the
atom order; see `ionmix.chemistry.topology`) and ``ion_set`` (the ion set's key).
Optional sampling keys (MD snapshots): run_id, frame_index, temperature_K, pressure_bar,
replica, seed, time_ps, charge_scale, cutoff_A, ensemble. Optional labelling keys:
``source`` (the label_id or hash of the frame a derived label started from), ``step``,
``generation`` and ``walker`` (active learning).
Per-unit fractions are added as ``x_<unit>`` and per-species counts as ``n_<species>``
(from ``counts``) so numeric range queries work.

The store's metadata holds the records that make its keys mean something anywhere:
``teachers`` (key → spec record) and ``ion_sets`` (key → ion set record, user ions with
their files' content). Stores written before these keys existed stay readable: a row
without ``task`` is an MD snapshot, ``label_id`` defaults to "<run_id>/<frame_index>", and
the legacy teacher name "classical" resolves to the classical teacher with the row's
charge scale and cutoff and library ions (`ionmix.dataset.provenance`).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ase.db
import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ionmix.chemistry.topology import decode_runs, encode_runs, has_molecules, molecules_of
from ionmix.dataset.frames import validate_labels
from ionmix.errors import InputError
from ionmix.files import atomic_write_text

#: What produced a label.
TASKS = ("md", "single-point", "aimd", "relax", "isolated-atom", "volume-scan",
         "active-learning")
CORE_KEYS = ("teacher", "task", "composition")
SAMPLING_KEYS = ("run_id", "frame_index", "temperature_K", "pressure_bar", "replica", "seed",
                 "time_ps", "charge_scale", "cutoff_A", "ensemble")
LABELLING_KEYS = ("label_id", "source", "step", "generation", "walker", "ion_set", "molecules")
#: Keys an MD snapshot (task "md") must have besides the core keys.
MD_KEYS = ("run_id", "frame_index", "temperature_K", "replica", "seed", "time_ps")



class DatasetError(InputError):
    """Bad frames or a bad selection; the message names the frame or key at fault."""


def composition_key(composition: dict[str, float]) -> str:
    """Canonical text for a composition: units in the given order, fractions to 6 digits.

    Zero fractions are kept so that every composition of a mixture names every unit.
    """
    return ",".join(f"{u}={float(x):.6g}" for u, x in composition.items())


def parse_composition_key(text: str) -> dict[str, float]:
    """Inverse of `composition_key`; DatasetError naming `text` when it is not
    ``UNIT=FRACTION,...`` with fractions in [0, 1]."""
    out = {}
    for part in text.split(","):
        unit, _, value = part.strip().partition("=")
        try:
            fraction = float(value)
        except ValueError:
            fraction = float("nan")
        if not unit or not 0.0 <= fraction <= 1.0:
            raise DatasetError(f"composition {text!r}: expected UNIT=FRACTION,... with "
                               "fractions in [0, 1], e.g. LiPF6=0.4,EMIMPF6=0.6")
        out[unit.strip()] = fraction
    return out


@dataclass(frozen=True)
class Frame:
    """A labelled frame as read back from the store.

    Attributes:
        atoms: positions (Å), cell (Å), numbers; labels on ``atoms.calc`` (eV, eV/Å, eV/Å³)
            and every metadata key in ``atoms.info``.
        row_id: the database row id.
    """

    atoms: Atoms
    row_id: int

    @property
    def info(self) -> dict[str, Any]:
        return self.atoms.info


def frame_hash(atoms: Atoms) -> str:
    """sha256 of numbers, positions and cell bytes (float64): identifies a frame's geometry."""
    h = hashlib.sha256()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(atoms.positions, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(atoms.cell.array, dtype=np.float64).tobytes())
    return h.hexdigest()


def validate_frame(atoms: Atoms, where: str, require_forces: bool = True,
                   require_stress: bool = False) -> dict[str, np.ndarray | float]:
    """Check a frame's labels; return them. Raises DatasetError naming `where`.

    See `ionmix.dataset.frames.validate_labels` (energy eV, forces (n_atoms, 3) eV/Å,
    stress (6,) Voigt eV/Å³).
    """
    return validate_labels(atoms, where, require_forces, require_stress, error=DatasetError)


def _where(kv: dict[str, Any]) -> str:
    """How error messages name a frame: by run and index for MD snapshots, else label_id."""
    if "run_id" in kv:
        return f"frame {kv.get('frame_index', '?')} of run {kv['run_id']}"
    return f"frame {kv.get('label_id', '?')}"


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_store_file(path: Path, must_exist: bool) -> None:
    """Refuse a path that cannot be a store before ASE touches it: ASE would create a
    missing file, write its schema into an empty or foreign SQLite file, or fail later
    with sqlite3.DatabaseError."""
    if not path.exists():
        if must_exist:
            raise DatasetError(f"{path}: no such dataset store")
        return
    if path.is_dir():
        raise DatasetError(f"{path}: is a folder, not a dataset store (.db file)")
    size = path.stat().st_size
    if size == 0:
        if must_exist:
            raise DatasetError(f"{path}: empty file, not a dataset store")
        return  # an empty file given as an output: becomes the store
    with open(path, "rb") as fh:
        head = fh.read(len(_SQLITE_MAGIC))
    if head != _SQLITE_MAGIC:
        raise DatasetError(f"{path}: not a dataset store (ionmix stores are ASE SQLite "
                           "databases; this file is another format)")
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60) as con:
            # one read transaction: its shared lock keeps a writer (another worker adding
            # frames) from committing until the size is read, so header and size agree
            con.execute("BEGIN")
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master "
                                                "WHERE type='table'")}
            if "systems" in tables:
                con.execute("SELECT count(*) FROM systems").fetchone()
            # a truncated file reads fine until a missing page is needed: compare its
            # size with the size its header declares (pages × page size)
            pages = con.execute("PRAGMA page_count").fetchone()[0]
            page_size = con.execute("PRAGMA page_size").fetchone()[0]
            size = path.stat().st_size
            con.rollback()
    except sqlite3.DatabaseError as exc:
        raise DatasetError(f"{path}: unreadable SQLite database ({exc}): truncated or "
                           "corrupt") from None
    if size < pages * page_size and not path.with_name(path.name + "-wal").exists():
        raise DatasetError(f"{path}: truncated ({size} bytes; its header declares "
                           f"{pages * page_size})")
    if "systems" not in tables and (must_exist or tables):
        raise DatasetError(f"{path}: an SQLite database without ASE's tables, not a "
                           "dataset store")


class DatasetStore:
    """Frames with labels and metadata in an ASE database.

    Args:
        url: an ASE database URL or a path (``.db`` → SQLite). A new file (and its parent
            folders) is created unless `must_exist`.
        must_exist: the store is an input: a missing path is an error, never a new empty
            database (a mistyped path would otherwise read as "0 frames").

    Raises:
        DatasetError: the path is missing (with `must_exist`), a folder, or a file that is
            not an ionmix/ASE SQLite database (another format, truncated, corrupt).
    """

    def __init__(self, url: str | os.PathLike, must_exist: bool = False):
        url = str(url)
        if "://" not in url:
            _check_store_file(Path(url), must_exist)
            if not must_exist:
                Path(url).parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        # A bare path is always SQLite, whatever its extension; URLs pick their backend.
        self._db = ase.db.connect(url) if "://" in url else ase.db.connect(url, type="db")

    def __len__(self) -> int:
        return self._db.count()

    # ------------------------------------------------------------ records (metadata)

    def records(self) -> dict[str, dict]:
        """The store's records: ``{"teachers": {key: spec}, "ion_sets": {key: record}}``."""
        meta = dict(self._db.metadata)
        return {"teachers": dict(meta.get("teachers", {})),
                "ion_sets": dict(meta.get("ion_sets", {}))}

    def register(self, teacher=None, ion_set=None) -> None:
        """Record a teacher spec and/or an ion set so the store's keys resolve anywhere."""
        meta = dict(self._db.metadata)
        changed = False
        if teacher is not None and teacher.key not in meta.setdefault("teachers", {}):
            meta["teachers"][teacher.key] = teacher.record()
            changed = True
        if ion_set is not None and ion_set.key not in meta.setdefault("ion_sets", {}):
            meta["ion_sets"][ion_set.key] = ion_set.record
            changed = True
        if changed:
            self._db.metadata = meta

    def metadata_entry(self, key: str) -> Any:
        """A JSON-able entry of the store's metadata beside its records (None if absent),
        e.g. ``label_options`` (`ionmix.labelling`)."""
        return dict(self._db.metadata).get(key)

    def set_metadata_entry(self, key: str, value: Any) -> None:
        """Set one metadata entry; the records and every other entry are kept."""
        if key in ("teachers", "ion_sets"):
            raise DatasetError(f"metadata {key!r} holds the store's records: use register()")
        meta = dict(self._db.metadata)
        meta[key] = value
        self._db.metadata = meta

    def count(self, **selection: Any) -> int:
        """Rows matching ASE key-value `selection` (e.g. ``teacher=..., task=...``)."""
        return self._db.count(**selection)

    def provenance(self):
        """The store's records as a `Provenance` (resolves frames' teacher and ion set)."""
        from ionmix.dataset.provenance import Provenance

        records = self.records()
        return Provenance(records["teachers"], records["ion_sets"], self.url)

    # ------------------------------------------------------------ frames

    def has_frame(self, run_id: str, frame_index: int) -> bool:
        """True if (run_id, frame_index) is already stored."""
        return self._db.count(run_id=run_id, frame_index=int(frame_index)) > 0

    def has_label(self, label_id: str, teacher: str) -> bool:
        """True if `teacher` has already labelled `label_id`."""
        return self._db.count(label_id=label_id, teacher=teacher) > 0

    def frame_indices(self, run_id: str) -> list[int]:
        """Sorted frame indices stored for a run."""
        return sorted(int(r.frame_index) for r in self._db.select(run_id=run_id))

    def _row(self, atoms: Atoms, meta: dict[str, Any],
             counts: dict[str, int] | None, require_forces: bool) -> tuple[Atoms, dict] | None:
        """Validated (clean atoms, key-value pairs) for one frame."""
        kv = {k: v for k, v in meta.items() if v is not None}
        kv.setdefault("task", "md")
        if kv["task"] == "md" and "label_id" not in kv and "run_id" in kv:
            kv["label_id"] = f"{kv['run_id']}/{int(kv['frame_index'])}"
        where = _where(kv)
        required = CORE_KEYS + (MD_KEYS if kv["task"] == "md" else ())
        missing = [k for k in required if k not in kv]
        if missing:
            raise DatasetError(f"{where}: metadata lacks {missing}")
        unknown = set(meta) - set(CORE_KEYS) - set(SAMPLING_KEYS) - set(LABELLING_KEYS)
        if unknown:
            raise DatasetError(f"{where}: unknown metadata key(s) {sorted(unknown)}")
        if kv["task"] not in TASKS:
            raise DatasetError(f"{where}: task {kv['task']!r} is not one of {TASKS}")
        if "label_id" not in kv:
            raise DatasetError(f"{where}: metadata lacks 'label_id'")
        labels = validate_frame(atoms, where, require_forces)
        if "frame_index" in kv:
            kv["frame_index"] = int(kv["frame_index"])
        for unit, x in (parse_composition_key(kv["composition"]) if kv["composition"]
                        else {}).items():
            kv[f"x_{unit}"] = x
        for species, n in (counts or {}).items():
            kv[f"n_{species}"] = int(n)
        if has_molecules(atoms):
            kv["molecules"] = encode_runs(molecules_of(atoms))
        elif "molecules" in kv:
            kv["molecules"] = encode_runs(decode_runs(kv["molecules"]))  # checks the text
        elif counts:
            kv["molecules"] = encode_runs(counts)
        kv["hash"] = frame_hash(atoms)
        clean = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        clean.calc = SinglePointCalculator(clean, **labels)
        return clean, kv

    def add_frames(self, frames: Sequence[Atoms], metadata: Sequence[dict[str, Any]],
                   counts: dict[str, int] | None = None, require_forces: bool = True,
                   skip_existing: bool = False) -> list[int]:
        """Insert frames in one transaction: all rows are written, or none.

        Args:
            frames: Atoms with labels on ``atoms.calc``; molecule information (arrays or
                ``info["molecules"]``) is stored as ``molecules``.
            metadata: one dict per frame with the core keys (and, for task "md", MD_KEYS).
            counts: species name → count, stored as ``n_<species>`` on every row.
            require_forces: reject frames without forces.
            skip_existing: silently skip labels already stored (same label_id and teacher:
                resuming a run); otherwise a duplicate is an error.

        Returns:
            the new row ids.
        """
        if len(frames) != len(metadata):
            raise DatasetError(f"{len(frames)} frames but {len(metadata)} metadata records")
        rows = []
        for atoms, meta in zip(frames, metadata, strict=True):
            clean, kv = self._row(atoms, meta, counts, require_forces)
            if self.has_label(kv["label_id"], kv["teacher"]) or (
                    "run_id" in kv and kv["task"] == "md"
                    and self.has_frame(kv["run_id"], kv["frame_index"])):
                if skip_existing:
                    continue
                raise DatasetError(f"{_where(kv)}: already stored in {self.url}")
            rows.append((clean, kv))
        ids = []
        with self._db:  # one transaction (SQLite); rolled back if anything raises
            for clean, kv in rows:
                ids.append(self._db.write(clean, key_value_pairs=kv))
        return ids

    def select(self, composition: dict[str, float] | str | None = None,
               temperature_K: float | None = None, replica: int | None = None,
               teacher: str | None = None, run_id: str | None = None,
               task: str | None = None) -> list[Frame]:
        """Frames matching every given criterion, ordered by (run_id, frame_index, label_id).

        Rows of stores written before the ``task`` key read back as task "md".
        """
        query: dict[str, Any] = {}
        if composition is not None:
            query["composition"] = (
                composition if isinstance(composition, str) else composition_key(composition)
            )
        if temperature_K is not None:
            query["temperature_K"] = float(temperature_K)
        if replica is not None:
            query["replica"] = int(replica)
        if teacher is not None:
            query["teacher"] = teacher
        if run_id is not None:
            query["run_id"] = run_id
        frames = []
        for row in self._db.select(**query):
            atoms = row.toatoms(add_additional_information=False)
            atoms.info.update(row.key_value_pairs)
            atoms.info.setdefault("task", "md")
            if "label_id" not in atoms.info and "run_id" in atoms.info:
                atoms.info["label_id"] = f"{atoms.info['run_id']}/{atoms.info['frame_index']}"
            if task is None or atoms.info["task"] == task:
                frames.append(Frame(atoms, row.id))
        frames.sort(key=lambda f: (f.info.get("run_id", ""), f.info.get("frame_index", -1),
                                   f.info.get("label_id", "")))
        return frames

    def compositions(self) -> list[str]:
        """Distinct non-empty composition keys in the store, sorted."""
        return sorted({r.composition for r in self._db.select(columns=["key_value_pairs"])
                       if r.get("composition")})


def atomic_write_extxyz(frames: Sequence[Frame | Atoms], path: str | os.PathLike) -> Path:
    """Write frames (with labels and metadata) as extxyz, atomically (tmp file + rename).

    The file is what nequip's ASE dataset reads: energy and stress in the comment line,
    forces as per-atom columns.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [f.atoms if isinstance(f, Frame) else f for f in frames]
    if not images:
        raise DatasetError(f"nothing to write to {path}: the selection is empty")
    buffer = io.StringIO()
    ase.io.write(buffer, images, format="extxyz")
    atomic_write_text(path, buffer.getvalue())
    return path
