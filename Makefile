# bagof: `make help` lists the targets. Everything runs inside a local virtualenv (.venv).
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTHON  := $(BIN)/python
export BAGOF_DATASETS ?= $(abspath ../shared/datasets)
ARGS    ?=
# table knobs: make table4 SCALE=cpu DATA=bccd JOBS=1 FORCE=1 ARGS='train.max_epochs=5'
#              SEEDS=n: another number of seeds than the sweep file's design (an exploratory table, in outputs/)
SCALE   ?= cpu
DATA    ?=
SEEDS   ?=
JOBS    ?= 1
FORCE   ?=
LAUNCHER ?= local
SLURM   ?=
TABLE   ?= 4
TABLES  := table2 table3 table4 table5 table6 table7
STUDIES := convergence convergence-paper noise noise-ema noise-30 table4-recheck gaussian-uc ga-check \
           table4-raccoon table5-raccoon table4-synthetic table5-synthetic table4-recipe

.DEFAULT_GOAL := help
.PHONY: archive claims help install lock install-locked gpu-check run test test-slow lint format eval predict export bench ui clean tables report anchors ga $(STUDIES) $(TABLES)

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  make tableN     N=2..7: train the table's rows (reusing finished runs), write reports/tableN.{md,csv,png}"
	@echo "                  knobs: SCALE=smoke|cpu|paper DATA=<data config> JOBS=n FORCE=1"
	@echo "                  seeds: the sweep file's design (design: in sweeps/tableN.yaml); SEEDS=n: exploratory, to outputs/"
	@echo "                  LAUNCHER=local|slurm|submitit-local SLURM='partition=gpu gpus_per_node=1'"
	@echo "  make convergence  Table 4's baseline at several schedule lengths (sweeps/convergence.yaml), same knobs"
	@echo "  make noise / noise-ema / noise-30  seed noise of the cpu protocol, 4 rows of Table 4 (5 seeds): 9 epochs without / with EMA, 30 epochs"
	@echo "  make table4-recheck  Table 4's baseline and the two rows its report resolved on 2 seeds, from seed 0"
	@echo "  make gaussian-uc   Table 5's SAM and SAM-G, and SAM-G without the likelihood's gradient"
	@echo "  make convergence-paper  the same for the paper's recipe (optim=paper: SGD, burn-in, steps)"
	@echo "  make table4-raccoon / table5-raccoon / table4-synthetic / table5-synthetic  Tables 4, 5 on other data"
	@echo "  make table4-recipe  Table 4's rows that went against the paper, under the paper's recipe (optim=paper)"
	@echo "  make ga-check      the GA's hyperparameters against the defaults on the search's hold-out split (after make ga)"
	@echo "  (pass Hydra overrides with ARGS='data=bccd scale=cpu')"

$(BIN)/activate:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# A local wheel folder (the CPU build of torch on this project's machines) is used when present. Its torch goes
# in first: pyproject's range keeps an installed torch, but asked to choose, pip takes the newest release its
# indexes hold (here a CUDA build of several GB, whose autograd refuses forked DDP workers after a backward).
# A torch already in .venv is kept.
WHEELS  ?= /opt/wheels
LOCAL_TORCH := $(lastword $(sort $(wildcard $(WHEELS)/torch-*.whl)))
$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(if $(LOCAL_TORCH),$(PYTHON) -c 'import torch' 2>/dev/null || $(BIN)/pip install -q '$(LOCAL_TORCH)' \
	  || echo "$(LOCAL_TORCH) does not install on this Python: pip chooses torch within pyproject's range")
	$(BIN)/pip install -q $(if $(wildcard $(WHEELS)),--find-links $(WHEELS)) -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install bagof with its dev tools

lock: install  ## write requirements.lock: the exact versions installed in .venv (the tested environment)
	@{ echo "# The environment \`make test\` passed in: $$($(PYTHON) -c 'import platform; print("Python", platform.python_version(), platform.machine())')."; \
	   echo "# Written by \`make lock\` (pip freeze of .venv); install it with \`make install-locked\`. A +cpu torch comes from"; \
	   echo "# a local wheel folder (WHEELS=) or https://download.pytorch.org/whl/cpu."; \
	   $(BIN)/pip freeze --exclude-editable --all | grep -v '^pip=='; } > requirements.lock

install-locked: | $(BIN)/activate  ## install requirements.lock's exact versions, then bagof itself (no resolution)
	$(BIN)/pip install -q $(if $(wildcard $(WHEELS)),--find-links $(WHEELS)) -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(VENV)/.installed

