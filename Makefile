# Stageflow developer commands. Each target installs what it needs first (into .venv).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test test-unit services bench bench-scale chaos clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install Stageflow with its test tools

demo: install  ## run the e-commerce demo on the embedded default (no servers needed)
	@$(BIN)/stageflow demo

services:  ## start local RabbitMQ and PostgreSQL if they are installed but not running
	@deploy/local-services.sh

test: install services  ## the whole suite, on real RabbitMQ + PostgreSQL
	@$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install  ## only the tests that need no server
	@$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

bench: install services  ## throughput and latency on real RabbitMQ + PostgreSQL (prints one JSON line)
	@$(BIN)/python -m bench $(if $(QUICK),--quick,)

bench-scale: install services  ## per-transition cost vs history length and store size, worker memory, status reads
	@$(BIN)/python -m bench.scale $(if $(QUICK),--quick,)

chaos: install services  ## fault scenarios on real RabbitMQ + PostgreSQL (restarts them!); a table, then one JSON line
	@$(BIN)/python -m chaos $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
