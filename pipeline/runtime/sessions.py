"""onnxruntime sessions: the one place that sets session options, opens sessions and maps load errors.

Owns: ``session_options`` (intra-op threads, optimisation level, log severity, execution mode),
``open_session`` (a CPU session from a file path or from serialized model bytes), the mapping of
onnxruntime load failures to ``pipeline.errors`` types, and ``usable_cpus``.
Imports: os, onnxruntime, pipeline.errors (TF-free; no onnx package). Reads: the model file it is
given. Writes: nothing.

Every session in the project comes from here: the runtime (``Predictor``'s model.onnx and
model_unrolled.onnx, ``Stream``'s stream.onnx), the verification side (coverage cases, the stream
check) and the benchmarks. Callers differ only in ``threads``:

    runtime (Predictor, Stream)       threads=1: one call per chunk; the Predictor parallelises
                                      across chunks with its own worker threads instead
    verification coverage             threads=<its parameter, default 1>
    benchmarks (tf2onnx Loop graph)   threads=None: onnxruntime's own default (one per physical core)

Example:
    >>> from pipeline.runtime import sessions
    >>> sess = sessions.open_session(Path("exported/model.onnx"))          # 1 intra-op thread
    >>> sess = sessions.open_session(proto.SerializeToString(), threads=None, name="tf2onnx graph")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import onnxruntime as ort

from pipeline.errors import ArtifactError, ConfigError, ExportError

__all__ = ["PROVIDERS", "session_options", "open_session", "usable_cpus"]

PROVIDERS = ["CPUExecutionProvider"]
LOG_ERRORS_ONLY = 3  # onnxruntime log severity: 0 verbose ... 3 error, 4 fatal
_MESSAGE_CHARS = 200  # the cause is cut to this many characters: messages stay one short line


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def session_options(threads: Optional[int] = 1) -> ort.SessionOptions:
    """Session options shared by every caller.

    Args:
        threads: intra-op threads per ``run`` call; None leaves onnxruntime's default (one per
            physical core). The runtime uses 1: the GRU op parallelises poorly inside a call, so
            the Predictor parallelises across batch chunks instead (measured on 2 cores, batch
            8192: one call with 2 intra-op threads ~24k samples/s, 2 workers x 64-row chunks ~60k).
    Raises:
        ConfigError: ``threads`` is neither None nor a positive integer.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads: expected None or a positive integer, got {threads!r}")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # graph nodes one after another...
    so.inter_op_num_threads = 1  # ...so no inter-op pool (onnxruntime only makes one in parallel mode)
    if threads is not None:
        so.intra_op_num_threads = threads
    so.log_severity_level = LOG_ERRORS_ONLY
    return so


def _cause(exc: BaseException) -> str:
    """First line of an onnxruntime exception (its type name when it has no text), cut short."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:_MESSAGE_CHARS]


def open_session(source: Union[str, os.PathLike, bytes], threads: Optional[int] = 1,
                 name: Optional[str] = None) -> ort.InferenceSession:
    """A CPU ``InferenceSession`` on an ONNX file or on serialized model bytes.

    Args:
        source: path of an .onnx file, or ``ModelProto.SerializeToString()`` bytes.
        threads: intra-op threads (see ``session_options``).
        name: what the bytes are, for error messages (e.g. "tf2onnx Loop graph"); ignored for paths.
    Raises:
        ArtifactError: the file cannot be loaded (truncated, corrupted, not ONNX, unsupported op...):
            "<path> is not a loadable ONNX model (truncated or corrupted?): <cause>".
        ExportError: the in-memory bytes cannot be loaded (an exporter produced a bad graph):
            "<name>: onnxruntime cannot load this in-memory ONNX graph: <cause>".
        ConfigError: bad ``threads``.
    """
    so = session_options(threads)
    if isinstance(source, (bytes, bytearray)):
        try:
            return ort.InferenceSession(bytes(source), sess_options=so, providers=PROVIDERS)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ExportError(f"{name or 'model bytes'}: onnxruntime cannot load this in-memory ONNX graph: "
                              f"{_cause(exc)}") from None
    path = Path(source)
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=PROVIDERS)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/NoSuchFile/... types
        raise ArtifactError(f"{path} is not a loadable ONNX model (truncated or corrupted?): {_cause(exc)}") from None
