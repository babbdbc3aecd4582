# facescale: the commands in README.md. Every target sets itself up first (idempotent).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# test processes for make test (pytest-xdist); the expensive tiers each keep to one (tests/conftest.py)
TEST_WORKERS ?= 2

.PHONY: setup demo airflow test-fast test test-all lint clean constraints cluster cluster-down cluster-status test-cluster clean-cluster

setup:          ## apt packages + .venv with facescale installed (fast when done)
	@scripts/setup.sh

demo: setup     ## the main job on the embedded defaults: nightly growth + retraining DAGs against the demo web
	@scripts/demo.sh

airflow: setup  ## Airflow standalone (SQLite in var/airflow) with the project's DAGs and the demo settings
	@scripts/airflow.sh

FAST := not slow and not cluster and not ray and not browser and not airflow and not training

test-fast: setup ## the unit tier (no Ray, browser, Airflow or training) + lint and type check: a few minutes
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -m "$(FAST)" $(PYTEST_ARGS)

test: setup     ## lint, type check + the default test tiers (what CI runs)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_WORKERS) -m "not slow and not cluster" $(PYTEST_ARGS)

test-all: setup ## every tier but the cluster's, slow ones included
	$(BIN)/pytest -m "not cluster" $(PYTEST_ARGS)

cluster: setup  ## the scaled-out stack on this machine: Airflow on Celery + Postgres + Redis, Ray cluster, Selenium Grid, S3
	@scripts/cluster.sh up

cluster-down:   ## stop everything `make cluster` started (by pid)
	@scripts/cluster.sh down

cluster-status:
	@scripts/cluster.sh status

clean-cluster: cluster-down ## stop the stack and remove its state (var/cluster: databases, S3 objects, logs)
	rm -rf var/cluster

test-cluster: setup clean-cluster ## the cluster tier on a fresh stack (removes var/cluster, brings the stack up, leaves it up)
	@scripts/cluster.sh up
	$(BIN)/pytest -m cluster $(PYTEST_ARGS)

lint: setup     ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/mypy

constraints: setup ## re-pin constraints.txt from the current .venv (after changing pyproject.toml)
	@{ sed -n '1,3p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^facescale'; } > constraints.txt.new
	@mv constraints.txt.new constraints.txt

clean:          ## remove the demo data and caches (keeps .venv)
	rm -rf var/demo var/demo-runs var/airflow .pytest_cache .ruff_cache .hypothesis
