# Everything runs inside a virtualenv this Makefile creates; only python3 is needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-build-dev
# the tests also get the bench extra (OpenVINO, LiteRT, matplotlib: ~10-20 s), so the quick benchmark
# test exercises every peer, and the backends extra (JAX, PyTorch CPU: ~100 s), so models saved under
# other Keras backends are exported in the tests
BENCH_STAMP := $(VENV)/.installed-build-dev-bench
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: help install export test bench lint coverage-table clean

help:
	@echo "make export          train on the default task, export, verify, write exported/"
	@echo "make test            run the whole test suite"
	@echo "make bench           runtime vs Keras, tf.function, tf2onnx, OpenVINO, LiteRT; cold start,"
	@echo "                     memory, install size, targets; streaming (bench-results/)"
	@echo "make lint            ruff (pyflakes + pycodestyle errors) over the whole tree"
	@echo "make coverage-table  regenerate the native-GRU coverage table in README.md"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml pipeline/runtime/fused/gru_kernel.c | $(PY)
	$(PY) -m pip install --quiet -e ".[build,dev]"
	@touch $@

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[build,dev,bench,backends]"
	@touch $@

install: $(STAMP)

export: $(STAMP)
	$(VENV)/bin/gru-build

test: $(BENCH_STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

bench: $(BENCH_STAMP)
	$(PY) tools/bench.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

coverage-table: $(STAMP)
	$(PY) tools/coverage_table.py --update-readme

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
