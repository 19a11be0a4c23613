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

.PHONY: bench-fit setup sweep sweep-detached status show-config resume analyze test test-slow test-slurm slurm-up slurm-down tune mlflow-server ui clean-runs help

help:
	@echo "make setup                    create .venv and install the project (every target does it once)"
	@echo "make sweep [SWEEP=isoflop|testtime|ladder|stability] [ARGS='hydra overrides']  train a sweep, then analyze it"
	@echo "make sweep-detached [SWEEP=..] make sweep in the background (driver + analysis; survives closing the terminal)"
	@echo "make status [SWEEP=<id>]      per grid point, by run name: state (finished / running / queued / interrupted /"
	@echo "                              failed / diverged / not started), step, eval/loss, ETA (default: the latest sweep);"
	@echo "                              SWEEP=<run dir or config hash>: one run"
	@echo "make show-config [ARGS='hydra overrides']  the config as it will run: model resolved, tokens, steps, FLOPs, hash, wall time"
	@echo "make resume SWEEP=<id>        run only the grid points that are not finished"
	@echo "make analyze [SWEEP_ID=...]   fit laws + plots for a sweep (default: the latest); progress per stage"
	@echo "make analyze CSV=FILE [ARGS=..] the same analysis of your own table (columns C, N, D, loss; docs/analysis.md)"
	@echo "make compare SWEEPS=a,b       two sweeps on one figure, with their exponents"
	@echo "make test                     the default test suite (sets up .venv)"
	@echo "make test-slow                the tests marked slow (CI runs them too)"
	@echo "make test-slurm               the tests marked slurm, on a private single-node SLURM (root)"
	@echo "make slurm-up / slurm-down    start / stop that private SLURM ($(SLURM_DIR))"
	@echo "make tune [TUNE=lr] [ARGS=..] Optuna search (journal storage, pruning, 2 local workers)"
	@echo "make tune-ui [STUDY=name] [TUNE_UI_PORT=8080]  optuna-dashboard on 127.0.0.1 for a study (default: the latest)"
	@echo "make mlflow-server            MLflow tracking server (+UI) on 127.0.0.1:5000; off loopback needs"
	@echo "                              MLFLOW_TRACKING_USERNAME/PASSWORD (basic auth)"
	@echo "make ui [SWEEP=id]            MLflow UI on 127.0.0.1:5000, opening on the latest sweep's runs and charts"
	@echo "                              (UI_HOST=0.0.0.0 only with MLFLOW_TRACKING_USERNAME/PASSWORD exported: basic auth)"
	@echo "make test-ui                  headless-browser check of make ui on two tiny sweeps (screenshots: reports/ui/)"
	@echo "make flow                     FLOW: base pre-training, method × τ sweep, lr and WiSE-FT curves, report"
	@echo "make bench                    training throughput (bench-tiny, CPU) and logging overhead, JSON"
	@echo "make bench-gpu                parcae-small on CUDA GPUs: tokens/s, MFU (executed FLOPs), Muon, DDP, memory"
	@echo "make gpu-check                the prepared GPU check (~8 min): bench, bf16+compile training, 2-GPU rerun; JSON"
	@echo "make bench-tokenize           BPE tokenising throughput on a 100 MB corpus"
	@echo "make bench-fit [ARGS=--law]   analysis time on a default-sweep-sized store (JSON); --law: the law fitter"
	@echo "make clean-runs               delete runs, reports, logs and the MLflow store"
	@echo "make help                     this list"
	@all=$$(grep -oE '^[a-z][a-z0-9-]*:' $(firstword $(MAKEFILE_LIST)) | tr -d : | sort -u); \
	 described=$$(grep -oE '^	@echo "make [a-z0-9-]+( / [a-z0-9-]+)?' $(firstword $(MAKEFILE_LIST)) | \
	   sed -E 's/.*"make //; s# / # #' | tr ' ' '\n' | sort -u); \
	 rest=$$(comm -23 <(echo "$$all") <(echo "$$described") | tr '\n' ' '); \
	 if [ -n "$${rest// }" ]; then echo "more targets (see the Makefile): $$rest"; fi

