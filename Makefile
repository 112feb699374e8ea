# One-command entry points. Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install demo test test-unit check lint format typecheck bench chaos chaos-short docs graphviz clean browser-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## make demo: run the demo on the embedded PostgreSQL (or on $DATABASE_URL)
demo: install
	$(PY) -m commandbus.demo

## make docs: the documentation site (MkDocs, API reference from the docstrings) in site/,
## built strictly: a broken link, page or reference fails the build
docs: install
	$(PY) -m pip install --quiet -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

## make browser-deps: Debian's Chromium for the console's browser tests (Playwright drives
## the system browser; it downloads none of its own)
browser-deps:
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)

## make graphviz: Graphviz's dot program, which renders process diagrams as SVG/PNG
## (`commandbus process diagram -o flow.svg`) and which their tests need (Debian)
graphviz:
	@command -v dot >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq graphviz)

## make test: the whole test suite (embedded PostgreSQL unless $DATABASE_URL is set)
test: install
	$(PY) -m pytest

## make test-unit: the fast tests that need no database
test-unit: install
	$(PY) -m pytest tests/unit

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: install
	$(VENV)/bin/mypy

## make check: lint + types + tests (what CI runs)
check: lint typecheck test

## make bench: every benchmark (figures are printed), each run even when one before it
## missed a target; the list of those that did comes last (exit status 1). benchmarks.peers
## installs PgQueuer into a virtualenv of its own under the temporary directory (not a
## project dependency); benchmarks.history preloads a million commands (a few minutes);
## benchmarks.soak sends 1,000,000 commands at 4,000/s (about 5 minutes; extra options in
## SOAK_ARGS, e.g. make bench SOAK_ARGS="--vacuum-every 10" on a server without autovacuum)
BENCHMARKS = throughput peers processes events history observability soak
bench: install
	@missed=""; \
	for name in $(BENCHMARKS); do \
		echo "== python -m benchmarks.$$name"; \
		extra=""; if [ "$$name" = soak ]; then extra="$(SOAK_ARGS)"; fi; \
		$(PY) -m benchmarks.$$name $$extra || missed="$$missed $$name"; \
	done; \
	if [ -n "$$missed" ]; then echo "targets missed (or a run was wrong) in:$$missed"; exit 1; fi

## make chaos: fault injection at full size on a throw-away PostgreSQL (kills, PG restarts);
## extra options in CHAOS_ARGS, e.g. make chaos CHAOS_ARGS="--seed 7 --json chaos.json"
chaos: install
	$(PY) -m chaos --commands 100000 --processes 10000 --send-seconds 120 --duration-limit 1800 $(CHAOS_ARGS)

## make chaos-short: the same, small enough for CI (well under 2 minutes)
chaos-short: install
	$(PY) -m chaos --commands 3000 --processes 300 --send-seconds 40 --kills 4 --duration-limit 75 $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) site .commandbus .mypy_cache .pytest_cache .ruff_cache .hypothesis
