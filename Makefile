# Two commands on a fresh machine: `make sweep` and `make test`. Each sets up .venv once.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build on these machines; on a GPU box use e.g. TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
SWEEP ?= isoflop
SWEEP_ID ?= $(SWEEP)
EXPERIMENT ?= parcae
TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
ARGS ?=

.PHONY: setup sweep analyze test test-all ui clean-runs help

help:
	@echo "make sweep [SWEEP=isoflop|testtime|ladder] [ARGS='hydra overrides']  train a sweep, then analyze it"
	@echo "make analyze [SWEEP_ID=...]   fit laws + plots for a sweep (default: the latest)"
	@echo "make test                     the default test suite (sets up .venv)"
	@echo "make ui                       MLflow UI on http://127.0.0.1:5000"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

sweep: $(STAMP)
	$(PY) -m experiments.pretrain sweep=$(SWEEP) sweep_id=$(SWEEP_ID) $(ARGS)
	$(PY) -m analysis --tracking-uri $(TRACKING_URI) --experiment $(EXPERIMENT) --sweep-id $(SWEEP_ID) --out reports/$(SWEEP_ID)

analyze: $(STAMP)
	$(PY) -m analysis --tracking-uri $(TRACKING_URI) --experiment $(EXPERIMENT) \
		$(if $(filter command line environment,$(origin SWEEP_ID)),--sweep-id $(SWEEP_ID)) --out reports/$(if $(filter command line environment,$(origin SWEEP_ID)),$(SWEEP_ID),latest)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slurm" $(ARGS)

ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri $(TRACKING_URI) --host 127.0.0.1 --port 5000

clean-runs:
	rm -rf runs multirun outputs reports mlflow.db mlartifacts
