"""CPU Allegro candidates with more capacity than `cpu-tiny-allegro-npt` (issue 22, item 4).

Every candidate is a set of overrides of `cpu-tiny-allegro-npt` (the first candidate, with
none, is that preset itself) and is trained on the same frames with the same seed:

1. Splits one composition of a dataset store the paper's way (`split_by_replica`: train
   and validation frames equally spaced along replica 0, test frames from replica 1) and
   writes the splits as extxyz (once; reused by every candidate).
2. Trains each candidate with `ionmix.train.run_training` for a fixed number of epochs
   (no early stopping), energy shifts fitted to the training frames, 2 torch threads,
   one candidate at a time. Reports the test energy/force/stress MAE, the wall time per
   epoch (median of the epoch-to-epoch intervals, so start-up and the test run are left
   out) and the CPU time of the whole training (nequip-train and nequip-package).
3. MD cost per step: loads every packaged model with `ionmix.train.load_calculator` and
   times ``atoms.get_forces(); atoms.get_stress()`` on the first test frame, the
   candidates interleaved call by call (so a change of the machine's load hits all of
   them alike): the median wall time with 2 torch threads, and the median CPU time with 1
   thread (the model's work, which the machine's load hardly changes).

Costs are reported also as ratios to the first candidate, measured in the same run: on a
shared machine only these ratios are comparable between runs, and where the machine is
busy the 1-thread CPU time is the better guide (a 2-thread call then spends most of its
time waiting for a core).

A finished candidate is not retrained when the script is run again with the same
arguments (its run directory is reused); delete ``OUT/<candidate>`` to retrain it.

Usage:
    .venv/bin/python benchmarks/bench_presets.py [--dataset runs/settled/frames.db]
        [--out runs/bench-presets] [--epochs 10] [--n-train 40] [--n-val 5] [--n-test 20]
        [--candidates tiny,w64,...] [--md-calls 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import resource
import statistics
import time
from pathlib import Path
from typing import Any

from ionmix.dataset import DatasetStore, atomic_write_extxyz, split_by_replica
from ionmix.models import load_calculator
from ionmix.train import run_training

BASE_PRESET = "cpu-tiny-allegro-npt"
TORCH_THREADS = 2
#: the elements of Li[PF6]/[EMIM][PF6] other than Li
NON_LI_ELEMENTS = ("C", "F", "H", "N", "P")


def allegro_overrides(r_max_A: float, l_max: int, n_scalar: int, n_tensor: int,
                      mlp_width: int, readout_width: int,
                      li_r_max_A: float | None = None) -> dict[str, Any]:
    """Overrides of `BASE_PRESET` for one architecture.

    With `li_r_max_A`, pairs with a Li atom see `li_r_max_A` and all other pairs `r_max_A`
    (nequip's ``per_edge_type_cutoff``; the model's global r_max is then the larger one).
    """
    model = "training_module.model"
    out: dict[str, Any] = {
        "cutoff_radius": max(r_max_A, li_r_max_A or 0.0),
        f"{model}.l_max": l_max,
        f"{model}.num_scalar_features": n_scalar,
        f"{model}.num_tensor_features": n_tensor,
        f"{model}.scalar_embed_mlp_hidden_layers_width": mlp_width,
        f"{model}.allegro_mlp_hidden_layers_width": mlp_width,
        f"{model}.readout_mlp_hidden_layers_width": readout_width,
    }
    if li_r_max_A is not None:
        out.update(li_cutoff_overrides(r_max_A))
    return out


def li_cutoff_overrides(other_r_max_A: float) -> dict[str, Any]:
    """Per-edge-type cutoffs: `other_r_max_A` for every pair without Li, the global r_max
    for pairs with Li (nequip fills missing entries with r_max). Given to the model and to
    the training data's neighbour list (which then drops the pairs the model ignores)."""
    cutoffs = {a: {b: float(other_r_max_A) for b in NON_LI_ELEMENTS} for a in NON_LI_ELEMENTS}
    return {
        "+training_module.model.per_edge_type_cutoff": cutoffs,
        "+data.transforms.1.per_edge_type_cutoff": cutoffs,
        "+data.transforms.1.type_names": "${model_type_names}",
    }


#: name -> overrides of BASE_PRESET; the first is the reference for the cost ratios.
CANDIDATES: dict[str, dict[str, Any]] = {
    "tiny": {},  # cpu-tiny-allegro-npt: r 4.5, l 1, 16/8, MLPs 1x32, readout 16
    "w64": allegro_overrides(4.5, 1, 32, 16, 64, 32),
    "w64-r5.0": allegro_overrides(5.0, 1, 32, 16, 64, 32),
    "w64-li5.5": allegro_overrides(4.5, 1, 32, 16, 64, 32, li_r_max_A=5.5),
    # over 3x the MD work of "tiny" (1-thread CPU time: 3.7x and 6x in a 3-epoch smoke
    # run), so not trained by default
    "w64-r5.5": allegro_overrides(5.5, 1, 32, 16, 64, 32),
    "w64-l2": allegro_overrides(4.5, 2, 32, 8, 64, 32),
}
DEFAULT_CANDIDATES = ("tiny", "w64", "w64-r5.0", "w64-li5.5")


