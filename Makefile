# Everything runs inside a virtualenv this Makefile creates; only python3 is needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Install stages. Each prints one line (what, why, how big, how long: measured on the 2-core VM from its
# local wheel store; downloads add to it), then pip's own progress: no --quiet, so a line per package,
# a bar per download and, on a terminal, a bar for the install step (CI logs get the bars' last line).
# The build and dev extras (TensorFlow-CPU, Keras, tf2onnx, onnx, matplotlib, pytest, hypothesis, ruff)
# and the fused C kernel: ~1.8 GB, ~1 min; make export, lint and check need no more
STAMP  := $(VENV)/.installed-build-dev
# openvino alone (~180 MB, ~10 s; the bench extra has it too) for make export's OpenVINO consumer check,
# which would otherwise record "not run" where the committed exported/ says "ok"
OPENVINO_STAMP := $(VENV)/.installed-openvino
# the tests also get the bench extra (OpenVINO, LiteRT, matplotlib), so the quick benchmark test
# exercises every peer, and the backends extra (JAX, PyTorch CPU), so models saved under other Keras
# backends are exported in the tests: +1.6 GB, ~70 s
BENCH_STAMP := $(VENV)/.installed-build-dev-bench
# the parquet, ray and spark extras (pyarrow, Ray Data, PySpark: +1.0 GB, ~40 s) so the tests
# run the batch engines for real; Spark also needs a JRE 17+ (target `java`); and the serve extras
# (uvicorn, grpcio, prometheus-client, Ray Serve, Triton's clients: +60 MB, ~10 s) for gru-serve's tests
CLUSTER_STAMP := $(VENV)/.installed-build-dev-bench-cluster
# the ucr extra (aeon, pyts, with numba and scikit-learn: the public sets' data files and 1-NN DTW,
# +0.3 GB, ~45 s) for tools/ucr_table.py
UCR_STAMP := $(VENV)/.installed-build-dev-ucr
# make test's install: every extra above in one pip call (one resolve, one build of the kernel, instead of
# four stages that each resolve again and rebuild the editable install); marks the stages above done
TEST_EXTRAS := build,dev,bench,backends,parquet,ray,spark,serve,serve-ray,serve-test,ucr
TEST_STAMP := $(VENV)/.installed-test
# The versions exported/ records (manifest.json "versions" and consumers; matplotlib's is in the PNGs)
# are pinned in every install stage, so make export rewrites the committed files unchanged whatever
# extras the venv holds (numba, in the ucr extra, caps numpy below 2.4: 2.4.x without it) and whatever
# newer wheels appear. Raising one is a deliberate change: edit it here, make export, commit exported/.
PINS := numpy==2.3.5 tensorflow-cpu==2.21.0 keras==3.15.1 tf2onnx==1.17.0 onnx==1.23.2 onnxruntime==1.32.0 \
        openvino==2026.4.1 matplotlib==3.11.2
PINS_FILE := $(VENV)/pins.txt
# PYTHONWARNINGS drops the two notices setuptools prints at every editable install, both expected here:
# [[tool.setuptools.ext-modules]] (the fused kernel; the top level takes no setup.py) "is still
# *experimental*", and "Editable installation" warns that folders named like the package may shadow it
# (this checkout is the package). The build backend's process inherits the variable; pip passes its
# other warnings on as before.
PIP_INSTALL := PYTHONWARNINGS='ignore:`[tool.setuptools.ext-modules]`,ignore:Editable installation' \
               $(PY) -m pip install --progress-bar on -c $(PINS_FILE)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONDONTWRITEBYTECODE = 1

# onnxruntime-node for the cross-runtime check (tools/onnx_node_check.mjs): installed when npm exists,
# else the check reports "not run". ONNXRUNTIME_NODE_INSTALL=skip: the CPU binaries ship in the npm
# package; its install script would only fetch optional GPU libraries from elsewhere.
NODE_DIR   := tools/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed

.PHONY: help install export test bench bench-serve bench-cluster java lint coverage-table ucr-table clean node-deps examples check FORCE

help:
	@echo "make export          train on the default task, export, verify, write exported/"
	@echo "make test            run the whole test suite"
	@echo "make check           lint and the quick tests: no training, TensorFlow, Ray, Spark or venvs (~1.5 min)"
	@echo "make kernel-check    the fused kernel's tests under AddressSanitizer+UBSan and ThreadSanitizer (~75 s)"
	@echo "make bench           runtime vs Keras, tf.function, tf2onnx, OpenVINO, LiteRT; cold start,"
	@echo "                     memory, install size, targets; streaming (kernel and stream.onnx); variable-length"
	@echo "                     batches vs OpenVINO on the two-input graph; token models, fixed and with"
	@echo "                     lengths: the kernel's fold vs gather paths vs onnxruntime and OpenVINO (bench-results/)"
	@echo "make lint            ruff (pyflakes + pycodestyle errors) over the whole tree, and the layer"
	@echo "                     contracts of pyproject.toml (lint-imports: imports point one way down)"
	@echo "make bench-cluster   Parquet batch scoring: in-process Predictor vs gru-predict --engine local,"
	@echo "                     ray, spark at 1 and 2 workers, 1M sequences (bench-results/cluster.*)"
	@echo "make bench-serve     gru-serve vs MLServer, a naive server and the in-process Predictor (docs/serving.md)"
	@echo "make coverage-table  regenerate the native-GRU coverage table in docs/export-coverage.md"
	@echo "make ucr-table       accuracy on eight public UCR/UEA sets vs a plain GRU and 1-NN DTW (docs/accuracy.md)"
	@echo "make node-deps       npm-install onnxruntime-node for the JavaScript cross-runtime check"
	@echo "make examples        write the inputs of the README's examples into build/examples/ (ucr extra)"

