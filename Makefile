# Quick start: `make serve` and `make test`. Both build their own virtual environment.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint typecheck unit bench clean system-packages soak

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/statehub serve

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
