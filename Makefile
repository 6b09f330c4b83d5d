# sfmlops: the two user commands are `make demo` and `make test`; the rest are helpers.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
UV := $(BIN)/uv
UV_INSTALL := $(UV) pip install --python $(BIN)/python --quiet -c constraints.txt
PYTEST_ARGS ?=

.PHONY: demo test lint format install dev system-deps benchmarks lock clean help

help:
	@echo "make demo         run the product on this machine (creates .venv, loads data, ...)"
	@echo "make test         install dev dependencies and test services, lint, run the test suite"
	@echo "make lint         ruff check, ruff format --check, mypy"
	@echo "make format       ruff format + ruff check --fix"
	@echo "make benchmarks   run the benchmarks (not part of make test)"
	@echo "make lock         regenerate constraints.txt from pyproject.toml"

demo: install
	$(BIN)/sfmlops demo

test: dev system-deps lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: pyproject.toml constraints.txt | $(UV)
	$(UV_INSTALL) -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(UV)
	$(UV_INSTALL) -e '.[dev]'
	@touch $@ $(VENV)/.installed

system-deps:
	scripts/install-system-deps.sh

benchmarks: dev system-deps
	$(BIN)/python benchmarks/load_data.py
	$(BIN)/python benchmarks/forecast_backtest.py

lock: | $(UV)
	$(UV) pip compile pyproject.toml --extra dev --python-version 3.11 --no-header \
	  --annotation-style line --quiet -o constraints.body
	{ echo "# The lock: exact versions of every dependency, used as pip/uv constraints by make."; \
	  echo "# Regenerate with 'make lock' after changing pyproject.toml."; cat constraints.body; } > constraints.txt
	rm -f constraints.body

clean:
	rm -rf $(VENV) .sfmlops .pytest_cache .mypy_cache .ruff_cache
