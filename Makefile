# Quick start: `make serve` and `make test`. Both build their own virtual environment.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint typecheck unit bench docs clean system-packages soak dashboard

# One build at a time (flock): `make serve` and `make test` started together on a fresh
# clone would otherwise both build .venv and break each other's build. The one that waited
# finds the stamp newer than pyproject.toml and builds nothing.
$(STAMP): pyproject.toml
	flock $(VENV).lock sh -c '[ $(STAMP) -nt pyproject.toml ] || { \
	  $(PYTHON) -m venv $(VENV) && \
	  $(BIN)/pip install --quiet --upgrade pip && \
	  $(BIN)/pip install --quiet -e ".[dev]" && \
	  touch $(STAMP); }'

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

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(DASHBOARD)
	$(BIN)/pytest

#: Debian packages of the real servers the tests start (Redis, RabbitMQ, Chromium).
SYSTEM_PACKAGES := redis-server redis-sentinel rabbitmq-server chromium

system-packages:
	scripts/ensure-system-packages $(SYSTEM_PACKAGES)

test: system-packages lint typecheck unit

#: 1,000 clients for 10 minutes with churn (STATEHUB_SOAK_SECONDS / _CLIENTS to change).
soak: $(STAMP)
	$(BIN)/pytest -m soak -s tests/test_soak.py

bench: $(STAMP)
	$(BIN)/statehub bench

#: The documentation site, in site/ (strict: a broken link or reference fails the build).
docs: $(STAMP)
	flock $(VENV).lock $(BIN)/pip install --quiet -e '.[dev,docs]'
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site frontend/node_modules src/statehub/web/dashboard
