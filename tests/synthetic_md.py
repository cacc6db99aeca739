"""Synthetic MD run folders with known transport (random walks of rigid molecules), for
tests/test_transport.py and tests/test_structure.py."""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from ionmix.chemistry.ions import load_ion
from ionmix.chemistry.topology import attach_molecules


def walk_run(folder: Path, counts: dict[str, int], d_A2_per_ps: dict[str, float], *,
             n_frames: int = 400, dt_ps: float = 1.0, box_A: float = 30.0, seed: int = 0,
             paired: bool = False, drift_A_per_ps=(0.0, 0.0, 0.0), charge_scale: float = 0.8,
             temperature_K: float | None = 300.0, molecule_info: bool = True,
             cage_A: float | None = None) -> Path:
    """Write ``folder/trajectory.extxyz`` (+ ``md.json``) of rigid library ions doing
    independent Gaussian random walks, each species with its D (Å²/ps).

    Args:
        paired: the i-th molecule of the second species copies the walk of the i-th of the
            first (neutral pairs moving together; the counts must be equal).
        drift_A_per_ps: a uniform velocity added to every atom.
        cage_A: instead of a walk, each molecule rattles around its start (Ornstein–
            Uhlenbeck with this spread): no diffusive regime.
    Returns: the trajectory path.
    """
    rng = np.random.default_rng(seed)
    ions = {name: load_ion(name) for name in counts}
    runs = list(counts.items())
    symbols, offsets, mol_species = [], [], []
    for name, n in runs:
        for _ in range(n):
            symbols += list(ions[name].elements)
            offsets.append(ions[name].template_positions())
            mol_species.append(name)
    n_mol = len(mol_species)
    start = rng.uniform(0, box_A, size=(n_mol, 3))
    d = np.array([d_A2_per_ps[s] for s in mol_species])
    steps = rng.normal(size=(n_frames - 1, n_mol, 3)) * np.sqrt(2 * d * dt_ps)[None, :, None]
    if paired:
        names = list(counts)
        first = [i for i, s in enumerate(mol_species) if s == names[0]]
        second = [i for i, s in enumerate(mol_species) if s == names[1]]
        steps[:, second] = steps[:, first]
        start[second] = start[first] + 3.0
    if cage_A is None:
        com = start[None] + np.concatenate([np.zeros((1, n_mol, 3)), np.cumsum(steps, 0)])
    else:
        com = np.empty((n_frames, n_mol, 3))
        x = np.zeros((n_mol, 3))
        for k in range(n_frames):
            x = 0.5 * x + rng.normal(size=(n_mol, 3)) * cage_A * np.sqrt(0.75)
            com[k] = start + x
    t = np.arange(n_frames) * dt_ps
    com = com + t[:, None, None] * np.asarray(drift_A_per_ps)[None, None, :]
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for k in range(n_frames):
        pos = np.concatenate([com[k, m] + offsets[m] for m in range(n_mol)])
        atoms = Atoms(symbols, positions=pos, cell=[box_A] * 3, pbc=True)
        atoms.set_masses(np.concatenate([ions[s].masses for s in mol_species]))
        if molecule_info:
            attach_molecules(atoms, runs, {n: ions[n].n_atoms for n in counts})
            atoms.info["charge_scale"] = charge_scale
        atoms.info["time_ps"] = float(t[k])
        atoms.info["step"] = k
        frames.append(atoms)
    path = folder / "trajectory.extxyz"
    ase.io.write(path, frames, format="extxyz")
    if temperature_K is not None:
        (folder / "md.json").write_text(json.dumps({"settings": {
            "temperature_K": temperature_K}}))
    return path


def expected_L_A2_per_ps(counts: dict[str, int], d_A2_per_ps: dict[str, float]) -> np.ndarray:
    """Expected slope/6 of ⟨ΔX_i·ΔX_j⟩ (Å²/ps) for independent walks seen from the system's
    centre of mass: Σ_{α∈i, γ∈j} [δ_αγ D_α − (m_γ D_γ + m_α D_α)/M + Σ_β m_β² D_β / M²]."""
    names = list(counts)
    m = np.array([load_ion(n).mass_amu for n in names])
    n = np.array([counts[s] for s in names], dtype=float)
    d = np.array([d_A2_per_ps[s] for s in names])
    big_m = np.sum(n * m)
    s2 = np.sum(n * m**2 * d) / big_m**2
    out = np.zeros((len(names), len(names)))
    for i in range(len(names)):
        for j in range(len(names)):
            out[i, j] = (n[i] * d[i] * (i == j) - n[i] * n[j] * (m[j] * d[j] + m[i] * d[i])
                         / big_m + n[i] * n[j] * s2)
    return out
