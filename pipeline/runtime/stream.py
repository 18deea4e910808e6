"""Streaming inference: feed a sequence one step or one chunk at a time, carrying the GRU state.

Owns: ``Stream`` (state buffers, input checks, the fast onnxruntime call) and ``stream_csv``
(the ``gru-predict --stream`` loop). Imports: numpy, onnxruntime (RunOptions, types), pipeline light
modules, pipeline.runtime.sessions (TF-free).
Reads: ``<model_dir>/stream.onnx`` (sha256-checked against ``manifest["stream"]``).

The stream graph is the classifier with each GRU's hidden state exposed as an input ``h_in_i`` and
an output ``h_out_i`` (shape (D, batch, H)); a model that averages the GRU outputs over time also
carries the running mean and step count (``avg_mean_*`` (1, batch, H), ``avg_count_*`` (1, batch, 1)).
All states start at zero. A push runs the graph on the new steps only, starting
from the carried state, so the probabilities after step t equal ``Predictor.predict_proba`` on the
first t steps, at a cost per step that does not grow with t. stream.onnx has no ``lengths`` input:
every step pushed is real (a stream is never padded); for a model with its own Masking value a step
whose values all equal it is refused (Keras would skip it; docs/artifact.md).

What a push returns follows ``predict_proba``, without its batch axis for a single stream:

    task                    one stream          n_streams
    binary                  float p(class 1)    (n_streams,) float32
    multiclass/multilabel   (k,) float32        (n_streams, k) float32

Example:
    >>> p = Predictor.load("exported")
    >>> with p.stream() as s:                 # one stream
    ...     for row in rows:                  # row: (F,) raw features of one timestep
    ...         prob = s.push(row[None])      # (1, F) -> float, P(class 1) so far ((k,) for k classes)
    >>> s = p.stream(n_streams=64)            # 64 independent streams in lockstep
    >>> s.push(block)                         # (64, T_chunk, F) -> (64,) float32 ((64, k) for k classes)

Speed: inputs and states live in preallocated buffers bound once to onnxruntime (IOBinding);
two bindings alternate so h_out of one push is h_in of the next without copies. A push with
one step of one stream costs a few microseconds plus the graph itself.

A ``Stream`` is not thread-safe; open one per thread (they share the loaded session).
"""

from __future__ import annotations

import math
import weakref
from pathlib import Path
from typing import Any, Iterable, Optional, TextIO

import numpy as np
import onnxruntime as ort

from pipeline import artifact
from pipeline.errors import ArtifactError, InputError, StreamError
from pipeline.runtime.inputs import check_scaled_finite, mask_steps, refuse_masked_real_steps
from pipeline.runtime.sessions import open_session

__all__ = ["Stream", "open_stream_session", "stream_csv"]

_SESSIONS: "weakref.WeakKeyDictionary[Any, ort.InferenceSession]" = weakref.WeakKeyDictionary()
_X_CACHE = 8  # distinct chunk lengths whose input buffers are kept per stream


def open_stream_session(predictor) -> tuple[ort.InferenceSession, dict[str, Any]]:
    """The (cached) 1-thread session of ``predictor``'s stream.onnx and its manifest entry.

    Raises:
        StreamError: the model has no streaming graph (the manifest says why).
        ArtifactError / IntegrityError: stream.onnx missing, damaged or not the one the manifest names.
    """
    entry = predictor.manifest.get("stream")
    if entry is None:
        raise StreamError(
            f"{predictor.model_dir}: this export has no streaming graph (built before streaming support); "
            "rebuild it with gru-build")
    if not entry.get("supported", False):
        raise StreamError(f"this model cannot be streamed: {entry.get('reason', 'no reason recorded')}")
    sess = _SESSIONS.get(predictor)
    if sess is not None:
        return sess, entry
    path = Path(predictor.model_dir) / entry.get("file", artifact.STREAM_MODEL_FILE)
    if not path.is_file():
        raise ArtifactError(f"stream model file not found: {str(path)!r}")
    artifact.verify_model_hash(path, entry.get("sha256", ""))
    sess = open_session(path, threads=1)  # one step is far too small to split across threads
    want_in = [entry["input"]] + [s["input"] for s in entry["states"]]
    want_out = [entry["output"]] + [s["output"] for s in entry["states"]]
    got_in, got_out = [i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()]
    if sorted(got_in) != sorted(want_in) or sorted(got_out) != sorted(want_out):
        raise ArtifactError(f"{path}: graph inputs {got_in} / outputs {got_out} disagree with the manifest "
                            f"({want_in} / {want_out})")
    _SESSIONS[predictor] = sess
    return sess, entry


