"""How far a model's NPT density can be off for its pressure error alone: its configurational
pressure against the teacher's on the teacher's own NPT frames, and the density error that
bias implies through the teacher's compressibility (Δρ/ρ ≈ −κ_T·ΔP).

    .venv/bin/python benchmarks/bench_pressure_bias.py \
        --models runs/learn-npt/gen-001/models --store runs/learn-npt/frames.db --replica 1

κ_T is the teacher's, from the volume fluctuations of the store's NPT frames of that
replica (κ_T = ⟨δV²⟩/(k_B T ⟨V⟩); a rough value: the frames are correlated). Each member of
a committee folder (or the one model) is evaluated on every `--every`-th frame, one torch
thread. A student whose NPT density drifts much further than this bias implies is not
off by its pressure on the teacher's liquid but by the configurations its own dynamics
reaches (compare `ionmix validate` along its run). Prints one JSON object.

The pressure here is the atomic virial's. On frames a model did not make, that is
dominated by its stiff bonds and can point the wrong way: for the loop's students it read
−90 to −360 bar where the molecular virial reads +270 to +690
(`bench_molecule_forces.py`, which compares both; docs/benchmarks.md, "What moves whole
molecules").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True,
                        help="a model package or folder, or a committee folder")
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--replica", type=int, default=1, help="the teacher's NPT replica")
    parser.add_argument("--every", type=int, default=5, help="every n-th frame")
    args = parser.parse_args()

    import torch
    from ase.units import bar, kB

    from ionmix.dataset import DatasetStore
    from ionmix.models import load_model, model_paths

    torch.set_num_threads(1)
    store = DatasetStore(args.store, must_exist=True)
    frames = [f.atoms for f in store.select(replica=args.replica, task="md")]
    temperature_K = float(frames[0].info["temperature_K"])
    volume_A3 = np.array([a.get_volume() for a in frames])
    kappa_T_per_bar = volume_A3.var() / (kB * temperature_K * volume_A3.mean()) * bar
    picked = frames[::args.every]
    teacher_bar = np.array([_pressure_bar(a) for a in picked])
    result = {"store": str(args.store), "replica": args.replica, "n_frames": len(picked),
              "temperature_K": temperature_K,
              "teacher_density_g_cm3": float(np.mean([_density(a) for a in frames])),
              "kappa_T_per_Pa": kappa_T_per_bar / 1e5, "members": []}
    paths = model_paths(args.models)
    for path in paths:
        calc = load_model(path.parent if path.suffix == ".zip" else path, picked[0],
                          provenance=store.provenance()).calc
        diff = np.array([_pressure_bar(a, calc) for a in picked]) - teacher_bar
        result["members"].append({
            "model": str(path), "pressure_mean_difference_bar": float(diff.mean()),
            "pressure_mean_difference_sem_bar": float(diff.std(ddof=1) / np.sqrt(diff.size)),
            "pressure_mae_bar": float(np.abs(diff).mean()),
            "implied_density_error_percent": float(-100 * kappa_T_per_bar * diff.mean())})
        print(json.dumps(result["members"][-1]), flush=True)
    print(json.dumps(result, indent=2))


def _pressure_bar(atoms, calc=None) -> float:
    """Configurational pressure (bar) of `atoms`: with `calc` (on a copy), or the labels it
    carries (the teacher's) when `calc` is None."""
    from ase.units import bar

    if calc is not None:
        atoms = atoms.copy()
        atoms.calc = calc
    return float(-np.mean(atoms.get_stress(voigt=True)[:3]) / bar)


def _density(atoms) -> float:
    from ase.units import _amu

    return float(atoms.get_masses().sum() * _amu * 1e3 / (atoms.get_volume() * 1e-24))


if __name__ == "__main__":
    main()
