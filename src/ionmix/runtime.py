"""The one place that decides the threads and environment of the processes ionmix starts,
and records what a run used.

* Dask workers (`ionmix.cluster.dask_client`): one thread each by default; Dask's nanny
  also sets ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` = 1 in them.
  Its ``MALLOC_TRIM_THRESHOLD_=65536`` (``distributed.nanny.pre-spawn-environ``) is left
  out of the LocalClusters ionmix starts (`local_worker_environment`): setting it at all
  turns off glibc's dynamic mmap threshold, so every large torch/OpenMM buffer is mapped
  and unmapped again (page faults, kernel time); Dask sets it to return pandas workers'
  freed memory to the OS, which ionmix's short numerical tasks do not need. More workers ×
  threads than cores is a warning (`ionmix.cluster.warn_oversubscribed`).
* subprocesses (``nequip-train``, ``nequip-package``; `subprocess_env`): without the
  nanny's trim threshold — inherited, glibc returns and re-maps memory all the time
  (measured: the same training 2× slower, ~70 % of it in the kernel) — and with the
  OpenMP/MKL threads asked for.
* the allocator of those subprocesses (`allocator_preload`): glibc's malloc, or jemalloc /
  tcmalloc preloaded when ``IONMIX_ALLOCATOR`` names one (a library that is not installed
  is one warning line, and glibc's malloc is used).
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

import functools
import logging
import os
from contextlib import contextmanager

#: Variables Dask's nanny sets in its workers that ionmix's subprocesses must not inherit.
DROPPED_FROM_SUBPROCESSES = ("MALLOC_TRIM_THRESHOLD_",)
#: The environment a sampling worker starts with (read by OpenMM when it loads).
SAMPLING_WORKER_ENV = {"OPENMM_CPU_THREADS": "1"}
#: ``IONMIX_ALLOCATOR`` values other than "glibc": the shared library a subprocess
#: preloads, and the Debian package that has it.
ALLOCATORS = {"jemalloc": ("libjemalloc.so.2", "libjemalloc2"),
              "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc-minimal4")}
#: Thread and allocator variables worth recording.
RECORDED_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                      "OPENMM_CPU_THREADS", "MALLOC_TRIM_THRESHOLD_", "IONMIX_ALLOCATOR",
                      "LD_PRELOAD")

logger = logging.getLogger(__name__)


@contextmanager
def local_worker_environment():
    """While a LocalCluster starts its workers: Dask's ``distributed.nanny.pre-spawn-environ``
    and this process's environment without `DROPPED_FROM_SUBPROCESSES` (an earlier Dask
    nanny in this process may have set them here; workers inherit it). Both are restored
    after the block."""
    import dask

    environ = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}
    saved = {k: os.environ.pop(k) for k in DROPPED_FROM_SUBPROCESSES if k in os.environ}
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": {
                k: v for k, v in environ.items() if k not in DROPPED_FROM_SUBPROCESSES}}):
            yield
    finally:
        os.environ.update(saved)


def subprocess_env(num_threads: int | None = None, **extra: str) -> dict[str, str]:
    """The environment of a subprocess ionmix starts: this process's, without
    `DROPPED_FROM_SUBPROCESSES`, with ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` =
    `num_threads` when given (None keeps this process's), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_FROM_SUBPROCESSES}
    if num_threads is not None:
        env.update(OMP_NUM_THREADS=str(num_threads), MKL_NUM_THREADS=str(num_threads))
    preload = allocator_preload(os.environ.get("IONMIX_ALLOCATOR", "glibc"))
    if preload:
        env["LD_PRELOAD"] = " ".join(filter(None, (env.get("LD_PRELOAD"), preload)))
    env.update(extra)
    return env


@functools.cache
def allocator_preload(name: str) -> str | None:
    """The library to preload for allocator `name` ("glibc": None), or None with one
    warning line when `name` is unknown or its library is not installed."""
    import ctypes.util

    if name in ("", "glibc"):
        return None
    if name not in ALLOCATORS:
        logger.warning("IONMIX_ALLOCATOR=%s is not one of glibc, %s; using glibc's malloc",
                       name, ", ".join(ALLOCATORS))
        return None
    library, package = ALLOCATORS[name]
    if ctypes.util.find_library(library.removeprefix("lib").split(".so")[0]) is None:
        logger.warning("IONMIX_ALLOCATOR=%s: %s is not installed (Debian: apt install %s); "
                       "using glibc's malloc", name, library, package)
        return None
    return library


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