def describe(overrides: dict[str, Any]) -> str:
    """Short text of an architecture: r_max, l_max, features, MLP width."""
    m = "training_module.model."
    r = overrides.get("cutoff_radius", 4.5)
    li = "+training_module.model.per_edge_type_cutoff" in overrides
    r_text = f"{r:g} Li–X, 4.5 else" if li else f"{r:g}"
    return (f"r {r_text}, l {overrides.get(m + 'l_max', 1)}, "
            f"{overrides.get(m + 'num_scalar_features', 16)}/"
            f"{overrides.get(m + 'num_tensor_features', 8)}, "
            f"MLP {overrides.get(m + 'allegro_mlp_hidden_layers_width', 32)}")


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------


def write_splits(dataset: Path, data_dir: Path, n_train: int, n_val: int, n_test: int,
                 seed: int) -> tuple[dict[str, Path], list[str]]:
    """Train/val/test extxyz files of the store's only composition, and the type names."""
    store = DatasetStore(dataset)
    keys = store.compositions()
    if len(keys) != 1:
        raise SystemExit(f"{dataset}: expected one composition, found {keys}")
    split = split_by_replica(store, keys, n_train, n_val, n_test, 0, 1, seed)
    files = {name: data_dir / f"{name}.extxyz" for name in ("train", "val", "test")}
    for name, frames in (("train", split.train), ("val", split.val), ("test", split.test)):
        atomic_write_extxyz(frames, files[name])
    type_names = sorted({s for f in split.train for s in f.atoms.get_chemical_symbols()})
    return files, type_names


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------

_ELAPSED = re.compile(r"^epoch \d+/\d+ \[([0-9.]+) s\]")


def median_epoch_wall_s(elapsed_s: list[float]) -> float | None:
    """Median interval between successive epoch ends (None with fewer than 2 epochs)."""
    steps = [b - a for a, b in zip(elapsed_s, elapsed_s[1:], strict=False)]
    return statistics.median(steps) if steps else None


