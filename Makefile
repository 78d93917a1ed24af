# Two commands do all set-up on a fresh Debian machine:
#   make demo   the whole system: venv, local MariaDB, schema, supervisord with every agent
#   make test   lint + the test suite against a real MariaDB (local one, or IPP_TEST_DSN)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: all venv db demo demo-stop test test-soak test-faults test-cluster lint bench bench-galera clean-var tools

all: test

# Debian ships python3-venv separately; install it when missing and we are root.
$(STAMP): pyproject.toml
	@if ! $(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null \
	    || ! $(PYTHON) -m venv --help >/dev/null 2>&1 \
	    || ! $(PYTHON) -c 'import ensurepip' >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv python3-dev; \
	  else \
	    echo "need Python >= 3.11 with venv: sudo apt-get install -y python3 python3-venv" >&2; exit 1; \
	  fi; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The database: the private local server unless IPP_DB_DSN names another one.
db: venv
	@mkdir -p var logs
	@if [ -z "$$IPP_DB_DSN" ]; then $(BIN)/ippctl db start-local; fi
	$(BIN)/ippctl db upgrade

# make demo: both sites, a small survey, a loading config, every agent and the PSPS stand-in
# under supervisord, and a live one-screen summary until Ctrl-C (which stops everything).
demo: db
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ippctl demo

demo-stop:
	-$(BIN)/supervisorctl -c supervisord.conf shutdown
	-$(BIN)/ippctl db stop-local

lint: venv
	$(BIN)/ruff check agents shared sim tests bench
	$(BIN)/ruff format --check agents shared sim tests bench
	$(BIN)/mypy agents shared sim bench tests
	$(BIN)/lint-imports

test: lint tools
	$(BIN)/pytest $(PYTEST_ARGS)

# Outside tools the PSPS output is checked with (fitsverify, STILTS), pigz (an anchor of the
# cleanup benchmark) and the browser the console's tests drive (Debian's chromium and
# chromium-driver); installed when root, else their tests are skipped and say why.
tools:
	@if ! command -v fitsverify >/dev/null || ! command -v stilts >/dev/null \
	    || ! command -v pigz >/dev/null || ! command -v chromium >/dev/null \
	    || ! command -v chromedriver >/dev/null || ! command -v igzip >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q fitsverify stilts pigz chromium chromium-driver isal >/dev/null \
	      || echo "could not install fitsverify/stilts/pigz/chromium/isal: the tests and benchmarks that use them are skipped"; \
	  else echo "fitsverify/stilts/pigz/chromium/igzip missing (apt-get install fitsverify stilts pigz chromium chromium-driver isal): their tests and benchmarks are skipped"; fi; \
	fi

test-soak: venv
	$(BIN)/pytest -m soak $(PYTEST_ARGS)

# The full fault campaign: the demo workload with 20+ SIGKILLs, a database restart, a
# failing ODM and a volume outage, on a private MariaDB of its own (about 5 minutes).
test-faults: venv
	$(BIN)/pytest -m faults -s $(PYTEST_ARGS)

# Scale-out: three hosts in network namespaces (root) with two link cuts, and the demo on a
# three-node Galera cluster with a node kill (about 2 minutes here). See docs/scaling.md.
test-cluster: venv
	$(BIN)/pytest -m cluster -s $(PYTEST_ARGS) tests/test_cluster.py

# Claims on a local three-node Galera cluster (one node vs three, a node kill): bench/results/galera.md
bench-galera: venv
	$(BIN)/python -m bench.galera

bench: db tools
	$(BIN)/python -m bench

clean-var:
	-$(BIN)/supervisorctl -c supervisord.conf shutdown 2>/dev/null
	-$(BIN)/ippctl db stop-local
	rm -rf var
