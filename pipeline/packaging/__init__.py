"""Packaging: the order of the stages that turn a Keras model into a verified artifact folder.

convert (pipeline.export) -> stage files -> verify (pipeline.verification) -> report
(pipeline.report) -> publish, and the re-check of a shipped artifact; the gru-export and gru-verify CLIs.
Layer: packaging, above export, verification, report, keras source and runtime; only
pipeline.training imports it. Heavy side (onnx, Keras, tf2onnx through the layers below).

Public API (imported lazily, so ``import pipeline.packaging`` stays light):
    export_keras_model(model, X, out, ...)          a user's own Keras classifier -> verified artifact
    export_model(reference, spec, plan, out, ...)   the stages gru-build runs after training
    recheck(model_dir, keras_model, data=None)      gru-verify: does the artifact still equal the model?
    assert_artifact_matches(model_dir, keras_model) recheck for test suites (AssertionError)
"""

__all__ = ["export_keras_model", "export_model", "recheck", "assert_artifact_matches"]

_WHERE = {"export_keras_model": "own_model", "export_model": "exporter", "recheck": "recheck",
          "assert_artifact_matches": "recheck"}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"pipeline.packaging.{_WHERE[name]}"), name)
    raise AttributeError(name)
