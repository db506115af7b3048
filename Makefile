# loyalflow: `make demo` and `make test` are all you need; everything else installs itself.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

export AIRFLOW_HOME := $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__LOGGING__LOGGING_LEVEL ?= WARNING
export LOYALFLOW_HOME := $(CURDIR)

.PHONY: install demo airflow test lint clean lock browser

install: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip==26.3"
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

$(AIRFLOW_HOME)/airflow.db: | $(STAMP)
	$(BIN)/airflow db migrate > /dev/null

demo: $(STAMP) $(AIRFLOW_HOME)/airflow.db
	$(BIN)/loyalflow demo
	$(BIN)/loyalflow report --as-of 2026-11-20

airflow: $(STAMP)  ## the Airflow UI on this project: free port, .airflow/ home, demo data; Ctrl-C stops it
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m loyalflow.airflow.standalone $(AIRFLOW_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check dags plugins tests tools
	$(BIN)/mypy plugins/loyalflow

test: lint browser
	$(BIN)/pytest

browser:  ## headless Chromium + chromedriver from Debian, for the preference-centre browser test
	test -x /usr/bin/chromium || { apt-get update && apt-get install -y chromium chromium-driver; }

lock: $(STAMP)  ## regenerate constraints.txt from the working install
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^loyalflow' > constraints.txt

clean:
	rm -rf out .airflow

.PHONY: chaos bench-send bench

chaos: $(STAMP)  ## kill `loyalflow run` at random points; prove no duplicate and no lost message
	$(BIN)/python -m tools.chaos

bench-send: $(STAMP)  ## sustained SendGrid sending rate against the stand-in (50 ms latency)
	$(BIN)/python -m tools.bench_send

bench: $(STAMP)  ## rendering and end-to-end pipeline throughput against same-run baselines
	$(BIN)/python -m tools.bench_pipeline

.PHONY: bench-segments

bench-segments: $(STAMP)  ## every segment's SQL vs a full scan of orders, 1M customers / 3M orders (SQLite), with and without indexes
	$(BIN)/python -m tools.bench_segments
