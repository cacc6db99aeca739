"""Does a student price a kind of contact differently from its teacher? Its energy error
on the teacher's own frames, regressed on how many such contacts each frame has.

    .venv/bin/python benchmarks/bench_contact_energy.py --store runs/learn-npt/frames.db \
        --composition LiPF6=0.4,EMIMPF6=0.6 \
        --model runs/learn-npt/gen-002/models/model-0/model.nequip.zip

For every sampled frame of the composition (the teacher's NPT liquid, both replicas): the
model's energy minus the teacher's label (eV), and the frame's counts of intermolecular
contacts (`bench_contacts.contact_counts`: ring N – F within 3.5 Å, Li – N within 5 Å,
H – F within 2.5 Å, Li – F within 2.5 Å, summed over the frame's atoms) and its volume. An
ordinary least-squares fit of the error on the counts, the volume and a constant gives each
contact's price difference, model − teacher, in meV per contact, with its standard error
(frames treated as independent: an underestimate for correlated frames). A positive price
means the model finds that contact costlier than its teacher does, so its liquid has fewer.
A price of p gives ~exp(−p / k_B T) as many (k_B T = 25.9 meV at 300 K). Prints one JSON
object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

#: (name, element pair, radius Å): the contacts bench_contacts.py found changed (and controls)
CONTACTS = (("ring N - F within 3.5 A", "N-F", 3.5), ("Li - N within 5 A", "Li-N", 5.0),
            ("H - F within 2.5 A", "H-F", 2.5), ("Li - F within 2.5 A", "Li-F", 2.5))


def frame_contacts(atoms) -> list[float]:
    """Counts of each `CONTACTS` entry in one frame, summed over its atoms."""
    from bench_contacts import contact_counts

    symbols = atoms.get_chemical_symbols()
    out = []
    for _, pair, radius in CONTACTS:
        counts = contact_counts([atoms], (radius,))[pair][0, 0]  # per A atom
        out.append(float(counts) * symbols.count(pair.split("-")[0]))
    return out


def teacher_frames(store, composition: str):
    """(frames, ion set): the store's sampled frames of `composition` (the teacher's NPT
    liquid, every replica), with per-atom molecule arrays."""
    from ionmix.chemistry.topology import with_molecule_arrays

    frames = [f.atoms for f in store.select(composition, task="md")]
    ions = store.provenance().ion_set(frames[0])
    for atoms in frames:
        with_molecule_arrays(atoms, ions)
    return frames, ions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--composition", required=True)
    parser.add_argument("--model", type=Path, nargs="+", required=True)
    args = parser.parse_args()

    import torch

    from ionmix.dataset import DatasetStore
    from ionmix.models import load_model

    torch.set_num_threads(1)
    store = DatasetStore(args.store, must_exist=True)
    provenance = store.provenance()
    frames, ions = teacher_frames(store, args.composition)
    teacher_eV = np.array([a.get_potential_energy() for a in frames])
    design = np.array([frame_contacts(a) + [a.get_volume(), 1.0] for a in frames])
    result = {"n_frames": len(frames),
              "mean_counts_per_frame": {name: float(design[:, k].mean())
                                        for k, (name, _, _) in enumerate(CONTACTS)},
              "models": {}}
    for model in args.model:
        calc = load_model(model, frames[0], provenance=provenance).calc
        error_eV = []
        for atoms in frames:
            copy = atoms.copy()
            copy.calc = calc
            error_eV.append(copy.get_potential_energy())
        error_eV = np.array(error_eV) - teacher_eV
        coef, *_ = np.linalg.lstsq(design, error_eV, rcond=None)
        residual = error_eV - design @ coef
        dof = len(frames) - design.shape[1]
        cov = np.linalg.inv(design.T @ design) * (residual @ residual) / dof
        se = np.sqrt(np.diag(cov))
        result["models"][str(model)] = {
            "price_meV_per_contact": {name: [round(1e3 * coef[k], 2), round(1e3 * se[k], 2)]
                                      for k, (name, _, _) in enumerate(CONTACTS)},
            "price_meV_per_A3": [round(1e3 * coef[-2], 4), round(1e3 * se[-2], 4)],
            "error_rms_after_fit_meV_per_atom": float(1e3 * residual.std() / len(frames[0])),
            "error_spread_meV_per_atom": float(1e3 * error_eV.std() / len(frames[0]))}
        print(model, json.dumps(result["models"][str(model)]), flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
