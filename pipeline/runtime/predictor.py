"""Load an exported folder and predict with onnxruntime, without TensorFlow.

Owns: ``Predictor`` (loading with integrity checks, batch inference, the lengths of
variable-length rows, class decisions through ``pipeline.decision.decide``) and its execution
strategy (the fused GRU kernel when it covers the model and passed its self-check; else batch
chunks over worker threads, one intra-op thread per session, set through
``pipeline.runtime.sessions``). Imports: numpy, onnxruntime (types only), pipeline light modules
(artifact, decision, errors), pipeline.runtime.inputs, .sessions and .fused (TF-free).
Reads: ``<model_dir>/manifest.json`` (checked against model.onnx's metadata_props), ``model.onnx``,
``model_unrolled.onnx`` when the manifest lists it (the batch graph form, loaded on first use),
``reference.npz`` (the fused kernel's self-check, on first use), ``stream.onnx`` for streams.

Example:
    >>> from pipeline.runtime import Predictor
    >>> p = Predictor.load("exported")
    >>> p.predict_proba(X)          # X (N, T, F) raw features -> (N,) float32 P(class 1) (binary task)
    >>> #                             or (N, k) float32, one column per class (multiclass, multilabel)
    >>> # any ONNX runtime gives the same numbers from model.onnx alone, fed X (and lengths) as they are:
    >>> # every graph scales its raw input itself (README "Use the model from another language")
    >>> p.predict(X)                # -> (N,) class names; a multilabel model: N lists of names
    >>> p.predict_proba([a, b])     # variable lengths: list of (T_i, F) arrays
    >>> p.predict_proba(X, lengths) # the same, right-padded (N, T, F) and (N,) real lengths

Lengths (docs/artifact.md "Inputs"): a variable-length artifact (``manifest["input"]["lengths"]``
set) gets its ``lengths`` graph input in every call; they come from a list of rows, from
``lengths``, or, for an (N, T, F) array without them, from the model's own Masking value
(``manifest["masking"]["mask_value"]``: trailing steps all equal to it are padding) or, when the
model has none (gru-build models), every row is T steps long. Whatever a row holds past its length
never reaches the model, and no data value means padding. A fixed-length artifact refuses
``lengths`` (run a list of rows of different lengths instead: each length group runs unpadded).
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import numpy as np
import onnxruntime as ort

from pipeline import artifact
from pipeline.decision import decide, n_outputs
from pipeline.errors import ArtifactError, InputError, NonFiniteInput, PipelineError
from pipeline.runtime.inputs import (ArrayLike, check_scaled_finite, dot_check_suffices, lengths_from_mask,
                                     mask_steps, prepare_features, prepare_tokens, quick_values_ok,
                                     refuse_masked_real_steps)
from pipeline.runtime.sessions import open_session, usable_cpus

__all__ = ["Predictor"]

# Execution strategy. With graph="auto" (the default), models the fused GRU kernel covers
# (pipeline.runtime.fused; the shapes match_fused in fused/onnx_reader.py recognises: float features or token
# ids (Embedding, mask_zero with lengths), of fixed or variable length; GRU layers in any direction and merge ending in a last-state,
# mean or max head, optional Dense layers, and Dense(k) with a sigmoid or softmax) run every batch in
# one native call with its own threads inside, once the kernel has reproduced model.onnx within 1e-6
# on the artifact's reference rows and stress rows (checked on first use; the outcome is in
# debug_info(); it does onnxruntime's arithmetic, so on AVX2+FMA CPUs the numbers are the same bits). Otherwise, and with graph="native" or
# "unrolled": batches up to SMALL_BATCH go in one call on the caller's thread to the
# native graph (model.onnx, one GRU op: the lowest latency). Larger batches are cut into chunks run
# by `workers` threads (session.run releases the GIL): on the unrolled graph (model_unrolled.onnx,
# per-step Gemm nodes, about 1.4x the GRU op's throughput per core from 64-row calls up) when the
# artifact has one (fixed-length models only) and the rows are exactly its length, else on the native graph.
# Each session has one intra-op thread (sessions.open_session(path, threads=1)): the GRU op
# parallelises poorly inside a call, so the workers parallelise across chunks instead.
# The split never changes a row's numbers. The graph form is switched automatically only when
# the build measured both forms within 1e-6 of each other on every verification input
# (manifest "unrolled": {"auto": true}); otherwise graph="unrolled" is an explicit choice.
SMALL_BATCH = 16
CHUNK_MIN, CHUNK_MAX = 16, 64             # rows per call, native graph
UNROLLED_MIN_ROWS = 64                    # smallest batch sent to the unrolled graph
UNROLLED_CHUNK_MIN, UNROLLED_CHUNK_MAX = 32, 256  # rows per call, unrolled graph
GRAPH_FORMS = ("auto", "native", "unrolled")


_ORT_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64"}  # graph input types the runtime feeds
_KIND_DTYPES = {"features": "float32", "tokens": "int64"}                # manifest input.kind -> what it feeds


def _shape_of(node_arg) -> list:
    return [d if isinstance(d, int) else (d or "?") for d in node_arg.shape]


class Predictor:
    """A loaded, verified classifier. Thread-safe: one instance may serve many threads."""

    def __init__(self, model_dir: Path, manifest: dict[str, Any], session: ort.InferenceSession,
                 workers: Optional[int] = None, graph: str = "auto", fused: bool = True) -> None:
        self.model_dir = model_dir
        self.manifest = manifest
        self._session = session
        inp, out = manifest["input"], manifest["output"]
        self.input_name: str = inp["name"]
        self.output_name: str = out["name"]
        shape = inp["shape"]  # e.g. ["batch", "time", 8]
        self.input_kind: str = inp.get("kind", "features")
        self.n_features: int = int(shape[2]) if self.input_kind == "features" else 0
        self.vocabulary_size: Optional[int] = inp.get("vocabulary_size")  # token models: ids in [0, V)
        self.timesteps: Optional[int] = shape[1] if isinstance(shape[1], int) else None
        self.task: str = manifest["task"]                       # binary | multiclass | multilabel
        self.class_names: list = list(manifest["class_names"])
        self.n_classes: int = len(self.class_names)
        self.decision: dict[str, Any] = dict(manifest["decision"])  # checked against task and classes at load
        self.n_outputs: int = n_outputs(self.task, self.n_classes)  # graph output width: 1 (p(class 1)) or k
        self._out_shape = (-1,) if self.task == "binary" else (-1, self.n_outputs)  # (n,) or (n, k)
        # variable length: the name of the lengths graph input (int64 (batch,)), fed in every call; else None
        self.lengths_name: Optional[str] = inp.get("lengths")
        self.masked: bool = bool(manifest["masking"].get("enabled", False))
        # a user's own Masking value (trailing steps all equal to it are padding), or None (gru-build models)
        mv = manifest["masking"].get("mask_value")
        self.mask_value: Optional[float] = float(mv) if mv is not None and self.lengths_name else None
        # The graph scales (schema 2+); mean/std are read only to check inputs (float32 arrays once).
        prep = manifest["preprocessing"]
        self._preprocessing = {k: (np.asarray(v, np.float32) if k in ("mean", "std") else v) for k, v in prep.items()}
        self._dot_check = self.input_kind == "features" and dot_check_suffices(self._preprocessing, self.n_features)
        self.workers: int = max(1, int(workers)) if workers else usable_cpus()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pool_lock = threading.Lock()
        if graph not in GRAPH_FORMS:
            raise InputError(f"graph: expected one of {GRAPH_FORMS}, got {graph!r}")
        self.graph = graph
        unrolled = manifest.get("unrolled") or {}
        # rows of exactly this many steps may use the unrolled graph (None: never). "auto" uses it
        # only when the build measured it within 1e-6 of model.onnx on every verification input.
        usable = unrolled.get("supported") and self.lengths_name is None and (
            graph == "unrolled" or (graph == "auto" and unrolled.get("auto") is True))
        self.unrolled_timesteps: Optional[int] = int(unrolled["timesteps"]) if usable else None
        self._unrolled: Optional[ort.InferenceSession] = None
        # the fused kernel: prepared on first use (None until then); only graph="auto" uses it
        self._fused_wanted = bool(fused) and graph == "auto" and self._fused_covers()
        self._fused_lock = threading.Lock()
        self._fused_state: Optional[tuple[Any, dict]] = None
        self._check_graph_matches_manifest()

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, model_dir: str | os.PathLike = "exported", threads: Optional[int] = None,
             graph: str = "auto", fused: bool = True) -> "Predictor":
        """Load an exported folder, verifying model.onnx against the manifest's sha256.

        Args:
            model_dir: folder written by ``gru-build`` (default ``exported``).
            threads: worker threads for large batches; None = the CPUs this process may use.
            graph: ``auto`` (model.onnx, plus model_unrolled.onnx for batches of 64+ rows when the
                build found the two within 1e-6 everywhere), ``native`` (always model.onnx) or
                ``unrolled`` (model_unrolled.onnx for every batch of the trained length: the
                throughput choice; agrees with Keras within the verified tolerance).
            fused: with graph="auto", run the fused GRU kernel where it covers the model and passed
                its self-check (False: always the onnxruntime graphs).
        Raises:
            ArtifactError / IntegrityError: missing, damaged or untrusted artifact, or a manifest.json
                that does not describe model.onnx: its input spec differs from the graph's input, or a
                decision field (threshold, class names, scaling, masking, ...) from the graph's
                metadata_props, which the sha256 covers and which are trusted over the manifest.
        """
        folder = Path(model_dir)
        manifest = artifact.read_manifest(folder)
        model_info = manifest["model"]
        model_path = folder / model_info.get("file", artifact.MODEL_FILE)
        if not model_path.is_file():
            raise ArtifactError(f"model file not found: {str(model_path)!r}")
        artifact.verify_model_hash(model_path, model_info.get("sha256", ""))
        return cls(folder, manifest, open_session(model_path, threads=1), threads, graph, fused)

    @property
    def threshold(self) -> Optional[float]:
        """The decision threshold on p(class 1) of a binary model; None for multiclass and multilabel."""
        return float(self.decision["threshold"]) if self.decision.get("rule") == "threshold" else None

    def _fused_covers(self) -> bool:
        """Whether the fused kernel may cover this kind of model: float features or token ids, of fixed or variable
        length (the kernel's own reader, ``fused.onnx_reader.match_fused``, then decides on the graph: the layers,
        the head, and for token ids with lengths how the graph derives its sequence lengths)."""
        return self.input_kind in _KIND_DTYPES

    def _check_graph_matches_manifest(self) -> None:
        """Refuse a manifest that does not describe this model.onnx: input/output names, input shape
        (a fixed graph axis must be fixed to the same size in the manifest and the other way round)
        and dtype, and the decision fields its metadata_props carry (``artifact.check_manifest_matches_graph``:
        the hashed graph is trusted over the unhashed manifest)."""
        hint = "; the manifest does not belong to this model.onnx: re-export the folder as a whole"
        ins, outs = self._session.get_inputs(), self._session.get_outputs()
        want_in = [self.input_name] + ([self.lengths_name] if self.lengths_name else [])
        if [i.name for i in ins] != want_in or [o.name for o in outs] != [self.output_name]:
            raise ArtifactError(
                f"manifest names inputs {want_in} / output {self.output_name!r} but the graph has "
                f"inputs {[i.name for i in ins]} / outputs {[o.name for o in outs]}{hint}", field="input.name"
            )
        width = _shape_of(outs[0])[-1:]
        if width and isinstance(width[0], int) and width[0] != self.n_outputs:
            raise ArtifactError(f"a {self.task} model with {self.n_classes} classes expected a graph output of "
                                f"width {self.n_outputs}, got {_shape_of(outs[0])}")
        graph_shape = _shape_of(ins[0])
        want = self.manifest["input"]["shape"]
        if len(graph_shape) != len(want) or any(
            (isinstance(w, int) or isinstance(g, int)) and g != w for g, w in zip(graph_shape, want)
        ):
            raise ArtifactError(f"manifest input shape {want} disagrees with the graph's {graph_shape}{hint}",
                                field="input.shape")
        if self.input_kind == "features" and len(want) != 3:
            raise ArtifactError(f"manifest input shape {want}: expected (batch, time, features)", field="input.shape")
        graph_dtype = _ORT_DTYPES.get(ins[0].type, ins[0].type)
        want_dtype = self.manifest["input"].get("dtype", _KIND_DTYPES.get(self.input_kind))
        if want_dtype != graph_dtype:
            raise ArtifactError(f"manifest input dtype {want_dtype!r} disagrees with the graph's {graph_dtype!r}{hint}",
                                field="input.dtype")
        if _KIND_DTYPES.get(self.input_kind) != graph_dtype:
            raise ArtifactError(f"manifest input kind {self.input_kind!r} (fed as {_KIND_DTYPES.get(self.input_kind)}) "
                                f"disagrees with the graph's input dtype {graph_dtype!r}{hint}", field="input.kind")
        model_file = self.manifest["model"].get("file", artifact.MODEL_FILE)
        artifact.check_manifest_matches_graph(self.manifest, self._session.get_modelmeta().custom_metadata_map,
                                              str(self.model_dir / artifact.MANIFEST_FILE), model_file)

    # ------------------------------------------------------------------ inference
    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gru-predict")
            return self._pool

    def _unrolled_session(self) -> ort.InferenceSession:
        with self._pool_lock:
            if self._unrolled is None:
                entry = self.manifest["unrolled"]
                path = self.model_dir / artifact.checked_file_name(entry.get("file"), "unrolled.file")
                if not path.is_file():
                    raise ArtifactError(f"unrolled model file not found: {str(path)!r}")
                artifact.verify_model_hash(path, entry.get("sha256", ""))
                session = open_session(path, threads=1)
                graph_t = _shape_of(session.get_inputs()[0])[1]
                if graph_t != self.unrolled_timesteps:
                    raise ArtifactError(f"manifest unrolled.timesteps {self.unrolled_timesteps} disagrees with the "
                                        f"time axis {graph_t!r} of {path.name}; re-export the folder as a whole",
                                        field="unrolled.timesteps")
                artifact.check_manifest_matches_graph(self.manifest, session.get_modelmeta().custom_metadata_map,
                                                      str(self.model_dir / artifact.MANIFEST_FILE), path.name)
                self._unrolled = session
            return self._unrolled

    def _fused(self):
        """The fused kernel, or None (prepared once: library, model shape, self-check; see debug_info)."""
        if not self._fused_wanted:
            return None
        if self._fused_state is None:
            with self._fused_lock:
                if self._fused_state is None:
                    self._fused_state = self._prepare_fused()
        return self._fused_state[0]

    def _prepare_fused(self) -> tuple[Any, dict]:
        from pipeline.runtime import fused

        model_info = self.manifest["model"]
        tokens = self.input_kind == "tokens"
        data = (self.model_dir / model_info.get("file", artifact.MODEL_FILE)).read_bytes()
        if hashlib.sha256(data).hexdigest() != model_info.get("sha256"):  # the bytes the session was checked on
            return None, {"used": False, "isa": None, "reason": "model.onnx changed since load", "checks": {}}
        ref_X, keras = None, None
        try:
            with np.load(self.model_dir / artifact.REFERENCE_FILE, allow_pickle=False) as ref:
                X = np.asarray(ref["X"], np.int64 if tokens else np.float32)  # (N, T, F) raw ((N, T) ids)
                full = (np.asarray(ref["lengths"]) >= X.shape[1]) if "lengths" in ref.files else np.ones(len(X), bool)
                full &= np.isfinite(X).all(axis=tuple(range(1, X.ndim)))  # whole, finite rows: Keras' numbers
                if X.ndim == (2 if tokens else 3) and full.any():
                    ref_X = X[full]
                    if "keras_proba" in ref.files:
                        keras = np.asarray(ref["keras_proba"], np.float64).reshape(len(X), *self._out_shape[1:])[full]
        except (OSError, KeyError, ValueError):
            ref_X = None  # the stress rows alone
        T = ref_X.shape[1] if ref_X is not None else (self.timesteps or 20)
        check_X = (fused.self_check_ids(ref_X, int(self.vocabulary_size or 1), T) if tokens
                   else fused.self_check_inputs(ref_X, self.n_features, T))
        check_lens = None
        if self.lengths_name is not None and tokens:  # every length from 1 to T, no id 0 before it
            check_X, check_lens = fused.self_check_token_lengths(check_X, int(self.vocabulary_size or 1))
            keras = None  # Keras' numbers are for the full reference rows
        elif self.lengths_name is not None:  # every length from 1 to T over the rows, NaN past each (never read)
            check_lens = fused.self_check_lengths(len(check_X), T)
            check_X = check_X.copy()
            for i, n in enumerate(check_lens):
                check_X[i, n:] = np.nan
            keras = None  # Keras' numbers are for the full reference rows

        def onnx_proba(Z: np.ndarray, L: Optional[np.ndarray] = None) -> np.ndarray:  # SMALL_BATCH-row calls
            def feed(i: int) -> dict:
                f = {self.input_name: Z[i:i + SMALL_BATCH]}
                return f if L is None else {**f, self.lengths_name: L[i:i + SMALL_BATCH]}
            return np.concatenate([self._session.run([self.output_name], feed(i))[0].reshape(self._out_shape)
                                   for i in range(0, len(Z), SMALL_BATCH)])

        return fused.prepare_fused(data, self.input_name, self.output_name, onnx_proba, check_X,
                                   keras=keras, threads=self.workers, lengths_name=self.lengths_name,
                                   check_lengths=check_lens)

    def debug_info(self) -> dict[str, Any]:
        """How this Predictor runs batches: the graph form asked for and the fused kernel's state
        (whether it is used, its ISA, its self-check errors per ISA, or why it is not used); and how its
        streams run: "stream" is None until a stream was opened, then the kernel's stream self-check
        against stream.onnx (``pipeline.runtime.stream.fused_stream_info``: used, isa, reason, error)."""
        if self._fused_wanted:
            self._fused()
            fused_info = dict(self._fused_state[1])
        else:
            why = ("disabled (fused=False)" if self.graph == "auto" and self._fused_covers()
                   else f"not used with graph={self.graph!r}" if self.graph != "auto"
                   else f"not used for {self.input_kind!r} inputs")
            fused_info = {"used": False, "isa": None, "reason": why, "checks": {}}
        from pipeline.runtime.stream import fused_stream_info

        return {"graph": self.graph, "workers": self.workers, "fused": fused_info, "stream": fused_stream_info(self)}

    def _plan(self, n: int, T: int) -> tuple[Any, int]:
        """The session.run to use for ``n`` rows of ``T`` steps, and the rows per call."""
        if self.unrolled_timesteps == T and (n >= UNROLLED_MIN_ROWS or (self.graph == "unrolled" and n >= 1)):
            per_worker = -(-n // self.workers)
            return self._unrolled_session().run, min(UNROLLED_CHUNK_MAX, max(UNROLLED_CHUNK_MIN, per_worker))
        if n <= SMALL_BATCH or self.workers == 1:
            return self._session.run, 4096  # bound the per-call working set
        return self._session.run, min(CHUNK_MAX, max(CHUNK_MIN, -(-n // self.workers)))

    def _run(self, X: np.ndarray, lens: Optional[np.ndarray] = None) -> np.ndarray:
        """(n, T, F) float32 raw (or (n, T) int64 ids) [+ (n,) int64 lengths] -> (n,) or (n, k) float32."""
        kernel = self._fused() if X.dtype == (np.int64 if self.input_kind == "tokens" else np.float32) \
            and (lens is None) == (self.lengths_name is None) else None
        if kernel is not None and lens is not None:  # variable length: the rows longest first, each over its own steps
            from pipeline.runtime.fused import PaddingIdInLength  # loaded with the kernel

            try:
                return kernel.run_lengths(X, lens, self.workers).reshape(self._out_shape)
            except PaddingIdInLength:
                # id 0 before a row's length (a manifest without mask_value 0 lets it through the input check): the
                # graph's own mask_zero lengths differ from lens there, so the graphs below answer, as model.onnx does
                pass
        elif kernel is not None:  # the whole batch in one native call, threads inside it (it scales like the graph)
            return kernel.run(X, self.workers).reshape(self._out_shape)  # (n,) or (n, k)
        n = X.shape[0]
        x_name, len_name, out_name, shape = self.input_name, self.lengths_name, [self.output_name], self._out_shape
        if (lens is None) != (len_name is None):  # a bug, never an input error: every caller resolves lengths
            raise PipelineError(f"internal: the graph's lengths input is {len_name!r} but lengths were "
                                f"{'not ' if lens is None else ''}given")

        def feed(a: int, b: int) -> dict:
            return {x_name: X[a:b]} if lens is None else {x_name: X[a:b], len_name: lens[a:b]}

        run, chunk = self._plan(n, X.shape[1])
        if n <= chunk:  # one call (every small batch): no copy into an output buffer
            return run(out_name, feed(0, n))[0].reshape(shape)
        out = np.empty((n,) + shape[1:], dtype=np.float32)  # (n,) or (n, k)
        if self.workers == 1:
            for start in range(0, n, chunk):
                out[start:start + chunk] = run(out_name, feed(start, start + chunk))[0].reshape(shape)
            return out

        def job(start: int) -> None:
            out[start:start + chunk] = run(out_name, feed(start, start + chunk))[0].reshape(shape)

        for _ in self._executor().map(job, range(0, n, chunk)):
            pass
        return out

    def predict_proba(self, X: ArrayLike, lengths=None) -> np.ndarray:
        """Probabilities of each sample: p(class 1) for a binary model, one per class otherwise.

        The graphs take raw features and scale them themselves, so X goes to onnxruntime as it is;
        the runtime checks it and, for a variable-length model, feeds each row's length (see the
        module docstring "Lengths"); whatever a row holds past its length is ignored.

        Args:
            X: raw features (N, T, F) (token ids (N, T) for an Embedding model), or a list of
                (T_i, F) arrays of varying length.
            lengths: (N,) real lengths of the rows of a right-padded array X (1 <= length <= T);
                variable-length models only.
        Returns:
            (N,) float32 p(class 1) for a binary task; (N, k) float32 for multiclass (rows sum to
            1) and multilabel (independent), columns in ``class_names`` order.
        Raises:
            InputError: X or lengths is not what the model expects (the message says what was
                received): lengths given to a fixed-length model, a bad length, NaN/Inf on a real
                step, or (a model with its own Masking value) a real step equal to the mask value,
                or a row with no real step.
        """
        if lengths is not None and self.lengths_name is None:
            raise InputError("lengths: this model has a fixed-length input (no lengths input; manifest input.lengths "
                             "is null): expected lengths=None, got lengths; pass a list of (T_i, F) arrays to run "
                             "rows of different lengths")
        if self.input_kind == "tokens":
            return self._predict_tokens(X, lengths)
        from_list = isinstance(X, (list, tuple))
        Xr, lens = prepare_features(X, self.n_features, lengths, self.timesteps, check_values=False)
        if self.lengths_name is None and Xr.dtype == np.float32 and self._fused() is not None:
            # the fused kernel scans the scaled values itself as it reads them (one pass fewer)
            try:
                return self._checked(self._run_lengths(Xr, lens))
            except NonFiniteInput:
                check_scaled_finite(Xr, lens, self._preprocessing)  # names the first NaN/Inf
                raise PipelineError("the fused GRU kernel found a NaN or an infinity in the scaled input "
                                    "that the input check did not; refusing to return probabilities") from None
        if self.lengths_name is not None:
            lens = self._resolve_lengths(Xr, lens, given=lengths is not None or from_list)
        if not (self._dot_check and quick_values_ok(Xr)):  # the quick pass proves it, else the exact check
            check_scaled_finite(Xr, lens, self._preprocessing)  # NaN/Inf on real steps, raw or once scaled
        if self.lengths_name is not None:
            return self._checked(self._run(Xr, lens))
        return self._checked(self._run_lengths(Xr, lens))

    def _resolve_lengths(self, X: np.ndarray, lens: Optional[np.ndarray], given: bool) -> np.ndarray:
        """(N,) int64 lengths of a variable-length model's rows X (N, T, F) or ids (N, T).

        ``lens``: the checked lengths (None when every row is full); ``given``: they came from the
        caller (an argument or a list), else they are read off the model's own Masking value.
        """
        N, T = X.shape[:2]
        if self.mask_value is None:  # no value means padding: lengths given, or every row is full
            return lens if lens is not None else np.full(N, T, np.int64)
        on_mask = mask_steps(X, self.mask_value)  # (N, T)
        if lens is None:
            lens = np.full(N, T, np.int64) if given else lengths_from_mask(on_mask)
        refuse_masked_real_steps(on_mask, lens, self.mask_value)
        return lens

    def _run_lengths(self, Xr: np.ndarray, lens: Optional[np.ndarray]) -> np.ndarray:
        """Rows (N, T, F) (or ids (N, T)) of a fixed-length model, right-padded after ``lens`` (from a list) when
        given -> (N,) / (N, k)."""
        if lens is None:
            return self._run(Xr)
        # No lengths input: run each length group unpadded, which is exact.
        proba = np.empty((Xr.shape[0],) + self._out_shape[1:], dtype=np.float32)
        for length in np.unique(lens):
            idx = np.flatnonzero(lens == length)
            proba[idx] = self._run(np.ascontiguousarray(Xr[idx, :length]))
        return proba

    def _predict_tokens(self, X: ArrayLike, lengths=None) -> np.ndarray:
        """Probabilities of token-id rows (N, T) int, or a list of (T_i,) id arrays."""
        from_list = isinstance(X, (list, tuple))
        ids, lens = prepare_tokens(X, int(self.vocabulary_size), lengths, self.timesteps)  # (N, T) int64
        if self.lengths_name is not None:  # Embedding(mask_zero): trailing id 0 is padding when no lengths
            return self._checked(self._run(ids, self._resolve_lengths(ids, lens, lengths is not None or from_list)))
        return self._checked(self._run_lengths(ids, lens))

    def _checked(self, proba: np.ndarray) -> np.ndarray:
        """``proba`` when every value is a probability; PipelineError naming the first that is not."""
        if proba.size <= 8:  # a few values: Python floats are quicker than three array passes
            if all(0.0 <= v <= 1.0 for v in proba.reshape(-1).tolist()):  # False for NaN too
                return proba
        valid = (proba >= 0) & (proba <= 1)  # False for NaN too
        if not valid.all():
            bad = tuple(int(v) for v in np.argwhere(~valid)[0])
            where = f"sample {bad[0]}" + (f", class {self.class_names[bad[1]]!r}" if len(bad) > 1 else "")
            raise PipelineError(f"the model produced an invalid probability {proba[bad]} for {where}; refusing to return it")
        return proba

    def labels(self, proba: np.ndarray):
        """Class names decided from ``predict_proba`` output by the manifest's rule (``pipeline.decision.decide``).

        Returns (N,) class names (binary: threshold on p(class 1); multiclass: argmax), or for a
        multilabel model a list of N lists of the names whose probability reaches their threshold.
        """
        decided = decide(proba, self.decision)
        if self.task == "multilabel":
            return [[self.class_names[j] for j in np.flatnonzero(row)] for row in decided]
        return np.asarray(self.class_names)[decided]

    def predict(self, X: ArrayLike, lengths=None):
        """Class names of each sample by the manifest's decision rule: (N,) names for binary and multiclass,
        a list of N lists of names for multilabel (see ``labels``)."""
        return self.labels(self.predict_proba(X, lengths))

    def stream(self, n_streams: Optional[int] = None):
        """Open a stream that carries the GRU state between pushes (see ``pipeline.runtime.stream``)."""
        from pipeline.runtime.stream import Stream

        return Stream.open(self, n_streams)

    def __repr__(self) -> str:
        return (f"Predictor({str(self.model_dir)!r}, task={self.task}, features={self.n_features}, "
                f"classes={self.class_names}, decision={self.decision}, lengths={self.lengths_name is not None})")
