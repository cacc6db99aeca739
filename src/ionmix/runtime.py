"""The one place that decides the threads and environment of the processes ionmix starts,
and records what a run used.

* Dask workers (`ionmix.cluster.dask_client`): one thread each by default; Dask's nanny
  also sets ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` = 1 and
  ``MALLOC_TRIM_THRESHOLD_=65536`` in them. More workers × threads than cores is a warning
  (`ionmix.cluster.warn_oversubscribed`).
* subprocesses (``nequip-train``, ``nequip-package``; `subprocess_env`): without the
  nanny's trim threshold — inherited, glibc returns and re-maps memory all the time
  (measured: the same training 2× slower, ~70 % of it in the kernel) — and with the
  OpenMP/MKL threads asked for.
* OpenMM in sampling workers (`SAMPLING_WORKER_ENV`): one CPU thread per run, the runs side
  by side: OpenMM's CPU platform sums forces in a thread-dependent order, and MD amplifies
  it (bitwise identical at 1 thread; 2.3 Å apart within 0.8 ps at 2).
* pw.x and tblite keep their own settings (``[teacher]`` ``mpi_ranks``, OpenMP threads of
  the worker).

`record` is what a run writes beside its results (``sample-config.json``, ``md.json``,
``data_manifest.json``): the thread settings it ran with, so a timing or a last-digit
difference can be traced to them.
"""

from __future__ import annotations

import os

#: Variables Dask's nanny sets in its workers that ionmix's subprocesses must not inherit.
DROPPED_FROM_SUBPROCESSES = ("MALLOC_TRIM_THRESHOLD_",)
#: The environment a sampling worker starts with (read by OpenMM when it loads).
SAMPLING_WORKER_ENV = {"OPENMM_CPU_THREADS": "1"}
#: Thread and allocator variables worth recording.
RECORDED_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                      "OPENMM_CPU_THREADS", "MALLOC_TRIM_THRESHOLD_")


def subprocess_env(num_threads: int | None = None, **extra: str) -> dict[str, str]:
    """The environment of a subprocess ionmix starts: this process's, without
    `DROPPED_FROM_SUBPROCESSES`, with ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` =
    `num_threads` when given (None keeps this process's), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_FROM_SUBPROCESSES}
    if num_threads is not None:
        env.update(OMP_NUM_THREADS=str(num_threads), MKL_NUM_THREADS=str(num_threads))
    env.update(extra)
    return env


def record() -> dict:
    """This process's thread settings: cores, torch's intra-op threads (if torch is
    loaded) and the `RECORDED_VARIABLES` that are set."""
    import sys

    out: dict = {"cpu_count": os.cpu_count()}
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch_threads"] = torch.get_num_threads()
    out.update({k: os.environ[k] for k in RECORDED_VARIABLES if k in os.environ})
    return out
