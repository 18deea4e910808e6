"""The fused GRU kernel: the C library (gru_kernel.h and the .c files beside it, built at install
time as one shared object) driven through ctypes.

Owns: finding and loading the library, the ISA variants it offers (``ISAS``: avx512, avx2
(+FMA), generic C) and which of them this CPU runs, ``FusedKernel`` (one loaded model, one ISA:
``run(X, threads)`` for a whole batch in one native call, threads inside the call; ``run_lengths`` for
right-padded rows with their lengths, float features or token ids; ``stream`` for one chunk of N streams
from their carried states, the arithmetic of stream.onnx), the self-check rows (``self_check_inputs``,
``self_check_ids``, ``self_check_lengths``, ``self_check_token_lengths``), and ``prepare_fused``: read the weights out of model.onnx
(``onnx_reader``), pick the best ISA that passes its self-check against model.onnx, and say why when none does. Imports: ctypes, numpy,
pipeline.errors, pipeline.runtime.fused.onnx_reader (TF-free; no onnx package). Reads: the library file and the
model bytes it is given; the environment variable GRU_KERNEL_LIBRARY (``LIBRARY_ENV``): when set,
the path of the library to load instead of the installed one, e.g. a build of the same sources
under AddressSanitizer or ThreadSanitizer (``make kernel-check``, tests/runtime/test_kernel_sanitizers.py).
Writes: nothing.

The kernel is an acceleration, never a requirement: without the library (no compiler at install
time, another platform), on a CPU without the ISA, when a variant misses the self-check or the
model is not the covered shape, ``prepare_fused`` returns None and a reason, and the Predictor
keeps today's onnxruntime graphs (the reason is in ``Predictor.debug_info()``, never on stdout).
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import os
import threading
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from pipeline.errors import NonFiniteInput
from pipeline.runtime.fused.onnx_reader import FusedSpec, OnnxReadError, match_fused, parse_model

__all__ = ["ISAS", "LIBRARY_MODULE", "FusedKernel", "PaddingIdInLength", "library_path", "load_library",
           "supported_isas", "prepare_fused", "self_check_ids", "self_check_lengths", "self_check_token_lengths",
           "SELF_CHECK_ATOL", "STREAM_ARGS"]

LIBRARY_MODULE = "pipeline.runtime.fused._gru_kernel"  # the ext-module name in pyproject.toml
LIBRARY_ENV = "GRU_KERNEL_LIBRARY"  # a library path to load instead of the installed one (sanitizer builds)
ABI_VERSION = 9  # the C GRU_ABI_VERSION
ISAS = {"avx512": 2, "avx2": 1, "generic": 0}  # best first; values are the C enum
# the variants chosen automatically: the generic C one (0.8k samples/s here, scalar, a libm fmaf per
# multiply-add) is slower than the onnxruntime graph, so it serves tests and explicit requests only
AUTO_ISAS = ("avx512", "avx2")
SELF_CHECK_ATOL = 1e-6  # max |kernel - model.onnx| on the self-check inputs, else the variant is not used
_HEADS = {"last": 0, "avg": 1, "max": 2}  # the C HEAD_*
_ACTIVATIONS = {"sigmoid": 0, "softmax": 1}  # the C ACT_*: the head's activation over its k outputs
SOFTMAX_KINDS = {"fma3": 0, "avx512f": 1}  # the C MLAS_SOFTMAX_*: which MLAS softmax kernels the head reproduces
_SCALE_OPS = {"Sub": 0, "Div": 1, "Mul": 2, "Add": 3}  # the C enum SCALE_*
_DENSE_ACTS = {"linear": 0, "relu": 1, "sigmoid": 2, "tanh": 3}  # the C enum DENSE_*: a hidden Dense layer's activation
_LAYER_INFO = 8  # ints per layer in gru_create's layer info (the C LAYER_INFO)
_MERGES = {"concat": 0, "sum": 1, "mul": 2, "ave": 3}  # the C MERGE_*: a Bidirectional layer's merge_mode
# the C gru_stream_args, one int64 each, in order
STREAM_ARGS = ("model", "x", "N", "T", "state0", "state1", "out", "threads", "cur")

_lock = threading.Lock()
_loaded: dict[str, object] = {}


def library_path() -> Optional[Path]:
    """Where the library is: $GRU_KERNEL_LIBRARY when set, else the built one (next to this file, or
    wherever the editable install put it)."""
    if os.environ.get(LIBRARY_ENV):
        return Path(os.environ[LIBRARY_ENV])
    try:
        spec = importlib.util.find_spec(LIBRARY_MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin and os.path.isfile(spec.origin):
        return Path(spec.origin)
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        cand = here / ("_gru_kernel" + suffix)
        if cand.is_file():
            return cand
    return None


def load_library(path: Optional[Path] = None):
    """(ctypes library, "") or (None, why not). Loaded once per path and process."""
    path = library_path() if path is None else Path(path)
    if path is None:
        return None, "the fused GRU library was not built (no C compiler at install time, or an unsupported platform)"
    key = str(path)
    with _lock:
        if key in _loaded:
            return _loaded[key]
        try:
            lib = ctypes.CDLL(key)
            if lib.gru_abi_version() != ABI_VERSION:
                raise OSError(f"ABI version {lib.gru_abi_version()}, expected {ABI_VERSION}")
            lib.gru_isa_supported.argtypes = [ctypes.c_int]
            lib.gru_create.restype = ctypes.c_void_p
            lib.gru_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                       ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.gru_softmax_kind.argtypes = [ctypes.c_void_p, ctypes.c_int]
            lib.gru_destroy.argtypes = [ctypes.c_void_p]
            lib.gru_destroy.restype = None
            lib.gru_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                                    ctypes.c_int]
            lib.gru_stream_width.argtypes = [ctypes.c_void_p]
            lib.gru_stream.argtypes = [ctypes.c_void_p]  # gru_stream_args *: STREAM_ARGS int64 fields
            lib.gru_set_dense.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
            lib.gru_run_lens.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                         ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_int]
            lib.gru_run_ids_lens.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                             ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_int]
            lib.gru_set_padding.argtypes = [ctypes.c_void_p, ctypes.c_int]
            lib.gru_set_embedding.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p]
            lib.gru_embedding_fold.argtypes = [ctypes.c_void_p, ctypes.c_int]
            lib.gru_fold_max_bytes.restype = ctypes.c_long
            lib.gru_test_tanh.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
            lib.gru_test_tanh.restype = None
            lib.gru_run_ids.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                                        ctypes.c_int]
            lib.gru_set_input_scaling.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
            result = (lib, "")
        except (OSError, AttributeError) as exc:
            result = (None, f"the fused GRU library {path.name} cannot be loaded: {str(exc)[:160]}")
        _loaded[key] = result
        return result


def supported_isas(lib) -> list[str]:
    """The ISA variants this CPU runs, best first."""
    return [name for name, code in ISAS.items() if lib.gru_isa_supported(code)]


class PaddingIdInLength(ValueError):
    """A variable-length token model's row holds id 0 before its length: the graph (Embedding mask_zero) counts
    and pools only the nonzero ids, not the lengths given, so the kernel refuses the batch (gru_run_ids_lens
    returns 3); the Predictor then runs model.onnx."""


class FusedKernel:
    """One model's packed weights for one ISA. Thread-safe: ``run`` keeps no state between calls."""

    def __init__(self, lib, spec: FusedSpec, isa: str) -> None:
        self.lib, self.spec, self.isa = lib, spec, isa
        # per layer {H, D, linear_before_reset, reverse0, flip0, reverse1, flip1, merge} (gru_create's layer info)
        info = np.zeros((len(spec.layers), _LAYER_INFO), np.int32)
        for row, layer in zip(info, spec.layers):
            row[:3] = layer.hidden, layer.directions, layer.linear_before_reset
            for d in range(layer.directions):
                row[3 + 2 * d:5 + 2 * d] = layer.reverse(d), layer.flip[d]
            row[7] = _MERGES[layer.merge]
        # per layer W (D, 3H, F), R (D, 3H, H), B (D, 6H), flattened one after the other
        params = np.concatenate([np.asarray(a, np.float32).reshape(-1)
                                 for layer in spec.layers for a in (layer.W, layer.R, layer.B)])
        last = spec.layers[-1]
        hw = np.ascontiguousarray(spec.head_w if not spec.dense else  # (D*H, k); with Dense layers: gru_set_dense's
                                  np.zeros((last.width, spec.outputs)), np.float32)
        hb = np.ascontiguousarray(spec.head_b, np.float32)  # (k,)
        self._handle = lib.gru_create(spec.features, len(spec.layers), info.ctypes.data, params.ctypes.data,
                                      _HEADS[spec.head], hw.ctypes.data, hb.ctypes.data, spec.outputs,
                                      _ACTIVATIONS[spec.activation], ISAS[isa])
        if not self._handle:
            raise OSError(f"gru_create failed for ISA {isa}")
        # the graph's own per-feature input scaling, applied by the kernel with the same float32 operations
        ops = np.array([_SCALE_OPS[op] for op, _ in spec.prefix], np.int32)
        consts = np.ascontiguousarray(np.stack([c for _, c in spec.prefix]) if spec.prefix
                                      else np.zeros((0, spec.features)), np.float32)  # (ops, F)
        if lib.gru_set_input_scaling(self._handle, len(ops), ops.ctypes.data, consts.ctypes.data) != 0:
            raise OSError(f"gru_set_input_scaling failed for {len(ops)} operations")
        if spec.embedding is not None:  # a token model: ids select the Embedding table's rows
            table = np.ascontiguousarray(spec.embedding, np.float32)  # (vocab, F)
            if lib.gru_set_embedding(self._handle, len(table), table.ctypes.data) != 0:
                raise OSError(f"gru_set_embedding failed for a ({len(table)}, {table.shape[1]}) table")
        if spec.lengths:  # a max head over the padded sequence: Y's zeros past each length, or the carried last output
            lib.gru_set_padding(self._handle, int(spec.max_reads_zeros))
        if spec.dense:  # Dense layers between the pooling and the head: {units, act}, then W, b per layer, head W
            units_act = np.array([(W.shape[1], _DENSE_ACTS[act]) for W, _, act in spec.dense], np.int32)
            dense = np.concatenate([np.asarray(a, np.float32).reshape(-1) for W, b, _ in spec.dense for a in (W, b)]
                                   + [np.asarray(spec.head_w, np.float32).reshape(-1)])
            if lib.gru_set_dense(self._handle, len(units_act), units_act.ctypes.data, dense.ctypes.data) != 0:
                raise OSError(f"gru_set_dense failed for {len(units_act)} Dense layers")

    @property
    def token_path(self) -> Optional[str]:
        """A token model's path: "fold" (layer 0 reads each token's x.W from a table made once, when the
        tables fit the kernel's FOLD_MAX_BYTES) or "gather" (the Embedding rows, then x.W each step); the
        same bits. None for a float-input model."""
        if self.spec.embedding is None:
            return None
        return "fold" if self.lib.gru_embedding_fold(self._handle, -1) == 1 else "gather"

    @token_path.setter
    def token_path(self, name: str) -> None:  # tests and benches: the other path ("fold" may stay "gather")
        self.lib.gru_embedding_fold(self._handle, 1 if name == "fold" else 0)

    @property
    def softmax_kind(self) -> str:
        """The MLAS softmax kernels a softmax head reproduces ("avx512f" or "fma3"; SOFTMAX_KINDS):
        by default the ones onnxruntime's MLAS picks on this CPU."""
        code = self.lib.gru_softmax_kind(self._handle, -1)
        return next(name for name, c in SOFTMAX_KINDS.items() if c == code)

    @softmax_kind.setter
    def softmax_kind(self, name: str) -> None:  # tests: another CPU's MLAS kernels
        self.lib.gru_softmax_kind(self._handle, SOFTMAX_KINDS[name])

    def run(self, X: np.ndarray, threads: int = 1) -> np.ndarray:
        """(N, T, F) model input (what model.onnx takes; a token model: (N, T) int64 ids) -> (N,) float32
        p(class 1) for a binary head (one sigmoid output), else (N, k) float32: the k softmax probabilities
        or k sigmoid outputs.

        Raises NonFiniteInput when a value, once scaled as the graph scales it, is NaN or infinite;
        ValueError for an id outside the Embedding table."""
        tokens = self.spec.embedding is not None
        X = np.ascontiguousarray(X, np.int64 if tokens else np.float32)
        n, T = X.shape[0], X.shape[1]
        out = np.empty(n if self.spec.binary else (n, self.spec.outputs), np.float32)
        if n:
            run = self.lib.gru_run_ids if tokens else self.lib.gru_run
            rc = run(self._handle, X.ctypes.data, n, T, out.ctypes.data, int(threads))
            if rc == 1:
                raise NonFiniteInput("the scaled model input holds a NaN or an infinity")
            if rc == 2:
                raise ValueError(f"a token id lies outside the Embedding table's {len(self.spec.embedding)} rows")
            if rc != 0:
                raise MemoryError("the fused GRU kernel could not allocate its buffers")
        return out

    def run_lengths(self, X: np.ndarray, lengths: np.ndarray, threads: int = 1) -> np.ndarray:
        """Variable length: (N, T, F) right-padded model input (a token model: (N, T) int64 ids) and (N,) lengths
        in 1 .. T (row i is real for its first lengths[i] steps; what follows is never read) -> as ``run``. The
        rows run longest first.

        Raises NonFiniteInput (a NaN or an infinity in a real step, once scaled); PaddingIdInLength (a token
        model: id 0 in a real step, where the graph's mask_zero lengths are not the lengths given); ValueError
        for lengths outside 1 .. T, an id outside the Embedding table or a forward GRU output reversed in time
        (no export writes one)."""
        tokens = self.spec.embedding is not None
        X = np.ascontiguousarray(X, np.int64 if tokens else np.float32)
        n, T = X.shape[0], X.shape[1]
        lens = np.ascontiguousarray(lengths, np.int64).reshape(-1)
        if lens.shape != (n,) or (n and (lens.min() < 1 or lens.max() > T)):
            raise ValueError(f"lengths: expected {n} values in 1 .. {T}")
        order = np.ascontiguousarray(np.argsort(-lens, kind="stable"), np.int64)  # longest first
        out = np.empty(n if self.spec.binary else (n, self.spec.outputs), np.float32)
        if n:
            run = self.lib.gru_run_ids_lens if tokens else self.lib.gru_run_lens
            rc = run(self._handle, X.ctypes.data, lens.ctypes.data, order.ctypes.data, n, T, out.ctypes.data,
                     int(threads))
            if rc == 1:
                raise NonFiniteInput("the scaled model input holds a NaN or an infinity")
            if rc == 2:
                raise ValueError(f"a token id lies outside the Embedding table's {len(self.spec.embedding)} rows")
            if rc == 3:
                raise PaddingIdInLength("a token id 0 (padding) lies before its row's length: the graph would count "
                                        "only the nonzero ids")
            if rc != 0:
                raise ValueError("the fused GRU kernel runs no forward GRU output reversed in time")
        return out

    @property
    def stream_width(self) -> int:
        """Floats in one stream's state (gru_kernel.h, "Streams": each layer's h, then for the average
        head the running mean and the step count), or -1 when the model has a reverse or
        bidirectional layer, max pooling or token ids (no stream on the kernel)."""
        return int(self.lib.gru_stream_width(self._handle))

    def stream_args(self, X: np.ndarray, state_in: np.ndarray, state_out: np.ndarray, out: np.ndarray,
                    threads: int = 1) -> np.ndarray:
        """gru_stream's argument struct as an int64 array (STREAM_ARGS fields; pass its .ctypes.data):
        this model, X (N, T, F), the two state arrays (N, stream_width) (the first is read), out
        (N, k), threads, cur = 0. The arrays must outlive its use (``Stream`` keeps them)."""
        a = np.zeros(len(STREAM_ARGS), np.int64)
        a[:] = (self._handle, X.ctypes.data, X.shape[0], X.shape[1], state_in.ctypes.data,
                state_out.ctypes.data, out.ctypes.data, int(threads), 0)
        return a

    def stream(self, X: np.ndarray, state_in: np.ndarray, state_out: np.ndarray, out: np.ndarray,
               threads: int = 1) -> None:
        """Advance N streams by a chunk: X (N, T_chunk, F) model input, state_in (N, stream_width)
        float32 -> state_out (N, stream_width) (another array), out (N, k) float32 probabilities after
        the chunk's last step. All C-contiguous float32; checked here (``Stream`` calls the C function
        itself, with its argument struct kept between pushes).

        Raises NonFiniteInput (state_out and out are then meaningless; state_in is never written)."""
        n, T = X.shape[0], X.shape[1]
        w = self.stream_width
        if w < 1:
            raise ValueError("this model has a reverse or bidirectional GRU layer or max pooling: it cannot be streamed")
        for name, a, shape in (("X", X, (n, T, self.spec.features)), ("state_in", state_in, (n, w)),
                               ("state_out", state_out, (n, w)), ("out", out, (n, self.spec.outputs))):
            if a.dtype != np.float32 or not a.flags.c_contiguous or a.shape != shape:
                raise ValueError(f"{name}: expected C-contiguous float32 {shape}, got {a.dtype} {a.shape}")
        args = self.stream_args(X, state_in, state_out, out, threads)
        rc = self.lib.gru_stream(args.ctypes.data)
        if rc == 1:
            raise NonFiniteInput("the scaled model input holds a NaN or an infinity")
        if rc != 0:
            raise MemoryError("the fused GRU kernel could not run the streams (no memory, or bad arguments)")

    def __del__(self) -> None:
        handle, self._handle = getattr(self, "_handle", None), None
        if handle:
            self.lib.gru_destroy(handle)


