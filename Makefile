# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test install install-test bench typecheck clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[prod]'
	touch $@

$(VENV)/.installed-test: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,prod]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(BIN)/crmconnector serve

test: install-test
	@if [ -x /usr/bin/chromium ]; then echo "browser tests: running with /usr/bin/chromium"; \
	else echo "browser tests: NOT RUN (/usr/bin/chromium is absent; apt-get install chromium)"; fi
	@if command -v pg_ctlcluster >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
	echo "PostgreSQL tests: running against a server the tests start"; \
	else echo "PostgreSQL tests: NOT RUN (no PostgreSQL server installed; apt-get install postgresql)"; fi
	$(BIN)/python -m mypy crmconnector
	$(BIN)/python -m pytest $(PYTEST_ARGS)

typecheck: install-test
	$(BIN)/python -m mypy crmconnector

bench: install-test
	$(BIN)/python bench/match_latency.py
	$(BIN)/python bench/api_calls.py
	$(BIN)/python bench/abandoned.py
	$(BIN)/python bench/outbox_drain.py
	$(BIN)/python bench/load.py --matrix
	$(BIN)/python bench/inprocess.py

clean:
	rm -rf $(VENV) build *.egg-info
