# Everything runs inside a virtualenv this Makefile creates; only python3 is needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-build-dev
# the bench extra (OpenVINO, LiteRT, matplotlib) adds ~10-20 s to a fresh install, so the tests
# get it too and the quick benchmark test exercises every peer
BENCH_STAMP := $(VENV)/.installed-build-dev-bench
# the parquet, ray and spark extras (pyarrow, Ray Data, PySpark: ~60-80 s, ~1.1 GB) so the tests
# run the batch engines for real; Spark also needs a JRE 17+ (target `java`)
CLUSTER_STAMP := $(VENV)/.installed-build-dev-bench-cluster
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: help install export test bench bench-cluster java lint coverage-table clean

help:
	@echo "make export          train on the default task, export, verify, write exported/"
	@echo "make test            run the whole test suite"
	@echo "make bench           runtime vs Keras, tf.function, tf2onnx, OpenVINO, LiteRT; cold start,"
	@echo "                     memory, install size, targets; streaming (bench-results/)"
	@echo "make bench-cluster   Parquet batch scoring: in-process Predictor vs gru-predict --engine local,"
	@echo "                     ray, spark at 1 and 2 workers, 1M sequences (bench-results/cluster.*)"
	@echo "make coverage-table  regenerate the native-GRU coverage table in README.md"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[build,dev]"
	@touch $@

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[build,dev,bench]"
	@touch $@

$(CLUSTER_STAMP): $(BENCH_STAMP)
	$(PY) -m pip install --quiet -e ".[build,dev,bench,parquet,ray,spark]"
	@touch $@

# Spark needs java: install Debian's JRE 17 when it is missing and apt-get can; never fail here
# (without java the Spark tests skip with the reason)
java:
	@command -v java >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null; } || \
		echo "note: java is missing and could not be installed; the Spark tests will skip"

install: $(STAMP)

export: $(STAMP)
	$(VENV)/bin/gru-build

test: $(CLUSTER_STAMP) java
	$(PY) -m pytest -q

bench: $(BENCH_STAMP)
	$(PY) tools/bench.py

bench-cluster: $(CLUSTER_STAMP) java
	$(PY) tools/bench_cluster.py

coverage-table: $(STAMP)
	$(PY) tools/coverage_table.py --update-readme

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
