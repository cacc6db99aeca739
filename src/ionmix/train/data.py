"""Reading, validating and fingerprinting the extxyz files a training run consumes.

Labels are read as ASE stores them after ``ase.io.read`` of an extxyz written from a
SinglePointCalculator: ``atoms.calc.results`` with ``energy`` (eV), ``forces``
(n_atoms, 3) eV/Å and optionally ``stress`` (Voigt 6 or 3×3) eV/Å³.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ionmix import files
from ionmix.dataset.frames import validate_labels
from ionmix.dataset.store import frame_hash

from .errors import TrainDataError


@dataclass(frozen=True)
class DataFileSummary:
    """What validation learned about one file.

    Attributes:
        role: "train", "val" or "test".
        path: absolute path.
        n_frames: number of frames.
        n_atoms: total atoms over all frames.
        species: sorted chemical symbols present.
        all_have_stress: every frame carries a stress label.
        min_half_width_A: smallest half perpendicular box width over periodic frames (Å),
            ``inf`` when no frame is periodic.
    """

    role: str
    path: Path
    n_frames: int
    n_atoms: int
    species: tuple[str, ...]
    all_have_stress: bool
    min_half_width_A: float


def read_data_file(path: str | Path, role: str) -> list[Atoms]:
    """All frames of an ASE-readable file. TrainDataError if missing, unreadable or empty."""
    try:
        return list(files.read_frames(path, ":", what=role))
    except files.ReadError as exc:
        raise TrainDataError(str(exc)) from None


def perpendicular_widths_A(cell: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of a cell, shape (3,), Å: V / |a_j × a_k|."""
    cell = np.asarray(cell, dtype=float)
    volume = abs(float(np.linalg.det(cell)))
    widths = np.empty(3)
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        area = float(np.linalg.norm(np.cross(cell[j], cell[k])))
        widths[i] = volume / area if area > 0 else 0.0
    return widths


def validate_frames(
    frames: Sequence[Atoms],
    path: str | Path,
    role: str,
    type_names: Sequence[str],
    cutoff_radius_A: float,
    require_stress: bool = False,
) -> DataFileSummary:
    """Check labels, species and box size of every frame.

    Raises:
        TrainDataError naming the file and frame index: a species not in `type_names`;
        missing/non-finite energy or forces; wrong force shape; missing stress when
        `require_stress`; non-finite positions or stress; a periodic cell whose smallest
        perpendicular width is under 2 × `cutoff_radius_A`.
    """
    where_file = f"{role} file {path}"
    allowed = set(type_names)
    species: set[str] = set()
    n_atoms = 0
    all_stress = True
    min_half = math.inf
    for k, atoms in enumerate(frames):
        where = f"{where_file}, frame {k}"
        symbols = set(atoms.get_chemical_symbols())
        unknown = symbols - allowed
        if unknown:
            raise TrainDataError(
                f"{where_file}: species {sorted(unknown)} (first in frame {k}) not among "
                f"type_names {list(type_names)}"
            )
        species |= symbols
        n_atoms += len(atoms)
        labels = validate_labels(atoms, where, require_forces=True, error=TrainDataError)
        if "stress" not in labels:
            all_stress = False
            if require_stress:
                raise TrainDataError(
                    f"{where}: no stress label, but the preset's loss has a stress term"
                )
        pbc = np.asarray(atoms.pbc, dtype=bool)
        if pbc.any():
            widths = perpendicular_widths_A(atoms.cell.array)[pbc]
            half = 0.5 * float(widths.min())
            min_half = min(min_half, half)
            if cutoff_radius_A > half:
                raise TrainDataError(
                    f"{where}: cutoff r_max = {cutoff_radius_A:g} Å is longer than half the "
                    f"smallest perpendicular box width ({half:.4g} Å; width {2 * half:.4g} Å)"
                )
    return DataFileSummary(
        role=role,
        path=Path(path).resolve(),
        n_frames=len(frames),
        n_atoms=n_atoms,
        species=tuple(sorted(species)),
        all_have_stress=all_stress,
        min_half_width_A=min_half,
    )


def file_manifest(summary: DataFileSummary, frames: Sequence[Atoms]) -> dict[str, Any]:
    """JSON-ready record of one file: path, sha256 of the file and of each frame's geometry."""
    return {
        "path": str(summary.path),
        "sha256": files.file_sha256(summary.path),
        "n_frames": summary.n_frames,
        "n_atoms": summary.n_atoms,
        "species": list(summary.species),
        "all_have_stress": summary.all_have_stress,
        "frames": [
            {"index": k, "n_atoms": len(a), "sha256": frame_hash(a)}
            for k, a in enumerate(frames)
        ],
    }
