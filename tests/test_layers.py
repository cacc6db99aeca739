"""ionmix's layers only point down: a module may import (at module level or inside a
function) only from a lower layer, never from its own layer's other packages or from
above. The order is the pipeline's (docs/layout in the README):

    cli, testing                               the commands; the calculator battery
    export                                     LAMMPS inputs of a trained student
    active                                     the learning loop (trains, runs MD, labels)
    properties, transferability                studies built on MD and training
    md, report                                 the MD engine; figures and tables (render only)
    train                                      NequIP/Allegro training and evaluation
    models, labelling, sampling                students; the teachers' labels; classical MD
    dataset                                    the frame store and its provenance
    config, design, build, teachers            configs, composition design, boxes, teachers
    chemistry, cluster                         ions and topology; where Dask runs
    files, resume, runtime, stats, metrics     files, settings checks, threads, statistics
    errors, units                              the bottom

`report` sits below the studies that call it to draw their figures (a study's folder is
finished when its function returns), and imports none of them: it renders what it is given.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ionmix"

LAYERS: list[set[str]] = [
    {"errors", "units", "progress", "__init__"},
    {"files", "resume", "runtime", "stats", "metrics"},
    {"chemistry", "cluster"},
    {"config", "design", "build", "teachers"},
    {"dataset"},
    {"models", "labelling", "sampling"},
    {"train"},
    {"md", "report"},
    {"properties", "transferability"},
    {"active"},
    {"export"},
    {"cli", "testing"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _unit(module: str) -> str:
    """The top-level package or module of ``ionmix.<unit>...`` (``__init__`` for ionmix)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(root: Path = SRC) -> list[tuple[str, str, str, int]]:
    """(source unit, imported unit, file, line) for every ionmix import under `root`."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        source = _unit(module.removesuffix(".__init__"))
        package = module.split(".")[:-1]  # ionmix.train for train/run.py and train/__init__.py
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:  # relative: resolve it
                base = package[:len(package) - node.level + 1]
                names = [".".join(base + ([node.module] if node.module else []))]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name == "ionmix" or name.startswith("ionmix."):
                    found.append((source, _unit(name), str(path.relative_to(root)),
                                  node.lineno))
    return found


def test_every_package_has_a_layer():
    units = {_unit(".".join(p.relative_to(SRC.parent).with_suffix("").parts)
                   .removesuffix(".__init__")) for p in SRC.rglob("*.py")}
    assert units - set(RANK) == set(), "add the new package to LAYERS"


def _upward(root: Path = SRC) -> list[str]:
    return [f"{file}:{line}: {source} (layer {RANK[source]}) imports {target} "
            f"(layer {RANK[target]})"
            for source, target, file, line in _imports(root)
            if source != target and RANK[target] >= RANK[source]]


def test_imports_only_point_down():
    upward = _upward()
    assert upward == [], "\n".join(upward)


@pytest.mark.parametrize("file,text", [
    # the back-edges issue 25 removed, each written the way it was
    ("teachers/classical/openmm_md.py", "from ionmix.properties import stats as P\n"),
    ("md.py", "def f():\n    from ionmix.active.committee import x\n"),
    ("report/comparison.py", "from ionmix.properties.studies import read_density_json\n"),
    ("train/evaluate.py", "from ..transferability import run_study\n"),
    ("labelling/tasks.py", "import ionmix.sampling\n"),
])
def test_the_check_finds_a_back_edge(tmp_path, file, text):
    path = tmp_path / "ionmix" / file
    path.parent.mkdir(parents=True)
    path.write_text(text)
    assert len(_upward(tmp_path / "ionmix")) == 1


# --------------------------------------------------------------------------------------
# a test that cannot fail is a defect: every test checks something

TESTS = Path(__file__).parent
#: what counts as a check inside a test function
_CHECKS = ("assert", "pytest.raises", "pytest.warns", "np.testing.", "super().test_", "_check",
           "check_")


def _checkless_tests(root: Path = TESTS) -> list[str]:
    """``file:line name`` of every test function whose body holds no check (`_CHECKS`)."""
    found = []
    for path in sorted(root.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                body = ast.unparse(node)
                if not any(check in body for check in _CHECKS):
                    found.append(f"{path.name}:{node.lineno} {node.name}")
    return found


def test_every_test_checks_something():
    checkless = _checkless_tests()
    assert checkless == [], "\n".join(checkless)


def test_the_check_finds_a_test_without_a_check(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "def test_runs(seed):\n    seed.fractions({'a': 1.0})\n\n"
        "def test_checks(seed):\n    assert seed.fractions({'a': 1.0})\n")
    assert _checkless_tests(tmp_path) == ["test_x.py:1 test_runs"]
