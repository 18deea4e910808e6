# Everything runs inside a virtualenv this Makefile creates; only python3 is needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-build-dev
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: help install export test bench lint coverage-table clean

help:
	@echo "make export          train on the default task, export, verify, write exported/"
	@echo "make test            run the whole test suite"
	@echo "make bench           runtime vs Keras, tf.function, tf2onnx graph; streaming (bench-results/)"
	@echo "make coverage-table  regenerate the native-GRU coverage table in README.md"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[build,dev]"
	@touch $@

install: $(STAMP)

export: $(STAMP)
	$(VENV)/bin/gru-build

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) tools/bench.py

coverage-table: $(STAMP)
	$(PY) tools/coverage_table.py --update-readme

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
