"""Training and evaluation as Dask tasks: module-level functions a worker can import and
run, each resumable from what it finds on disk. The transferability study submits one
pair per recipe; the learning loop submits one training per committee member."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ionmix.files import atomic_write_text


def train_recipe_task(files: dict[str, str], type_names: list[str],
                      preset: str, energy_shifts: dict[str, float] | str, run_dir: str,
                      seed: int, overrides: dict[str, Any],
                      num_threads: int | None = None,
                      initial_model: str | None = None, baseline: str = "none",
                      provenance=None, baseline_cache: str | None = None) -> dict[str, Any]:
    """Train one recipe's model (resumes / returns the finished result if on disk).

    `num_threads` sets torch's threads in nequip-train (Dask workers default to
    OMP_NUM_THREADS=1, which would leave cores idle); None keeps the worker's setting.
    `initial_model`: fine-tune from this package instead of random weights.
    `baseline`, `provenance`, `baseline_cache`: see `ionmix.train.run_training`.
    """
    from ionmix.train.run import run_training

    log_path = Path(run_dir) / "ionmix-progress.log"
    Path(run_dir).mkdir(parents=True, exist_ok=True)

    def say(line: str) -> None:
        with open(log_path, "a") as fh:
            fh.write(line + "\n")

    result = run_training(files["train"], files["val"], files["test"], type_names,
                          preset=preset, energy_shifts=energy_shifts, run_dir=run_dir,
                          seed=seed, overrides=overrides, say=say,
                          num_threads=num_threads, initial_model=initial_model,
                          baseline=baseline, provenance=provenance,
                          baseline_cache=baseline_cache)
    return result.to_json()


def evaluate_recipe_task(package_path: str, test_files: dict[str, str],
                         out_path: str, atoms_per_ion: dict[str, int],
                         provenance=None) -> dict[str, Any]:
    """Evaluate a packaged model on every composition's test file; cache to `out_path`.

    Also records, per test frame, the predicted and reference energies (eV) and the
    species counts, for the per-species energy analysis (`atoms_per_ion`: ion name → atoms
    in one ion, from the study's ion set, user ions included).
    """
    out = Path(out_path)
    if out.exists():
        cached = json.loads(out.read_text())
        if cached.get("package_path") == package_path and set(cached["by_composition"]) == \
                set(test_files):
            return cached
    from ionmix.files import read_frames
    from ionmix.models import load_model
    from ionmix.train.evaluate import evaluate

    first = read_frames(next(iter(test_files.values())), 0, what="test")
    calc = load_model(package_path, first, provenance=provenance).calc
    by_comp, frames_out = {}, []
    for key, path in test_files.items():
        def record(atoms, results, key=key):
            frames_out.append(_frame_record(key, atoms, results, atoms_per_ion))

        by_comp[key] = evaluate(calc, read_frames(path, ":", what="test"),
                                on_frame=record).to_json()
    result = {"package_path": package_path, "by_composition": by_comp, "frames": frames_out}
    atomic_write_text(out, json.dumps(result, indent=1))
    return result


def _frame_record(key: str, atoms, results: dict[str, Any],
                  atoms_per_ion: dict[str, int]) -> dict[str, Any]:
    """One test frame's reference and predicted energies (eV) and, when the model gives
    per-atom energies, its own split of the energy into ions: per-ion sums of its atomic
    energies, averaged per ion type (includes the part no data fixes)."""
    from ionmix.chemistry.topology import decode_runs

    molecules = atoms.info.get("molecules", "")
    record = {"composition": key, "n_atoms": len(atoms), "molecules": molecules,
              "energy_ref_eV": float(atoms.get_potential_energy()),
              "energy_pred_eV": float(results["energy"])}
    atomic = results.get("energies")
    if molecules and atomic is not None:
        sums: dict[str, list[float]] = {}
        start = 0
        for name, n in decode_runs(molecules):
            size = atoms_per_ion[name]
            for _ in range(n):
                sums.setdefault(name, []).append(float(np.sum(atomic[start:start + size])))
                start += size
        record["ion_energy_pred_eV"] = {k: float(np.mean(v)) for k, v in sums.items()}
    return record


