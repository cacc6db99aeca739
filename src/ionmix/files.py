"""File I/O: atomic writes (a reader sees the old file or the new one, never half of
either) and the one wrapper of ASE's readers (`read_frames`).

Every stage writes its outputs through these, so an interrupted run never leaves a
truncated file that a resumed run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ionmix.errors import InputError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Text (UTF-8) version of `atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """JSON version of `atomic_write_bytes` (a trailing newline added)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


class ReadError(InputError):
    """A structure or trajectory file that is missing, unreadable or lacks the frame asked."""


def read_frames(path: str | os.PathLike, index: int | str = -1, what: str = "structure"):
    """Frame(s) of any ASE-readable file, calculators kept (labels in extxyz files).

    The one place ionmix wraps ASE's readers: ASE raises many exception types for missing,
    truncated or garbled files; every one becomes a `ReadError` naming the file (and `what`
    it was meant to be).

    Args:
        index: an int for one frame (Atoms), or a slice string such as ":" (list of Atoms,
            never empty).
    """
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise ReadError(f"{what} file not found: {path}")
    if path.stat().st_size == 0:
        raise ReadError(f"{what} file {path} is empty (0 bytes)")
    try:
        frames = ase.io.read(path, index=index)
    except (IndexError, StopIteration):  # the latter from extxyz's frame iterator
        raise ReadError(f"{path} has no frame {index}") from None
    except Exception as exc:  # noqa: BLE001 - ASE raises many types for unreadable files
        reason = str(exc) or type(exc).__name__
        raise ReadError(f"{what} file {path} cannot be read (frame {index}): {reason}") from None
    if isinstance(index, str) and not frames:
        raise ReadError(f"{what} file {path} contains no frames")
    return frames


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
