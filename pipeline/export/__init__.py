"""Export: Keras model -> ONNX graphs (native GRU, unrolled, streaming, tf2onnx fallback), and publishing.

Every shipped graph takes raw features (``scaling`` writes the standardization into it) and carries
its metadata (``metadata``): it runs in any ONNX runtime without manifest.json.

Heavy side (onnx, Keras, tf2onnx). May import the shared modules, ``pipeline.settings``,
``pipeline.verification``, ``pipeline.report`` and ``pipeline.runtime``; never ``pipeline.training``.

Public API (imported lazily, so ``import pipeline.export`` stays light):
    export_keras_model(model, X, out, ...)   a user's own Keras classifier -> verified artifact
    export_model(model, sample, out, ...)    the stage gru-build runs after training
"""

__all__ = ["export_keras_model", "export_model"]


def __getattr__(name: str):
    if name == "export_keras_model":
        from pipeline.export.own_model import export_keras_model

        return export_keras_model
    if name == "export_model":
        from pipeline.export.exporter import export_model

        return export_model
    raise AttributeError(name)
