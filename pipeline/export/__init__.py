"""Export: Keras model -> ONNX ModelProtos only (native GRU, unrolled, streaming, tf2onnx fallback).

Every shipped graph takes raw features (``scaling`` writes the standardization into it) and carries
its metadata (``metadata``): it runs in any ONNX runtime without manifest.json. Nothing here verifies
or publishes: pipeline.verification checks these graphs and pipeline.packaging orders the stages.

Layer: export, a peer of verification and report (neither imports the other). Heavy side (onnx,
Keras, tf2onnx). May import the shared modules and pipeline.keras_source; never pipeline.verification,
pipeline.packaging or pipeline.training.
"""
