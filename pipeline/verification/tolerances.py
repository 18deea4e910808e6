"""Every tolerance the verification applies, in one table.

Owns: the default tolerances of the Keras-vs-ONNX checks. Imports: nothing.
A failed check is always an error; these numbers are never loosened to get a pass.
"""

EQUIVALENCE_ATOL = 1e-5  # max |p_keras - p_onnx| on probabilities, every family (settings: verify.atol)
STREAM_ATOL = 1e-6       # max |Keras - stream.onnx| per chunk when no build setting is given
                         # (probabilities; states relative above 1); builds use verify.atol
CHUNKED_VS_WHOLE_ATOL = 1e-5  # max |Keras run chunk by chunk - the model on whole sequences| (Keras vs Keras)
STRATEGY_ATOL = 1e-6     # max |unrolled graph - native graph| for the runtime to switch forms by itself
CONSUMER_ATOL = 1e-5     # max |p_keras - p| of model.onnx run alone by another runtime (onnxruntime Python,
                         # OpenVINO, onnxruntime-node) on the reference rows

TOLERANCES = {
    "equivalence": EQUIVALENCE_ATOL,
    "stream": STREAM_ATOL,
    "chunked_vs_whole": CHUNKED_VS_WHOLE_ATOL,
    "strategy": STRATEGY_ATOL,
    "consumers": CONSUMER_ATOL,
}
