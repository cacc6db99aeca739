# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv if missing: torch is installed first (a local CPU wheel here), then
# ionmix with a constraint that pins that torch so pip never swaps in a CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.ionmix-installed

.PHONY: venv demo test test-slow lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	echo "torch==$$($(BIN)/python -c 'import torch; print(torch.__version__.split("+")[0])')" > $(VENV)/constraints.txt
	$(BIN)/pip install --quiet -c $(VENV)/constraints.txt -e '.[dev,xtb,cluster]'
	touch $(STAMP)

# The main job: the scaled-down transferability study (sample → train → test everywhere).
# Reuses what is already in runs/demo; `rm -rf runs/demo` to start over.
demo: $(STAMP)
	$(BIN)/ionmix plan examples/li-emim-pf6.toml
	$(BIN)/ionmix transfer examples/demo-study.toml --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
