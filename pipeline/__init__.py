"""Keras GRU classifier -> ONNX -> onnxruntime.

Layers, top to bottom; each imports only the ones below it (``make lint`` checks it with the
contracts in pyproject.toml; docs/design.md draws them):

    pipeline.training       the default task, data splits, the Keras model, its training loop; gru-build.
    pipeline.serve          beside training, but TF-free and on the runtime alone: gru-serve (the Open
                            Inference Protocol over REST and gRPC, batching, sequences, metrics, Ray Serve).
    pipeline.packaging      the order of the stages (convert -> stage -> verify -> report -> publish):
                            export_model, export_keras_model, recheck; gru-export, gru-verify.
    pipeline.export         Keras -> ONNX ModelProtos only (native GRU, unrolled, streaming, tf2onnx fallback).
    pipeline.verification   graphs or files plus a reference -> results (equivalence, stream, unrolled,
                            other runtimes); tolerances. A peer of export: neither imports the other.
    pipeline.report         metrics, plots and report.md (a peer of export and verification).
    pipeline.keras_source   load, describe and run a Keras model (float32, float64, chunk by chunk).
    pipeline.runtime        TF-free inference (numpy + onnxruntime + the fused kernel): Predictor,
                            streams, batch engines, gru-predict.

Shared modules at the bottom import only numpy, the standard library and each other:
    pipeline.errors         exception hierarchy
    pipeline.artifact       the exported/ folder contract (manifest, sha256)
    pipeline.datafiles      readers for NPZ, NPY, CSV (long layout), Parquet and UCR/UEA .ts files
    pipeline.preprocessing  the feature scaling applied before the model
    pipeline.settings       every build setting, declared once (standard library only)
    pipeline.progress       progress lines through logging, numbered stages
    pipeline.cli_common     one-line errors and exit codes for the CLIs

Benchmarks, coverage cases and doc generators are developer tools: tools/ and tests/, not installed.
"""

__version__ = "0.1.0"
