"""Kernel share of a running job: user and system CPU time of a process and every process
under it, read from /proc/<pid>/stat (fields 14 and 15, clock ticks) at two times; the
count `/usr/bin/time` reports for a whole run, for a phase of a run that is already going
(e.g. one generation's exploration in a long `ionmix learn`).

    P=$(pgrep -f "ionmix learn examples/learn-li-emim-pf6-npt.toml" | head -1)
    python3 benchmarks/kernel_share.py $P 600

Prints one JSON object: processes, wall_s, user_s, sys_s, kernel_share = sys/(user+sys).
Processes started after the first reading are not counted.
"""

from __future__ import annotations

import json
import os
import sys
import time

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                ppid = int(_fields(int(name))[1])
            except OSError:
                continue
            kids.setdefault(ppid, []).append(int(name))
    return kids


def _fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name (field 3 onwards)."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
        return fh.read().rsplit(")", 1)[1].split()


def _tree(root: int) -> list[int]:
    kids, out, stack = _children(), [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack += kids.get(pid, [])
    return out


def _cpu_s(pids: list[int]) -> tuple[float, float]:
    user = system = 0
    for pid in pids:
        try:
            fields = _fields(pid)
        except OSError:  # ended: its time is lost to this count
            continue
        user, system = user + int(fields[11]), system + int(fields[12])
    return user / TICKS_PER_S, system / TICKS_PER_S


def main() -> None:
    root, duration_s = int(sys.argv[1]), float(sys.argv[2])
    pids = _tree(root)
    (u0, s0), t0 = _cpu_s(pids), time.time()
    time.sleep(duration_s)
    u1, s1 = _cpu_s(pids)
    user, system = u1 - u0, s1 - s0
    print(json.dumps({"processes": len(pids), "wall_s": time.time() - t0, "user_s": user,
                      "sys_s": system, "kernel_share": system / max(user + system, 1e-9)}))


if __name__ == "__main__":
    main()