def self_check_inputs(reference_X: Optional[np.ndarray], F: int, T: int) -> np.ndarray:
    """(N, T, F) model inputs the kernel must reproduce model.onnx on: the artifact's reference rows
    (already scaled by the caller) and stress rows (zeros, constants, +-100, random), odd batch."""
    # deterministic pseudo-random values in [-1, 1) without numpy.random (the first call's peak RSS)
    u = (np.sin(np.arange(42 * T * F, dtype=np.float32) * np.float32(12.9898)) * np.float32(43758.547)) % 1 * 2 - 1
    u = u.astype(np.float32).reshape(42, T, F)
    stress = [np.zeros((2, T, F), np.float32),
              np.full((2, T, F), 0.5, np.float32),
              np.repeat(u[:4, :1] * np.float32(3), T, axis=1),          # constant in time (ill-conditioned)
              np.where(u[:3] < 0, np.float32(-100), np.float32(100)),  # saturating +-100
              u[3:] * np.float32(4)]                                   # random, odd batch (39 rows)
    parts = ([reference_X.astype(np.float32)] if reference_X is not None and reference_X.shape[1:] == (T, F) else [])
    return np.concatenate(parts + stress)


def self_check_ids(reference_ids: Optional[np.ndarray], vocab: int, T: int) -> np.ndarray:
    """(N, T) int64 token ids the kernel must reproduce model.onnx on: the artifact's reference rows and
    stress rows (id 0, the last id, constant rows, pseudo-random ids; odd batch)."""
    u = (np.sin(np.arange(41 * T, dtype=np.float64) * 12.9898) * 43758.547) % 1  # [0, 1) without numpy.random
    ids = (u * vocab).astype(np.int64).clip(0, vocab - 1).reshape(41, T)
    stress = [np.zeros((2, T), np.int64), np.full((2, T), vocab - 1, np.int64),
              np.repeat(ids[:3, :1], T, axis=1), ids]
    parts = ([reference_ids.astype(np.int64)] if reference_ids is not None and reference_ids.ndim == 2
             and reference_ids.shape[1] == T and ((reference_ids >= 0) & (reference_ids < vocab)).all() else [])
    return np.concatenate(parts + stress)


