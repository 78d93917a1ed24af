# Two commands do all set-up on a fresh Debian machine:
#   make demo   the whole system: venv, local MariaDB, schema, supervisord with every agent
#   make test   lint + the test suite against a real MariaDB (local one, or IPP_TEST_DSN)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: all venv db demo demo-stop test test-soak lint bench clean-var tools

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

demo: db
	@if [ "$$($(BIN)/ippctl runs list --stage chip --limit 1 --json)" = "[]" ]; then \
	  echo "generating a small synthetic survey (first demo run)"; \
	  $(BIN)/ippctl sim survey --exposures 3 --chips 4 --seed 1; \
	fi
	@# the second site (a mirror) and the distribution between them
	@IPP_LOCAL_DB_NAME=ipp_mirror $(BIN)/ippctl db upgrade
	@if [ "$$(IPP_LOCAL_DB_NAME=ipp_mirror $(BIN)/ippctl storage volume list --json)" = "[]" ]; then \
	  IPP_LOCAL_DB_NAME=ipp_mirror $(BIN)/ippctl storage volume add ipp_mirror.0 $(CURDIR)/var/storage/ipp_mirror/vol0; \
	fi
	@if ! $(BIN)/ippctl ds ls | grep -q '^ipp-dist[ |]'; then \
	  $(BIN)/ippctl ds product add ipp-dist --type dist --columns target_id,stage,stage_id,exp_name; \
	  $(BIN)/ippctl dist target add --dist-group survey --stage chip --product ipp-dist; \
	fi
	@if ! IPP_LOCAL_DB_NAME=ipp_mirror $(BIN)/ippctl dist source ls | grep -q '^ipp '; then \
	  IPP_LOCAL_DB_NAME=ipp_mirror $(BIN)/ippctl dist source add ipp --uri http://127.0.0.1:8081/ds --product ipp-dist; \
	fi
	@# a PSPS loading config over the survey's sky, its IN batch, its queue
	@if ! $(BIN)/ippctl psps config list --json | grep -q '"name": "demo"'; then \
	  $(BIN)/ippctl psps config set demo dvo_label=ipp.dvo dvo_location=$(CURDIR)/var/dvo/ipp \
	    ra_min=9 ra_max=11 dec_min=19 dec_max=21 box_size_deg=0.5; \
	fi
	@$(BIN)/ippctl psps init demo
	@$(BIN)/ippctl psps queue demo
	@echo
	@echo "IPP agents under supervisord (Ctrl-C stops everything cleanly)."
	@echo "  status page:  http://127.0.0.1:8083/   (Prometheus: /metrics)"
	@echo "  PSPS:         $(BIN)/ippctl metrics demo   |   $(BIN)/ippctl psps batches demo"
	@echo "  agent logs:   logs/<agent>.log (JSON lines), supervisord: logs/supervisord.log"
	@echo "  clients:      $(BIN)/ippctl clients list"
	@echo "  processes:    $(BIN)/supervisorctl -c supervisord.conf status"
	@echo "  try cleanup:  $(BIN)/ippctl runs set-state --stage chip --id 1 --state goto_cleaned"
	@echo "                $(BIN)/ippctl runs list --stage chip"
	@echo "  then update:  $(BIN)/ippctl runs request-update --stage chip --id 1 --wait"
	@echo "  DataStore:    curl http://127.0.0.1:8081/ds/ipp-dist/index.txt  (chip runs ship on their own)"
	@echo "  ship a warp:  $(BIN)/ippctl dist queue --stage warp --id 1 --product ipp-dist"
	@echo "  the mirror:   IPP_LOCAL_DB_NAME=ipp_mirror $(BIN)/ippctl runs list --stage chip"
	@echo
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/supervisord -n -c supervisord.conf

demo-stop:
	-$(BIN)/supervisorctl -c supervisord.conf shutdown
	-$(BIN)/ippctl db stop-local

lint: venv
	$(BIN)/ruff check agents shared sim tests bench
	$(BIN)/mypy agents shared sim bench

test: lint tools
	$(BIN)/pytest $(PYTEST_ARGS)

# Outside tools the PSPS output is checked with (fitsverify, STILTS); installed when root.
tools:
	@if ! command -v fitsverify >/dev/null || ! command -v stilts >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q fitsverify stilts >/dev/null \
	      || echo "could not install fitsverify/stilts: the tests that use them are skipped"; \
	  else echo "fitsverify/stilts missing (apt-get install fitsverify stilts): their tests are skipped"; fi; \
	fi

test-soak: venv
	$(BIN)/pytest -m soak $(PYTEST_ARGS)

bench: db
	$(BIN)/python -m bench

clean-var:
	-$(BIN)/supervisorctl -c supervisord.conf shutdown 2>/dev/null
	-$(BIN)/ippctl db stop-local
	rm -rf var
