"""The bad-input table: every command, fed what a new user gets wrong, answers with exit
status 2 and one line naming the culprit (the file, option, key or species) — never a
traceback, never exit 0 on wrong input, and never after expensive work.

Each row is (id, the command line, a regular expression the message must match). The
command lines use a workspace of real inputs (a classical store, a trained tiny model, an
MD run) and broken copies of them. docs/bad-input.md lists the classes and how each is
answered; keep its count in step with this table.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import ase.io
import pytest
from typer.testing import CliRunner

from ionmix.cli import app

LIB = "LiPF6=0.25,EMIMPF6=0.75"   # the tiny store's first composition

PLAN = """
[species]
Li = 1
EMIM = 1
PF6 = -1
[units]
LiPF6 = {Li = 1, PF6 = 1}
EMIMPF6 = {EMIM = 1, PF6 = 1}
"""

SAMPLE = """
[mixture]
units = {LiPF6 = {Li = 1, PF6 = 1}, EMIMPF6 = {EMIM = 1, PF6 = 1}}
compositions = [{LiPF6 = 0.25, EMIMPF6 = 0.75}]
n_ion_pairs = 4
charge_scale = 0.8
[sampling]
temperature_K = 300.0
equilibration_ps = 1.0
production_ps = 1.0
snapshot_interval_ps = 0.1
replicas = 2
seed = 0
"""

STUDY = SAMPLE.replace("compositions = [{LiPF6 = 0.25, EMIMPF6 = 0.75}]", "grid_step = 0.5") + """
[study]
recipes = [[0.5], [0.0, 1.0]]
n_train = 4
n_val = 1
n_test = 2
preset = "cpu-tiny-nequip"
overrides = {max_epochs = 1}
"""

LEARN = SAMPLE + """
[teacher]
kind = "classical"
[learn]
committee = 2
max_generations = 1
[[learn.explore]]
kind = "npt"
temperature_K = 300.0
n_steps = 10
"""


@pytest.fixture(scope="module")
def ws(tiny_sample, tmp_path_factory) -> Path:
    """Real inputs and broken copies of them, in one folder."""
    from ionmix.dataset import DatasetStore
    from ionmix.train import train_from_store

    w = tmp_path_factory.mktemp("bad-input")
    store = w / "store.db"
    shutil.copy(tiny_sample / "frames.db", store)
    # broken stores
    (w / "text.db").write_text("id,energy\n1,2\n")
    (w / "empty.db").write_bytes(b"")
    (w / "trunc.db").write_bytes(store.read_bytes()[: store.stat().st_size // 3])
    with sqlite3.connect(w / "other.db") as con:
        con.execute("CREATE TABLE results (a REAL)")
    # a trained model and broken copies
    result = train_from_store(store, [LIB], n_train=3, n_val=1, n_test=2,
                              preset="cpu-tiny-allegro", run_dir=w / "run",
                              overrides={"max_epochs": 1}, baseline="none", say=None)
    model = result.package_path
    (w / "model.yaml").write_text("model: nequip\n")
    (w / "trunc.nequip.zip").write_bytes(model.read_bytes()[:2000])
    (w / "notzip.nequip.zip").write_text("not a zip\n")
    (w / "empty-folder").mkdir()
    # structures: a frame with its provenance, and broken ones
    frames = [f.atoms for f in DatasetStore(store).select(LIB)]
    ase.io.write(w / "frames.extxyz", frames)
    DatasetStore(store).provenance().write(w)  # provenance.json beside the extxyz files
    (w / "garbage.extxyz").write_text("this is not\nan xyz file\n")
    (w / "empty.extxyz").write_text("")
    gold = frames[0].copy()
    gold.symbols[0] = "Au"
    ase.io.write(w / "gold.extxyz", [gold])
    unlabelled = frames[0].copy()
    unlabelled.calc = None
    ase.io.write(w / "unlabelled.extxyz", [unlabelled])
    (w / "a-file").write_text("occupied\n")
    # configs
    (w / "plan.toml").write_text(PLAN)
    (w / "sample.toml").write_text(SAMPLE)
    (w / "study.toml").write_text(STUDY)
    (w / "learn.toml").write_text(LEARN)
    # property inputs
    (w / "eos.csv").write_text("pressure_bar,volume_A3\n1,1000\n500,990\n1000,981\n"
                               "1500,973\n2000,966\n")
    (w / "eos-words.csv").write_text("pressure_bar,volume_A3\n1,big\n500,990\n")
    (w / "eos-columns.csv").write_text("p,v\n1,1000\n500,990\n")
    (w / "exp.csv").write_text("temperature,rho\nhot,1\n")
    # an MD run (classical teacher, 10 steps) for validate / transport / structure
    md = CliRunner().invoke(app, ["md", str(store), "--composition", LIB, "--model",
                                  "classical", "--out", str(w / "md"), "--ensemble", "nvt",
                                  "--steps", "20", "--log-every", "5",
                                  "--trajectory-every", "5"])
    assert md.exit_code == 0, md.output
    return w


def _config(ws: Path, name: str, old: str, new: str) -> str:
    """A copy of config `name` with `old` replaced by `new` (asserted present)."""
    text = (ws / name).read_text()
    assert old in text, (name, old)
    path = ws / f"{name}.{abs(hash((old, new)))}.toml"
    path.write_text(text.replace(old, new))
    return str(path)


def _plan(ws, old, new):
    return ["plan", _config(ws, "plan.toml", old, new)]


def _sample(ws, old, new, command="sample"):
    return [command, _config(ws, "sample.toml", old, new), "--out", str(ws / f"o-{command}")]


def _study(ws, old, new):
    return ["transfer", _config(ws, "study.toml", old, new), "--out", str(ws / "o-study")]


def _learn(ws, old, new):
    return ["learn", _config(ws, "learn.toml", old, new), "--out", str(ws / "o-learn")]


def _train(ws, *extra, dataset="store.db"):
    args = {"--dataset": str(ws / dataset), "--composition": LIB, "--out": str(ws / "o-train"),
            "--preset": "cpu-tiny-allegro", "--n-train": "3", "--n-val": "1",
            "--n-test": "2", "--baseline": "none", "--override": "max_epochs=1"}
    for key, value in zip(extra[::2], extra[1::2], strict=True):
        args[key] = value
    return ["train", *[x for kv in args.items() for x in kv]]


def _evaluate(ws, model="run/model.nequip.zip", data="store.db", *extra):
    return ["evaluate", str(ws / model), "--data", str(ws / data), *extra]


def _md(ws, *extra, structure="store.db", model="run/model.nequip.zip"):
    base = ["md", str(ws / structure), "--model", model if model == "classical"
            else str(ws / model), "--out", str(ws / "o-md"), "--steps", "5"]
    if structure.endswith(".db"):
        base += ["--composition", LIB]
    return base + list(extra)


def _validate(ws, *extra, run="md"):
    return ["validate", str(ws / run), "--teacher", "classical", "--frames", "2",
            "--out", str(ws / "o-validate"), *extra]


def _lammps(ws, *extra, structure="frames.extxyz", model="run/model.nequip.zip"):
    return ["export-lammps", str(ws / structure), "--model", str(ws / model),
            "--out", str(ws / "o-lammps"), *extra]


def _label(ws, *extra, source="store.db", out="o-label.db"):
    args = {"--teacher": "classical", "--task": "single-point", "--out": str(ws / out),
            "--composition": LIB, "--frames": "1"}
    for key, value in zip(extra[::2], extra[1::2], strict=True):
        args[key] = value
    return ["label", str(ws / source), *[x for kv in args.items() for x in kv]]


def _density(ws, *extra, structure="store.db", model="classical"):
    args = {"--model": model if model == "classical" else str(ws / model),
            "--out": str(ws / "o-density"), "--temperatures": "300", "--steps": "20",
            "--log-every": "5", "--composition": LIB}
    for key, value in zip(extra[::2], extra[1::2], strict=True):
        args[key] = value
    return ["props", "density", str(ws / structure), *[x for kv in args.items() for x in kv]]


def _compress(ws, *extra):
    args = {"--model": "classical", "--out": str(ws / "o-kappa"), "--steps": "20",
            "--log-every": "5", "--composition": LIB}
    for key, value in zip(extra[::2], extra[1::2], strict=True):
        args[key] = value
    return ["props", "compressibility", str(ws / "store.db"),
            *[x for kv in args.items() for x in kv]]


def _eos(ws, *extra, table="eos.csv"):
    return ["props", "eos", str(ws / table), *extra]


def _transport(ws, *extra, run="md"):
    return ["props", "transport", str(ws / run), "--out", str(ws / "o-transport"), *extra]


def _structure(ws, *extra, run="md"):
    return ["props", "structure", str(ws / run), "--out", str(ws / "o-structure"), *extra]


def _summary(ws, *extra, run="md"):
    return ["props", "summary", str(ws / run), *extra]


# (id, command line from the workspace, what the message must name)
CASES = [
    # ---- plan: the mixture spec
    ("plan-missing", lambda w: ["plan", str(w / "nope.toml")], r"nope\.toml"),
    ("plan-not-toml", lambda w: _plan(w, "[units]", "[units"), r"plan\.toml"),
    ("plan-unknown-table", lambda w: _plan(w, "[units]", "[unit]"), r"unit"),
    ("plan-charge-not-int", lambda w: _plan(w, "Li = 1", "Li = 0.5"), r"Li"),
    ("plan-unit-unknown-species", lambda w: _plan(w, "{Li = 1, PF6 = 1}", "{Na = 1, PF6 = 1}"),
     r"Na"),
    ("plan-unit-not-neutral", lambda w: _plan(w, "{Li = 1, PF6 = 1}", "{Li = 2, PF6 = 1}"),
     r"LiPF6"),
    ("plan-negative-count", lambda w: _plan(w, "{Li = 1, PF6 = 1}", "{Li = -1, PF6 = -1}"),
     r"LiPF6|count"),
    ("plan-max-condition-zero", lambda w: ["plan", str(w / "plan.toml"), "--max-condition", "0"],
     r"--max-condition"),
    ("plan-max-condition-negative",
     lambda w: ["plan", str(w / "plan.toml"), "--max-condition", "-5"], r"--max-condition"),
    ("plan-training-fraction-sum",
     lambda w: ["plan", _config(w, "plan.toml", "[units]", "[training]\ncompositions = "
                                "[{LiPF6 = 0.4, EMIMPF6 = 0.4}]\n[units]")], r"0\.8|sum"),
    # ---- build / sample: the sampling config
    ("build-missing", lambda w: ["build", str(w / "nope.toml")], r"nope\.toml"),
    ("build-ion-pairs-zero", lambda w: _sample(w, "n_ion_pairs = 4", "n_ion_pairs = 0", "build"),
     r"n_ion_pairs"),
    ("build-ion-pairs-bool",
     lambda w: _sample(w, "n_ion_pairs = 4", "n_ion_pairs = true", "build"), r"n_ion_pairs"),
    ("build-ion-pairs-negative",
     lambda w: _sample(w, "n_ion_pairs = 4", "n_ion_pairs = -3", "build"), r"n_ion_pairs"),
    ("build-charge-scale-zero",
     lambda w: _sample(w, "charge_scale = 0.8", "charge_scale = 0", "build"), r"charge_scale"),
    ("build-charge-scale-large",
     lambda w: _sample(w, "charge_scale = 0.8", "charge_scale = 3", "build"), r"charge_scale"),
    ("build-unknown-ion", lambda w: _sample(w, "{Li = 1, PF6 = 1}", "{Lx = 1, PF6 = 1}", "build"),
     r"Lx"),
    ("build-not-neutral", lambda w: _sample(w, "{Li = 1, PF6 = 1}", "{Li = 2, PF6 = 1}", "build"),
     r"LiPF6|neutral|charge"),
    ("build-fraction-not-representable",
     lambda w: _sample(w, "{LiPF6 = 0.25, EMIMPF6 = 0.75}", "{LiPF6 = 0.3, EMIMPF6 = 0.7}",
                       "build"), r"0\.3|n_ion_pairs"),
    ("build-fractions-sum",
     lambda w: _sample(w, "{LiPF6 = 0.25, EMIMPF6 = 0.75}", "{LiPF6 = 0.25, EMIMPF6 = 0.25}",
                       "build"), r"0\.5|sum"),
    ("build-given-a-study-config", lambda w: ["build", str(w / "study.toml"), "--out",
                                              str(w / "o-build")], r"ionmix transfer"),
    ("build-out-is-a-file", lambda w: ["build", str(w / "sample.toml"), "--out",
                                       str(w / "a-file")], r"a-file"),
    ("sample-missing", lambda w: ["sample", str(w / "nope.toml")], r"nope\.toml"),
    ("sample-equilibration-negative",
     lambda w: _sample(w, "equilibration_ps = 1.0", "equilibration_ps = -1.0"),
     r"equilibration_ps"),
    ("sample-production-zero", lambda w: _sample(w, "production_ps = 1.0", "production_ps = 0"),
     r"production_ps"),
    ("sample-interval-zero",
     lambda w: _sample(w, "snapshot_interval_ps = 0.1", "snapshot_interval_ps = 0"),
     r"snapshot_interval_ps"),
    ("sample-interval-longer-than-run",
     lambda w: _sample(w, "snapshot_interval_ps = 0.1", "snapshot_interval_ps = 5.0"),
     r"snapshot_interval_ps|production_ps"),
    ("sample-temperature-zero",
     lambda w: _sample(w, "temperature_K = 300.0", "temperature_K = 0"), r"temperature_K"),
    ("sample-temperature-text",
     lambda w: _sample(w, "temperature_K = 300.0", 'temperature_K = "hot"'), r"temperature_K"),
    ("sample-replicas-zero", lambda w: _sample(w, "replicas = 2", "replicas = 0"), r"replicas"),
    ("sample-seed-negative", lambda w: _sample(w, "seed = 0", "seed = -1"), r"seed"),
    ("sample-unknown-key", lambda w: _sample(w, "seed = 0", "seed = 0\ntimestep = 1"),
     r"timestep"),
    ("sample-unknown-ensemble",
     lambda w: _sample(w, "seed = 0", 'seed = 0\nproduction_ensemble = "npx"'),
     r"production_ensemble"),
    ("sample-density-zero",
     lambda w: _sample(w, "seed = 0", "seed = 0\ninitial_density_g_cm3 = 0"),
     r"initial_density_g_cm3"),
    ("sample-dataset-not-a-store",
     lambda w: [*_sample(w, "seed = 0", "seed = 0"), "--dataset", str(w / "text.db")],
     r"text\.db"),
    ("sample-out-is-a-file",
     lambda w: ["sample", str(w / "sample.toml"), "--out", str(w / "a-file")], r"a-file"),
    # ---- transfer: the study config (checked before any sampling)
    ("transfer-missing", lambda w: ["transfer", str(w / "nope.toml")], r"nope\.toml"),
    ("transfer-override-typo",
     lambda w: _study(w, "overrides = {max_epochs = 1}", "overrides = {max_epoch = 1}"),
     r"max_epoch"),
    ("transfer-unknown-preset",
     lambda w: _study(w, 'preset = "cpu-tiny-nequip"', 'preset = "tiny"'), r"tiny"),
    ("transfer-n-train-zero", lambda w: _study(w, "n_train = 4", "n_train = 0"), r"n_train"),
    ("transfer-recipe-off-grid",
     lambda w: _study(w, "[[0.5], [0.0, 1.0]]", "[[0.3], [0.0, 1.0]]"), r"0\.3"),
    ("transfer-recipe-empty", lambda w: _study(w, "[[0.5], [0.0, 1.0]]", "[[], [0.0, 1.0]]"),
     r"recipe"),
    ("transfer-unknown-study-key", lambda w: _study(w, "n_val = 1", "n_val = 1\nn_vall = 2"),
     r"n_vall"),
    ("transfer-unknown-baseline",
     lambda w: _study(w, "n_val = 1", 'n_val = 1\nbaseline = "ewald"'), r"ewald"),
    ("transfer-workers-zero",
     lambda w: ["transfer", str(w / "study.toml"), "--out", str(w / "o-study"), "--workers",
                "0"], r"--workers"),
    ("transfer-given-a-sample-config",
     lambda w: ["transfer", str(w / "sample.toml"), "--out", str(w / "o-study")],
     r"no \[study\]"),
    # ---- learn
    ("learn-missing", lambda w: ["learn", str(w / "nope.toml")], r"nope\.toml"),
    ("learn-committee-one", lambda w: _learn(w, "committee = 2", "committee = 1"), r"committee"),
    ("learn-generations-zero",
     lambda w: _learn(w, "max_generations = 1", "max_generations = 0"), r"max_generations"),
    ("learn-unknown-baseline",
     lambda w: _learn(w, "committee = 2", 'committee = 2\nbaseline = "ewald"'), r"ewald"),
    ("learn-unknown-walker", lambda w: _learn(w, 'kind = "npt"', 'kind = "npx"'), r"npx"),
    ("learn-walker-steps-zero", lambda w: _learn(w, "n_steps = 10", "n_steps = 0"), r"n_steps"),
    ("learn-unknown-teacher", lambda w: _learn(w, 'kind = "classical"', 'kind = "dft"'),
     r"dft"),
    ("learn-trust-window-inverted",
     lambda w: _learn(w, "committee = 2", "committee = 2\ntrust_lo_eV_per_A = 0.5\n"
                      "trust_hi_eV_per_A = 0.1"), r"trust"),
    ("learn-unknown-key", lambda w: _learn(w, "committee = 2", "committee = 2\ncomittee = 3"),
     r"comittee"),
    # ---- train: the dataset store and the selection
    ("train-store-missing", lambda w: _train(w, dataset="missing.db"), r"missing\.db"),
    ("train-store-text", lambda w: _train(w, dataset="text.db"), r"text\.db"),
    ("train-store-empty", lambda w: _train(w, dataset="empty.db"), r"empty\.db"),
    ("train-store-truncated", lambda w: _train(w, dataset="trunc.db"), r"trunc\.db"),
    ("train-store-foreign-sqlite", lambda w: _train(w, dataset="other.db"), r"other\.db"),
    ("train-store-folder", lambda w: _train(w, dataset="empty-folder"), r"empty-folder"),
    ("train-composition-garbage", lambda w: _train(w, "--composition", "garbage"),
     r"garbage"),
    ("train-composition-absent", lambda w: _train(w, "--composition", "LiPF6=0.5,EMIMPF6=0.5"),
     r"LiPF6=0\.5"),
    ("train-composition-negative",
     lambda w: _train(w, "--composition", "LiPF6=-0.25,EMIMPF6=1.25"), r"-0\.25|LiPF6"),
    ("train-n-train-zero", lambda w: _train(w, "--n-train", "0"), r"--n-train"),
    ("train-n-train-too-many", lambda w: _train(w, "--n-train", "500"), r"500|n_train|--n-train"),
    ("train-n-val-negative", lambda w: _train(w, "--n-val", "-1"), r"--n-val"),
    ("train-n-test-zero", lambda w: _train(w, "--n-test", "0"), r"--n-test"),
    ("train-unknown-preset", lambda w: _train(w, "--preset", "tiny"), r"tiny"),
    ("train-unknown-energy-reference", lambda w: _train(w, "--energy-reference", "zero"),
     r"zero"),
    ("train-override-unknown-key", lambda w: _train(w, "--override", "max_epoch=1"),
     r"max_epoch"),
    ("train-override-no-equals", lambda w: _train(w, "--override", "max_epochs"),
     r"--override"),
    ("train-override-bad-value", lambda w: _train(w, "--override", "max_epochs=-1"),
     r"max_epochs"),
    ("train-unknown-baseline", lambda w: _train(w, "--baseline", "ewald"), r"ewald"),
    ("train-initial-model-missing", lambda w: _train(w, "--initial-model", str(w / "no.zip")),
     r"no\.zip"),
    ("train-initial-model-yaml", lambda w: _train(w, "--initial-model", str(w / "model.yaml")),
     r"model\.yaml"),
    ("train-unknown-teacher", lambda w: _train(w, "--teacher", "dft-nope"), r"dft-nope"),
    ("train-seed-negative", lambda w: _train(w, "--seed", "-1"), r"--seed"),
    ("train-out-is-a-file", lambda w: _train(w, "--out", str(w / "a-file")), r"a-file"),
    # ---- evaluate: models and labelled data
    ("evaluate-model-missing", lambda w: _evaluate(w, model="nope.nequip.zip"), r"nope"),
    ("evaluate-model-yaml", lambda w: _evaluate(w, model="model.yaml"), r"model\.yaml"),
    ("evaluate-model-truncated", lambda w: _evaluate(w, model="trunc.nequip.zip"), r"trunc"),
    ("evaluate-model-not-zip", lambda w: _evaluate(w, model="notzip.nequip.zip"), r"notzip"),
    ("evaluate-model-empty-folder", lambda w: _evaluate(w, model="empty-folder"),
     r"empty-folder"),
    ("evaluate-model-is-a-store", lambda w: _evaluate(w, model="store.db"), r"store\.db"),
    ("evaluate-store-missing", lambda w: _evaluate(w, data="missing.db"), r"missing\.db"),
    ("evaluate-store-text", lambda w: _evaluate(w, data="text.db"), r"text\.db"),
    ("evaluate-store-empty", lambda w: _evaluate(w, data="empty.db"), r"empty\.db"),
    ("evaluate-store-truncated", lambda w: _evaluate(w, data="trunc.db"), r"trunc\.db"),
    ("evaluate-store-foreign", lambda w: _evaluate(w, data="other.db"), r"other\.db"),
    ("evaluate-data-missing", lambda w: _evaluate(w, data="missing.extxyz"), r"missing"),
    ("evaluate-data-garbage", lambda w: _evaluate(w, data="garbage.extxyz"), r"garbage"),
    ("evaluate-data-empty", lambda w: _evaluate(w, data="empty.extxyz"), r"empty"),
    ("evaluate-data-unlabelled", lambda w: _evaluate(w, data="unlabelled.extxyz"),
     r"frame 0|label|energy"),
    ("evaluate-element-the-model-lacks", lambda w: _evaluate(w, data="gold.extxyz"), r"Au"),
    ("evaluate-replica-absent", lambda w: _evaluate(w, "run/model.nequip.zip", "store.db",
                                                    "--replica", "7"), r"replica|7"),
    ("evaluate-replica-negative", lambda w: _evaluate(w, "run/model.nequip.zip", "store.db",
                                                      "--replica", "-1"), r"--replica"),
    # ---- md
    ("md-structure-missing", lambda w: _md(w, structure="nope.extxyz"), r"nope"),
    ("md-store-missing", lambda w: _md(w, structure="nope.db"), r"nope\.db"),
    ("md-store-text", lambda w: _md(w, structure="text.db"), r"text\.db"),
    ("md-store-truncated", lambda w: _md(w, structure="trunc.db"), r"trunc\.db"),
    ("md-structure-garbage", lambda w: _md(w, structure="garbage.extxyz"), r"garbage"),
    ("md-structure-empty", lambda w: _md(w, structure="empty.extxyz"), r"empty"),
    ("md-model-missing", lambda w: _md(w, model="nope.nequip.zip"), r"nope"),
    ("md-model-yaml", lambda w: _md(w, model="model.yaml"), r"model\.yaml"),
    ("md-model-truncated", lambda w: _md(w, model="trunc.nequip.zip"), r"trunc"),
    ("md-model-not-zip", lambda w: _md(w, model="notzip.nequip.zip"), r"notzip"),
    ("md-element-the-model-lacks", lambda w: _md(w, structure="gold.extxyz"), r"Au"),
    ("md-steps-zero", lambda w: _md(w, "--steps", "0"), r"--steps"),
    ("md-steps-negative", lambda w: _md(w, "--steps", "-5"), r"--steps"),
    ("md-timestep-zero", lambda w: _md(w, "--timestep-fs", "0"), r"--timestep-fs"),
    ("md-timestep-negative", lambda w: _md(w, "--timestep-fs", "-1"), r"--timestep-fs"),
    ("md-log-every-zero", lambda w: _md(w, "--log-every", "0"), r"--log-every"),
    ("md-trajectory-every-zero", lambda w: _md(w, "--trajectory-every", "0"),
     r"--trajectory-every"),
    ("md-unknown-ensemble", lambda w: _md(w, "--ensemble", "npx"), r"--ensemble|npx"),
    ("md-index-out-of-range", lambda w: _md(w, "--index", "99", structure="frames.extxyz"),
     r"--index|99"),
    ("md-composition-garbage",
     lambda w: ["md", str(w / "store.db"), "--model", "classical", "--out", str(w / "o-md"),
                "--composition", "garbage"], r"garbage"),
    ("md-composition-absent",
     lambda w: ["md", str(w / "store.db"), "--model", "classical", "--out", str(w / "o-md"),
                "--composition", "LiPF6=0.5,EMIMPF6=0.5"], r"LiPF6=0\.5"),
    ("md-max-bond-stretch-negative", lambda w: _md(w, "--max-bond-stretch", "-1"),
     r"--max-bond-stretch"),  # 0 turns the check off
    ("md-out-is-a-file", lambda w: [*_md(w)[:4], "--out", str(w / "a-file")], r"a-file"),
    ("md-classical-without-molecules",
     lambda w: ["md", str(w / "bare.extxyz"), "--model", "classical", "--out",
                str(w / "o-md")], r"bare\.extxyz|molecule"),
    # ---- validate
    ("validate-run-missing", lambda w: _validate(w, run="nope"), r"nope"),
    ("validate-run-without-trajectory", lambda w: _validate(w, run="empty-folder"),
     r"empty-folder|trajectory"),
    ("validate-frames-zero", lambda w: [*_validate(w)[:-2], "--frames", "0"], r"--frames"),
    ("validate-frames-negative", lambda w: [*_validate(w)[:-2], "--frames", "-2"], r"--frames"),
    ("validate-unknown-teacher",
     lambda w: ["validate", str(w / "md"), "--teacher", "dft-nope", "--out",
                str(w / "o-validate")], r"dft-nope"),
    ("validate-out-is-a-file",
     lambda w: ["validate", str(w / "md"), "--teacher", "classical", "--out",
                str(w / "a-file")], r"a-file"),
    # ---- export-lammps
    ("lammps-structure-missing", lambda w: _lammps(w, structure="nope.extxyz"), r"nope"),
    ("lammps-model-missing", lambda w: _lammps(w, model="nope.nequip.zip"), r"nope"),
    ("lammps-model-yaml", lambda w: _lammps(w, model="model.yaml"), r"model\.yaml"),
    ("lammps-model-truncated", lambda w: _lammps(w, model="trunc.nequip.zip"), r"trunc"),
    ("lammps-element-the-model-lacks", lambda w: _lammps(w, structure="gold.extxyz"), r"Au"),
    ("lammps-steps-zero", lambda w: _lammps(w, "--steps", "0"), r"--steps"),
    ("lammps-timestep-negative", lambda w: _lammps(w, "--timestep-fs", "-1"),
     r"--timestep-fs"),
    ("lammps-unknown-ensemble", lambda w: _lammps(w, "--ensemble", "npx"), r"--ensemble|npx"),
    ("lammps-unknown-pair-style", lambda w: _lammps(w, "--pair-style", "mace"),
     r"--pair-style|mace"),
    ("lammps-index-out-of-range", lambda w: _lammps(w, "--index", "99"), r"--index|99"),
    ("lammps-out-is-a-file", lambda w: [*_lammps(w)[:4], "--out", str(w / "a-file")],
     r"a-file"),
    # ---- label
    ("label-store-missing", lambda w: _label(w, source="missing.db"), r"missing\.db"),
    ("label-store-text", lambda w: _label(w, source="text.db"), r"text\.db"),
    ("label-store-truncated", lambda w: _label(w, source="trunc.db"), r"trunc\.db"),
    ("label-store-foreign", lambda w: _label(w, source="other.db"), r"other\.db"),
    ("label-frames-missing", lambda w: _label(w, source="nope.extxyz"), r"nope"),
    ("label-frames-garbage", lambda w: _label(w, source="garbage.extxyz"), r"garbage"),
    ("label-out-not-a-store", lambda w: _label(w, out="text.db"), r"text\.db"),
    ("label-frames-zero", lambda w: _label(w, "--frames", "0"), r"--frames"),
    ("label-frames-negative", lambda w: _label(w, "--frames", "-3"), r"--frames"),
    ("label-steps-zero", lambda w: _label(w, "--task", "aimd", "--steps", "0"), r"--steps"),
    ("label-every-zero", lambda w: _label(w, "--task", "aimd", "--every", "0"), r"--every"),
    ("label-timestep-negative", lambda w: _label(w, "--task", "aimd", "--timestep-fs", "-1"),
     r"--timestep-fs"),
    ("label-temperature-zero", lambda w: _label(w, "--task", "aimd", "--temperature-K", "0"),
     r"--temperature-K"),
    ("label-relax-steps-negative", lambda w: _label(w, "--task", "relax", "--relax-steps", "-1"),
     r"--relax-steps"),
    ("label-scales-text", lambda w: _label(w, "--task", "volume-scan", "--scales", "a,b"),
     r"--scales"),
    ("label-scales-zero", lambda w: _label(w, "--task", "volume-scan", "--scales", "0,1"),
     r"--scales"),
    ("label-unknown-task", lambda w: _label(w, "--task", "singlepoint"), r"singlepoint"),
    ("label-unknown-teacher", lambda w: _label(w, "--teacher", "dft"), r"dft"),
    ("label-composition-garbage", lambda w: _label(w, "--composition", "garbage"), r"garbage"),
    ("label-composition-absent", lambda w: _label(w, "--composition", "LiPF6=0.5,EMIMPF6=0.5"),
     r"LiPF6=0\.5"),
    ("label-replica-negative", lambda w: _label(w, "--replica", "-1"), r"--replica"),
    ("label-teacher-config-missing",
     lambda w: _label(w, "--teacher-config", str(w / "nope.toml")), r"nope\.toml"),
    ("label-teacher-config-unknown-table",
     lambda w: _label(w, "--teacher-config", str(w / "sample.toml")), r"mixture|sampling"),
    # ---- props density / compressibility
    ("density-structure-missing", lambda w: _density(w, structure="nope.extxyz"), r"nope"),
    ("density-store-text", lambda w: _density(w, structure="text.db"), r"text\.db"),
    ("density-model-missing", lambda w: _density(w, model="nope.nequip.zip"), r"nope"),
    ("density-model-yaml", lambda w: _density(w, model="model.yaml"), r"model\.yaml"),
    ("density-temperatures-text", lambda w: _density(w, "--temperatures", "hot"),
     r"--temperatures"),
    ("density-temperatures-empty", lambda w: _density(w, "--temperatures", ""),
     r"--temperatures"),
    ("density-temperature-negative", lambda w: _density(w, "--temperatures", "300,-10"),
     r"--temperatures"),
    ("density-steps-zero", lambda w: _density(w, "--steps", "0"), r"--steps"),
    ("density-timestep-zero", lambda w: _density(w, "--timestep-fs", "0"), r"--timestep-fs"),
    ("density-log-every-zero", lambda w: _density(w, "--log-every", "0"), r"--log-every"),
    ("density-equilibration-fraction-one",
     lambda w: _density(w, "--equilibration-fraction", "1.0"), r"--equilibration-fraction"),
    ("density-equilibration-fraction-negative",
     lambda w: _density(w, "--equilibration-fraction", "-0.1"), r"--equilibration-fraction"),
    ("density-too-few-samples-after-equilibration",
     lambda w: _density(w, "--equilibration-fraction", "0.9"), r"--equilibration-fraction"),
    ("density-unknown-engine", lambda w: _density(w, "--engine", "gromacs"), r"gromacs"),
    ("density-teacher-missing", lambda w: _density(w, "--teacher", str(w / "nope.json")),
     r"nope\.json"),
    ("density-experiment-missing", lambda w: _density(w, "--experiment", str(w / "nope.csv")),
     r"nope\.csv"),
    ("density-experiment-bad-columns", lambda w: _density(w, "--experiment", str(w / "exp.csv")),
     r"exp\.csv"),
    ("kappa-pressures-text", lambda w: _compress(w, "--pressures", "high"), r"--pressures"),
    ("kappa-pressures-decreasing", lambda w: _compress(w, "--pressures", "1000,1"),
     r"--pressures"),
    ("kappa-ramp-steps-zero", lambda w: _compress(w, "--ramp-steps", "0"), r"--ramp-steps"),
    ("kappa-ramp-step-negative", lambda w: _compress(w, "--ramp-step-bar", "-100"),
     r"--ramp-step-bar"),
    ("kappa-steps-zero", lambda w: _compress(w, "--steps", "0"), r"--steps"),
    # ---- props eos
    ("eos-table-missing", lambda w: _eos(w, table="nope.csv"), r"nope\.csv"),
    ("eos-table-words", lambda w: _eos(w, table="eos-words.csv"), r"eos-words\.csv"),
    ("eos-table-columns", lambda w: _eos(w, table="eos-columns.csv"), r"eos-columns\.csv"),
    ("eos-reference-above-table", lambda w: _eos(w, "--reference-pressure-bar", "5000"),
     r"--reference-pressure-bar"),
    ("eos-reference-below-table", lambda w: _eos(w, "--reference-pressure-bar", "-5000"),
     r"--reference-pressure-bar"),
    # ---- props transport / structure (on the MD run)
    ("transport-run-missing", lambda w: _transport(w, run="nope"), r"nope"),
    ("transport-time-step-zero", lambda w: _transport(w, "--time-step-ps", "0"),
     r"--time-step-ps"),
    ("transport-segments-zero", lambda w: _transport(w, "--segments", "0"), r"--segments"),
    ("transport-viscosity-negative", lambda w: _transport(w, "--viscosity-Pa-s", "-1"),
     r"--viscosity-Pa-s"),
    ("transport-slope-tolerance-zero", lambda w: _transport(w, "--slope-tolerance", "0"),
     r"--slope-tolerance"),
    ("transport-molecules-garbage", lambda w: _transport(w, "--molecules", "Li:x"),
     r"--molecules|Li:x"),
    ("structure-run-missing", lambda w: _structure(w, run="nope"), r"nope"),
    ("structure-bin-width-negative", lambda w: _structure(w, "--bin-width-A", "-0.1"),
     r"--bin-width-A"),
    ("structure-bin-width-zero", lambda w: _structure(w, "--bin-width-A", "0"),
     r"--bin-width-A"),
    ("structure-r-max-negative", lambda w: _structure(w, "--r-max-A", "-3"), r"--r-max-A"),
    ("structure-every-zero", lambda w: _structure(w, "--every", "0"), r"--every"),
    ("structure-unknown-pair", lambda w: _structure(w, "--pairs", "Xx-F"), r"Xx"),
    ("transport-topology-missing",
     lambda w: _transport(w, "--topology", str(w / "nope.data")), r"nope.data"),
    ("transport-residue-map-malformed",
     lambda w: _transport(w, "--topology", str(w / "nope.gro"), "--residue-map", "EMI"),
     r"--residue-map entry 'EMI'"),
    ("transport-residue-map-without-topology",
     lambda w: _transport(w, "--residue-map", "EMI=EMIM"), r"--topology"),
    ("summary-run-missing", lambda w: _summary(w, run="nope"), r"nope"),
    ("summary-molecules-garbage", lambda w: _summary(w, "--molecules", "Li:x"), r"Li:x"),
    ("summary-topology-wrong-kind",
     lambda w: _summary(w, "--topology", str(w / "md" / "md.json")), r"md.json"),
    # ---- props compare, pseudo
    ("compare-model-missing",
     lambda w: ["props", "compare", str(w / "nope"), "--out", str(w / "o-compare")], r"nope"),
    ("compare-temperature-zero",
     lambda w: ["props", "compare", str(w / "md"), "--out", str(w / "o-compare"),
                "--temperature-K", "0"], r"--temperature-K"),
    ("pseudo-pslibrary-missing",
     lambda w: ["pseudo", "generate", str(w / "o-pseudo"), "--pslibrary", str(w / "nope"),
                "--elements", "Li"], r"nope"),
    ("pseudo-upf-missing",
     lambda w: ["pseudo", "generate", str(w / "o-pseudo"), "--from-upf",
                str(w / "nope.UPF")], r"nope\.UPF"),
    ("pseudo-compare-set-missing",
     lambda w: ["pseudo", "compare", str(w / "store.db"), "--set-a", str(w / "nope-a"),
                "--set-b", str(w / "nope-b")], r"nope-a"),
]


def test_the_table_is_large_and_ids_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 150


@pytest.fixture(autouse=True)
def _bare_structure(ws):
    """A structure with no molecule information (for the classical teacher)."""
    if not (ws / "bare.extxyz").exists():
        bare = ase.io.read(ws / "frames.extxyz", 0)
        bare.info = {}
        bare.arrays.pop("mol_id", None)
        bare.calc = None
        ase.io.write(ws / "bare.extxyz", bare)


@pytest.mark.parametrize("case_id,argv,culprit", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named_with_exit_2(ws, case_id, argv, culprit):
    import re

    args = argv(ws)
    result = CliRunner().invoke(app, args)
    output = result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit), f"uncaught {result.exception!r}\n{output}"
    assert "Traceback" not in output, output
    assert result.exit_code == 2, f"exit {result.exit_code} for {args}:\n{output}"
    assert re.search(culprit, output), f"{culprit!r} not named in:\n{output}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_named(ws, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    result = CliRunner().invoke(app, _lammps(ws)[:4] + ["--out", str(locked / "job")])
    assert result.exit_code == 2 and "locked" in result.output


# ---- cases beyond one command line: what was silently wrong before (issue 23's worst five)


def test_every_command_has_rows_in_the_table():
    """Each command (and props/pseudo subcommand) that takes input is in the table."""
    import typer.main

    def names(group, prefix=""):
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                yield from names(cmd, f"{prefix}{name} ")
            else:
                yield f"{prefix}{name}"

    root = typer.main.get_command(app)
    covered = {c[0].split("-")[0] for c in CASES}
    alias = {"export-lammps": "lammps", "props density": "density", "props eos": "eos",
             "props compressibility": "kappa", "props transport": "transport",
             "props structure": "structure", "props compare": "compare",
             "props summary": "summary",
             "pseudo generate": "pseudo", "pseudo compare": "pseudo"}
    missing = [n for n in names(root) if n != "ions" and alias.get(n, n) not in covered]
    assert not missing, f"commands without bad-input rows: {missing}"


def test_train_into_a_trained_folder_with_another_selection_is_refused(ws):
    """Was: exit 0, "already trained, nothing to do", the old model for the new data."""
    before = (ws / "run" / "data" / "train.extxyz").read_text()
    result = CliRunner().invoke(app, [*_train(ws, "--out", str(ws / "run"), "--composition",
                                              "LiPF6=0.75,EMIMPF6=0.25")])
    assert result.exit_code == 2, result.output
    assert "another selection" in result.output
    assert (ws / "run" / "data" / "train.extxyz").read_text() == before


def test_train_rerun_with_the_same_selection_resumes(ws):
    from ionmix.train import train_from_store

    package = ws / "run" / "model.nequip.zip"
    mtime = package.stat().st_mtime_ns
    again = train_from_store(ws / "store.db", [LIB], n_train=3, n_val=1, n_test=2,
                             preset="cpu-tiny-allegro", run_dir=ws / "run",
                             overrides={"max_epochs": 1}, baseline="none", say=None)
    assert again.package_path == package and package.stat().st_mtime_ns == mtime


def test_a_failed_first_attempt_writes_nothing(ws):
    """Was: an unknown preset left a split that the corrected rerun then trained on."""
    result = CliRunner().invoke(app, _train(ws, "--out", str(ws / "fresh"), "--preset", "tiny"))
    assert result.exit_code == 2
    assert not (ws / "fresh").exists()


def test_reading_an_empty_file_as_a_store_leaves_it_untouched(ws):
    """Was: `evaluate` on a 0-byte .db wrote ASE's schema into its own input."""
    for command in (_evaluate(ws, data="empty.db"), _train(ws, dataset="empty.db")):
        assert CliRunner().invoke(app, command).exit_code == 2
        assert (ws / "empty.db").stat().st_size == 0
        assert not (ws / "missing.db").exists()