def self_check_lengths(N: int, T: int) -> np.ndarray:
    """(N,) int64 lengths of a variable-length self-check: 1 + (i * 7919) % T, so every length from 1 to T over
    N >= T rows (7919 is prime), then the first row T and the second 1."""
    lens = (1 + (np.arange(N) * 7919) % T).astype(np.int64)  # (N,)
    lens[:2] = T, 1
    return lens


def self_check_token_lengths(ids: np.ndarray, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, lengths) of a variable-length token model's self-check from (N, T) rows (``self_check_ids``): every
    length from 1 to T over the rows (the first T, the second 1); before each length every id 0 (which Embedding
    mask_zero reads as padding) replaced by a nonzero id, past it the nonzero ids 1 + id % (vocab - 1) (the graph
    pads them to 0, the kernel must not read them). A vocabulary of the padding id alone gives id 1: refused."""
    ids = np.array(ids, np.int64)  # (N, T), a copy
    N, T = ids.shape
    lens = self_check_lengths(N, T)  # (N,)
    other = 1 + ids % max(vocab - 1, 1)  # (N, T) nonzero ids
    real = np.arange(T)[None, :] < lens[:, None]  # (N, T)
    return np.where(real & (ids != 0), ids, other), lens


def prepare_fused(model_bytes: bytes, input_name: str, output_name: str, onnx_proba: Callable[..., np.ndarray],
                  check_X: np.ndarray, keras: Optional[np.ndarray] = None,
                  isa: Optional[str] = None, threads: int = 1, library: Optional[Path] = None,
                  lengths_name: Optional[str] = None, check_lengths: Optional[np.ndarray] = None
                  ) -> tuple[Optional[FusedKernel], dict]:
    """Build the fused kernel for a model, or say why not.

    Args:
        model_bytes: model.onnx (already checked against the manifest's sha256).
        onnx_proba: (N, T, F) model input -> (N,) p or (N, k) from model.onnx (the reference the kernel
            must match).
        check_X: the self-check inputs (N, T, F) in model input space (``self_check_inputs``).
        keras: optional Keras' p (or (rows, k) probabilities) of the first rows of ``check_X`` (the
            artifact's reference rows): the error against it is recorded.
        isa: force one variant (tests); None = the best of AUTO_ISAS this CPU runs that passes its
            self-check.
        library: a library path instead of the installed one (tests).
        lengths_name: a variable-length graph's lengths input; then ``check_lengths`` (N,) are the
            self-check rows' lengths and ``onnx_proba(X, lengths)`` takes them.
    Returns:
        (kernel or None, info): info has "used", "isa", "reason", "checks" (per ISA: max errors or why not).
    """
    info: dict = {"used": False, "isa": None, "reason": "", "checks": {}}
    lib, why = load_library(library)
    if lib is None:
        info["reason"] = why
        return None, info
    try:
        spec, why = match_fused(parse_model(model_bytes), input_name, output_name, lengths_name)
    except OnnxReadError as exc:  # the reader's one error; match_fused returns a reason, never raises
        spec, why = None, f"model.onnx could not be read for the fused kernel: {exc}"
    if spec is None:
        info["reason"] = f"model not covered by the fused kernel: {why}"
        return None, info
    cpu = supported_isas(lib)
    candidates = [isa] if isa else [name for name in cpu if name in AUTO_ISAS]
    if isa and isa not in cpu:
        info["reason"] = f"ISA {isa!r} is not supported by this CPU (it runs {cpu})"
        return None, info
    if not candidates:
        info["reason"] = (f"this CPU runs none of {list(AUTO_ISAS)}; the generic C variant is slower than the "
                          "onnxruntime graph, so it runs only when asked for (isa='generic')")
        return None, info
    if spec.embedding is not None:  # token ids (N, T)
        X = np.ascontiguousarray(check_X, np.int64)
        bad_shape = X.ndim != 2 or X.size == 0 or X.min() < 0 or X.max() >= len(spec.embedding)
    else:
        X = np.ascontiguousarray(check_X, np.float32)
        bad_shape = X.ndim != 3 or X.shape[2] != spec.features
    if bad_shape:
        info["reason"] = f"self-check inputs of shape {X.shape} do not fit the model's {spec.features} features"
        return None, info
    if spec.lengths and (check_lengths is None or len(check_lengths) != len(X)):
        info["reason"] = "a variable-length model needs the self-check rows' lengths"
        return None, info
    ref = np.asarray(onnx_proba(X, check_lengths) if spec.lengths else onnx_proba(X), np.float32).reshape(len(X), -1)
    for name in candidates:
        try:
            kernel = FusedKernel(lib, spec, name)
            got = (kernel.run_lengths(X, check_lengths, threads) if spec.lengths else kernel.run(X, threads)
                   ).reshape(len(X), -1)
        except (OSError, MemoryError, NonFiniteInput, ValueError) as exc:
            info["checks"][name] = {"passed": False, "error": str(exc)[:160]}
            continue
        err = float(np.max(np.abs(got.astype(np.float64) - ref))) if np.isfinite(got).all() else float("inf")
        check = {"passed": bool(err <= SELF_CHECK_ATOL), "max_abs_vs_model_onnx": err, "rows": int(len(X))}
        if keras is not None and len(keras):
            keras_rows = np.asarray(keras, np.float64).reshape(len(keras), -1)
            check["max_abs_vs_keras"] = float(np.max(np.abs(got[:len(keras)].astype(np.float64) - keras_rows)))
        info["checks"][name] = check
        if check["passed"]:
            info.update(used=True, isa=name, reason="")
            if spec.embedding is not None:  # which token path runs (gru_embedding_fold)
                info["tokens"] = kernel.token_path
            return kernel, info
    failed = ", ".join(f"{k}: {v.get('error') or 'max |kernel - model.onnx| %.3g > %g' % (v['max_abs_vs_model_onnx'], SELF_CHECK_ATOL)}"
                       for k, v in info["checks"].items())
    info["reason"] = f"no ISA variant passed the self-check against model.onnx ({failed})"
    return None, info
