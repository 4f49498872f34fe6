# The README's commands. Every target creates .venv on first use and installs what it needs
# (idempotent: a stamp file per extra, refreshed when pyproject.toml changes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1

.PHONY: run test test-unit lint format viz prune clean-venv tune tune-workers train-best federate-local bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed-base
	$(PIP) install -e ".[dev,flower]"
	@touch $@

## make run: the main job on the embedded default (kedro run). Extra args: make run ARGS="--env paper_sim"
run: $(VENV)/.installed-base
	$(BIN)/kedro run $(ARGS)

## make test: the whole test suite (tests/unit, then tests/e2e). Extra args: make test PYTEST_ARGS="-k partition"
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make test-unit: the fast unit tests only (no Kedro session, no Flower run)
test-unit: $(VENV)/.installed-dev
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## make tune: one Optuna study (an experiment's own study: .venv/bin/python experiments/run.py <experiment> --tune)
tune: $(VENV)/.installed-base
	$(BIN)/kedro run --pipelines ingestion,partitioning,tuning $(ARGS)

## make tune-workers N=2 [PARAMS="tuning.n_trials=40"] [ARGS="--env paper_sim"]: prepare the data
## once, then N worker processes on one study (journal storage unless PARAMS names another)
comma := ,
tune-workers: $(VENV)/.installed-base
	$(BIN)/kedro run --pipelines ingestion,partitioning $(if $(PARAMS),--params $(PARAMS)) $(ARGS)
	@pids=""; for i in $$(seq 0 $$(( $(or $(N),2) - 1 ))); do \
	  $(BIN)/kedro run --pipeline tuning --params "tuning.storage=journal,tuning.worker_id=$$i$(if $(PARAMS),$(comma)$(PARAMS))" $(ARGS) & \
	  pids="$$pids $$!"; \
	done; status=0; for p in $$pids; do wait $$p || status=1; done; exit $$status

## make train-best: train with the latest tuned parameters (data/06_models/best_params.yml)
train-best: $(VENV)/.installed-base
	$(BIN)/kedro run --params "$$($(BIN)/python -m fdrmfl_pipeline.best_params)" $(ARGS)

## make federate-local CLIENTS=3 [PARAMS="training.federation.rounds=3"] [ENV=paper_sim]: a real Flower
## SuperLink and one SuperNode per client on 127.0.0.1, then `flwr run`; the result lands in the catalog
$(VENV)/.installed-flower: pyproject.toml $(VENV)/.installed-base
	$(PIP) install -e ".[flower]"
	@touch $@

federate-local: $(VENV)/.installed-flower
	FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 $(BIN)/python -m fdrmfl_pipeline.flower.deploy \
	  --clients $(or $(CLIENTS),3) $(if $(ENV),--env $(ENV)) $(if $(PARAMS),--params $(PARAMS))

## make bench: the engines on one 3-client job, side by side, with the ratio check (exit 1 when a
## Flower engine is slower than the bound times in-process; ratios, not absolute times)
bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_engines.py --clients 3 \
	  --engines inprocess flower-simulation flower-deployment \
	  --max-ratio flower-simulation=6 flower-deployment=12 --out bench_engines_check

## make viz: kedro-viz on http://127.0.0.1:4141
viz: $(VENV)/.installed-base
	$(BIN)/kedro viz run --no-browser --host 127.0.0.1 --port 4141

## make prune KEEP=3: delete all but the newest KEEP versions of every versioned dataset
prune: $(VENV)/.installed-base
	$(BIN)/python -m fdrmfl_pipeline.prune --keep $(or $(KEEP),3)

clean-venv:
	rm -rf $(VENV)