$(PY):
	@echo "== $(VENV): a new virtualenv and the latest pip (~10 s)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# rewritten only when PINS change, so other edits of this Makefile reinstall nothing
$(PINS_FILE): FORCE | $(PY)
	@printf '%s\n' $(PINS) > $@.new && { cmp -s $@.new $@ && rm $@.new || mv $@.new $@; }

# every source of the fused kernel: the editable install rebuilds it in place
$(STAMP): pyproject.toml $(wildcard pipeline/runtime/fused/*.c pipeline/runtime/fused/*.h) $(PINS_FILE) | $(PY)
	@echo "== [build,dev] extras: TensorFlow-CPU, Keras, tf2onnx, onnx, onnxruntime, pytest, ruff, and the fused C kernel (~1.8 GB, ~1 min)"
	$(PIP_INSTALL) -e ".[build,dev]"
	@touch $@

$(OPENVINO_STAMP): $(STAMP)
	@echo "== openvino for the OpenVINO consumer check of make export (~180 MB, ~10 s)"
	$(PIP_INSTALL) openvino
	@touch $@

$(BENCH_STAMP): $(STAMP)
	@echo "== [bench,backends] extras for the tests: OpenVINO, LiteRT, JAX, PyTorch CPU (+1.6 GB, ~70 s)"
	$(PIP_INSTALL) -e ".[build,dev,bench,backends]"
	@touch $@

$(CLUSTER_STAMP): $(BENCH_STAMP)
	@echo "== [parquet,ray,spark,serve] extras for the batch-engine and server tests: pyarrow, Ray Data and Serve, PySpark, uvicorn, grpcio, tritonclient (+1.1 GB, ~50 s)"
	$(PIP_INSTALL) -e ".[build,dev,bench,backends,parquet,ray,spark,serve,serve-ray,serve-test]"
	@touch $@

$(UCR_STAMP): $(STAMP)
	@echo "== [ucr] extra for the UCR/UEA tests and tools: aeon, pyts, numba, scikit-learn (+0.3 GB, ~45 s)"
	$(PIP_INSTALL) -e ".[build,dev,ucr]"
	@touch $@

$(TEST_STAMP): pyproject.toml $(wildcard pipeline/runtime/fused/*.c pipeline/runtime/fused/*.h) $(PINS_FILE) | $(PY)
	@echo "== every extra the tests use, in one install: [$(TEST_EXTRAS)] (~4.6 GB, ~4 min)"
	$(PIP_INSTALL) -e ".[$(TEST_EXTRAS)]"
	@touch $(STAMP) $(OPENVINO_STAMP) $(BENCH_STAMP) $(CLUSTER_STAMP) $(UCR_STAMP) $@

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

export: $(STAMP) $(OPENVINO_STAMP) $(NODE_STAMP)
	$(VENV)/bin/gru-build

test: $(TEST_STAMP) $(NODE_STAMP) java kernel-check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# The fused kernel under AddressSanitizer + UBSan, then ThreadSanitizer: gcc builds its sources (pyproject's
# ext-module) into two separate libraries, tests/runtime/test_fused.py and test_fused_streams.py run against each with the sanitizer's
# runtime preloaded, and any report fails (tests/runtime/test_kernel_sanitizers.py; ~75 s on the 2-core VM)
.PHONY: kernel-check
kernel-check: $(STAMP)
	GRU_KERNEL_CHECK=1 $(PY) -m pytest -q tests/runtime/test_kernel_sanitizers.py

bench: $(BENCH_STAMP)
	$(PY) tools/bench.py
	$(PY) tools/bench_lengths.py > bench-results/lengths.md && cat bench-results/lengths.md
	$(PY) tools/bench_tokens.py > bench-results/tokens.md && cat bench-results/tokens.md
	$(PY) tools/bench_tokens.py --lengths > bench-results/tokens_lengths.md && cat bench-results/tokens_lengths.md

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# lint, then the quick tier: pytest --quick (tests/conftest.py sorts the tests by their imports and
# markers: no TensorFlow/Keras, Ray, Spark, training or virtualenvs; ~80 s on the 2-core VM under load)
check: lint
	$(PY) -m pytest -q --quick

# gru-serve vs MLServer (its own virtualenv in build/, created once), a naive server and the in-process
# Predictor; two runs side by side (~6 min on the 2-core VM); --update-docs writes docs/serving.md
bench-serve: $(CLUSTER_STAMP)
	$(PY) tools/bench_serve.py --update-docs

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
