# One entry point for every task; README and CI use these targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Tools installed in the venv (bao, grpcurl) must be on PATH for the tests.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.DEFAULT_GOAL := help

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml sdk/pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e sdk -e '.[dev]'
	touch $(STAMP)

node_modules/.bin/buf: package.json
	npm install --no-audit --no-fund --silent
	touch $@

setup: $(STAMP) ## Create .venv and install the platform with its development tools

up: $(STAMP) ## Set up and run the whole stack on the embedded defaults (Ctrl-C stops it)
	$(BIN)/healthcode up

test: $(STAMP) ## Set up and run the whole test suite
	$(BIN)/python -m pytest

proto: $(STAMP) ## Regenerate the Python code of every .proto into the SDK
	$(BIN)/python scripts/gen_protos.py

lint: $(STAMP) node_modules/.bin/buf ## Lint: ruff, mypy strict, buf lint, generated-code drift
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	node_modules/.bin/buf lint
	$(BIN)/python scripts/gen_protos.py --check
	$(MAKE) --no-print-directory breaking

breaking: node_modules/.bin/buf ## buf breaking: the protos against the previous commit (BASE=<git ref> to choose)
	@base=$${BASE:-HEAD~1}; \
	if git rev-parse -q --verify "$$base^{commit}" >/dev/null && git cat-file -e "$$base:proto" 2>/dev/null; then \
	  node_modules/.bin/buf breaking --against ".git#ref=$$base,subdir=proto" proto && echo "buf breaking: compatible with $$base"; \
	else echo "buf breaking: no protos at $$base to compare with"; fi

bench: $(STAMP) ## Run the benchmarks (prints ratios against baselines measured in the same run)
	$(BIN)/python bench/run_all.py

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis

.PHONY: help setup up test proto lint breaking bench clean
