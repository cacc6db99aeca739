"""Slow end-to-end check of the property workflow (`make test-slow`, ~17 min on 2 cores):
a student trained on the classical teacher's labels at one composition reproduces the
teacher's own NPT density there.

Everything is computed here: sampling with the teacher (OpenMM), training
(`cpu-tiny-allegro-npt`), the teacher's NPT density (OpenMM), the student's (`run_md`).
The full-size version (20 ion pairs, 10 ps) is benchmarks/bench_md.py --stage density.
"""

from __future__ import annotations

import numpy as np
import pytest

from ionmix.md import MDBlowUp

SAMPLE = {
    "mixture": {"units": {"LiPF6": {"Li": 1, "PF6": 1}, "EMIMPF6": {"EMIM": 1, "PF6": 1}},
                "compositions": [{"LiPF6": 0.5, "EMIMPF6": 0.5}], "n_ion_pairs": 10},
    "sampling": {"temperature_K": 300.0, "equilibration_ps": 50.0, "production_ps": 60.0,
                 "snapshot_interval_ps": 0.5, "replicas": 2, "seed": 3,
                 "initial_density_g_cm3": 1.4},
}
COMPOSITION = "LiPF6=0.5,EMIMPF6=0.5"


# Known to fail, for reasons measured in docs/benchmarks.md ("Student vs teacher NPT
# density"): a student trained on frames of one volume has a soft P(V) that turns over
# above ~1.12 V0, so the box inflates (2026-11-24 run: volume doubled at 4.31 ps, MDBlowUp);
# trained on three temperatures it settles 17 % too light. Strict: if a student starts to
# pass, this test fails and the marker must go.
@pytest.mark.xfail(strict=True, raises=(MDBlowUp, AssertionError),
                   reason="local CPU-sized student leaves its training data in NPT; "
                          "see docs/benchmarks.md")
@pytest.mark.slow
def test_student_npt_density_matches_the_teacher(tmp_path):
    from ionmix.config import SampleConfig, parse_model
    from ionmix.dataset.provenance import load_provenance
    from ionmix.dataset.structures import load_structure
    from ionmix.md import MDSettings, run_md
    from ionmix.models import load_model
    from ionmix.sampling import sample
    from ionmix.teachers.classical.openmm_md import classical_npt_density
    from ionmix.train import train_from_store

    sample(parse_model(SampleConfig, SAMPLE, "test"), tmp_path / "sample")
    db = tmp_path / "sample" / "frames.db"
    # 120 frames: with 40 (36 + 4) the same model blows up in NPT within 1 ps (H atoms
    # collapse; docs/benchmarks.md)
    result = train_from_store(db, [COMPOSITION], n_train=108, n_val=12, n_test=40,
                              preset="cpu-tiny-allegro-npt", run_dir=tmp_path / "model",
                              overrides={"max_epochs": 40}, say=None)
    if result.metrics["stress_mae_meV_per_A3"] >= 1.0:  # not an expected failure (xfail)
        pytest.fail(f"the student did not learn the stress: {result.metrics}")

    atoms = load_structure(db, composition=COMPOSITION, replica=0)
    teacher = classical_npt_density(atoms, 300.0, 1.0, time_ps=100.0, seed=5)
    calc = load_model(result.package_path, atoms, provenance=load_provenance(db)).calc
    run_md(atoms, calc, MDSettings(n_steps=10000), tmp_path / "student")
    assert abs(relative_density_difference(tmp_path / "student", teacher)) < 0.02


def relative_density_difference(run_dir, teacher: dict) -> float:
    """(student − teacher) / teacher NPT density: the student's from the production part
    of `run_dir`'s thermo.csv (block average), printed with the combined error."""
    from ionmix.md import read_thermo
    from ionmix.stats import block_average, production_part

    thermo = read_thermo(run_dir / "thermo.csv")
    student, student_err = block_average(production_part(thermo["density_g_cm3"]))
    rel = student / teacher["density_g_cm3"] - 1.0
    rel_err = np.hypot(student_err, teacher["density_err_g_cm3"]) / teacher["density_g_cm3"]
    print(f"teacher {teacher['density_g_cm3']:.4f} ± {teacher['density_err_g_cm3']:.4f}, "
          f"student {student:.4f} ± {student_err:.4f} g/cm³: {100 * rel:+.2f} ± "
          f"{100 * rel_err:.2f} %")
    return rel
