# Two commands set everything up on a fresh machine that has python3 and make:
#   make demo   run the training workflow end to end on the embedded defaults
#   make test   lint, type-check and run every test
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
UV := $(VENV)/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
SCHEMA_DIR ?= $(abspath ../shared/schemas)

.PHONY: demo test lint typecheck unit golden clean help web

help:
	@echo "make demo    train the example model end to end (local runner, MLflow on SQLite, static STAC)"
	@echo "make test    ruff + import layers + mypy + pytest"
	@echo "make golden  regenerate the committed golden YAML (review the diff!)"
	@echo "make web     rebuild the web app from web/ into geomlops/gateway/web_dist (needs Node.js; commit the result)"

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==0.13.8

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode --python $(VENV)/bin/python
	@touch $@

demo: $(VENV)/.synced
	$(VENV)/bin/geomlops demo

lint: $(VENV)/.synced
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(VENV)/.synced
	$(VENV)/bin/mypy

# Two pytest processes at once, as a CI machine has two cores and one pytest keeps about one busy:
# the workflow tests that share the session's demo work folder (WORKFLOW_TESTS) in one, every
# other test in the other, each in its own temporary folder. Either failing fails the target; the
# workflow tests' output is printed after the others'. Tests sharing a session fixture that runs
# the demo stay in one process, so that it runs once: the retrain workflow's tests run beside the
# webhook's (retrain_work), the bad-input cases beside the workflows (work).
WORKFLOW_TESTS ?= tests/geomlops/cli/test_bad_input.py tests/examples tests/geomlops/serving \
	$(filter-out tests/pipelines/test_retrain_workflow.py,$(wildcard tests/pipelines/test_*.py)) tests/web
PYTEST := GEOMLOPS_TEST_SCHEMA_DIR=$(SCHEMA_DIR) $(VENV)/bin/pytest -p no:cacheprovider
unit: $(VENV)/.synced
	@$(PYTEST) --basetemp=/tmp/geomlops-tests-workflows $(WORKFLOW_TESTS) > .pytest-workflows.log 2>&1 & workflows=$$!; \
	$(PYTEST) --basetemp=/tmp/geomlops-tests-others $(addprefix --ignore=,$(WORKFLOW_TESTS)); others=$$?; \
	wait $$workflows; workflows=$$?; \
	echo "==== the workflow tests ($(WORKFLOW_TESTS)): exit $$workflows ===="; cat .pytest-workflows.log; \
	echo "==== the other tests: exit $$others ===="; \
	test $$workflows -eq 0 && test $$others -eq 0

test: lint typecheck unit

golden: $(VENV)/.synced
	GEOMLOPS_UPDATE_GOLDEN=1 $(VENV)/bin/pytest tests/pipelines/test_golden.py

# the built app is committed: only a change to web/ needs Node.js (npm ci installs the lockfile's packages)
web:
	cd web && npm ci --no-audit --no-fund && npm run build

clean:
	rm -rf $(VENV) .geomlops .mypy_cache .pytest_cache .ruff_cache
