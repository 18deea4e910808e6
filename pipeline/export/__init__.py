"""Export: Keras model -> ONNX graphs (native GRU, unrolled, streaming, tf2onnx fallback), and publishing.

Heavy side (onnx, Keras, tf2onnx). May import the shared modules, ``pipeline.settings``,
``pipeline.verification``, ``pipeline.report`` and ``pipeline.runtime``; never ``pipeline.training``.
"""
