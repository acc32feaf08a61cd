# Two set-up commands work on a fresh machine: `make repro` and `make test`. Each creates .venv and
# installs what it needs (idempotent: reinstalls only when pyproject.toml or constraints.txt change): the
# test and dask extras too, so that the Dask runner's test runs (`pip install -e .` alone leaves Dask out).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
PYTEST_ARGS ?=

.PHONY: install repro test bench ui docs clean-outputs browser-deps

# The step before `touch` puts classprune_dvc_atomic.pth into the venv: every `dvc` of this venv then writes
# dvc.lock atomically (temp file + os.replace) instead of in place, which a kill -9 during the dump left empty
# or cut short; other interpreters import no DVC for it (src/classprune/dvc_atomic.py; CLASSPRUNE_DVC_ATOMIC=0
# turns it off).
$(STAMP): pyproject.toml constraints.txt src/classprune/dvc_atomic.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,dask]'
	$(BIN)/python -c 'import classprune.dvc_atomic as m; m.install_pth(m.site_packages())'
	touch $(STAMP)

install: $(STAMP)

## Run the main job on the embedded default and print the summary: the DVC pipeline as a Prefect flow,
## REPRO_WORKERS stages at once (dvc.lock, caching and reports exactly as `dvc repro`), then the metrics
## as Prefect artifacts. Set PREFECT_API_URL to watch it in `make ui`; otherwise Prefect starts a temporary
## local server. REPRO_WORKERS empty (the default): the flow's own default, the usable CPU cores capped by the
## available memory over one stage's peak (the log says how many and why); REPRO_WORKERS=N forces N.
REPRO_WORKERS ?=
repro: $(STAMP)
	source $(BIN)/activate && python -m flows.fanout $(if $(REPRO_WORKERS),--workers $(REPRO_WORKERS))
	@cat reports/summary.md

## The same pipeline as plain serial `dvc repro` (one stage at a time, no Prefect).
.PHONY: repro-serial
repro-serial: $(STAMP)
	source $(BIN)/activate && dvc repro
	@cat reports/summary.md

## Run the test suite (unit tests, real `dvc repro` and a real Prefect server on 127.0.0.1), TEST_WORKERS
## test files at once (pytest-xdist; a file's tests and module fixtures stay in one worker); 1: one at a time.
TEST_WORKERS ?= 2
XDIST = $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)
test: $(STAMP)
	source $(BIN)/activate && python -m pytest $(XDIST) $(PYTEST_ARGS)

## The fast subset (no real `dvc repro`, no Prefect server): a few minutes, for the edit-test loop.
.PHONY: test-fast
test-fast: $(STAMP)
	source $(BIN)/activate && python -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

## Serve the documentation site (docs/, MkDocs Material) on http://127.0.0.1:8000; `mkdocs build --strict`
## (run by the tests) writes it to site/.
docs: $(STAMP)
	source $(BIN)/activate && NO_MKDOCS_2_WARNING=1 mkdocs serve --dev-addr 127.0.0.1:8000

## Start the Prefect UI/API on 127.0.0.1:4200 (state in .prefect/); flows find it via PREFECT_API_URL.
ui: $(STAMP)
	@echo "Prefect UI: http://127.0.0.1:4200  (in another shell: export PREFECT_API_URL=http://127.0.0.1:4200/api)"
	source $(BIN)/activate && prefect server start --host 127.0.0.1 --port 4200

## Debian's headless Chromium for the opt-in browser test (CLASSPRUNE_BROWSER_TESTS=1 make test), and the
## vega builds (npm, pinned) that let it open `dvc plots show`'s page offline; .ci/run installs both the same way.
VEGA_NPM := vega@6.4.0 vega-lite@6.5.0 vega-embed@7.3.0
browser-deps:
	test -x /usr/bin/chromium || { apt-cache show chromium >/dev/null 2>&1 || apt-get update; apt-get install -y chromium; }
	test -f .browser/node_modules/vega-embed/build/vega-embed.min.js || npm install --silent --no-audit --no-fund --prefix .browser $(VEGA_NPM)

## Benchmarks against the reference ways (prune loop, dense step, file loaders): reports/bench.json + a table.
## Includes the Prefect DAG vs serial `dvc repro` on the default profile and the no-op repro (about 80 min
## with the 3-seed default: both full runs, one after the other);
## BENCH_ARGS= runs only the in-process benchmarks (a few minutes).
BENCH_ARGS ?= --pipeline --profile default --workers 2
bench: $(STAMP)
	source $(BIN)/activate && python benchmarks/run_all.py $(BENCH_ARGS)
