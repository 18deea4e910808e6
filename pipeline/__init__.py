"""Keras GRU classifier -> ONNX -> onnxruntime.

Packages:
    pipeline.runtime   TF-free inference (numpy + onnxruntime): Predictor, streams, gru-predict.
    pipeline.build     heavy build stage (TensorFlow, Keras, tf2onnx, onnx): gru-build.

Light modules shared by both sit here and import only numpy and the standard library:
    pipeline.errors         exception hierarchy
    pipeline.artifact       the exported/ folder contract (manifest, sha256)
    pipeline.datafiles      readers for NPZ, NPY, CSV (long layout) and UCR/UEA .ts files
    pipeline.preprocessing  the feature scaling applied before the model
"""

__version__ = "0.1.0"
