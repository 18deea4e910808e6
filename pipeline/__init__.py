"""Keras GRU classifier -> ONNX -> onnxruntime.

Packages:
    pipeline.runtime        TF-free inference (numpy + onnxruntime): Predictor, streams, gru-predict.
    pipeline.training       the default task, data splits, the Keras model, its training loop; gru-build.
    pipeline.export         Keras -> ONNX (native GRU, unrolled, streaming, tf2onnx fallback); staging and
                            atomic publish of the artifact folder.
    pipeline.verification   Keras against onnxruntime for every shipped graph; tolerances; coverage cases.
    pipeline.report         metrics, plots and report.md.
    pipeline.benchmarks     make bench: the runtime against its peers (nothing else imports it).

Light modules shared by all sit here and import only numpy and the standard library:
    pipeline.errors         exception hierarchy
    pipeline.artifact       the exported/ folder contract (manifest, sha256)
    pipeline.datafiles      readers for NPZ, NPY, CSV (long layout) and UCR/UEA .ts files
    pipeline.preprocessing  the feature scaling applied before the model
    pipeline.settings       every build setting, declared once (standard library only)
    pipeline.cli_common     one-line errors and exit codes for the CLIs
"""

__version__ = "0.1.0"
