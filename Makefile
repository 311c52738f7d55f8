# Stageflow developer commands. Each target installs what it needs first (into .venv).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# `make bench` compares Stageflow with Celery, Dramatiq and hand-written aio-pika: those peers live in
# their own environment (Stageflow + bench/requirements.txt), never in the project's dependencies.
BENCH_VENV := .bench-venv
BENCH_STAMP := $(BENCH_VENV)/.installed-stamp

.PHONY: install bench-env fuzz-env fuzz lock demo lint test test-unit services bench bench-scale chaos clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev,fast]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install Stageflow with its test tools

$(BENCH_STAMP): pyproject.toml bench/requirements.txt
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	@$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	@$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[fast]' -r bench/requirements.txt
	@touch $(BENCH_STAMP)

bench-env: $(BENCH_STAMP)  ## create .bench-venv: Stageflow plus the pinned peers `make bench` compares with

FUZZ_VENV := .fuzz-venv
$(FUZZ_VENV)/.installed-stamp: pyproject.toml fuzz/requirements.txt
	@test -x $(FUZZ_VENV)/bin/python || $(PYTHON) -m venv $(FUZZ_VENV)
	@$(FUZZ_VENV)/bin/python -m pip install --quiet --upgrade pip
	@$(FUZZ_VENV)/bin/python -m pip install --quiet -e '.[fast]' -r fuzz/requirements.txt
	@touch $(FUZZ_VENV)/.installed-stamp

fuzz-env: $(FUZZ_VENV)/.installed-stamp  ## create .fuzz-venv: Stageflow plus schemathesis, for `make fuzz`

fuzz: fuzz-env services  ## fuzz a real gateway from its OpenAPI schema (schemathesis, bounded): no 5xx, only documented answers
	@$(FUZZ_VENV)/bin/python -m fuzz.gateway

lock:  ## regenerate requirements.lock (the Docker image's exact, hashed dependencies) from pyproject.toml
	@test -x .lock-venv/bin/pip-compile || ($(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install --quiet pip-tools)
	@.lock-venv/bin/pip-compile --quiet --strip-extras --generate-hashes --no-emit-index-url --no-emit-find-links \
		--no-emit-trusted-host --extra fast --output-file requirements.lock pyproject.toml

demo: install  ## run the e-commerce demo on the embedded default (no servers needed)
	@$(BIN)/stageflow demo

services:  ## start local RabbitMQ and PostgreSQL if they are installed but not running
	@deploy/local-services.sh

lint: install  ## the floor: ruff's lint rules over the repository, mypy (strict on framework/); config in pyproject.toml
	@status=0; $(BIN)/ruff check . || status=1; $(BIN)/mypy || status=1; exit $$status  # both report, then fail

# lint first: a run that does not pass the floor does not start the servers or the suite.
test: lint bench-env services  ## lint, then the whole suite, on real RabbitMQ + PostgreSQL (tests/test_bench.py uses .bench-venv)
	@$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install  ## only the tests that need no server
	@$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

bench: bench-env services  ## Stageflow (one node, and a 3-node cluster) vs Celery, Dramatiq, hand-written aio-pika: a table of medians, then one JSON line; SYSTEMS=a,b filters
	@$(BENCH_VENV)/bin/python -m bench $(if $(QUICK),--quick,) $(if $(SYSTEMS),--systems $(SYSTEMS),)

bench-scale: install services  ## per-transition cost vs history length and store size, worker memory, status reads
	@$(BIN)/python -m bench.scale $(if $(QUICK),--quick,)

chaos: install services  ## fault scenarios on real RabbitMQ + PostgreSQL (restarts them!); a table, then one JSON line
	@$(BIN)/python -m chaos $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) $(BENCH_VENV) *.egg-info .pytest_cache
