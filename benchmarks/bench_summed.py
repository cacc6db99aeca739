"""What summing a student's parts costs: ASE's `SumCalculator` (network + a nested sum of
the baseline's parts, as ionmix built students before 2026-12-08) against
`ionmix.models.summed.Summed` (each part once per geometry, nested sums flattened).

    .venv/bin/python benchmarks/bench_summed.py --store runs/learn-tail/frames.db \
        --model runs/learn-tail/gen-000/models/model-0/model.nequip.zip [--compiled]
    .venv/bin/python benchmarks/bench_summed.py     # the baseline's parts alone, packed box

Each round rattles the frame by 0.01 Å (a new geometry, as in MD) and asks each form what an
MTK NPT step asks: the forces, then the stress (the barostat), then the energy (the log).
The forms alternate on the same geometry with their own calculators (no shared cache), so
both see the same machine load. Reported: the median ms per round of each form, one torch
thread; how many times each part computed, per round; and the largest differences between
the forms (eV, eV/Å, eV/Å³). The frame is the store's last of replica 0, or (without
--store) Li[PF6]/[EMIM][PF6] x = 0.4, 10 ion pairs, packed at 1.54 g/cm³, charges x 0.8.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

BASELINE = "coulomb+wall+bonded+tail"


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (a median of no rounds is no timing)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def bench_frame(store_path: Path | None):
    """(atoms, provenance) of the box to time: the store's last frame of replica 0, or a
    packed 188-atom Li[PF6]/[EMIM][PF6] box (x = 0.4) at 1.54 g/cm³, charges x 0.8. Also
    used by bench_coulomb_accuracy.py."""
    from ionmix.dataset.provenance import Provenance

    if store_path is not None:
        from ionmix.dataset import DatasetStore

        store = DatasetStore(store_path, must_exist=True)
        return store.select(replica=0)[-1].atoms, store.provenance()
    from ionmix.build import build_box

    atoms = build_box({"Li": 4, "EMIM": 6, "PF6": 10}, density_g_cm3=1.54, seed=0)
    atoms.info["charge_scale"] = 0.8
    return atoms, Provenance()


def _parts(args, atoms, provenance) -> list:
    """A fresh list of the student's parts: [network, baseline parts...], or the parts of
    the `BASELINE` alone (its tail from a 4.5-Å network) without --model."""
    from ionmix.models.baseline import baseline_calculator, baseline_for_frames

    if args.model is not None:
        from ionmix.models import load_model

        calc = load_model(args.model, atoms, provenance=provenance, compiled=args.compiled).calc
        return list(calc.mixer.calcs)
    ions = provenance.ion_set(atoms)
    baseline = baseline_for_frames(BASELINE, [atoms], [ions], "bench", tail_cutoff_A=4.5)
    return list(baseline_calculator(baseline, ions).mixer.calcs)


def _count_calls(parts: list, counts: dict, label: str) -> None:
    """Count each part's `calculate` calls into counts[label][part class name]."""
    for part in parts:
        name = type(part).__name__
        counts[label][name] = 0
        original = part.calculate

        def counted(*a, _original=original, _name=name, **k):
            counts[label][_name] += 1
            return _original(*a, **k)

        part.calculate = counted


def _md_round(calc, atoms) -> tuple[float, tuple]:
    """(ms, (forces, stress, energy)) of what one MTK step asks of `calc` at `atoms`."""
    atoms.calc = calc
    t0 = time.perf_counter()
    out = (atoms.get_forces(), atoms.get_stress(), atoms.get_potential_energy())
    return 1e3 * (time.perf_counter() - t0), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--model", type=Path, default=None, help="a model.nequip.zip")
    parser.add_argument("--compiled", action="store_true")
    parser.add_argument("--rounds", type=positive_int, default=40)
    args = parser.parse_args()

    import torch
    from ase.calculators.mixing import SumCalculator

    from ionmix.models.summed import Summed

    torch.set_num_threads(1)
    from ionmix.errors import InputError

    try:  # a missing store or model: exit 2 naming it, not a traceback
        atoms, provenance = bench_frame(args.store)
        old_parts, new_parts = _parts(args, atoms, provenance), _parts(args, atoms, provenance)
    except InputError as exc:
        parser.error(str(exc))
    counts = {"ase": {}, "summed": {}}
    _count_calls(old_parts, counts, "ase")
    _count_calls(new_parts, counts, "summed")
    # ionmix's former student: SumCalculator([network, SumCalculator(baseline parts)])
    head = old_parts[:1] if args.model is not None else []
    rest = old_parts[len(head):]
    forms = {"ase": SumCalculator([*head, SumCalculator(rest)]) if head else SumCalculator(rest),
             "summed": Summed(new_parts)}
    rng = np.random.default_rng(0)
    times = {name: [] for name in forms}
    worst = np.zeros(3)
    for round_ in range(args.rounds + 1):  # round 0 warms up (set-up, first allocation)
        geometry = atoms.copy()
        geometry.positions += rng.normal(scale=0.01, size=geometry.positions.shape)
        out = {}
        for name, calc in forms.items():
            ms, out[name] = _md_round(calc, geometry.copy())
            if round_:
                times[name].append(ms)
        worst = np.maximum(worst, [abs(out["ase"][2] - out["summed"][2]),
                                   np.abs(out["ase"][0] - out["summed"][0]).max(),
                                   np.abs(out["ase"][1] - out["summed"][1]).max()])
    n = args.rounds + 1
    model = str(args.model) if args.model else f"{BASELINE} alone"
    report = {"n_atoms": len(atoms), "model": model,
              "compiled": args.compiled, "rounds": args.rounds,
              "median_ms": {name: round(statistics.median(t), 2) for name, t in times.items()},
              "speed_up": round(statistics.median(times["ase"])
                                / statistics.median(times["summed"]), 3),
              "part_calls_per_round": {label: {k: round(v / n, 2) for k, v in c.items()}
                                       for label, c in counts.items()},
              "max_diff": {"energy_eV": float(worst[0]), "force_eV_per_A": float(worst[1]),
                           "stress_eV_per_A3": float(worst[2])}}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