# Setup writes only inside this clone: a .venv that links elsewhere (another clone's environment) is refused,
# since installing into it would repoint that clone's editable install here.
$(STAMP): pyproject.toml
	@if [ -L $(VENV) ] && [ "$$(cd "$$(readlink -f $(VENV))/.." && pwd -P)" != "$$(pwd -P)" ]; then \
	  echo "make setup: $(VENV) links to $$(readlink -f $(VENV)), outside this clone; installing would repoint that clone's editable install. Fix: rm $(VENV) (the link only), then make setup creates this clone's own" >&2; exit 2; fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev,hf]'
	touch $(STAMP)

setup: $(STAMP)

# sweep.dry_run=true (experiments/launch/dry_run.py) plans the sweep and trains nothing: no analysis then.
sweep: $(STAMP)
	$(PY) -m experiments.sweep sweep=$(SWEEP) sweep_id=$(SWEEP_ID) $(ARGS)
	$(if $(filter sweep.dry_run=true sweep.dry_run=True,$(ARGS)),,$(PY) -m analysis --tracking-uri $(TRACKING_URI) --experiment $(EXPERIMENT) --sweep-id $(SWEEP_ID) --out reports/$(SWEEP_ID) --reuse)

# `make sweep` itself (the driver with its adaptive passes, then the analysis), under nohup: it survives closing
# the terminal. SWEEP, SWEEP_ID and ARGS reach the inner make through MAKEFLAGS, quoting intact.
sweep-detached: $(STAMP)
	mkdir -p logs
	nohup $(MAKE) --no-print-directory sweep > logs/$(SWEEP_ID).log 2>&1 < /dev/null &
	@echo "sweep $(SWEEP_ID) running in the background (the driver, then the analysis into reports/$(SWEEP_ID)): log logs/$(SWEEP_ID).log; progress: make status SWEEP=$(SWEEP_ID)"

# The sweep named on the command line (SWEEP= or SWEEP_ID=), else the latest one.
status: $(STAMP)
	$(PY) -m experiments.status $(ANALYZE_ID)

resume: $(STAMP)
	$(PY) -m experiments.status $(SWEEP_ID) --resume

# The composed config with the model preset resolved (Hydra's --cfg job shows its fields as null) and what
# it derives: tokens, steps, FLOPs, parameters, config hash; a grid gets one line per point.
show-config: $(STAMP)
	$(PY) -m experiments.show_config $(ARGS)

# The sweep named on the command line (SWEEP= or SWEEP_ID=), else the latest one in the store.
ANALYZE_ID = $(if $(filter command line environment,$(origin SWEEP) $(origin SWEEP_ID)),$(SWEEP_ID))
# make analyze CSV=FILE [ARGS='--flops "Training FLOP" --params "Model Size"']: your own table
# (docs/analysis.md), report in reports/table-<file name>.
analyze: $(STAMP)
ifdef CSV
	$(PY) -m analysis --csv $(CSV) --out reports/table-$(basename $(notdir $(CSV))) $(ARGS)
else
	$(PY) -m analysis --tracking-uri $(TRACKING_URI) --experiment $(EXPERIMENT) \
		$(if $(ANALYZE_ID),--sweep-id $(ANALYZE_ID) --out reports/$(ANALYZE_ID))  # else reports/<latest sweep>
endif

# Two or more sweeps on one figure, e.g. make compare SWEEPS=isoflop,isoflop-muon
.PHONY: compare
compare: $(STAMP)
	@test -n "$(SWEEPS)" || { echo "make compare needs SWEEPS=a,b (comma-separated sweep ids)"; exit 2; }
	$(PY) -m analysis.compare --tracking-uri $(TRACKING_URI) --experiment $(EXPERIMENT) --sweeps $(SWEEPS) $(ARGS)

