# Two entry points for a fresh clone; each creates or refreshes the virtual environment first.
#   make repro   run the whole pipeline (dvc repro)
#   make test    lint, format check and the test suite (what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# DVC runs each stage's `python ...` from PATH: the venv's must come first.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install repro test mlflow-ui

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

repro: $(STAMP)
	$(VENV)/bin/dvc repro

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

mlflow-ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000
