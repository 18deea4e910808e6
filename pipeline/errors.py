"""Exception types shared by the build stage and the runtime.

Owns: the exception hierarchy. Imports: nothing but the standard library.

Every error a user can meet is a ``PipelineError``; its message is one line that
says what was expected and what was received. The CLIs print ``error: <message>``
and exit with ``exit_code``; they never show a traceback for these.

    PipelineError                 base; exit code 1
    ├── InputError                bad input to the runtime or a data file (exit 2)
    │   └── DataFormatError       a data file that cannot be read or parsed (exit 2)
    ├── ArtifactError             exported folder missing, damaged or untrusted (exit 3)
    │   └── IntegrityError        model bytes do not match the manifest sha256 (exit 3)
    ├── ConfigError               an invalid build or runtime setting (exit 2)
    ├── ExportError               ONNX conversion failed or is unsupported (exit 4)
    ├── VerificationError         Keras and ONNX disagree beyond tolerance (exit 5)
    └── StreamError               misuse of a stream (closed, refused model) (exit 2)
"""

from __future__ import annotations

__all__ = [
    "PipelineError",
    "InputError",
    "DataFormatError",
    "ArtifactError",
    "IntegrityError",
    "ConfigError",
    "ExportError",
    "VerificationError",
    "StreamError",
]


class PipelineError(Exception):
    """Base class of every error this project raises on purpose."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        # Keep messages to one line: the CLIs print them as-is.
        super().__init__(" ".join(str(message).split()))


class InputError(PipelineError, ValueError):
    """Input data has the wrong rank, shape, dtype or values (NaN, Inf, empty)."""

    exit_code = 2


class NonFiniteInput(InputError):
    """The fused GRU kernel met a NaN or an infinity in the scaled model input (the runtime then
    runs the exact input check, which names the value)."""


class DataFormatError(InputError):
    """A data file is missing, unreadable, of an unknown format, or malformed."""


class ArtifactError(PipelineError):
    """The exported folder is missing, incomplete, corrupted or of an unknown schema."""

    exit_code = 3


class IntegrityError(ArtifactError):
    """model.onnx does not match the sha256 recorded in manifest.json."""


class ConfigError(PipelineError, ValueError):
    """A build or runtime setting is invalid."""

    exit_code = 2


class ExportError(PipelineError):
    """The Keras model could not be converted to ONNX."""

    exit_code = 4


class VerificationError(PipelineError):
    """Keras and onnxruntime outputs disagree beyond the tolerance."""

    exit_code = 5


class StreamError(PipelineError):
    """A stream was used wrongly (closed, or the model cannot stream)."""

    exit_code = 2
