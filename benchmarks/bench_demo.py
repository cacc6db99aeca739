"""`make demo`'s main job, measured (issue 24): wall time per stage, the kernel's share of
the CPU time, repeatability, and the headline transfer ratios across seeds.

    # one demo run (the README's `make demo` job) into a fresh folder, timed
    python benchmarks/bench_demo.py run --out runs/bench-demo/seed0
    # the same config with other seeds ([sampling] and [study] seed)
    python benchmarks/bench_demo.py run --out runs/bench-demo/seed1 --seed 1
    # two runs of one seed: are their metrics.json identical?
    python benchmarks/bench_demo.py compare runs/bench-demo/seed0 runs/bench-demo/seed0-again
    # the {0.5} and {0.4, 0.6} ratios of several runs, with their spread
    python benchmarks/bench_demo.py seeds runs/bench-demo/seed*
    # one recipe's training: bare nequip-train against nequip-train from a Dask worker
    python benchmarks/bench_demo.py bare runs/bench-demo/seed0/study/models/x_0.5 \
        --out runs/bench-demo/bare --threads 2
    # the same training under glibc's malloc, jemalloc and tcmalloc
    python benchmarks/bench_demo.py allocators runs/bench-demo/seed0/study/models/x_0.5 \
        --out runs/bench-demo/allocators

`run` starts `ionmix plan` and `ionmix transfer` as `make demo` does (the installed
console script, stdout not a terminal, so the plain progress lines appear), stamps each
output line with the seconds since the start, and takes user/sys CPU time of every
process the job started (getrusage of the waited-for children: Dask workers and
nequip-train included) — what `/usr/bin/time` reports. Results: ``bench-demo.json`` and
``demo.log`` in OUT; the study itself goes to OUT/study.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "examples" / "demo-study.toml"
PLAN_CONFIG = ROOT / "examples" / "li-emim-pf6.toml"
BIN = Path(sys.executable).parent
#: Recipes whose ratio is the demo's headline: the paper's rank-deficient single
#: composition against a pair that spans the composition space.
HEADLINE = ("x=0.5", "x=0.4+0.6")


def _seeded_config(seed: int, out: Path) -> Path:
    """The demo config with [sampling] and [study] seed = `seed` (the file itself when 0)."""
    if seed == 0:
        return DEMO_CONFIG
    text = DEMO_CONFIG.read_text()
    text, n = re.subn(r"(?m)^seed = 0\b", f"seed = {seed}", text)
    if n != 2:
        raise SystemExit(f"{DEMO_CONFIG}: expected 2 'seed = 0' lines, found {n}")
    assert tomllib.loads(text)["study"]["seed"] == seed
    path = out / f"demo-study-seed{seed}.toml"
    path.write_text(text)
    return path


def _stream(args: list[str], log, start: float, stamps: list[tuple[float, str]]) -> None:
    """Run `args`, copying each output line to `log` and stdout with its time stamp."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=ROOT)
    for line in proc.stdout:
        t = time.monotonic() - start
        stamps.append((t, line.rstrip()))
        log.write(f"[{t:8.1f} s] {line}")
        log.flush()
        print(f"[{t:8.1f} s] {line}", end="", flush=True)
    if proc.wait() != 0:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}; see {log.name}")


def _stages(stamps: list[tuple[float, str]], total_s: float) -> dict[str, float]:
    """Seconds per stage, from the first line of each stage to the next stage's."""
    marks = {}
    for t, line in stamps:
        for stage, pattern in (("plan", r"ionmix plan"), ("sampling", r"^sampling \d+ runs"),
                               ("training", r"^training \d+ recipes"),
                               ("evaluation", r"^evaluat"), ("report", r"^report:")):
            if stage not in marks and re.search(pattern, line.strip()):
                marks[stage] = t
    order = sorted(marks.items(), key=lambda kv: kv[1])
    ends = [t for _, t in order[1:]] + [total_s]
    return {stage: round(end - t, 1) for (stage, t), end in zip(order, ends, strict=True)}


