# sfmlops: the two user commands are `make demo` and `make test`; the rest are helpers.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
UV := $(BIN)/uv
# Bytecode is compiled at install time: where PYTHONDONTWRITEBYTECODE is set (CI images often
# do) every process would otherwise compile pandas, MLflow, ... from source on import (measured:
# 7.5 s instead of 2.7 s to import the CLI's dependencies).
# pyspark is published as a source archive only (450 MB): its wheel is built once per pinned
# version into SOURCE_WHEELS, where every install finds it. uv keeps its own build too, but
# downloads and builds it again whenever the file server answers a revalidation as modified
# (the PyPI proxy of the machines CI runs on always does: 30 s and 1.4 GB of uv cache per install).
PYSPARK_VERSION := $(shell sed -n 's/^pyspark==\([^ ]*\).*/\1/p' constraints.txt)
SOURCE_WHEELS := $(HOME)/.cache/sfmlops/wheels/pyspark-$(PYSPARK_VERSION)
UV_INSTALL := $(UV) pip install --python $(BIN)/python --quiet --compile-bytecode -c constraints.txt \
	--find-links $(SOURCE_WHEELS)
PYTEST_ARGS ?= --durations=15
# The main suite runs in this many pytest-xdist workers, one test file per worker at a time
# (module-scoped servers stay one per file): most of its time is waiting on servers, browsers
# and Spark, which two workers overlap. PYTEST_WORKERS=0 runs it in one process.
# A worker that dies is not replaced: under --dist loadfile xdist's replacement can wait forever
# for work already done (pytest-xdist issues 784, 1323), so the suite would hang instead of
# failing with the test the worker died in.
PYTEST_WORKERS ?= 2

.PHONY: demo test test-fast lint format install dev system-deps benchmark-deps benchmarks lock clean help

help:
	@echo "make demo         run the product on this machine (creates .venv, loads data, ...)"
	@echo "make test         install dev dependencies and test services, lint, run the test suite"
	@echo "make test-fast    the unit tier only (no services, a few minutes): the edit-test loop"
	@echo "make lint         ruff check, ruff format --check, mypy, lint-imports (the layering)"
	@echo "make lint-deploy  hadolint, actionlint, shellcheck; helm lint, kubernetes-validate, checkov on the chart"
	@echo "make format       ruff format + ruff check --fix"
	@echo "make benchmarks   run the benchmarks (not part of make test)"
	@echo "make lock         regenerate constraints.txt from pyproject.toml"
	@echo "make images       build every image (scripts/images.sh) with docker or podman, skipping unchanged ones"
	@echo "make container-test  the images started as the chart runs them (tests/containers)"
	@echo "make compose-env  write .env with random secrets for the Compose stack (compose.yaml)"
	@echo "make compose-up   build the missing images, start the Compose stack, wait for the first forecast"
	@echo "make compose-down stop the Compose stack (data kept; scripts/compose.sh down -v removes it)"
	@echo "make compose-test bring the Compose stack up with podman and check it through nginx"
	@echo "make deploy-local install the whole system on the current kubectl context (docs/deployment.md)"
	@echo "make deploy-clean uninstall it (kept Secrets and volumes stay)"
	@echo "make cluster-up   start a single-node Kubernetes cluster on this machine (root; docs/deployment.md)"
	@echo "make cluster-down stop it (its data stays; scripts/local-cluster.sh reset deletes it)"
	@echo "make airflow      create .venv-airflow (Airflow 3, its own environment) from requirements-airflow.txt"
	@echo "make airflow-up   run a local Airflow (UI on http://127.0.0.1:8080) with the sfmlops DAGs"
	@echo "make test-airflow the DAG tests, in .venv-airflow"
	@echo "make lock-airflow regenerate requirements-airflow.txt from requirements-airflow.in"

demo: install
	$(BIN)/sfmlops demo

# tests/containers need the built images: they run after the main suite, beside Airflow's, through
# `make container-test`, which waits for the background image build; the Compose stack follows
# them, still beside Airflow's suite, and the local cluster runs last, alone (each stack removes
# itself, volumes included, even on failure; the cluster test refuses to start while a Compose
# stack runs).
# Their images and the cluster's programs build in the background from before the lint to the
# end of the main suite at a low CPU priority, then as the tiers' equals (`--promote`: they are
# what the last tiers wait for; scripts/background-builds.sh); each tier waits for its build.
# container-tools comes first: tests/deploy runs podman-compose's own checks, which need podman.
# The Airflow suite runs beside the container tier and then the Compose tier (each lane's output
# printed whole when it ends): the container tier first waits for the background image build,
# and neither lane keeps both cores busy. The cluster tier comes last: it refuses to start
# while a Compose stack runs, the two do not fit two cores together.
test: dev system-deps container-tools background-builds deploy-tools lint lint-deploy airflow
	$(BIN)/python -m pytest --ignore=tests/containers -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --max-worker-restart 0 $(PYTEST_ARGS)
	scripts/background-builds.sh --promote
	$(MAKE) --no-print-directory -j2 --output-sync=target test-airflow container-compose-test
	$(MAKE) --no-print-directory cluster-test

