# The README's commands. Every target creates .venv on first use and installs what it needs
# (idempotent: a stamp file per extra, refreshed when pyproject.toml changes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1

.PHONY: run test lint format viz prune clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed-base
	$(PIP) install -e ".[dev]"
	@touch $@

## make run: the main job on the embedded default (kedro run). Extra args: make run ARGS="--env paper_sim_f1"
run: $(VENV)/.installed-base
	$(BIN)/kedro run $(ARGS)

## make test: the whole test suite. Extra args: make test PYTEST_ARGS="-k partition"
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## make viz: kedro-viz on http://127.0.0.1:4141
viz: $(VENV)/.installed-base
	$(BIN)/kedro viz run --no-browser --host 127.0.0.1 --port 4141

## make prune KEEP=3: delete all but the newest KEEP versions of every versioned dataset
prune: $(VENV)/.installed-base
	$(BIN)/python -m fdrmfl_pipeline.prune --keep $(or $(KEEP),3)

clean-venv:
	rm -rf $(VENV)
