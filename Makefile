# gridplan: `make run` serves the app on the embedded SpatiaLite database with demo data;
# `make test` runs the whole suite (SpatiaLite, a throwaway PostGIS cluster, headless Chromium).

PYTHON ?= /usr/bin/python3
VENV ?= .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app webmap
HOST ?= 127.0.0.1
PORT ?= 5000

# Debian packages: what the app needs, and what the tests need on top.
RUN_PACKAGES := python3 python3-venv libsqlite3-mod-spatialite
TEST_PACKAGES := $(RUN_PACKAGES) gdal-bin postgresql-15-postgis-3 chromium

.PHONY: run dev test setup setup-test lint bench clean

run: setup
	$(FLASK) init-db
	$(FLASK) demo --if-empty
	$(FLASK) demo-accounts
	@echo "gridplan on http://$(HOST):$(PORT)/ (background jobs run in a worker beside it)"
	$(FLASK) worker & worker=$$!; trap 'kill $$worker 2>/dev/null' EXIT INT TERM; \
	  $(BIN)/gunicorn --workers 2 --timeout 120 --bind $(HOST):$(PORT) --access-logfile - 'webmap.wsgi:app'

dev: setup  # Flask's reloading development server
	$(FLASK) run --debug --host $(HOST) --port $(PORT)

test: setup-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(VENV)/.run-installed
setup-test: $(VENV)/.test-installed

$(VENV)/.run-installed: requirements.txt
	scripts/system-packages.sh $(RUN_PACKAGES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.test-installed: requirements.txt requirements-dev.txt $(VENV)/.run-installed
	scripts/system-packages.sh $(TEST_PACKAGES)
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

lint: setup-test
	$(BIN)/ruff check .

bench: setup-test
	$(BIN)/python scripts/bench_io.py

clean:
	rm -rf $(VENV) instance .pytest_cache