# The images alone, then the Compose stack of them: one lane of `make test`.
.PHONY: container-compose-test
container-compose-test:
	$(MAKE) --no-print-directory container-test
	$(MAKE) --no-print-directory compose-test

# Started as soon as podman and the venv (whose pip downloads the images' wheels) are there.
.PHONY: background-builds
background-builds: dev container-tools
	scripts/background-builds.sh $(IMAGE_TAG)

# The unit tier: pure tests, no services to start (README gives its time).
test-fast: dev
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

format: dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(SOURCE_WHEELS)/.complete: | $(UV)
	rm -rf $(SOURCE_WHEELS).partial
	$(BIN)/python -m pip wheel --quiet --disable-pip-version-check --no-deps --no-binary pyspark \
		-w $(SOURCE_WHEELS).partial pyspark==$(PYSPARK_VERSION)
	touch $(SOURCE_WHEELS).partial/.complete
	rm -rf $(SOURCE_WHEELS) && mv $(SOURCE_WHEELS).partial $(SOURCE_WHEELS)

# Every extra (Spark, Prophet, Ray, the dashboard): the CLI runs every command. The images
# install only their process's extras (images/sfmlops/Dockerfile).
$(VENV)/.installed: pyproject.toml constraints.txt | $(UV) $(SOURCE_WHEELS)/.complete
	$(UV_INSTALL) -e '.[all]'
	@touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(UV) $(SOURCE_WHEELS)/.complete
	$(UV_INSTALL) -e '.[all,dev]'
	@touch $@ $(VENV)/.installed

system-deps:
	scripts/install-system-deps.sh

# wrk, the load generator of the API benchmarks, is also in system-deps (the soak's test).
benchmark-deps:
	scripts/install-system-deps.sh benchmarks

benchmarks: dev benchmark-deps
	$(BIN)/python benchmarks/load_data.py
	$(BIN)/python benchmarks/forecast_backtest.py
	scripts/fetch-jars.sh spark-connectors
	$(BIN)/python benchmarks/streaming_throughput.py
	$(BIN)/python benchmarks/api_latency.py

# Deployment: Helm, actionlint, checkov, kubernetes-validate, shellcheck and hadolint for tests/deploy
# (cached across clones), image builds, and the install sequence of docs/deployment.md.
.PHONY: deploy-tools lint-deploy container-tools images container-test deploy-local deploy-clean
TOOLS_DIR ?= $(or $(SFMLOPS_TOOLS_DIR),$(HOME)/.cache/sfmlops-tools)
export SFMLOPS_TOOLS_DIR := $(TOOLS_DIR)
HELM_DIR := $(TOOLS_DIR)/helm-$(shell sed -n 's/^HELM_VERSION=//p' install-helm.sh)
IMAGE_TAG ?= $(shell git rev-parse --short=12 HEAD)

deploy-tools: | $(UV)
	UV=$(UV) scripts/install-deploy-tools.sh

# hadolint, actionlint (+ shellcheck) and shellcheck on the repository's deployment files.
lint-deploy: dev deploy-tools
	PYTHON=$(BIN)/python scripts/lint-deploy.sh

# Images are tagged by the hash of their inputs (unchanged ones are not rebuilt) and by the commit.
# Without a Docker daemon they are built with podman on local stand-ins of the public bases
# (scripts/base-images.sh); podman reads the project's settings (runc, rlimits) from CONTAINERS_CONF.
export CONTAINERS_CONF := $(abspath images/podman/containers.conf)

container-tools:
	scripts/install-container-tools.sh

images: container-tools | $(UV)
	scripts/images.sh build $(IMAGE_TAG)

# The Compose stack (compose.yaml, scripts/compose.sh): Docker Compose, or podman-compose pinned in
# scripts/compose-requirements.txt. compose-test builds the missing images first, then brings the
# stack up on free ports under a project name of its own and removes it with its volumes (and
# whatever an interrupted earlier run left).
.PHONY: compose-env compose-up compose-down compose-test
compose-env:
	scripts/compose.sh env

