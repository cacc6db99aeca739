"""The [cluster] table: a local Dask cluster runs tasks; a SLURM table becomes the job
script dask-jobqueue would submit (nothing is submitted here: no SLURM on this machine)."""

from __future__ import annotations

import pytest

from ionmix.cluster import ClusterConfig, dask_client, n_workers, slurm_cluster
from ionmix.config import ConfigError, parse_model


def _square(x: int) -> int:
    return x * x


def test_local_cluster_runs_tasks():
    with dask_client(ClusterConfig(workers=2)) as client:
        assert n_workers(client) == 2
        assert client.gather(client.map(_square, range(4))) == [0, 1, 4, 9]


def test_slurm_table_becomes_a_job_script():
    pytest.importorskip("dask_jobqueue")
    cfg = parse_model(ClusterConfig, {
        "kind": "slurm", "cores": 16, "memory": "64GB", "walltime": "04:00:00", "jobs": 3,
        "queue": "compute", "job_directives": ["--gres=gpu:1"],
        "job_script_prologue": ["module load quantum-espresso"]}, "study.toml [cluster]")
    cluster = slurm_cluster(cfg)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p compute", "#SBATCH --cpus-per-task=16", "#SBATCH -t 04:00:00",
                 "#SBATCH --gres=gpu:1", "module load quantum-espresso"):
        assert line in script, script


def test_unknown_cluster_keys_are_named():
    with pytest.raises(ConfigError, match=r"study.toml \[cluster\].*nodes"):
        parse_model(ClusterConfig, {"kind": "slurm", "nodes": 4}, "study.toml [cluster]")


def test_more_threads_than_cores_is_a_warning_naming_the_settings():
    from ionmix.cluster import warn_oversubscribed

    with pytest.warns(UserWarning, match=r"workers \(3\) × threads_per_worker \(2\)"):
        warn_oversubscribed(3, 2, cores=2)
    assert warn_oversubscribed(2, 1, cores=2) is None
