"""Every tolerance the verification applies besides the build setting ``verify.atol``, in one table.

Owns: the fixed tolerances of the Keras-vs-ONNX checks. The equivalence tolerance itself is a build
setting, declared once in pipeline.settings (``VerifyConfig.atol``, default 1e-5).
Layer: verification. Imports: nothing. A failed check is always an error; these numbers are never
loosened to get a pass.
"""

STREAM_ATOL = 1e-6       # max |Keras - stream.onnx| per chunk when no build setting is given
                         # (probabilities; states relative above 1); builds use verify.atol
CHUNKED_VS_WHOLE_ATOL = 1e-5  # max |Keras run chunk by chunk - the model on whole sequences| (Keras vs Keras)
STRATEGY_ATOL = 1e-6     # max |unrolled graph - native graph| for the runtime to switch forms by itself
CONSUMER_ATOL = 1e-5     # max |p_keras - p| of model.onnx run alone by another runtime (onnxruntime Python,
                         # OpenVINO, onnxruntime-node) on the reference rows