compose-up:
	scripts/compose.sh up

compose-down:
	scripts/compose.sh down

compose-test: dev images
	SFMLOPS_COMPOSE_TEST=1 $(BIN)/python -m pytest tests/compose -m compose $(PYTEST_ARGS)

# The chart on a real cluster (tests/cluster, root): scripts/local-cluster.sh up on an empty
# state, the images built and loaded, SFMLOPS_RELEASES=local scripts/deploy.sh up, then install,
# use, upgrade, rollback, pod losses and uninstall; the cluster is stopped and reset afterwards,
# pass or fail. It refuses to start while a Compose stack of this repository runs.
# The cluster's programs come first: on a cold machine their background build may still run
# (scripts/background-builds.sh), and waiting for it is neither the tier's own time nor work for
# its set-up's 30-minute limit (a slow build failed every test there); the wait is printed.
.PHONY: cluster-test
cluster-test: images dev deploy-tools
	@started=$$(date +%s) && scripts/local-cluster.sh build && \
	  echo "cluster-test: the cluster's programs were ready after $$(($$(date +%s) - started)) s"
	SFMLOPS_CLUSTER_TEST=1 $(BIN)/python -m pytest tests/cluster -m cluster $(PYTEST_ARGS)

# The images started as the chart starts them (tests/containers; also part of `make test`).
container-test: images dev deploy-tools
	$(BIN)/python -m pytest tests/containers $(PYTEST_ARGS)

deploy-local:
	./install-helm.sh $(HELM_DIR)
	HELM=$(HELM_DIR)/helm SFMLOPS_IMAGE_TAG=$(IMAGE_TAG) scripts/deploy.sh up

deploy-clean:
	./install-helm.sh $(HELM_DIR)
	HELM=$(HELM_DIR)/helm scripts/deploy.sh down

# A single-node Kubernetes cluster on this machine, built from source (scripts/local-cluster.sh).
.PHONY: cluster-up cluster-down
cluster-up:
	scripts/local-cluster.sh up

cluster-down:
	scripts/local-cluster.sh down

lock: | $(UV)
	grep -v '^#' constraints.txt > constraints.body  # keeps today's pins unless they must move
	$(UV) pip compile pyproject.toml --all-extras --python-version 3.11 --no-header \
	  --annotation-style line --quiet -o constraints.body
	{ echo "# The lock: exact versions of every dependency, used as pip/uv constraints by make."; \
	  echo "# Regenerate with 'make lock' after changing pyproject.toml."; cat constraints.body; } > constraints.txt
	rm -f constraints.body

# Airflow lives in its own environment: it pins fastapi<0.137 and sfmlops needs a newer one.
# Its tasks reach sfmlops over HTTP, through the sfmlops command (SFMLOPS_CLI) or as pods.
.PHONY: airflow airflow-up test-airflow lock-airflow
AIRFLOW_VENV := .venv-airflow
AIRFLOW_BIN := $(AIRFLOW_VENV)/bin

airflow: $(AIRFLOW_VENV)/.installed

$(AIRFLOW_VENV)/.installed: requirements-airflow.txt | $(UV)
	$(UV) venv --quiet --clear --python $(PYTHON) $(AIRFLOW_VENV)
	$(UV) pip install --python $(AIRFLOW_BIN)/python --quiet --compile-bytecode -r requirements-airflow.txt
	@touch $@

# The sfmlops command the DAG tests drive (a real `sfmlops serve`, real training jobs).
test-airflow: airflow dev
	SFMLOPS_CLI=$(abspath $(BIN))/sfmlops $(AIRFLOW_BIN)/python -m pytest tests/airflow \
	  -c tests/airflow/pytest.ini --rootdir tests/airflow $(PYTEST_ARGS)

airflow-up: airflow
	scripts/airflow-up.sh

lock-airflow: | $(UV)
	$(UV) pip compile requirements-airflow.in --python-version 3.11 --no-header \
	  --annotation-style line --quiet -o requirements-airflow.body
	{ echo "# The Airflow lock: exact versions for .venv-airflow (make airflow). Regenerate with 'make lock-airflow'."; \
	  cat requirements-airflow.body; } > requirements-airflow.txt
	rm -f requirements-airflow.body

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) .sfmlops .pytest_cache .mypy_cache .ruff_cache
	scripts/base-images.sh prune  # root filesystems and wheels no current key names
