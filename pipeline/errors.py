"""Exception types shared by the build stage and the runtime.

Owns: the exception hierarchy. Imports: nothing but the standard library.

Every error a user can meet is a ``PipelineError``; its message is one line that
says what was expected and what was received. The CLIs print ``error: <message>``
and exit with ``exit_code``; they never show a traceback for these.

    PipelineError                 base; exit code 1
    ├── InputError                bad input to the runtime or a data file (exit 2)
    │   ├── NonFiniteInput        the fused kernel met NaN/Inf in the scaled input (exit 2)
    │   └── DataFormatError       a data file that cannot be read or parsed (exit 2)
    ├── ArtifactError             exported folder missing, damaged or untrusted (exit 3)
    │   └── IntegrityError        model bytes do not match the manifest sha256, or manifest.json
    │                             disagrees with the (hashed) graph's metadata_props (exit 3)
    ├── ConfigError               an invalid build or runtime setting (exit 2)
    ├── ExportError               ONNX conversion failed or is unsupported (exit 4)
    ├── VerificationError         Keras and ONNX disagree beyond tolerance (exit 5)
    └── StreamError               misuse of a stream (closed, refused model) (exit 2)

Input and data-file errors (``InputError`` and its subclasses) also say where the bad input is, as
attributes, so callers need not parse the message (each is None when the raiser does not know it):

    file      the data file (str)
    line      1-based line of a text file (CSV, .ts, stdin)
    sample    the sample: its index (int) in an array or batch, or its id (str) in a file
    timestep  the timestep (int; in a long layout, the value of ``t``)
    feature   the feature: its index (int) or column name (str)

``without_sample()`` gives the message for a report that already names the sample (the batch
``_errors`` table, one row per sample id): the raiser's wording without the sample's index.
Artifact errors about one manifest entry name it in ``field`` (e.g. ``"threshold"``).
"""

from __future__ import annotations

from typing import Any, Optional, Union

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
    """Input data has the wrong rank, shape, dtype or values (NaN, Inf, empty).

    Args:
        message: one line, what was expected and what was received (``str(error)``).
        file, line, sample, timestep, feature: where the bad input is, when known (see the module
            docstring); they are also attributes.
        sample_message: the same message without the sample's index, for ``without_sample``; give
            it whenever ``message`` names a sample index.
    """

    exit_code = 2
    FIELDS = ("file", "line", "sample", "timestep", "feature")

    def __init__(self, message: str, *, file: Any = None, line: Optional[int] = None,
                 sample: Union[int, str, None] = None, timestep: Union[int, float, None] = None,
                 feature: Union[int, str, None] = None, sample_message: Optional[str] = None) -> None:
        super().__init__(message)
        self.file: Optional[str] = None if file is None else str(file)
        self.line = line
        self.sample = sample
        self.timestep = timestep
        self.feature = feature
        self.sample_message: Optional[str] = None if sample_message is None else " ".join(str(sample_message).split())

    @property
    def fields(self) -> dict[str, Any]:
        """The location fields that are known, e.g. ``{"sample": 3, "timestep": 7, "feature": 2}``."""
        return {k: getattr(self, k) for k in self.FIELDS if getattr(self, k) is not None}

    def without_sample(self) -> str:
        """The message for a report that names the sample itself: ``sample_message`` when the
        raiser gave one, else the message (which then names no sample index)."""
        return self.sample_message if self.sample_message is not None else str(self)


class NonFiniteInput(InputError):
    """The fused GRU kernel met a NaN or an infinity in the scaled model input (the runtime then
    runs the exact input check, which names the value)."""


class DataFormatError(InputError):
    """A data file is missing, unreadable, of an unknown format, or malformed."""


class ArtifactError(PipelineError):
    """The exported folder is missing, incomplete, corrupted or of an unknown schema.

    ``field``: the manifest entry the error is about (e.g. ``"threshold"``), when it is about one.
    """

    exit_code = 3

    def __init__(self, message: str, *, field: Optional[str] = None) -> None:
        super().__init__(message)
        self.field = field


class IntegrityError(ArtifactError):
    """model.onnx does not match the sha256 recorded in manifest.json, or manifest.json disagrees with
    the decision fields model.onnx carries in its metadata_props (which that sha256 covers)."""


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