run: install  ## train + evaluate the default (YOLOv4, synthetic data, cpu scale); ARGS=overrides
	$(PYTHON) run.py $(ARGS)

test: install  ## the test suite (not the slow tests), as CI runs it
	$(PYTHON) -m pytest -q $(ARGS)

lint: install  ## ruff: lint and formatting check (configured in pyproject.toml), as CI runs it
	$(BIN)/ruff check src tests run.py
	$(BIN)/ruff format --check src tests run.py

format: install  ## ruff: fix what it can and format the code
	$(BIN)/ruff check --fix src tests run.py
	$(BIN)/ruff format src tests run.py

test-slow: install  ## only the slow tests (real cpu-scale training runs)
	$(PYTHON) -m pytest -q -m slow $(ARGS)

eval: install  ## COCO evaluation of saved weights, no training: ARGS='model.weights=runs:/<id> data=bccd scale=cpu'
	$(PYTHON) -m bagof.cli.eval $(ARGS)

SOURCE ?=
predict: install  ## detections on SOURCE=<image|folder|video>, annotated images + COCO json: ARGS='model.weights=...'
	$(PYTHON) -m bagof.cli.predict $(SOURCE) $(ARGS)

FORMAT ?= onnx
export: install  ## saved weights as ONNX (FORMAT=darknet: Darknet .weights): ARGS='model.weights=... data=...'
	$(PYTHON) -m bagof.cli.export --format $(FORMAT) $(ARGS)

bench: install  ## benchmarks (before/after, alternated): training images/s, latency vs OpenCV DNN, eval -> reports/bench/
	$(PYTHON) -m bagof.cli.bench $(ARGS)

$(TABLES) $(STUDIES): install  # train the table's rows, write reports/tableN.{md,csv,png}
	$(PYTHON) -m bagof.experiments run sweeps/$@.yaml --scale $(SCALE) $(if $(DATA),--data $(DATA)) \
	  $(if $(SEEDS),--seeds $(SEEDS)) --jobs $(JOBS) $(if $(FORCE),--force) --launcher $(LAUNCHER) $(foreach s,$(SLURM),--slurm $(s)) $(ARGS)

gpu-check: install  ## the GPU check -> reports/bench/gpu.json (on a GPU); ARGS=--dry-run: every part on the CPU, small
	PYTHON=$(PYTHON) scripts/gpu_check.sh $(ARGS)

claims: install  ## the claims ledger: every paper claim on every dataset, pooled -> reports/claims.{md,png}
	$(PYTHON) -m bagof.experiments.claims $(ARGS)

convergence-plot: install  ## AP vs schedule length from `make convergence` -> reports/convergence-curve.png
	$(PYTHON) -m bagof.experiments.convergence

tables: install  ## every table in turn (a failing table does not stop the others); leave DATA unset: each sweep names its data
	@rc=0; for t in $(TABLES); do $(MAKE) --no-print-directory $$t || rc=1; done; exit $$rc

anchors: install  ## k-means optimized anchors (OA) of DATA's training boxes -> conf/anchors/<data>.yaml
	$(PYTHON) -m bagof.cli.anchors data=$(or $(DATA),bccd) scale=$(SCALE) $(ARGS)

ga: install  ## GA hyperparameter search on Optuna -> conf/hparams/ga-<data>-<scale>.yaml (+bof=ga); run again to resume; JOBS=n
	$(PYTHON) run.py -m hydra/sweeper=bagof_ga +search=ga data=$(or $(DATA),bccd) scale=$(SCALE) search.jobs=$(JOBS) $(ARGS)

report: install  ## rebuild reports/tableN.* from the MLflow store, no training (TABLE=N, default 4; the newest finished invocation, ARGS='--parent ID')
	$(PYTHON) -m bagof.experiments report sweeps/table$(TABLE).yaml $(ARGS)

archive: install  ## record TABLE's finished runs in reports/runs/ without a report, for a table still training (TABLE=N)
	$(PYTHON) -m bagof.experiments archive sweeps/table$(TABLE).yaml

PORT    ?= 5000
HOST    ?= 127.0.0.1
ui: install  ## MLflow UI over the local store (sqlite:///mlflow.db) at http://$(HOST):$(PORT); PORT= HOST= to change
	$(BIN)/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db} --host $(HOST) --port $(PORT)

clean:  ## remove outputs, caches and the virtualenv (keeps mlflow.db and mlartifacts/)
	rm -rf $(VENV) outputs multirun data .pytest_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
