"""Where Dask tasks run: a LocalCluster on this machine, an existing scheduler, or SLURM
through dask-jobqueue — chosen by a ``[cluster]`` table, so a user never writes Python.

```toml
[cluster]                 # optional; default: a LocalCluster sized to this machine
kind = "slurm"            # "local" or "slurm"
cores = 16                # per SLURM job (one Dask worker per job)
memory = "64GB"
walltime = "04:00:00"
jobs = 4                  # how many SLURM jobs (workers) to start
queue = "compute"         # optional partition
job_directives = ["--gres=gpu:1", "--account=myproj"]   # extra #SBATCH lines
job_script_prologue = ["module load quantum-espresso"]   # shell lines run before a worker
```

``--scheduler ADDRESS`` (any command that runs Dask tasks) overrides the table and uses an
existing scheduler. Workers must see the same file system as the client (the study or
label folders).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ionmix.errors import InputError


class ClusterConfig(BaseModel):
    """The ``[cluster]`` table (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local", "slurm"] = "local"
    workers: int | None = Field(None, ge=1, description="LocalCluster workers (default: "
                                "cores // threads_per_worker)")
    threads_per_worker: int = Field(1, ge=1)
    cores: int = Field(1, ge=1, description="cores per SLURM job")
    memory: str = "4GB"
    walltime: str = "01:00:00"
    jobs: int = Field(1, ge=1, description="SLURM jobs (workers) to start")
    queue: str | None = None
    job_directives: list[str] = Field(default_factory=list)
    job_script_prologue: list[str] = Field(default_factory=list)


def slurm_cluster(cfg: ClusterConfig):
    """A dask-jobqueue SLURMCluster for `cfg` (no job submitted yet: ``.job_script()``
    shows what would be)."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise InputError("[cluster] kind = 'slurm' needs dask-jobqueue: "
                         "pip install 'ionmix[cluster]'") from None
    cluster = SLURMCluster(cores=cfg.cores, processes=1, memory=cfg.memory,
                           walltime=cfg.walltime, queue=cfg.queue,
                           job_extra_directives=cfg.job_directives,
                           job_script_prologue=cfg.job_script_prologue)
    return cluster


def warn_oversubscribed(workers: int, threads_per_worker: int,
                        cores: int | None = None) -> str | None:
    """Warn (and return the message) when a LocalCluster's workers × threads_per_worker
    exceed the machine's `cores` (default: os.cpu_count()): threads then wait for each
    other's core, and a torch or OpenMM step can run many times slower."""
    import warnings

    cores = cores or os.cpu_count() or 1
    if workers * threads_per_worker <= cores:
        return None
    message = (f"[cluster] workers ({workers}) × threads_per_worker ({threads_per_worker}) "
               f"= {workers * threads_per_worker} threads on {cores} cores: oversubscribed "
               "(set [cluster] workers or --workers lower)")
    warnings.warn(message, stacklevel=3)
    return message


@contextmanager
def dask_client(cfg: ClusterConfig | None = None, scheduler: str | None = None,
                default_workers: int | None = None, env: dict[str, str] | None = None):
    """A Dask client for the duration of the block (clusters it started are closed after).

    Args:
        cfg: the ``[cluster]`` table (None: a local cluster).
        scheduler: address of an existing scheduler; overrides `cfg`.
        default_workers: LocalCluster workers when `cfg` does not say (default: one per
            core).
        env: environment variables a LocalCluster's workers start with (e.g.
            ``OPENMM_CPU_THREADS``; read by libraries when they load).
    """
    from dask.distributed import Client, LocalCluster

    cfg = cfg or ClusterConfig()
    if scheduler:
        cluster = None
        client = Client(scheduler)
    elif cfg.kind == "slurm":
        cluster = slurm_cluster(cfg)
        cluster.scale(jobs=cfg.jobs)
        client = Client(cluster)
    else:
        from ionmix.runtime import local_worker_environment

        workers = cfg.workers or default_workers or max(1, (os.cpu_count() or 1)
                                                        // cfg.threads_per_worker)
        warn_oversubscribed(workers, cfg.threads_per_worker)
        # without the nanny's malloc trim threshold (see ionmix.runtime)
        with local_worker_environment():
            cluster = LocalCluster(n_workers=workers,
                                   threads_per_worker=cfg.threads_per_worker,
                                   processes=True, dashboard_address=":0",  # any free port
                                   env=dict(env or {}))
        client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def n_workers(client) -> int:
    """Workers the scheduler knows now."""
    return len(client.scheduler_info()["workers"])
