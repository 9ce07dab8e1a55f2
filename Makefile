# Entry points for a fresh clone; each creates or refreshes the virtual environment first.
#   make smoke      the real pipeline at tiny settings in a scratch copy (.smoke/): about a minute
#   make repro      run the whole pipeline (dvc repro): the papers' protocols, a GPU job;
#                   JOBS=N runs up to N stages at once (python -m metalearn.run, Ray)
#   make repro-cpu  the CPU recipe: every learner and benchmark in under two hours on 2 cores,
#                   data from METALEARN_DATA_MIRROR (default ../shared/datasets)
#   make test       lint, format check and the test suite in two processes (slow-but-rare checks
#                   aside: make test-slow; CI runs both)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# DVC runs each stage's `python ...` from PATH: the venv's must come first.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install smoke repro repro-cpu test test-slow mlflow-ui exp-show

# uv installs the project in about a minute here, where pip took 3 minutes (PyTorch's CUDA build and
# its libraries, several GB: uv downloads them in parallel). --compile-bytecode as pip does: where
# PYTHONDONTWRITEBYTECODE is set, every stage would otherwise compile torch anew (import torch
# 6.5 s instead of 3.5 s).
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet uv
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

smoke: $(STAMP)
	$(PY) -m metalearn.smoke

JOBS ?=
repro: $(STAMP)
ifeq ($(JOBS),)
	$(VENV)/bin/dvc repro
else
	$(PY) -m metalearn.run --jobs $(JOBS)
endif

repro-cpu: $(STAMP)
	METALEARN_DATA_MIRROR="$${METALEARN_DATA_MIRROR:-$(abspath ../shared/datasets)}" \
		$(PY) -m metalearn.recipe cpu

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -n 2 --dist loadscope --no-loadscope-reorder -m "not slow"

# The slow-but-rare checks (marked slow): more fault cases, queued experiments, the MLflow server,
# the GPU check's dry run, torchrun; minutes more. CI runs them after make test.
test-slow: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadscope --no-loadscope-reorder -m slow

# The experiments in 120 columns: the changed params.yaml keys (not the resolved cells' spec.*
# under configs/) and one benchmark's meta-test means of a few learners (dvc exp show --csv or
# --json has every column).
#   make exp-show [BENCHMARK=jester-shot10] [LEARNERS='maml|imaml|bias']
BENCHMARK ?= movielens100k-shot10
LEARNERS ?= maml|imaml|adjoint
EXP_SHOW = dvc exp show --only-changed --drop 'Created|^[a-z]+/|^[a-z0-9]+-[a-z0-9]+\.|^spec\.' \
	--keep '^$(BENCHMARK)\.($(LEARNERS))$$'
exp-show:
	$(VENV)/bin/$(EXP_SHOW)

# Browse the runs: make mlflow-ui [HOST=0.0.0.0] [PORT=5001]; uses the installed venv as it is.
HOST ?= 127.0.0.1
PORT ?= 5000
mlflow-ui:
	@test -x $(VENV)/bin/mlflow || { echo "no $(VENV)/bin/mlflow: run make install first"; exit 1; }
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(abspath mlflow.db) --host $(HOST) --port $(PORT)
