# smp_parsing — common tasks. Every target that runs code sets up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MPLCONFIGDIR ?= /tmp/smp_parsing_mpl
export WANDB_MODE ?= offline
# OpenMP threads sleep instead of spinning while they wait: on a shared machine spinning threads
# steal the cores the work needs (measured: 10x slower training steps under load).
export OMP_WAIT_POLICY ?= PASSIVE

.DEFAULT_GOAL := help
.PHONY: help install train test test-fast test-full lint format bench gpu-check clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name smp_parsing --display-name "smp_parsing (.venv)" >/dev/null
	@touch $(STAMP)

install: $(STAMP) ## Create .venv (when missing) and install the package editable with [dev]

train: $(STAMP) ## Main job: synthetic MHP data -> train -> evaluate -> predict -> report (CPU)
	$(PY) -m smp_parsing.quickstart $(ARGS)

# pyproject's addopts deselect `slow` so that a bare `pytest tests/...` stays quick while editing;
# `make test` (what CI runs, .ci/run) overrides that and runs every test. `gpu` tests skip
# themselves without CUDA.
test: $(STAMP) ## Every test, slow ones included (what CI runs)
	$(PY) -m pytest -q -m "slow or not slow"

test-fast: $(STAMP) ## Quick edit-test loop: the suite without the tests marked slow
	$(PY) -m pytest -q -m "not slow"

test-full: test ## Same as `make test` (kept for old scripts)

lint: $(STAMP) ## Static checks (ruff)
	$(VENV)/bin/ruff check src tests benchmarks notebooks
	$(VENV)/bin/ruff format --check src tests benchmarks notebooks

format: $(STAMP) ## Auto-format and fix what ruff can
	$(VENV)/bin/ruff format src tests benchmarks notebooks
	$(VENV)/bin/ruff check --fix src tests benchmarks notebooks

bench: $(STAMP) ## Speed / memory benchmarks (prints figures, writes benchmarks/results/)
	$(PY) -m benchmarks.run_all

gpu-check: $(STAMP) ## One GPU, <= 8 min: gpu tests, SMP vs paper and Mask R-CNN (ARGS=--dry-run: CPU toy run)
	$(PY) -m benchmarks.gpu_check $(ARGS)

clean: ## Remove caches and generated outputs (keeps .venv and data/)
	rm -rf .pytest_cache .ruff_cache outputs multirun benchmarks/results
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
