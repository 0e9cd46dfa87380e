# gridplan: `make run` serves the app on the embedded SpatiaLite database with demo data;
# `make test` runs the whole suite (SpatiaLite, a throwaway PostGIS cluster, headless Chromium), then
# its PostGIS tests again on tables partitioned by district.

PYTHON ?= /usr/bin/python3
VENV ?= .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app webmap
HOST ?= 127.0.0.1
PORT ?= 5000

# Debian packages: what the app needs, and what the tests need on top.
RUN_PACKAGES := python3 python3-venv libsqlite3-mod-spatialite
# fonts-noto-cjk: headless Chromium draws Chinese text (screenshots, the browser tests' checks)
TEST_PACKAGES := $(RUN_PACKAGES) gdal-bin postgresql-15-postgis-3 chromium fonts-noto-cjk

# the message catalogues (webmap/translations/<locale>/LC_MESSAGES/messages.po, committed) and
# their compiled .mo (built here, not committed)
CATALOGUES := $(patsubst %.po,%.mo,$(wildcard webmap/translations/*/LC_MESSAGES/messages.po))

.PHONY: run dev test test-partitioned setup setup-test lint bench clean messages

run: setup
	$(FLASK) init-db
	$(FLASK) demo --if-empty
	$(FLASK) demo-accounts
	@echo "gridplan on http://$(HOST):$(PORT)/ (background jobs run in a worker beside it)"
	$(FLASK) worker & worker=$$!; trap 'kill $$worker 2>/dev/null' EXIT INT TERM; \
	  $(BIN)/gunicorn --workers 2 --timeout 120 --no-control-socket --bind $(HOST):$(PORT) --access-logfile - 'webmap.wsgi:app'

dev: setup  # Flask's reloading development server
	$(FLASK) run --debug --host $(HOST) --port $(PORT)

# one test process per core (each with its own PostGIS cluster and SpatiaLite template); a test
# file stays on one process, so its module fixtures (a browser, a served demo) are made once.
# `make test`: the whole suite, then the tests that touch PostGIS again on tables partitioned by
# district (init-db --partition-by-district; docs/scale.md); both run, either failing fails it.
TEST_PROCESSES ?= auto
PYTEST := $(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile
test: setup-test
	status=0; \
	$(PYTEST) $(PYTEST_ARGS) || status=$$?; \
	echo "--- the PostGIS tests again, on tables partitioned by district (GRIDPLAN_TEST_PARTITIONED=1)"; \
	GRIDPLAN_TEST_PARTITIONED=1 $(PYTEST) --postgis-only $(PYTEST_ARGS) || status=$$?; \
	exit $$status

test-partitioned: setup-test  # the second pass of `make test` alone
	GRIDPLAN_TEST_PARTITIONED=1 $(PYTEST) --postgis-only $(PYTEST_ARGS)

setup: $(VENV)/.run-installed $(CATALOGUES)
setup-test: $(VENV)/.test-installed $(CATALOGUES)

%.mo: %.po $(VENV)/.run-installed
	$(BIN)/pybabel compile -i $< -o $@

# after adding or changing a string: extract, merge into each catalogue (new msgids come in
# untranslated: translate them in webmap/translations/*/LC_MESSAGES/messages.po), compile.
# The catalogues are sorted by msgid, name source files without line numbers and carry no date, so that two branches that
# each add strings merge without conflicts over moved line numbers.
messages: $(VENV)/.run-installed
	$(BIN)/pybabel extract -F babel.cfg -k t -k N_ --no-wrap --sort-output --add-location=file \
	  --project gridplan --msgid-bugs-address "" -o webmap/translations/messages.pot .
	$(BIN)/pybabel update -i webmap/translations/messages.pot -d webmap/translations \
	  --no-wrap --no-fuzzy-matching --ignore-obsolete --ignore-pot-creation-date
	rm webmap/translations/messages.pot
	$(MAKE) $(CATALOGUES)

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
