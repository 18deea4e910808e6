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

Two backends, the same numbers (within 1e-6; bit for bit where the arithmetic allows) and the same
states. When the Predictor runs the fused GRU kernel (``Predictor.debug_info()["fused"]``), a
stream runs it too: one native call per push advances every stream of the Stream (threads inside
the call), from states kept as one float32 row per stream (``fused.FusedKernel.stream``), and the
kernel's stream arithmetic is checked against stream.onnx once per Predictor (``fused_stream_info``).
Otherwise, or when that check fails, a push runs stream.onnx on onnxruntime: inputs and states live
in preallocated buffers bound once (IOBinding); two bindings alternate so h_out of one push is h_in
of the next without copies. ``Stream.backend`` and ``repr`` say which runs, and why not the kernel.
get_state/set_state take and give the same dict either way, so a state moves between the two.

A ``Stream`` is not thread-safe; open one per thread (they share the loaded session).
"""

from __future__ import annotations

import math
import threading
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
_FUSED: "weakref.WeakKeyDictionary[Any, tuple]" = weakref.WeakKeyDictionary()  # predictor -> (plan or None, info)
_fused_lock = threading.Lock()
CHECK_CHUNKS = (1, 2, 4)  # the kernel's stream self-check: chunk lengths pushed in turn through both backends


class _FusedPlan:
    """The kernel's stream form for one Predictor: the kernel, the floats per stream state and where
    each stream.onnx state lives in that row: {name: (offset, D, H)}."""

    def __init__(self, kernel, width: int, layout: dict[str, tuple[int, int, int]], threads: int) -> None:
        self.kernel, self.width, self.layout, self.threads = kernel, width, layout, threads


def _fused_layout(kernel, entry: dict) -> tuple[Optional[dict], str]:
    """{state name: (offset, D, H)} in a kernel state row for stream.onnx's states, or (None, why not)."""
    spec = kernel.spec
    width = kernel.stream_width
    if width < 1:
        return None, "the model has a reverse or bidirectional GRU layer, or max pooling"
    layout, off = {}, 0
    for i, layer in enumerate(spec.layers):
        layout[f"h_in_{i}"] = (off, 1, layer.hidden)
        off += layer.hidden
    if spec.head == "avg":
        layout["avg_mean_in"] = (off, 1, spec.layers[-1].hidden)
        layout["avg_count_in"] = (off + spec.layers[-1].hidden, 1, 1)
    got = {s["input"]: tuple(int(v) for v in s["shape"]) for s in entry["states"]}
    if got != {name: (D, H) for name, (_, D, H) in layout.items()}:
        return None, f"stream.onnx's states {got} are not the kernel's {[*layout]}"
    return layout, ""


def fused_stream_info(predictor) -> Optional[dict]:
    """The kernel's stream self-check for ``predictor`` once a stream was opened on it, else None:
    {"used": bool, "isa", "reason", "max_abs_vs_stream_onnx"}."""
    got = _FUSED.get(predictor)
    return None if got is None else dict(got[1])


def _fused_plan(predictor, sess: ort.InferenceSession, entry: dict) -> Optional[_FusedPlan]:
    """The Predictor's kernel in its stream form, checked against stream.onnx once (cached), or None."""
    got = _FUSED.get(predictor)
    if got is None:
        with _fused_lock:
            got = _FUSED.get(predictor)
            if got is None:
                got = _FUSED[predictor] = _prepare_fused_plan(predictor, sess, entry)
    return got[0]


