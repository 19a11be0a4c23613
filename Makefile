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

.PHONY: bench-fit setup sweep sweep-detached status resume analyze test test-slurm slurm-up slurm-down tune mlflow-server ui clean-runs help

help:
	@echo "make sweep [SWEEP=isoflop|testtime|ladder] [ARGS='hydra overrides']  train a sweep, then analyze it"
	@echo "make sweep-detached [SWEEP=..] submit a sweep in the background (survives closing the terminal)"
	@echo "make status SWEEP=<id>        per grid point: finished / running / interrupted / failed / diverged / missing"
	@echo "make resume SWEEP=<id>        run only the grid points that are not finished"
	@echo "make analyze [SWEEP_ID=...]   fit laws + plots for a sweep (default: the latest)"
	@echo "make compare SWEEPS=a,b       two sweeps on one figure, with their exponents"
	@echo "make test                     the default test suite (sets up .venv)"
	@echo "make test-slurm               the tests marked slurm, on a private single-node SLURM (root)"
	@echo "make tune [TUNE=lr] [ARGS=..] Optuna search (journal storage, pruning, 2 local workers)"
	@echo "make mlflow-server            MLflow tracking server (+UI) on 127.0.0.1:5000; off loopback needs"
	@echo "                              MLFLOW_TRACKING_USERNAME/PASSWORD (basic auth)"
	@echo "make ui                       MLflow UI on http://127.0.0.1:5000"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev,hf]'
	touch $(STAMP)

setup: $(STAMP)

sweep: $(STAMP)
	$(PY) -m experiments.pretrain sweep=$(SWEEP) sweep_id=$(SWEEP_ID) $(ARGS)
	$(PY) -m analysis --tracking-uri $(TRACKING_URI) --experiment $(EXPERIMENT) --sweep-id $(SWEEP_ID) --out reports/$(SWEEP_ID) --reuse

sweep-detached: $(STAMP)
	mkdir -p logs
	nohup $(PY) -m experiments.pretrain sweep=$(SWEEP) sweep_id=$(SWEEP_ID) $(ARGS) > logs/$(SWEEP_ID).log 2>&1 &
	@echo "sweep $(SWEEP_ID) running in the background: log logs/$(SWEEP_ID).log; progress: make status SWEEP=$(SWEEP_ID)"

status: $(STAMP)
	$(PY) -m experiments.status $(SWEEP_ID)

resume: $(STAMP)
	$(PY) -m experiments.status $(SWEEP_ID) --resume

# The sweep named on the command line (SWEEP= or SWEEP_ID=), else the latest one in the store.
ANALYZE_ID = $(if $(filter command line environment,$(origin SWEEP) $(origin SWEEP_ID)),$(SWEEP_ID))
analyze: $(STAMP)
	$(PY) -m analysis --tracking-uri $(TRACKING_URI) --experiment $(EXPERIMENT) \
		$(if $(ANALYZE_ID),--sweep-id $(ANALYZE_ID)) --out reports/$(or $(ANALYZE_ID),latest)

# Two or more sweeps on one figure, e.g. make compare SWEEPS=isoflop,isoflop-muon
.PHONY: compare
compare: $(STAMP)
	@test -n "$(SWEEPS)" || { echo "make compare needs SWEEPS=a,b (comma-separated sweep ids)"; exit 2; }
	$(PY) -m analysis.compare --tracking-uri $(TRACKING_URI) --experiment $(EXPERIMENT) --sweeps $(SWEEPS)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slurm" $(ARGS)

# A private single-node SLURM (Debian packages, own ports and state in .cache/slurm); stopped by pid.
SLURM_DIR ?= .cache/slurm
slurm-up:
	scripts/slurm/start.sh $(SLURM_DIR)

slurm-down:
	scripts/slurm/stop.sh $(SLURM_DIR)

test-slurm: $(STAMP)
	$(PY) -m pytest -q -m slurm tests/slurm $(ARGS)

