"""Datasets: the frame store (ASE database), selections, splits and extxyz export.

The folder also holds package data (``ions/``: the shipped ion library files).
"""

from ionmix.dataset.store import (
    TASKS,
    DatasetError,
    DatasetStore,
    Frame,
    Split,
    atomic_write_extxyz,
    composition_key,
    equally_spaced,
    equally_spaced_indices,
    parse_composition_key,
    split_by_replica,
)

__all__ = [
    "TASKS",
    "DatasetError",
    "DatasetStore",
    "Frame",
    "Split",
    "atomic_write_extxyz",
    "composition_key",
    "equally_spaced",
    "equally_spaced_indices",
    "parse_composition_key",
    "split_by_replica",
]
