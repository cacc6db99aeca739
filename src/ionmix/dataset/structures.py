"""Starting structures for MD and properties: any ASE-readable file, or a frame of a store."""

from __future__ import annotations

import os
from pathlib import Path

from ase import Atoms

from ionmix.errors import InputError
from ionmix.files import ReadError, read_frames

__all__ = ["StructureError", "load_structure"]


class StructureError(InputError):
    """A starting structure that cannot be found or read."""


def load_structure(path: str | os.PathLike, index: int = -1,
                   composition: str | None = None, replica: int | None = None,
                   sampled_at_K: float | None = None) -> Atoms:
    """A starting structure: any ASE-readable file, or a frame of a dataset store.

    Args:
        path: structure file (extxyz, PDB, POSCAR, ...; ``index`` picks the frame), or an
            ionmix dataset store (``*.db``): the last stored MD frame of ``composition`` (a
            key such as ``LiPF6=0.4,EMIMPF6=0.6``; optional if the store has one
            composition) and ``replica`` (default: the lowest), sampled at
            ``sampled_at_K`` when given (for a store of several temperatures). Frames keep
            their molecule information and their ``teacher``/``ion_set`` keys
            (`load_provenance` of the same path resolves them).

    Returns:
        Atoms without a calculator (labels dropped).

    Raises:
        StructureError: no such file; ``index`` out of range for the file (named as the
            command line's ``--index``) or given with a store (whose frame is picked by
            composition, replica and temperature); a store without that frame.
    """
    path = Path(path)
    if not path.exists():
        raise StructureError(f"structure {path}: no such file")
    if path.suffix == ".db":
        if index != -1:
            raise StructureError(f"--index {index} picks a frame of a structure file; the "
                                 f"frame of a dataset store such as {path} is picked by "
                                 "--composition (and --sampled-at-K): leave --index out")
        atoms = _frame_from_store(path, composition, replica, sampled_at_K)
    else:
        atoms = _frame_of_file(path, index)
    atoms.calc = None
    return atoms


def _frame_of_file(path: Path, index: int) -> Atoms:
    """Frame `index` of a structure file; StructureError naming ``--index`` when the file
    has no such frame (other read errors pass as they are)."""
    if index < -1:
        # ASE reads a negative index beyond the first frame as the first frame: count
        frames = read_frames(path, ":")
        _check_index(path, index, len(frames))
        return frames[index]
    try:
        return read_frames(path, index)
    except ReadError as error:
        try:  # only on failure: counting the frames reads the whole file
            n_frames = len(read_frames(path, ":"))
        except ReadError:
            raise error from None
        _check_index(path, index, n_frames)
        raise


def _check_index(path: Path, index: int, n_frames: int) -> None:
    """StructureError naming --index unless frame `index` is one of `n_frames`."""
    if not -n_frames <= index < n_frames:
        raise StructureError(
            f"structure {path} has {n_frames} frame(s), so --index {index} is out of range "
            f"(use 0 to {n_frames - 1}, or -{n_frames} to -1 counting from the end)")


def _frame_from_store(path: Path, composition: str | None, replica: int | None,
                      sampled_at_K: float | None) -> Atoms:
    from ionmix.dataset import DatasetStore

    store = DatasetStore(path)
    stored = store.compositions()
    if composition is None:
        if len(stored) != 1:
            raise StructureError(f"{path} holds {len(stored)} compositions; pick one with "
                          f"--composition (one of: {'; '.join(stored)})")
        composition = stored[0]
    if composition not in stored:
        raise StructureError(f"{path} has no composition {composition!r}; it has: "
                      f"{'; '.join(stored)}")
    frames = store.select(composition=composition, replica=replica, task="md",
                          temperature_K=sampled_at_K)
    if not frames:
        at = "" if sampled_at_K is None else f" sampled at {sampled_at_K:g} K"
        raise StructureError(f"{path}: no MD frames of {composition} with replica {replica}{at}")
    if replica is None:
        lowest = min(f.info["replica"] for f in frames)
        frames = [f for f in frames if f.info["replica"] == lowest]
    return frames[-1].atoms


