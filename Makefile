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

# onnxruntime-node for the cross-runtime check (tools/onnx_node_check.mjs): installed when npm exists,
# else the check reports "not run". ONNXRUNTIME_NODE_INSTALL=skip: the CPU binaries ship in the npm
# package; its install script would only fetch optional GPU libraries from elsewhere.
NODE_DIR   := tools/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed

.PHONY: help install export test bench lint coverage-table clean node-deps

help:
	@echo "make export          train on the default task, export, verify, write exported/"
	@echo "make test            run the whole test suite"
	@echo "make bench           runtime vs Keras, tf.function, tf2onnx, OpenVINO, LiteRT; cold start,"
	@echo "                     memory, install size, targets; streaming (bench-results/)"
	@echo "make lint            ruff (pyflakes + pycodestyle errors) over the whole tree"
	@echo "make coverage-table  regenerate the native-GRU coverage table in README.md"
	@echo "make node-deps       npm-install onnxruntime-node for the JavaScript cross-runtime check"

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

$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd $(NODE_DIR) && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the onnxruntime-node check will report 'not run'"; fi

node-deps: $(NODE_STAMP)

export: $(STAMP) $(NODE_STAMP)
	$(VENV)/bin/gru-build

test: $(BENCH_STAMP) $(NODE_STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

bench: $(BENCH_STAMP)
	$(PY) tools/bench.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

coverage-table: $(STAMP)
	$(PY) tools/coverage_table.py --update-readme

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info $(NODE_DIR)/node_modules