def _children_cpu_s() -> float:
    """CPU time (user + system, s) of this process's finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train_candidate(name: str, overrides: dict[str, Any], files: dict[str, Path],
                    type_names: list[str], out: Path, epochs: int, seed: int) -> dict[str, Any]:
    """Train one candidate (or reuse its finished run); its metrics and costs."""
    run_dir = out / name
    timing_path = run_dir / "bench_timing.json"
    elapsed_s: list[float] = []

    def progress(line: str) -> None:
        print(f"[{name}] {line}", flush=True)
        match = _ELAPSED.match(line)
        if match:
            elapsed_s.append(float(match.group(1)))

    cpu0_s = _children_cpu_s()
    result = run_training(
        files["train"], files["val"], files["test"], type_names, preset=BASE_PRESET,
        energy_shifts="fit", run_dir=run_dir, seed=seed,
        overrides={**overrides, "max_epochs": epochs, "early_stopping_patience": epochs},
        num_threads=TORCH_THREADS, say=progress,
    )
    if elapsed_s:
        timing = {"epoch_end_elapsed_s": elapsed_s, "train_wall_s": result.train_wall_s,
                  "train_cpu_s": _children_cpu_s() - cpu0_s}
        timing_path.write_text(json.dumps(timing, indent=1) + "\n")
    timing = json.loads(timing_path.read_text())
    m = result.metrics
    return {
        "overrides": overrides,
        "architecture": describe(overrides),
        "epochs": m.get("epochs"),
        "test_energy_mae_meV_per_atom": m.get("energy_mae_meV_per_atom"),
        "test_force_mae_meV_per_A": m.get("force_mae_meV_per_A"),
        "test_stress_mae_meV_per_A3": m.get("stress_mae_meV_per_A3"),
        "train_wall_s": timing["train_wall_s"],
        "wall_per_epoch_s": median_epoch_wall_s(timing["epoch_end_elapsed_s"]),
        "train_cpu_s": timing.get("train_cpu_s"),
        "package": str(result.package_path),
    }


# --------------------------------------------------------------------------------------
# MD cost
# --------------------------------------------------------------------------------------


def md_cost_s_per_step(packages: dict[str, Path], frame_file: Path, n_calls: int,
                       n_warmup: int = 3) -> dict[str, dict[str, float]]:
    """Per candidate: median wall time (s) of ``get_forces(); get_stress()`` with
    `TORCH_THREADS` torch threads, median CPU time (s) of the same call with 1 thread, and
    the number of weights. The candidates are interleaved call by call.

    The 1-thread CPU time is the model's work, whatever the load; with 2 threads on a busy
    machine both wall and CPU time are inflated (a thread waits, spinning, for the other
    one's core)."""
    import ase.io
    import torch

    frame = ase.io.read(frame_file, index=0)
    atoms = {}
    for name, package in packages.items():
        atoms[name] = frame.copy()
        atoms[name].calc = load_calculator(package)
    torch.set_num_threads(TORCH_THREADS)
    wall_s = _time_calls(atoms, n_calls, n_warmup, time.perf_counter)
    torch.set_num_threads(1)
    cpu_s = _time_calls(atoms, n_calls, n_warmup, time.process_time)
    torch.set_num_threads(TORCH_THREADS)
    return {
        name: {
            "md_s_per_step": statistics.median(wall_s[name]),
            "md_cpu_s_per_step_1_thread": statistics.median(cpu_s[name]),
            "n_weights": sum(p.numel() for p in a.calc.model.parameters()),
            "n_atoms": len(a),
        }
        for name, a in atoms.items()
    }


def _time_calls(atoms: dict[str, Any], n_calls: int, n_warmup: int,
                clock: Any) -> dict[str, list[float]]:
    """`clock` time (s) of each of `n_calls` force + stress calls per candidate."""
    times: dict[str, list[float]] = {name: [] for name in atoms}
    for k in range(n_warmup + n_calls):
        for name, a in atoms.items():
            a.calc.reset()  # as in MD: every step is a new evaluation
            t0 = clock()
            a.get_forces()
            a.get_stress()
            if k >= n_warmup:
                times[name].append(clock() - t0)
    return times


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _with_ratio(row: dict[str, Any], ref: dict[str, Any], key: str, spec: str) -> str:
    """``value (value / ref's value)``."""
    value, ref_value = row.get(key), ref.get(key)
    ratio = None if value is None or not ref_value else value / ref_value
    return f"{_fmt(value, spec)} ({_fmt(ratio, '.2f')})"


def table(rows: dict[str, dict[str, Any]]) -> str:
    """Markdown table of the candidates; costs also as ratios to the first one."""
    ref = next(iter(rows.values()))
    lines = [
        "| candidate | architecture | weights | test E MAE (meV/atom) | F MAE (meV/Å) | "
        "stress MAE (meV/Å³) | train s/epoch | train CPU s | MD s/step, 2 threads | "
        "MD CPU s/step, 1 thread |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['architecture']} | {r['n_weights']} | "
            f"{_fmt(r['test_energy_mae_meV_per_atom'], '.2f')} | "
            f"{_fmt(r['test_force_mae_meV_per_A'], '.1f')} | "
            f"{_fmt(r['test_stress_mae_meV_per_A3'], '.3f')} | "
            f"{_with_ratio(r, ref, 'wall_per_epoch_s', '.1f')} | "
            f"{_with_ratio(r, ref, 'train_cpu_s', '.0f')} | "
            f"{_with_ratio(r, ref, 'md_s_per_step', '.3f')} | "
            f"{_with_ratio(r, ref, 'md_cpu_s_per_step_1_thread', '.3f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=Path("runs/settled/frames.db"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench-presets"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--n-train", type=int, default=40)
    parser.add_argument("--n-val", type=int, default=5)
    parser.add_argument("--n-test", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--candidates", default=",".join(DEFAULT_CANDIDATES),
                        help=f"comma-separated subset of {', '.join(CANDIDATES)}")
    parser.add_argument("--md-calls", type=int, default=20)
    args = parser.parse_args()
    out = args.out.resolve()
    names = args.candidates.split(",")
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown candidates {unknown}; known: {', '.join(CANDIDATES)}")

    files, type_names = write_splits(args.dataset, out / "data", args.n_train, args.n_val,
                                     args.n_test, args.seed)
    rows = {name: train_candidate(name, CANDIDATES[name], files, type_names, out,
                                  args.epochs, args.seed) for name in names}
    costs = md_cost_s_per_step({n: Path(r["package"]) for n, r in rows.items()},
                               files["test"], args.md_calls)
    for name in rows:
        rows[name].update(costs[name])
    results = {
        "base_preset": BASE_PRESET, "dataset": str(args.dataset.resolve()),
        "n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test,
        "epochs": args.epochs, "seed": args.seed, "torch_threads": TORCH_THREADS,
        "md_calls": args.md_calls, "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"), "candidates": rows,
    }
    print(table(rows))
    (out / "bench-presets.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out / 'bench-presets.json'}")


if __name__ == "__main__":
    main()
