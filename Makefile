# Quick start: `make serve` and `make test`. Both build their own virtual environment.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint typecheck unit bench docs clean system-packages soak

# One build at a time (flock): `make serve` and `make test` started together on a fresh
# clone would otherwise both build .venv and break each other's build. The one that waited
# finds the stamp newer than pyproject.toml and builds nothing.
$(STAMP): pyproject.toml
	flock $(VENV).lock sh -c '[ $(STAMP) -nt pyproject.toml ] || { \
	  $(PYTHON) -m venv $(VENV) && \
	  $(BIN)/pip install --quiet --upgrade pip && \
	  $(BIN)/pip install --quiet -e ".[dev]" && \
	  touch $(STAMP); }'

serve: $(STAMP)
	$(BIN)/statehub serve

lint: $(STAMP)
	$(BIN)/ruff check src tests conftest.py docs/hooks
	$(BIN)/ruff format --check src tests conftest.py docs/hooks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
