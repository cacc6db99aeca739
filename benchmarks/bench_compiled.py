"""What a compiled network buys in MD: one student (network + baseline) evaluated from its
package and from its AOTInductor-compiled form (`load_model(..., compiled=True)`).

    .venv/bin/python benchmarks/bench_compiled.py \
        --model runs/learn-tail/gen-002/models/model-0/model.nequip.zip \
        --store runs/learn-tail/frames.db --calls 30

Calls alternate between the two forms on the same frame, rattled by 0.02 Å each call (a new
geometry, as in MD), so both see the same machine load. Reported: the medians of one
energy + forces + stress call, in ms, one torch thread, for the network alone and for the
whole student; the largest differences between the forms over the calls (eV, eV/Å,
eV/Å³); and whether the compiled file had to be made (2-4 min). Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


def _forget(calc) -> None:
    """Drop what `calc` and the calculators it sums hold from their last call (ASE answers
    a repeated geometry from that cache)."""
    calc.results, calc.atoms = {}, None
    for part in getattr(getattr(calc, "mixer", None), "calcs", ()):
        _forget(part)


def _call(calc, atoms) -> tuple[float, tuple]:
    """(ms, (energy, forces, stress)) of one call of `calc` on a copy of `atoms`."""
    _forget(calc)  # the network was called on this geometry already, as part of the student
    work = atoms.copy()
    work.calc = calc
    t0 = time.perf_counter()
    out = (work.get_potential_energy(), work.get_forces(), work.get_stress())
    return 1e3 * (time.perf_counter() - t0), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a model.nequip.zip")
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()

    import torch

    from ionmix.dataset import DatasetStore
    from ionmix.models import load_model
    from ionmix.models.network import compiled_network

    t_start = time.time()
    torch.set_num_threads(1)
    store = DatasetStore(args.store, must_exist=True)
    frame = store.select(replica=0)[-1].atoms
    provenance = store.provenance()
    # made now if missing or stale, kept otherwise
    made_now = compiled_network(args.model).stat().st_mtime >= t_start
    forms = {form: load_model(args.model, frame, provenance=provenance,
                              compiled=form == "compiled")
             for form in ("package", "compiled")}
    # the network alone: the student's first part (Summed of the network and the baseline's)
    calcs = {f"{form} {part}": calc for form, loaded in forms.items()
             for part, calc in (("student", loaded.calc),
                                ("network", loaded.calc.mixer.calcs[0]))}
    times: dict[str, list[float]] = {name: [] for name in calcs}
    worst = np.zeros(3)
    rng = np.random.default_rng(0)
    for k in range(args.calls + 2):
        atoms = frame.copy()
        atoms.positions += rng.normal(0.0, 0.02, atoms.positions.shape)
        outs = {}
        for name, calc in calcs.items():
            ms, outs[name] = _call(calc, atoms)
            if k >= 2:  # the first calls warm up
                times[name].append(ms)
        a, b = outs["package student"], outs["compiled student"]
        worst = np.maximum(worst, [abs(a[0] - b[0]), np.abs(a[1] - b[1]).max(),
                                   np.abs(a[2] - b[2]).max()])
    result = {"model": str(args.model), "n_atoms": len(frame), "calls": args.calls,
              "compiled_in_this_call": made_now,
              **{f"{name} ms (median)": statistics.median(t) for name, t in times.items()},
              "max |dE| eV": worst[0], "max |dF| eV/Å": worst[1], "max |dS| eV/Å³": worst[2]}
    for part in ("network", "student"):
        result[f"{part} speedup"] = (result[f"package {part} ms (median)"]
                                     / result[f"compiled {part} ms (median)"])
    print(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
