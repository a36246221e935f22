# The two commands a fresh machine needs (see README):
#   make demo   -- set up, then generate attack traffic and detect it (embedded DuckDB store)
#   make test   -- set up, start real Kafka/Elasticsearch/OpenSearch on loopback, run every test, stop them
VENV := .venv
PY := $(VENV)/bin/python
# The interpreter the venv is made from (bench/README: its build moves every figure).
PYTHON ?= python3

.PHONY: demo test unit bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/gatewatch demo

test: $(VENV)/.installed
	bash scripts/test.sh

unit: $(VENV)/.installed
	$(PY) -m pytest -q --ignore=tests/integration

bench: $(VENV)/.installed
	$(PY) bench/bench_replay.py
