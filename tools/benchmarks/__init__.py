"""Developer benchmarks (not installed): the runtime against Keras, tf.function, tf2onnx, OpenVINO and
LiteRT; cold start, memory, installed size; streaming; batch engines on Parquet; the public UCR/UEA
sets and their references; the native GRU graph's batch-1 latency against tf2onnx's Loop.

Used by tools/bench.py, tools/bench_stream.py, tools/bench_cluster.py, tools/ucr_table.py and
tools/coverage_table.py, which import it as ``benchmarks`` (tools/ is on ``sys.path`` when a script of
tools/ runs, and tests/conftest.py puts it there for the tests). Nothing in ``pipeline`` imports it.
"""