class Stream:
    """Carry the GRU state of one or ``n_streams`` sequences across pushes.

    Use ``Predictor.stream(n_streams)`` or ``Stream.open(predictor, n_streams)``.

    Attributes:
        n_streams: None for a single stream, else the number of streams in the batch.
        steps: timesteps pushed since open/reset.
        probability: result of the last push (None before the first): see the module docstring.
    """

    def __init__(self, predictor, n_streams: Optional[int]) -> None:
        if n_streams is not None and (isinstance(n_streams, bool) or not isinstance(n_streams, (int, np.integer))
                                      or n_streams < 1):
            raise StreamError(f"n_streams: expected None or a positive integer, got {n_streams!r}")
        sess, entry = open_stream_session(predictor)
        self._sess = sess
        self.n_streams = None if n_streams is None else int(n_streams)
        self._B = 1 if n_streams is None else int(n_streams)
        self._F = predictor.n_features
        # stream.onnx scales its raw input itself (schema 2); mean/std only check inputs here.
        self._prep = predictor._preprocessing
        self._dot_check = predictor._dot_check
        self._mask_value = predictor.mask_value  # a user's Masking value (steps equal to it refused), or None
        self._k = None if predictor.task == "binary" else predictor.n_outputs  # probabilities per stream
        self._input, self._output = entry["input"], entry["output"]
        self._state_names = [s["input"] for s in entry["states"]]
        self._state_out = [s["output"] for s in entry["states"]]
        self._state_dh = [tuple(int(v) for v in s["shape"]) for s in entry["states"]]  # (D, H)
        # Two buffer sets: binding k reads states[k] and writes states[1 - k].
        self._states = [[np.zeros((D, self._B, H), np.float32) for D, H in self._state_dh] for _ in range(2)]
        self._proba = np.zeros((self._B, self._k or 1), np.float32)  # (B, 1) p(class 1) or (B, k)
        self._bindings = [sess.io_binding() for _ in range(2)]
        for k, io in enumerate(self._bindings):
            for name, out_name, h_in, h_out in zip(self._state_names, self._state_out,
                                                   self._states[k], self._states[1 - k]):
                io.bind_input(name, "cpu", 0, np.float32, list(h_in.shape), h_in.ctypes.data)
                io.bind_output(out_name, "cpu", 0, np.float32, list(h_out.shape), h_out.ctypes.data)
            io.bind_output(self._output, "cpu", 0, np.float32, list(self._proba.shape), self._proba.ctypes.data)
        self._x: dict[int, tuple] = {}               # chunk length -> input buffer and views
        self._bound_t = [0, 0]                       # chunk length currently bound in each binding
        self._cur = 0
        self._run = sess._sess.run_with_iobinding    # the C call, without the Python wrapper
        self._run_options = ort.RunOptions()
        self.steps = 0
        self.probability: Optional[Any] = None
        self._closed = False

    @classmethod
    def open(cls, predictor, n_streams: Optional[int] = None) -> "Stream":
        """Open a stream on a loaded ``Predictor``; states start at zero (like Keras)."""
        return cls(predictor, n_streams)

    # ------------------------------------------------------------------ pushing
    def _x_buffer(self, T: int) -> tuple:
        """(buffer (B, T, F), view written by push, flat view) for chunk length T."""
        if len(self._x) >= _X_CACHE:
            self._x = {t: b for t, b in self._x.items() if t in self._bound_t or t == 1}
        x = np.empty((self._B, T, self._F), np.float32)
        flat = x.reshape(-1)
        entry = self._x[T] = (x, x[0] if self.n_streams is None else x, flat)
        return entry

    def _check_rank(self, steps) -> np.ndarray:
        if self._closed:
            raise StreamError("push on a closed stream")
        arr = steps if type(steps) is np.ndarray else np.asarray(steps)
        want = 2 if self.n_streams is None else 3
        shape = arr.shape
        if arr.ndim != want:
            what = "(T_chunk, F)" if self.n_streams is None else f"({self.n_streams}, T_chunk, F)"
            hint = " (wrap a single timestep as row[None])" if self.n_streams is None and arr.ndim == 1 else ""
            raise InputError(f"steps: expected a {want}-D array {what} with F={self._F}, got shape {shape}{hint}")
        if shape[-1] != self._F:
            raise InputError(f"steps: expected {self._F} features per timestep, got {shape[-1]} (shape {shape})")
        if shape[-2] == 0:
            raise InputError(f"steps: expected at least one timestep, got an empty chunk (shape {shape})")
        if want == 3 and shape[0] != self._B:
            raise InputError(f"steps: expected {self._B} streams on axis 0, got {shape[0]} (shape {shape})")
        if arr.dtype.kind not in "iuf":
            raise InputError(f"steps: expected numeric features, got dtype {arr.dtype}")
        return arr

    def push(self, steps) -> Any:
        """Append timesteps and return the probabilities after the last of them.

        Args:
            steps: raw features, (T_chunk, F) for a single stream or (n_streams, T_chunk, F).
        Returns:
            binary: float p(class 1) (single stream) or (n_streams,) float32; k classes: (k,) or
            (n_streams, k) float32 (a new array each call).
        Raises:
            InputError: wrong rank/feature count, empty chunk, NaN/Inf (raw or once scaled), or
                (a model with its own Masking value) a step whose values all equal it. The state
                is then unchanged.
            StreamError: the stream is closed.
        """
        arr = self._check_rank(steps)
        T = arr.shape[-2]
        buf = self._x.get(T)
        if buf is None:
            buf = self._x_buffer(T)
        x, view, flat = buf
        np.copyto(view, arr, casting="unsafe")  # raw: the graph scales
        # x.x is finite iff no value is NaN/Inf and every |x| < 1.8e19, which the scaling cannot
        # overflow (checked at open): the cheapest full check numpy offers for tiny arrays.
        if not (self._dot_check and math.isfinite(flat.dot(flat))):
            self._check_values(arr, x)
        if self._mask_value is not None:  # every pushed step is real: Keras would skip a mask-valued one
            refuse_masked_real_steps(mask_steps(x, self._mask_value), np.full(self._B, T, np.int64), self._mask_value,
                                     where="steps: stream {i} timestep {t}" if self.n_streams else "steps: timestep {t}")
        k = self._cur
        io = self._bindings[k]
        if self._bound_t[k] != T:
            io.bind_input(self._input, "cpu", 0, np.float32, [self._B, T, self._F], x.ctypes.data)
            self._bound_t[k] = T
        self._run(io._iobinding, self._run_options)
        self._cur = 1 - k  # commit: the outputs just written are now the state
        self.steps += T
        p = self._proba
        if self._k is None:
            self.probability = float(p[0, 0]) if self.n_streams is None else p[:, 0].copy()
        else:
            self.probability = p[0].copy() if self.n_streams is None else p.copy()
        return self.probability

    def _check_values(self, arr: np.ndarray, x: np.ndarray) -> None:
        """The exact check behind the quick one: NaN/Inf in the raw steps, or once the graph scales them."""
        bad = ~np.isfinite(np.asarray(arr, np.float64))
        if not bad.any():
            try:
                check_scaled_finite(x, None, self._prep)
            except InputError:
                raise InputError("steps: expected finite values; the scaled features overflow float32") from None
            return
        idx = tuple(int(v) for v in np.argwhere(bad)[0])
        stream, (t, f) = (idx[0] if len(idx) == 3 else None), idx[-2:]
        at = f"timestep {t}, feature {f}"
        raise InputError(f"steps: expected finite values, got {arr[idx]} at {'' if stream is None else f'stream {stream}, '}"
                         f"{at} ({int(bad.sum())} non-finite in all)", sample=stream, timestep=t, feature=f,
                         sample_message=None if stream is None else
                         f"steps: expected finite values, got {arr[idx]} at {at} ({int(bad[stream].sum())} non-finite in this stream)")

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget everything pushed: zero states (a new sequence starts)."""
        self._check_open()
        for s in self._states[self._cur]:
            s.fill(0.0)
        self.steps = 0
        self.probability = None

    def get_state(self) -> dict[str, np.ndarray]:
        """Copies of the hidden states: {name: (D, H)} for one stream, {name: (n_streams, D, H)} for many."""
        self._check_open()
        out = {}
        for name, s in zip(self._state_names, self._states[self._cur]):
            out[name] = s[:, 0, :].copy() if self.n_streams is None else s.transpose(1, 0, 2).copy()
        return out

    def set_state(self, state: dict) -> None:
        """Restore states from ``get_state()`` output (same names and shapes); checked before anything changes."""
        self._check_open()
        if not isinstance(state, dict):
            raise InputError(f"state: expected a dict from get_state(), got {type(state).__name__}")
        if set(state) != set(self._state_names):
            raise InputError(f"state: expected keys {self._state_names}, got {sorted(map(str, state))}")
        new = []
        for name, (D, H) in zip(self._state_names, self._state_dh):
            want = (D, H) if self.n_streams is None else (self._B, D, H)
            arr = np.asarray(state[name])
            if arr.shape != want or arr.dtype.kind not in "iuf":
                raise InputError(f"state[{name!r}]: expected a numeric array of shape {want}, got shape {arr.shape} dtype {arr.dtype}")
            if not np.isfinite(arr).all():
                raise InputError(f"state[{name!r}]: expected finite values")
            new.append(arr)
        for buf, arr in zip(self._states[self._cur], new):
            buf[...] = arr[:, None, :] if self.n_streams is None else arr.transpose(1, 0, 2)
        self.probability = None

    # ------------------------------------------------------------------ lifetime
    def _check_open(self) -> None:
        if self._closed:
            raise StreamError("the stream is closed")

    def close(self) -> None:
        """Release the buffers; later calls raise StreamError. Closing twice is harmless."""
        if not self._closed:
            self._closed = True
            for io in self._bindings:
                io.clear_binding_inputs()
                io.clear_binding_outputs()
            self._bindings = []
            self._x = {}

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.steps} steps"
        return f"Stream(n_streams={self.n_streams}, features={self._F}, {state})"


def parse_row(line: str, n_features: int, lineno: int) -> np.ndarray:
    """One CSV line of F numbers -> (1, F) float32; InputError naming the line otherwise."""
    parts = line.strip().split(",")
    if len(parts) != n_features:
        raise InputError(f"stdin line {lineno}: expected {n_features} comma-separated numbers, got {len(parts)} field(s)",
                         line=lineno)
    try:
        row = np.array([float(v) for v in parts], dtype=np.float32)
    except ValueError:
        raise InputError(f"stdin line {lineno}: expected {n_features} numbers, got {line.strip()[:80]!r}",
                         line=lineno) from None
    return row[None]


def stream_csv(predictor, lines: Iterable[str], out: TextIO) -> int:
    """Push one CSV row of raw features per input line; write the running probability per line
    (k classes: the k probabilities, comma-separated, in class_names order).

    Blank lines and lines starting with ``#`` are skipped; a line reading ``reset`` starts a new
    sequence. The first bad line raises InputError (nothing is printed for it). Returns the step count.
    """
    n = 0
    with Stream.open(predictor) as s:
        for lineno, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if text.lower() == "reset":
                s.reset()
                continue
            try:
                p = s.push(parse_row(text, predictor.n_features, lineno))
            except InputError as exc:
                if exc.line is not None:  # parse_row's own error names the line already
                    raise
                raise InputError(f"stdin line {lineno}: {exc}", line=lineno, timestep=exc.timestep,
                                 feature=exc.feature) from None
            out.write((f"{p:.9g}" if isinstance(p, float) else ",".join(f"{float(v):.9g}" for v in p)) + "\n")
            out.flush()
            n += 1
    return n
