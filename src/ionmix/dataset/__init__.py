"""Datasets: the frame store (ASE database), selections, splits and extxyz export.

The folder also holds package data (``ions/``: the shipped ion library files).
"""

from ionmix.dataset.selection import (
    SPLIT_TASKS,
    Split,
    equally_spaced,
    equally_spaced_indices,
    frames_from,
    run_frames,
    split_by_replica,
    split_counts,
)
from ionmix.dataset.store import (
    TASKS,
    DatasetError,
    DatasetStore,
    Frame,
    atomic_write_extxyz,
    composition_key,
    parse_composition_key,
)

__all__ = [
    "SPLIT_TASKS",
    "TASKS",
    "DatasetError",
    "DatasetStore",
    "Frame",
    "Split",
    "atomic_write_extxyz",
    "composition_key",
    "equally_spaced",
    "equally_spaced_indices",
    "frames_from",
    "parse_composition_key",
    "run_frames",
    "split_by_replica",
    "split_counts",
]
