"""Shared fixtures: tiny systems generated on the fly (no binary blobs in the repository)."""

from __future__ import annotations

from pathlib import Path

import pytest

# the installed battery's asserts report their values, as a test module's do
pytest.register_assert_rewrite("ionmix.testing")

TINY_SAMPLE_TOML = """
[mixture]
units = {LiPF6 = {Li = 1, PF6 = 1}, EMIMPF6 = {EMIM = 1, PF6 = 1}}
compositions = [{LiPF6 = 0.25, EMIMPF6 = 0.75}, {LiPF6 = 0.75, EMIMPF6 = 0.25}]
n_ion_pairs = 4
charge_scale = 0.8

[sampling]
temperature_K = 300.0
equilibration_ps = 0.4
max_equilibration_ps = 0.4   # too short to judge a plateau: stops here, warns
production_ps = 0.8
snapshot_interval_ps = 0.1
seed = 7
"""


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory) -> Path:
    """A real classical dataset: Li/EMIM/PF6, 4 ion pairs, x = 0.25 and 0.75, 2 replicas,
    8 snapshots each, labelled by the OPLS force field (energy, forces, stress).

    Returns the study folder; the frames are in ``frames.db`` there.
    """
    from ionmix.config import load_sample_config
    from ionmix.sampling import sample

    root = tmp_path_factory.mktemp("tiny-sample")
    config = root / "sample.toml"
    config.write_text(TINY_SAMPLE_TOML)
    sample(load_sample_config(config), root / "study")
    return root / "study"