def run(out: Path, seed: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    study = out / "study"
    if study.exists():
        raise SystemExit(f"{study} exists: the benchmark times a fresh run")
    config = _seeded_config(seed, out)
    stamps: list[tuple[float, str]] = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    with open(out / "demo.log", "w") as log:
        _stream([str(BIN / "ionmix"), "plan", str(PLAN_CONFIG)], log, start, stamps)
        _stream([str(BIN / "ionmix"), "transfer", str(config), "--out", str(study)], log,
                start, stamps)
    wall_s = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user_s, sys_s = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    ratios = json.loads((study / "metrics.json").read_text())["transfer_ratios"]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.node(),
        "cores": os.cpu_count(), "load_average_at_end": os.getloadavg(), "seed": seed,
        "config": str(config.relative_to(ROOT) if config.is_relative_to(ROOT) else config),
        "wall_s": round(wall_s, 1), "user_s": round(user_s, 1), "sys_s": round(sys_s, 1),
        "kernel_share": round(sys_s / (user_s + sys_s), 3),
        "peak_rss_MB_largest_process": round(after.ru_maxrss / 1024, 1),
        "stages_s": _stages(stamps, wall_s),
        "ratios": {name: round(r["ratio"], 2) for name, r in ratios.items()},
        "verdicts": {name: r["verdict"] for name, r in ratios.items()},
    }
    (out / "bench-demo.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def _numbers(value, path=""):
    """(path, number) for every number in a JSON value (paths of dict keys / list indices)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{path}/{i}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)


def compare(a: Path, b: Path) -> dict:
    """Whether two runs' metrics.json are identical, and if not, by how much."""
    texts = [(p / "study" / "metrics.json").read_text() for p in (a, b)]
    result = {"identical": texts[0] == texts[1]}
    if not result["identical"]:
        x, y = (dict(_numbers(json.loads(t))) for t in texts)
        rel = {k: abs(x[k] - y[k]) / max(abs(x[k]), abs(y[k]), 1e-300)
               for k in x.keys() & y.keys() if x[k] != y[k]}
        worst = max(rel, key=rel.get) if rel else None
        result.update(n_numbers=len(x), n_different=len(rel),
                      largest_relative_difference=rel.get(worst), where=worst,
                      only_in_one=sorted(x.keys() ^ y.keys())[:10])
    print(json.dumps(result, indent=2))
    return result


def seeds(folders: list[Path]) -> dict:
    """The headline ratios per run and their spread; whether {0.5} ≥ 5 × {0.4, 0.6} in
    every run."""
    rows = []
    for folder in folders:
        bench = json.loads((folder / "bench-demo.json").read_text())
        r = bench["ratios"]
        rows.append({"run": str(folder), "seed": bench["seed"], "wall_s": bench["wall_s"],
                     **{name: r[name] for name in HEADLINE},
                     "quotient": r[HEADLINE[0]] / r[HEADLINE[1]]})
    summary = {"runs": rows}
    for key in (*HEADLINE, "quotient"):
        values = [row[key] for row in rows]
        summary[key] = {"min": min(values), "max": max(values),
                        "median": statistics.median(values)}
    summary["quotient_at_least_5_in_every_run"] = all(row["quotient"] >= 5 for row in rows)
    print(json.dumps(summary, indent=2))
    return summary


def _fresh_config(model_dir: Path, run_dir: Path) -> None:
    """`model_dir`'s nequip config, its Hydra run dir pointed at `run_dir`."""
    text = (model_dir / "config.yaml").read_text()
    text = re.sub(r"(?m)^(\s+dir: ).*$", lambda m: m.group(1) + str(run_dir), text, count=1)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(text)


def _train_in_worker(run_dir: str, threads: int) -> float:
    """nequip-train as the study starts it (ionmix's subprocess helper), timed."""
    from ionmix.train.run import _run_subprocess

    t0 = time.perf_counter()
    _run_subprocess([str(BIN / "nequip-train"), "-cp", run_dir, "-cn", "config"], Path(run_dir),
                    Path(run_dir) / "nequip-train.log", "nequip-train", None, threads)
    return time.perf_counter() - t0


def bare(model_dir: Path, out: Path, threads: int, repeats: int) -> dict:
    """The same training config, bare `nequip-train` from a shell environment against
    nequip-train started from an ionmix Dask worker, alternated `repeats` times."""
    from ionmix.cluster import ClusterConfig, dask_client

    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    times: dict[str, list[float]] = {"bare": [], "dask_worker": []}
    def run_bare(k: int) -> float:
        run_dir = out / f"bare-{k}"
        _fresh_config(model_dir, run_dir)
        t0 = time.perf_counter()
        subprocess.run([str(BIN / "nequip-train"), "-cp", str(run_dir), "-cn", "config"],
                       env=env, cwd=run_dir, check=True, capture_output=True)
        return time.perf_counter() - t0

    with dask_client(ClusterConfig(workers=1)) as client:
        def run_in_worker(k: int) -> float:
            run_dir = out / f"worker-{k}"
            _fresh_config(model_dir, run_dir)
            return client.submit(_train_in_worker, str(run_dir), threads, pure=False).result()

        for k in range(repeats):  # alternate which goes first (the machine's load drifts)
            order = (("bare", run_bare), ("dask_worker", run_in_worker))
            for name, run in order if k % 2 == 0 else order[::-1]:
                times[name].append(run(k))
            print({name: [round(t, 1) for t in v] for name, v in times.items()}, flush=True)
    result = {"model_dir": str(model_dir), "threads": threads,
              "times_s": {k: [round(t, 1) for t in v] for k, v in times.items()},
              "throughput_ratio": round(statistics.median(times["bare"])
                                        / statistics.median(times["dask_worker"]), 3)}
    (out / "bench-bare.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def allocators(model_dir: Path, out: Path, threads: int, repeats: int) -> dict:
    """The same training under glibc's malloc, jemalloc and tcmalloc (``IONMIX_ALLOCATOR``,
    as ionmix starts nequip-train), alternated `repeats` times: wall, user and sys s."""
    from ionmix import runtime

    rows: dict[str, list[dict]] = {name: [] for name in ("glibc", *runtime.ALLOCATORS)}
    for k in range(repeats):
        for name in rows:
            run_dir = out / f"{name}-{k}"
            _fresh_config(model_dir, run_dir)
            os.environ["IONMIX_ALLOCATOR"] = name
            runtime.allocator_preload.cache_clear()
            env = runtime.subprocess_env(threads)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run([str(BIN / "nequip-train"), "-cp", str(run_dir), "-cn", "config"],
                           env=env, cwd=run_dir, check=True, capture_output=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            rows[name].append({"wall_s": round(time.perf_counter() - t0, 1),
                               "user_s": round(after.ru_utime - before.ru_utime, 1),
                               "sys_s": round(after.ru_stime - before.ru_stime, 1)})
            print(name, rows[name][-1], flush=True)
    result = {"model_dir": str(model_dir), "threads": threads, "runs": rows,
              "median_wall_s": {name: statistics.median(r["wall_s"] for r in v)
                                for name, v in rows.items()},
              "kernel_share": {name: round(sum(r["sys_s"] for r in v)
                                           / sum(r["sys_s"] + r["user_s"] for r in v), 3)
                               for name, v in rows.items()}}
    (out / "bench-allocators.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("compare")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p = sub.add_parser("seeds")
    p.add_argument("folders", type=Path, nargs="+")
    p = sub.add_parser("bare")
    p.add_argument("model_dir", type=Path, help="a trained recipe's folder (config.yaml)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p = sub.add_parser("allocators")
    p.add_argument("model_dir", type=Path, help="a trained recipe's folder (config.yaml)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.command == "run":
        run(args.out.resolve(), args.seed)
    elif args.command == "bare":
        bare(args.model_dir.resolve(), args.out.resolve(), args.threads, args.repeats)
    elif args.command == "allocators":
        allocators(args.model_dir.resolve(), args.out.resolve(), args.threads, args.repeats)
    elif args.command == "compare":
        compare(args.a, args.b)
    else:
        seeds(args.folders)


if __name__ == "__main__":
    main()
