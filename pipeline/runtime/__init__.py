"""TF-free runtime: load an exported model and predict with onnxruntime.

Owns: the public inference API. Imports: numpy, onnxruntime and light pipeline modules only;
nothing reachable from here imports tensorflow, keras, tf2onnx or onnx (a test proves it).

    from pipeline.runtime import Predictor
    p = Predictor.load("exported")
    p.predict_proba(X)   # (N, T, F) raw features -> (N,) probabilities of class 1
"""

from pipeline.errors import (
    ArtifactError,
    DataFormatError,
    InputError,
    IntegrityError,
    PipelineError,
    StreamError,
)
from pipeline.runtime.predictor import Predictor

__all__ = [
    "Predictor",
    "PipelineError",
    "InputError",
    "DataFormatError",
    "ArtifactError",
    "IntegrityError",
    "StreamError",
]
