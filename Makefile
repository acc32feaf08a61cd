# Two set-up commands work on a fresh machine: `make repro` and `make test`. Each creates .venv and
# installs what it needs (idempotent: reinstalls only when pyproject.toml or constraints.txt change).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
PYTEST_ARGS ?=

.PHONY: install repro test bench ui clean-outputs browser-deps

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Run the main job (the DVC pipeline) on the embedded default and print the summary.
repro: $(STAMP)
	source $(BIN)/activate && dvc repro
	@cat reports/summary.md

## Run the test suite (unit tests, real `dvc repro` and a real Prefect server on 127.0.0.1).
test: $(STAMP)
	source $(BIN)/activate && python -m pytest $(PYTEST_ARGS)