def _prepare_fused_plan(predictor, sess: ort.InferenceSession, entry: dict) -> tuple[Optional[_FusedPlan], dict]:
    info: dict = {"used": False, "isa": None, "reason": "", "max_abs_vs_stream_onnx": None}
    kernel = predictor._fused()
    if kernel is None:
        info["reason"] = "the Predictor does not run the fused kernel: " + (
            predictor.debug_info()["fused"].get("reason") or "unknown")
        return None, info
    if predictor.mask_value is not None:
        info["reason"] = "the model has its own Masking value (pushed steps are checked against it)"
        return None, info
    layout, why = _fused_layout(kernel, entry)
    if layout is None:
        info["reason"] = why
        return None, info
    plan = _FusedPlan(kernel, kernel.stream_width, layout, predictor.workers)
    from pipeline.runtime.fused import SELF_CHECK_ATOL, self_check_inputs

    X = self_check_inputs(None, predictor.n_features, sum(CHECK_CHUNKS))  # (50, 7, F) stress rows
    n, err = len(X), 0.0
    ours = [np.zeros((n, plan.width), np.float32) for _ in range(2)]
    out = np.zeros((n, kernel.spec.outputs), np.float32)
    theirs = {s["input"]: np.zeros((s["shape"][0], n, s["shape"][1]), np.float32) for s in entry["states"]}
    out_names = [entry["output"]] + [s["output"] for s in entry["states"]]
    t0 = 0
    try:
        for T in CHECK_CHUNKS:
            chunk = np.ascontiguousarray(X[:, t0:t0 + T])
            kernel.stream(chunk, ours[0], ours[1], out, plan.threads)
            ours.reverse()
            res = sess.run(out_names, {entry["input"]: chunk, **theirs})
            theirs = {s["input"]: v for s, v in zip(entry["states"], res[1:])}
            err = max(err, float(np.max(np.abs(out - res[0].reshape(n, -1)))))
            for name, (off, D, H) in layout.items():
                mine = ours[0][:, off:off + H]
                err = max(err, float(np.max(np.abs(mine - theirs[name][0]))))
            t0 += T
    except Exception as exc:  # noqa: BLE001 - any failure keeps stream.onnx, with the reason
        info["reason"] = f"the kernel's stream self-check failed: {type(exc).__name__}: {str(exc)[:160]}"
        return None, info
    info["max_abs_vs_stream_onnx"] = err
    if not err <= SELF_CHECK_ATOL:
        info["reason"] = f"the kernel's streams are {err:.3g} from stream.onnx (> {SELF_CHECK_ATOL:g})"
        return None, info
    info.update(used=True, isa=kernel.isa)
    return plan, info


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

    def __init__(self, predictor, n_streams: Optional[int], fused: bool = True) -> None:
        if n_streams is not None and (isinstance(n_streams, bool) or not isinstance(n_streams, (int, np.integer))
                                      or n_streams < 1):
            raise StreamError(f"n_streams: expected None or a positive integer, got {n_streams!r}")
        sess, entry = open_stream_session(predictor)
        self._sess = sess
        plan = _fused_plan(predictor, sess, entry) if fused else None
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
        self._proba = np.zeros((self._B, self._k or 1), np.float32)  # (B, 1) p(class 1) or (B, k)
        self._x: dict[int, tuple] = {}               # chunk length -> input buffer and views
        self.steps = 0
        self.probability: Optional[Any] = None
        self._closed = False
        self._fused = plan
        self._one_step = None  # the shape of one step per stream when the kernel runs (push's fast path)
        if plan is not None:
            self.backend = f"fused kernel ({plan.kernel.isa})"
            # Two state sets (B, width), one row per stream: a push reads rows[cur], writes rows[1 - cur]
            # and flips cur (the C gru_stream_args, kept as an int64 array: a push is a one-argument call).
            self._rows = [np.zeros((self._B, plan.width), np.float32) for _ in range(2)]
            x, self._x1, _, x_ptr = self._x_buffer(1)  # the one-step buffer: never evicted
            self._args = plan.kernel.stream_args(x, self._rows[0], self._rows[1], self._proba,
                                                 plan.threads if self._B > 1 else 1)
            self._x1_key = self._args_x = (x_ptr, 1)  # the chunk buffer and length in the struct
            self._bound_t = [1, 1]  # _x_buffer keeps these lengths' buffers (a push re-points the struct anyway)
            self._one_step = (1, self._F) if n_streams is None else (self._B, 1, self._F)  # push's fast path
            self._single_binary = n_streams is None and self._k is None
            self._call, self._args_ptr = plan.kernel.lib.gru_stream, self._args.ctypes.data
            self._bindings = []
            return
        why = "fused=False" if not fused else (fused_stream_info(predictor) or {}).get("reason", "")
        self.backend = f"stream.onnx ({why})" if why else "stream.onnx"
        # Two buffer sets: binding k reads states[k] and writes states[1 - k].
        self._states = [[np.zeros((D, self._B, H), np.float32) for D, H in self._state_dh] for _ in range(2)]
        self._bindings = [sess.io_binding() for _ in range(2)]
        for k, io in enumerate(self._bindings):
            for name, out_name, h_in, h_out in zip(self._state_names, self._state_out,
                                                   self._states[k], self._states[1 - k]):
                io.bind_input(name, "cpu", 0, np.float32, list(h_in.shape), h_in.ctypes.data)
                io.bind_output(out_name, "cpu", 0, np.float32, list(h_out.shape), h_out.ctypes.data)
            io.bind_output(self._output, "cpu", 0, np.float32, list(self._proba.shape), self._proba.ctypes.data)
        self._bound_t = [0, 0]                       # chunk length currently bound in each binding
        self._cur = 0
        self._run = sess._sess.run_with_iobinding    # the C call, without the Python wrapper
        self._run_options = ort.RunOptions()

    @classmethod
    def open(cls, predictor, n_streams: Optional[int] = None, fused: bool = True) -> "Stream":
        """Open a stream on a loaded ``Predictor``; states start at zero (like Keras). ``fused=False``
        keeps stream.onnx even where the kernel would run."""
        return cls(predictor, n_streams, fused)

    # ------------------------------------------------------------------ pushing
    def _x_buffer(self, T: int) -> tuple:
        """(buffer (B, T, F), view written by push, flat view) for chunk length T."""
        if len(self._x) >= _X_CACHE:
            self._x = {t: b for t, b in self._x.items() if t in self._bound_t or t == 1}
        x = np.empty((self._B, T, self._F), np.float32)
        flat = x.reshape(-1)
        entry = self._x[T] = (x, x[0] if self.n_streams is None else x, flat, x.ctypes.data)
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
        if type(steps) is np.ndarray and steps.shape == self._one_step and steps.dtype.kind == "f":
            # one float step per stream on the kernel (the rank, feature and closed checks hold by shape)
            np.copyto(self._x1, steps, casting="unsafe")
            if self._args_x is not self._x1_key:
                self._args[1], self._args[3] = self._x1_key
                self._args_x = self._x1_key
            if self._call(self._args_ptr) == 0:
                if self._single_binary:  # _result(1), inlined for the one-stream binary push
                    self.steps += 1
                    p = self.probability = float(self._proba[0, 0])
                    return p
                return self._result(1)
        arr = self._check_rank(steps)
        T = arr.shape[-2]
        buf = self._x.get(T)
        if buf is None:
            buf = self._x_buffer(T)
        x, view, flat, x_ptr = buf
        np.copyto(view, arr, casting="unsafe")  # raw: the graph (or the kernel) scales
        if self._fused is not None:
            if self._args_x[0] != x_ptr or self._args_x[1] != T:
                self._args[1], self._args[3] = x_ptr, T
                self._args_x = (x_ptr, T)
            rc = self._call(self._args_ptr)  # commits (flips cur) only on success
            if rc:  # a NaN or an infinity, raw or scaled (the state is untouched): name it
                if rc == 1:
                    self._check_values(arr, x)
                    raise InputError("steps: expected finite values; the scaled features are not finite")
                raise MemoryError("the fused GRU kernel could not run the streams")
            return self._result(T)
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
        return self._result(T)

    def _result(self, T: int) -> Any:
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
        for s in ([self._rows[self._args[8]]] if self._fused is not None else self._states[self._cur]):
            s.fill(0.0)
        self.steps = 0
        self.probability = None

    def get_state(self) -> dict[str, np.ndarray]:
        """Copies of the hidden states: {name: (D, H)} for one stream, {name: (n_streams, D, H)} for many."""
        self._check_open()
        out = {}
        if self._fused is not None:
            rows = self._rows[self._args[8]]  # (B, width): the current state
            for name in self._state_names:
                off, D, H = self._fused.layout[name]
                s = rows[:, off:off + H]  # (B, H): D is 1 for every stream the kernel runs
                out[name] = s[:1].copy() if self.n_streams is None else s[:, None, :].copy()  # a copy even when s is the whole row buffer
            return out
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
        if self._fused is not None:
            rows = self._rows[self._args[8]]
            for name, arr in zip(self._state_names, new):
                off, _, H = self._fused.layout[name]
                rows[:, off:off + H] = arr.reshape(self._B, H)  # (D=1, H) or (B, 1, H)
        else:
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
            self._one_step = None
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
        return f"Stream(n_streams={self.n_streams}, features={self._F}, {state}, backend={self.backend})"


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
