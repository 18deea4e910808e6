"""One served model: its V2 metadata, the checks of a request's tensors, and its two batchers.

Owns: ``ServedModel`` and ``ServeLimits``. Imports: numpy, pipeline.errors, pipeline.runtime
(Predictor), pipeline.serve.{batcher, protocol, sequences, metrics}. Reads the model folder once
(``Predictor.load``); writes nothing.

A request is either stateless (any number of rows, each scored alone: they go through the
``Batcher`` and one ``predict_proba`` call per batch, the fused kernel where it applies) or one step
of a sequence (the ``sequence_id`` parameter: one row, (1, T_chunk, F), pushed through the runtime's
stream graph from that id's state; see ``pipeline.serve.sequences``).

V2 tensors of a model:

    input   <manifest input name>   FP32 [-1, T or -1, F]   (token models: INT64 [-1, T or -1])
    input   lengths (variable-length models; optional)  INT64 [-1]
    output  probability             FP32 [-1]      binary: p(class 1)
            probabilities           FP32 [-1, k]   multiclass / multilabel: one column per class

Rows of a fixed-length model must have its T steps; a variable-length model takes any T, and
``lengths`` (else every row is full; a model with its own Masking value reads them off the padding).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from pipeline.errors import InputError, PipelineError
from pipeline.runtime import Predictor
from pipeline.serve.batcher import Batcher, Closed, QueueFull
from pipeline.serve.protocol import InferRequest, ProtocolError, classify
from pipeline.serve.sequences import SequenceStore

__all__ = ["ServedModel", "ServeLimits", "VERSION"]

VERSION = "1"  # an exported folder is one version of one model
PLATFORM = "onnxruntime_onnx"
LENGTHS_TENSOR = "lengths"


@dataclass(frozen=True)
class ServeLimits:
    """The knobs of gru-serve (the CLI's flags; their defaults are declared once, in pipeline.serve.cli)."""

    max_batch: int
    max_delay_us: int
    max_queue: int
    max_sequences: int
    sequence_idle_s: float


@dataclass
class _Rows:
    X: np.ndarray                    # (n, T, F) float32 or (n, T) int64
    lengths: Optional[np.ndarray]    # (n,) int64, or None


class ServedModel:
    """A loaded Predictor behind a stateless batcher and a sequence batcher."""

    def __init__(self, name: str, predictor: Predictor, limits: ServeLimits, metrics=None) -> None:
        self.name = name
        self.predictor = p = predictor
        self.limits = limits
        self.tokens = p.input_kind == "tokens"
        self.output_name = "probability" if p.task == "binary" else "probabilities"
        self._metrics = metrics
        on_batch = None if metrics is None else metrics.batch_observer(name)
        delay = limits.max_delay_us / 1e6
        self.batcher = Batcher(self._run_rows, limits.max_batch, delay, limits.max_queue, on_batch, f"batch-{name}")
        entry = p.manifest.get("stream") or {}
        self.stream_reason: Optional[str] = None if entry.get("supported") else (
            entry.get("reason") or "this export has no streaming graph")
        self.sequence_refusal: Optional[str] = None  # set when this engine cannot keep sequence state
        self.sequences = SequenceStore(p.stream, limits.max_sequences, limits.sequence_idle_s)
        self.seq_batcher = Batcher(self.sequences.step, limits.max_batch, delay, limits.max_queue, on_batch,
                                   f"sequences-{name}")

    @classmethod
    def load(cls, folder: str | Path, name: Optional[str], limits: ServeLimits, metrics=None) -> "ServedModel":
        """Load and warm up (one call, so the fused kernel is prepared before the first request)."""
        p = Predictor.load(folder)
        model = cls(name or Path(folder).resolve().name, p, limits, metrics)
        T = p.timesteps or 1
        warm = np.zeros((1, T), np.int64) if model.tokens else np.zeros((1, T, p.n_features), np.float32)
        p.predict_proba(warm)
        return model

    # ------------------------------------------------------------------ metadata
    def input_specs(self) -> list[dict[str, Any]]:
        p = self.predictor
        T = p.timesteps if p.timesteps is not None else -1
        main = ({"name": p.input_name, "datatype": "INT64", "shape": [-1, T]} if self.tokens else
                {"name": p.input_name, "datatype": "FP32", "shape": [-1, T, p.n_features]})
        specs = [main]
        if p.lengths_name is not None:
            specs.append({"name": LENGTHS_TENSOR, "datatype": "INT64", "shape": [-1]})
        return specs

    def output_specs(self) -> list[dict[str, Any]]:
        shape = [-1] if self.predictor.task == "binary" else [-1, self.predictor.n_outputs]
        return [{"name": self.output_name, "datatype": "FP32", "shape": shape}]

    def metadata(self) -> dict[str, Any]:
        p = self.predictor
        return {"name": self.name, "versions": [VERSION], "platform": PLATFORM,
                "inputs": self.input_specs(), "outputs": self.output_specs(),
                "parameters": {"task": p.task, "class_names": [str(c) for c in p.class_names],
                               "sequences": self.stream_reason is None}}

    def check_version(self, version: Optional[str]) -> None:
        if version not in (None, "", VERSION):
            raise ProtocolError(404, f"model {self.name!r} has no version {version!r} (it has version {VERSION})",
                                "not_found")

    # ------------------------------------------------------------------ requests
    def _rows(self, req: InferRequest) -> _Rows:
        """The request's tensors checked against the model's inputs (400 naming the first mismatch)."""
        p = self.predictor
        main = p.input_name
        allowed = {main} | ({LENGTHS_TENSOR} if p.lengths_name else set())
        extra = sorted(set(req.inputs) - allowed)
        if extra or main not in req.inputs:
            raise ProtocolError(400, f"inputs: expected {sorted(allowed)} (lengths optional), got {sorted(req.inputs)}")
        X = req.inputs[main]
        want_dtype = np.int64 if self.tokens else np.float32
        if X.dtype != want_dtype:
            raise ProtocolError(400, f"input {main!r}: expected datatype {'INT64' if self.tokens else 'FP32'}, got "
                                     f"{_v2_name(X.dtype)}")
        want_rank = 2 if self.tokens else 3
        if X.ndim != want_rank or X.shape[0] == 0 or X.shape[1] == 0 or (
                not self.tokens and X.shape[2] != p.n_features) or (
                p.timesteps is not None and X.shape[1] != p.timesteps):
            raise ProtocolError(400, f"input {main!r}: expected shape {self.input_specs()[0]['shape']} with at least "
                                     f"one row and one step, got {list(X.shape)}")
        lengths = req.inputs.get(LENGTHS_TENSOR)
        if lengths is not None:
            if lengths.dtype != np.int64 or lengths.shape != (X.shape[0],):
                raise ProtocolError(400, f"input 'lengths': expected INT64 shape [{X.shape[0]}], got "
                                         f"{_v2_name(lengths.dtype)} {list(lengths.shape)}")
        if req.outputs is not None and any(o != self.output_name for o in req.outputs):
            raise ProtocolError(400, f"outputs: this model has one output, {self.output_name!r}; got {req.outputs}")
        return _Rows(X, lengths)

    async def infer(self, req: InferRequest) -> dict[str, np.ndarray]:
        """The request's outputs: {output name: (n,) or (n, k) float32, or (n, top) BYTES for a classification}."""
        rows = self._rows(req)
        proba = await self._proba(req, rows)
        top = req.classification.get(self.output_name)
        if top is None:
            return {self.output_name: proba}
        p = self.predictor
        return {self.output_name: classify(proba, top, [str(c) for c in p.class_names], p.task == "binary",
                                           self.output_name)}

    async def _proba(self, req: InferRequest, rows: "_Rows") -> np.ndarray:
        seq = req.sequence
        if seq is not None:
            return await self._infer_sequence(seq, rows)
        try:
            fut = self.batcher.submit(rows, rows.X.shape[0])
        except QueueFull:
            raise ProtocolError(503, f"model {self.name!r}: the queue is full ({self.limits.max_queue} requests "
                                     "waiting); retry later", "queue_full") from None
        except Closed:
            raise ProtocolError(503, "the server is shutting down", "shutting_down") from None
        return await fut

    async def _infer_sequence(self, seq: tuple, rows: _Rows) -> np.ndarray:
        sid, start, end = seq
        if self.stream_reason is not None or self.sequence_refusal is not None:
            raise ProtocolError(400, self.sequence_refusal or
                                f"model {self.name!r} cannot run sequences: {self.stream_reason}")
        if self.tokens or rows.X.shape[0] != 1 or rows.lengths is not None:
            raise ProtocolError(400, f"sequence {sid!r}: expected one row of steps, shape [1, T_chunk, "
                                     f"{self.predictor.n_features}] without lengths, got {list(rows.X.shape)}"
                                     f"{' and lengths' if rows.lengths is not None else ''}")
        item = self.sequences.admit(sid, start, end, rows.X)
        try:
            fut = self.seq_batcher.submit(item, 1)
        except (QueueFull, Closed) as e:
            self.sequences.release(item)
            raise ProtocolError(503, f"model {self.name!r}: the sequence queue is full; retry later"
                                if isinstance(e, QueueFull) else "the server is shutting down", "queue_full") from None
        try:
            proba = await fut
        except asyncio.CancelledError:
            if fut.cancelled():  # never ran: its place is freed
                self.sequences.release(item)
            raise
        return np.asarray(proba, np.float32).reshape((1,) + self._row_shape())

    def _row_shape(self) -> tuple:
        return () if self.predictor.task == "binary" else (self.predictor.n_outputs,)

    # ------------------------------------------------------------------ the worker side
    def _run_rows(self, items: list[_Rows]) -> list[Any]:
        """One predict_proba call for the batch; on a refused row, each item alone (only it fails)."""
        if len(items) == 1:
            return [self._predict(items[0])]
        merged = self._merge(items)
        if merged is None:
            return [self._predict_or_error(it) for it in items]
        try:
            proba = self._predict(merged)
        except PipelineError:
            return [self._predict_or_error(it) for it in items]
        out, start = [], 0
        for it in items:
            n = it.X.shape[0]
            out.append(proba[start:start + n])
            start += n
        return out

    def _merge(self, items: list[_Rows]) -> Optional[_Rows]:
        """The items' rows as one batch (a variable-length model's padded to the longest), or None when
        they cannot share one call: some give lengths and others leave them to the model's mask value."""
        p = self.predictor
        T = max(it.X.shape[1] for it in items)
        if p.lengths_name is None or all(it.X.shape[1] == T and it.lengths is None for it in items):
            return _Rows(np.concatenate([it.X for it in items]), None)
        given = [it.lengths is not None for it in items]
        reads_padding = p.mask_value is not None  # without lengths, the model reads them off its mask value
        if reads_padding and any(given) and not all(given):
            return None
        pad = p.mask_value if reads_padding and not any(given) else 0
        n = sum(it.X.shape[0] for it in items)
        X = np.full((n, T) + items[0].X.shape[2:], pad, items[0].X.dtype)  # (n, T, F) or (n, T)
        lengths = None if reads_padding and not any(given) else np.empty(n, np.int64)
        start = 0
        for it in items:
            k, t = it.X.shape[:2]
            X[start:start + k, :t] = it.X
            if lengths is not None:
                lengths[start:start + k] = it.lengths if it.lengths is not None else t
            start += k
        return _Rows(X, lengths)

    def _predict(self, rows: _Rows) -> np.ndarray:
        return self.predictor.predict_proba(rows.X, rows.lengths)

    def _predict_or_error(self, rows: _Rows) -> Any:
        try:
            return self._predict(rows)
        except PipelineError as e:
            return e

    def close(self, timeout: float) -> bool:
        """Stop taking requests and wait up to ``timeout`` s for the queued ones; True when all ran."""
        ok = self.batcher.drain(timeout)
        ok = self.seq_batcher.drain(timeout) and ok
        self.sequences.clear()
        return ok


def _v2_name(dtype: np.dtype) -> str:
    from pipeline.serve.protocol import DTYPES

    for name, dt in DTYPES.items():
        if dt == dtype:
            return name
    return str(dtype)


def input_error_status(exc: BaseException) -> tuple[int, str, str]:
    """(HTTP status, reason label, message) of an exception raised while answering a request."""
    if isinstance(exc, ProtocolError):
        return exc.status, exc.reason, str(exc)
    if isinstance(exc, InputError):
        return 400, "bad_input", str(exc)
    if isinstance(exc, PipelineError):
        return 500, "model_error", str(exc)
    return 500, "internal", f"internal error: {type(exc).__name__}: {exc}"
