"""Issue 16's benchmark as a slow test (hours on 2 cores; `make test-slow`): after active
learning, a committee member holds its teacher's NPT density.

Li[PF6]/[EMIM][PF6] at x = 0.4, 300 K, classical teacher, `examples/learn-li-emim-pf6-short.toml`
(4 generations of 4 Allegro models). Everything is computed here: the loop (sampling,
training, walkers, labels), the teacher's own 1-ns NPT density in OpenMM, 50 ps of NPT with
the last generation's model 0, and `validate` along that trajectory. The numbers of the run in
docs/benchmarks.md come from benchmarks/bench_learn.py on the same config.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ionmix.md import MDBlowUp
from test_md_slow import relative_density_difference

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "learn-li-emim-pf6-short.toml"
COMPOSITION = "LiPF6=0.4,EMIMPF6=0.6"


# Known to fail, for reasons measured in docs/benchmarks.md ("Active learning", and
# "Baselines" for issue 22): this config is issue 16's run, with no baseline under the
# network (pinned `baseline = "none"`). After 3-4 generations its student still walks,
# within 1-5 ps of NPT, into contacts the teacher prices at +100 to +300 meV/atom (Li+
# against EMIM+ ring N at 2.2 A, H-H at 0.7 A, F-F at 1.75 A) and then breaks a C-H bond
# (MDBlowUp from the bond guard); and issue 22's ablation measured that a student without a
# baseline, from a settled box, inflates to twice its volume within 1.9-2.0 ps (2 of 2).
# examples/learn-li-emim-pf6-npt.toml (10-ps walkers) is the run meant to pass: with
# coulomb+wall its generation-3 students held NPT but sank 1.4-5 % (a molecular pressure
# bias of +270 to +690 bar). With coulomb+wall+bonded (generations 0-2 run), its
# generation-2 members ran 37-39 ps of plain NPT with no guard stop, ~2 % below their own
# box's teacher (1.546 g/cm3) for 20-30 ps, then expanded suddenly to -4 to -8 %; they
# price an anion on the imidazolium ring's face +5 to +7 meV too high on the teacher's own
# frames and make 30-40 % fewer of those contacts ("Generation 2's members in 100-ps
# runs"); and their energy leans toward larger boxes by the part of the teacher's
# Lennard-Jones beyond their 4.5-A cutoff (+1.55 meV/A3 on volume) that they do not infer,
# which the coulomb+wall+bonded+tail baseline now carries ("What a 4.5-A network cannot
# see"). Under that baseline (runs/learn-tail), two generation-2 members ran 56-58 ps of
# NPT with no guard stop, at -1.1 +- 0.8 % and -0.3 +- 0.3 % of their teacher's density,
# before the run folder was lost (2026-12-08; restarted, "Issue 22's target run under
# +tail"). Strict: if the loop starts to pass, this test fails and the marker must go.
@pytest.mark.xfail(strict=True, raises=(MDBlowUp, AssertionError),
                   reason="without a baseline, 4 generations do not cover the student's NPT "
                          "excursions and an unlabelled student inflates within 2 ps; see "
                          "docs/benchmarks.md")
@pytest.mark.slow
def test_learned_student_holds_the_teachers_npt_density(tmp_path):
    from ionmix.active import run_learning
    from ionmix.active.loop import load_learn_config
    from ionmix.dataset.provenance import load_provenance
    from ionmix.dataset.structures import load_structure
    from ionmix.md import MDSettings, run_md
    from ionmix.models import load_model
    from ionmix.properties.validate import validate_trajectory
    from ionmix.teachers.classical.openmm_md import classical_npt_density

    out = tmp_path / "learn"
    result = run_learning(load_learn_config(CONFIG), out, say=print)
    last = result.generations[-1]
    member = out / f"gen-{last['generation']:03d}" / "models" / "model-0" / "model.nequip.zip"

    db = out / "frames.db"
    atoms = load_structure(db, composition=COMPOSITION, replica=0)
    teacher_ff = load_provenance(db).teacher(atoms, "classical")
    teacher = classical_npt_density(atoms, 300.0, 1.0, time_ps=1000.0, seed=11,
                                    teacher=teacher_ff)
    assert teacher["density_err_g_cm3"] / teacher["density_g_cm3"] < 0.005

    run_md(atoms, load_model(member, atoms, provenance=load_provenance(db)).calc,
           MDSettings(n_steps=100_000),
           tmp_path / "npt")  # 50 ps at 0.5 fs; a broken molecule raises MDBlowUp
    # one teacher run of a 188-atom box lands ~0.7 % (1 sigma) from another's, 4x its own
    # error bar (docs/benchmarks.md, "The teacher's density of a 188-atom box"): inside 2 %
    rel = relative_density_difference(tmp_path / "npt", teacher)
    checked = validate_trajectory(tmp_path / "npt", teacher_ff.calculator(atoms),
                                  tmp_path / "validate", n_frames=10)
    assert abs(rel) < 0.02
    assert checked.force_mae_meV_per_A <= last["committee_test_force_mae_meV_per_A"][0]
    assert checked.energy_mae_meV_per_atom <= last[
        "committee_test_energy_mae_meV_per_atom"][0]
