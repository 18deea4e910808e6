"""Benchmarks: the runtime against Keras, tf.function, tf2onnx, OpenVINO and LiteRT; cold start, memory.

Nothing else in ``pipeline`` imports this package; ``tools/bench.py`` and its tests do.
"""
