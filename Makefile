# Two commands set everything up on a fresh machine:
#   make demo   create .venv, install, import + train + evaluate FB15k-237 (shipped in data/), write a report;
#               then the data-catalog GraphSAGE example
#   make test   create .venv, install, ruff + mypy + the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch first, pinned: any other spec pulls a multi-GB CUDA build here.
TORCH_PIN := torch==2.13.0
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q

.PHONY: install test lint typecheck pytest demo clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py shardgraph/_kernels.c shardgraph/_walks.c shardgraph/_sampler.c Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH_PIN)
	$(PIP) -e '.[all]'
	touch $(STAMP)

lint: install
	$(BIN)/ruff check shardgraph tests bench

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/python -m pytest -q tests $(PYTEST_ARGS)

test: lint typecheck pytest

demo: install
	$(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) runs out .mypy_cache .ruff_cache .pytest_cache