# -n auto --dist loadfile: one pytest worker per core, each taking whole files (module fixtures such as
# a trained sweep are built once); TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= auto
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 -m "not slurm and not slow" $(ARGS)

# The tests marked slow (minutes each: more torchrun launches and fault cases, store repairs, compile, the UI's
# sweep store); CI runs them after make test.
test-slow: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "slow and not slurm" $(ARGS)

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

# scripts/ui/serve.py opens on the latest sweep (SWEEP=<id> another): its saved MLflow view (its runs, eval/loss,
# µ_rec, budget, tokens; its charts first) and the static page reports/<sweep>/ui.html (loss vs µ_rec per budget).
# One rule for every server (experiments/tracking/server.py check_bind): UI_HOST other than loopback only with
# MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD exported (basic auth); the dashboard stays on loopback.
UI_PORT ?= 5000
UI_HOST ?= 127.0.0.1
.PHONY: test-ui tune-ui
ui: $(STAMP)
	$(PY) scripts/ui/serve.py --tracking-uri $(TRACKING_URI) --experiment $(EXPERIMENT) $(if $(ANALYZE_ID),--sweep $(ANALYZE_ID)) --host $(UI_HOST) --port $(UI_PORT)

# Real headless chromium (apt-get installed when missing, as root) on what `make ui` opens, on two tiny sweeps
# trained for it (UI_STORE=<uri> checks that store instead): the sweep's runs with eval/loss, µ_rec, budget.
test-ui: $(STAMP)
	$(PY) scripts/ui/check.py $(if $(UI_STORE),--tracking-uri $(UI_STORE) --experiment $(EXPERIMENT)) $(if $(ANALYZE_ID),--sweep $(ANALYZE_ID)) --out reports/ui

# optuna-dashboard on loopback for a study journal of make tune (<tune.dir>/<study>/journal.log).
TUNE_DIR ?= tune
TUNE_UI_PORT ?= 8080
TUNE_UI_HOST ?= 127.0.0.1
tune-ui: $(STAMP)
	@journal=$(if $(STUDY),$(TUNE_DIR)/$(STUDY)/journal.log,$$(ls -t $(TUNE_DIR)/*/journal.log 2>/dev/null | head -1)); \
	test -n "$$journal" && test -f "$$journal" || { echo "make tune-ui: no study journal under $(TUNE_DIR)/ (run make tune first, or give STUDY=<name>)" >&2; exit 2; }; \
	$(PY) scripts/ui/tune_dashboard.py --host $(TUNE_UI_HOST) --port $(TUNE_UI_PORT) "$$journal"

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
# The JSON is also kept in reports/bench.json: show-config and the sweep dry run price CPU wall time with it.
bench: $(STAMP)
	@mkdir -p reports
	set -o pipefail; $(PY) benchmarks/bench_train.py --preset bench-tiny --logging-overhead $(ARGS) \
		| tee reports/.bench.json.tmp && mv reports/.bench.json.tmp reports/bench.json

# parcae-small (~140M) on CUDA GPUs: bf16 autocast + torch.compile; fused AdamW, Muon, and N-GPU DDP through
# torchrun when there are several; tokens/s, both FLOP counts, MFU from executed FLOPs, memory; writes
# reports/bench-gpu.json (the sweep dry run's throughput).
bench-gpu: $(STAMP)
	$(PY) benchmarks/bench_gpu.py $(ARGS)

# The prepared GPU check (~8 min on one GPU): bench-gpu, a short bf16 + compile run of small with validation at
# several T, a 2-GPU torchrun rerun when two GPUs exist; one JSON ($$OUT/gpu-check.json or reports/).
.PHONY: gpu-check
gpu-check: $(STAMP)
	$(PY) scripts/gpu_check.py
