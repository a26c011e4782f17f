# Quick start: `make serve` and `make test`. Both build their own virtual environment, with
# exactly the dependencies locked in requirements/lock.txt (scripts/make-venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
# The other Pythons statehub supports: the suite runs on each (see `make unit-all`).
OTHER_PYTHONS := 3.12 3.13

.PHONY: serve test lint typecheck unit unit-system unit-rest unit-all bench docs clean system-packages soak dashboard \
	lock lock-upgrade $(addprefix unit-,$(OTHER_PYTHONS))

$(STAMP): pyproject.toml $(LOCK)
	scripts/make-venv $(PYTHON) $(VENV)

#: Re-resolves the lock after a change to pyproject.toml, keeping every other pin.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --all-extras --universal --python-version 3.11 \
	  --generate-hashes --quiet -o $(LOCK)

#: Upgrades every locked dependency to its newest release allowed by pyproject.toml.
lock-upgrade: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --all-extras --universal --python-version 3.11 \
	  --generate-hashes --quiet --upgrade -o $(LOCK)

#: The dashboard, built with npm into the package (rebuilt when a source is newer).
DASHBOARD := src/statehub/web/dashboard/app.js
DASHBOARD_SOURCES := $(wildcard frontend/src/*) frontend/build.mjs frontend/package.json frontend/package-lock.json

$(DASHBOARD): $(DASHBOARD_SOURCES)
	cd frontend && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build
	touch $(DASHBOARD)

dashboard: $(DASHBOARD)

serve: $(STAMP) $(DASHBOARD)
	$(BIN)/statehub serve

lint: $(STAMP)
	$(BIN)/ruff check src tests conftest.py docs/hooks
	$(BIN)/ruff format --check src tests conftest.py docs/hooks
	$(BIN)/lint-imports  # DESIGN.md's layers, no import circles ([tool.importlinter] in pyproject)

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(DASHBOARD)
	$(BIN)/pytest

# The suite on another Python, in .venv-3.X from the same lock, less the `system` tests:
# they check other programs (kill -9 recovery, Sentinel, RabbitMQ, chromium) and run on
# 3.11 (docs/development.md).
NON_SYSTEM_TESTS := -m "not soak and not system"
$(addprefix unit-,$(OTHER_PYTHONS)): unit-%: $(DASHBOARD)
	scripts/make-venv python$* .venv-$*
	.venv-$*/bin/pytest $(NON_SYSTEM_TESTS)

# 3.11's suite in its two halves: the `system` tests, and the rest.
unit-system: $(STAMP) $(DASHBOARD)
	$(BIN)/pytest -m "system and not soak"
unit-rest: $(STAMP) $(DASHBOARD)
	$(BIN)/pytest $(NON_SYSTEM_TESTS)

# Three runs at a time (2 cores; the suite waits on sockets more than it computes): 3.11's
# system tests, 3.12 and 3.13 first, then 3.11's other tests in the first free slot, so
# that no run is left alone at the end (3.11's whole suite beside the other two took
# twice as long as either, and all but reached the 25 min budget on a loaded machine).
unit-all:
	$(MAKE) --no-print-directory -j3 --output-sync=target unit-system \
	  $(addprefix unit-,$(OTHER_PYTHONS)) unit-rest

#: Debian packages of the real servers the tests start (Redis, RabbitMQ, Chromium).
SYSTEM_PACKAGES := redis-server redis-sentinel rabbitmq-server chromium

system-packages:
	scripts/ensure-system-packages $(SYSTEM_PACKAGES)

test: system-packages lint typecheck unit-all

#: 1,000 clients for 10 minutes with churn (STATEHUB_SOAK_SECONDS / _CLIENTS to change), and
#: checked histories over Redis with faults, and through Sentinel failovers, repeated for as long.
soak: $(STAMP)
	$(BIN)/pytest -m soak -s --timeout=3600 tests/test_soak.py tests/test_redis_fault_history.py \
	  tests/test_redis_failover_history.py

bench: $(STAMP)
	$(BIN)/statehub bench

#: The documentation site, in site/ (strict: a broken link or reference fails the build).
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(addprefix .venv-,$(OTHER_PYTHONS)) .pytest_cache .mypy_cache .ruff_cache site frontend/node_modules src/statehub/web/dashboard