TUNE ?= lr
tune: $(STAMP)
	$(PY) -m experiments.tune tune=$(TUNE) train.threads=1 train.eval_every=10 $(ARGS)

MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
SERVER_ARGS ?=
mlflow-server: $(STAMP)
	$(PY) -m experiments.mlflow_server --host $(MLFLOW_HOST) --port $(MLFLOW_PORT) $(SERVER_ARGS)

# Analysis time on a default-sweep-sized store (12 runs, 1,000 bootstrap resamples) as one JSON line:
# median of 3 fresh processes, CPU time, CPU model. ARGS='--law' times the law fitter and its coverage.
bench-fit: $(STAMP)
	$(PY) benchmarks/bench_fit.py $(ARGS)

ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri $(TRACKING_URI) --host 127.0.0.1 --port 5000

clean-runs:
	rm -rf runs multirun outputs reports sweeps logs mlflow.db mlartifacts

# Tokenising throughput: a deterministic 100 MB text corpus into BPE shards with 2 worker processes.
.PHONY: bench-tokenize
bench-tokenize: $(STAMP)
	$(PY) benchmarks/bench_tokenize.py

# FLOW: pre-train (or reuse) a small base model on the embedded corpus, fine-tune it with every method and a
# τ sweep, FLOW and standard at 3 learning rates × 3 seeds, WiSE-FT α curves; then the report
# ($(FLOW_ROOT)/reports/$(FLOW_SWEEP)/report.md, accuracy-vs-forgetting plot with the Pareto frontier).
FLOW_BASE ?= model=tiny train.tokens=3000000
FLOW_SWEEP ?= flow
FLOW_ROOT ?= $(CURDIR)
FLOW_ARGS ?=
FLOW_COMMA := ,
FLOW_SPACE := $(subst ,, )
FLOW_PRETRAIN = base.pretrain=[$(subst $(FLOW_SPACE),$(FLOW_COMMA),$(patsubst %,'%',$(FLOW_BASE)))]
FLOW_FT = $(PY) -m experiments.finetune finetune/sweep=flow sweep_id=$(FLOW_SWEEP) "$(FLOW_PRETRAIN)" \
	paths.root=$(FLOW_ROOT) train.threads=1
.PHONY: flow
flow: $(STAMP)
	$(PY) -m experiments.pretrain $(FLOW_BASE) paths.root=$(FLOW_ROOT) train.threads=1 sweep_id=$(FLOW_SWEEP)-base \
		tracking.experiment=flow
	$(FLOW_FT) $(FLOW_ARGS)
	$(FLOW_FT) method=standard,flow train.lr=1e-4,1e-3 flow.tau=median $(FLOW_ARGS)
	$(FLOW_FT) method=standard,flow train.lr=1e-4,3e-4,1e-3 train.seed=1,2 flow.tau=median $(FLOW_ARGS)
	$(FLOW_FT) method=wise,flow_wise wise.alpha=0.25,0.75 flow.tau=median $(FLOW_ARGS)
	$(PY) -m analysis.flow_report --tracking-uri sqlite:///$(FLOW_ROOT)/mlflow.db --experiment flow \
		--sweep-id $(FLOW_SWEEP) --out $(FLOW_ROOT)/reports/$(FLOW_SWEEP)

# Training throughput as JSON: bench-tiny on the CPU (2 threads) plus the logging overhead; ARGS adds flags
# (--compile, --autocast bf16, --checkpoint-activations, --preset NAME, ...; see benchmarks/bench_train.py).
.PHONY: bench bench-gpu
bench: $(STAMP)
	$(PY) benchmarks/bench_train.py --preset bench-tiny --logging-overhead $(ARGS)

# parcae-small (~140M) on one CUDA GPU: bf16 autocast + torch.compile + fused AdamW; tokens/s, MFU, memory.
bench-gpu: $(STAMP)
	$(PY) benchmarks/bench_gpu.py $(ARGS)
