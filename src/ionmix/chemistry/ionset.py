"""The ion set of a study: shipped library ions plus user ions, as data that travels.

A study may use ions from the shipped library and ions of its own (``[mixture.user_ions]``:
a .itp and a coordinate file). Every later stage (md, validate, props, the transfer
study's evaluation, LAMMPS export) must rebuild the same force-field topology from the
frames alone, on any machine, so the ion set is recorded with the frames as a
*record*: a JSON-able dict holding, for a library ion, its name and the sha256 of its
files, and for a user ion the *content* of its files and their sha256.
`IonSet.from_record` turns a record back into ions; user ions are written once to a
content-addressed folder (``$IONMIX_CACHE`` or ``~/.cache/ionmix``, ``ions/<sha256>/``)
and loaded and validated from there like any user ion.

`IonSet` is a read-only mapping ion name → `Ion`, so it can be passed wherever ionmix
takes ``ions=`` (build, the classical system and calculator).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from ionmix.chemistry.ions import Ion, IonLibraryError, load_ion, load_user_ion
from ionmix.files import atomic_write_text


def _sha256(*texts: str) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()


def cache_dir() -> Path:
    """Where user ions of records are materialised (``$IONMIX_CACHE`` or ~/.cache/ionmix)."""
    return Path(os.environ.get("IONMIX_CACHE", Path.home() / ".cache" / "ionmix"))


def _is_library_ion(ion: Ion) -> bool:
    try:
        return load_ion(ion.name).itp_path == ion.itp_path
    except IonLibraryError:
        return False


def _ion_record(ion: Ion) -> dict:
    itp, coords = ion.itp_path.read_text(), ion.coords_path.read_text()
    if _is_library_ion(ion):
        return {"source": "library", "sha256": _sha256(itp, coords)}
    return {"source": "user", "itp": itp, "coordinates": coords,
            "coordinates_suffix": ion.coords_path.suffix, "sha256": _sha256(itp, coords)}


class IonSet(Mapping[str, Ion]):
    """Ions by canonical name, with a stable key and a record that rebuilds them.

    Args:
        ions: canonical name → Ion.
    """

    def __init__(self, ions: Mapping[str, Ion]):
        self._ions = dict(sorted(ions.items()))
        self._record = {name: _ion_record(ion) for name, ion in self._ions.items()}

    def __getitem__(self, name: str) -> Ion:
        return self._ions[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ions)

    def __len__(self) -> int:
        return len(self._ions)

    def __repr__(self) -> str:
        return f"IonSet({', '.join(self._ions)}; {self.key})"

    @property
    def record(self) -> dict:
        """JSON-able record (name → source and sha256, and the files' content for user ions)."""
        return json.loads(json.dumps(self._record))

    @property
    def key(self) -> str:
        """Stable identifier: ``ions-`` + the first 12 hex digits of the record's sha256."""
        return "ions-" + _sha256(json.dumps(self._record, sort_keys=True))[:12]

    @property
    def user_ions(self) -> dict[str, Ion]:
        """The user (non-library) ions, by name."""
        return {n: i for n, i in self._ions.items() if self._record[n]["source"] == "user"}

    @classmethod
    def from_record(cls, record: Mapping[str, Mapping]) -> IonSet:
        """Rebuild an ion set from its record (user ions are validated as when first loaded)."""
        ions = {}
        for name, entry in record.items():
            if entry.get("source") == "library":
                ions[name] = load_ion(name)
            elif entry.get("source") == "user":
                ions[name] = _materialise(name, entry)
            else:
                raise IonLibraryError(f"ion set record: ion {name!r} has no valid 'source'")
        return cls(ions)

    @classmethod
    def library(cls, names) -> IonSet:
        """Library ions by name or alias."""
        return cls({ion.name: ion for ion in (load_ion(n) for n in names)})


def _materialise(name: str, entry: Mapping) -> Ion:
    """Write a recorded user ion's files to the cache (once) and load them."""
    try:
        itp, coords, sha = entry["itp"], entry["coordinates"], entry["sha256"]
    except KeyError as exc:
        raise IonLibraryError(f"ion set record: user ion {name!r} lacks {exc}") from None
    if _sha256(itp, coords) != sha:
        raise IonLibraryError(f"ion set record: the files of user ion {name!r} do not match "
                              "their recorded sha256 (the record was edited or truncated)")
    folder = cache_dir() / "ions" / sha
    itp_path = folder / f"{name}.itp"
    coords_path = folder / f"{name}{entry.get('coordinates_suffix', '.pdb')}"
    for path, text in ((itp_path, itp), (coords_path, coords)):
        if not path.exists() or path.read_text() != text:
            atomic_write_text(path, text)
    return load_user_ion(itp_path, coords_path, name=name)
