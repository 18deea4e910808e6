"""Export, verify and publish: a Keras classifier and sample inputs become an artifact folder.

Owns: the order of the export stages (convert -> stage files -> verify -> report -> publish), the
manifest contents, ``reference.npz``, and which extra graphs ship (stream.onnx, model_unrolled.onnx).
Every graph takes raw features (pipeline.export.scaling puts the scaling into it) and carries its
metadata (pipeline.export.metadata, stamped after verification); the shipped model.onnx is run by
other runtimes on the reference rows (pipeline.verification.consumers).
Training calls ``export_model`` after fitting; a model trained elsewhere goes straight to it.
Imports: numpy; onnx, keras and tf2onnx through pipeline.export.*; pipeline.verification,
pipeline.report and pipeline.runtime (verification runs the staged folder exactly as users will).
Reads: nothing on disk. Writes: ``<out>/`` (model.onnx, manifest.json, reference.npz, report.md,
plots, stream.onnx and model_unrolled.onnx where they verify), only after every check passed;
until then everything lives in a hidden staging folder beside it (pipeline.export.publish).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from pipeline import __version__, artifact
from pipeline.datafiles import SequenceData
from pipeline.settings import ExportConfig, VerifyConfig

__all__ = ["ExportResult", "export_model", "convert", "REFERENCE_ROWS"]

REFERENCE_ROWS = 256  # sample rows stored with Keras' outputs in reference.npz
NO_PREPROCESSING = {"type": "none"}


def log(message: str) -> None:
    print(message, flush=True)


@dataclass
class ExportResult:
    """Where the artifact was published, its manifest, and the wall time from ``started``."""

    out_dir: Path
    manifest: dict[str, Any]
    seconds: float


def versions() -> dict[str, str]:
    """Versions of every tool in the chain, for the manifest."""
    import keras
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    return {
        "pipeline": __version__, "python": platform.python_version(), "numpy": np.__version__,
        "tensorflow": tf.__version__, "keras": keras.__version__, "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
    }


def convert(model, backend: str, opset: int) -> tuple[Any, str, Optional[str]]:
    """Convert with ``backend`` (auto | native | tf2onnx): (ModelProto, backend used, fallback reason).

    ``auto`` tries the native GRU op and falls back to tf2onnx's Loop graph, recording why;
    ``native`` raises UnsupportedModelError instead of falling back.
    """
    from pipeline.export.native import OUTPUT_NAME, UnsupportedModelError, export_native

    reason = None
    if backend in ("auto", "native"):
        try:
            return export_native(model, artifact.INPUT_NAME, opset), "native", None
        except UnsupportedModelError as exc:
            if backend == "native":
                raise
            reason = str(exc)
            log(f"  native GRU export not possible ({reason}); falling back to tf2onnx (Loop graph)")
    from pipeline.export.tf2onnx_fallback import export_tf2onnx

    return export_tf2onnx(model, artifact.INPUT_NAME, OUTPUT_NAME, opset), "tf2onnx", reason


def _memo(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Cache ``fn(Z)`` by the bytes of Z: the same family is verified against two graph forms."""
    cache: dict[tuple, np.ndarray] = {}

    def call(Z: np.ndarray) -> np.ndarray:
        key = (Z.shape, str(Z.dtype), hashlib.blake2b(np.ascontiguousarray(Z).tobytes(), digest_size=16).digest())
        if key not in cache:
            cache[key] = fn(Z)
        return cache[key]

    return call


def _stage_unrolled(proto, staging: Path, manifest: dict[str, Any], timesteps: int, masking: bool,
                    raw_input: Callable[[Any], Any] = lambda p: p) -> None:
    """Write the unrolled graph of ``proto`` (then ``raw_input`` of it) and a pending manifest entry, or record why not.

    The entry is completed (or the file dropped) by pipeline.verification.unrolled.verify_unrolled.
    """
    from pipeline.export.native import UnsupportedModelError
    from pipeline.export.unrolled import unroll_grus

    reason = None
    if masking:
        reason = "masked (variable-length) models run the native GRU op, which takes sequence lengths"
    elif not any(n.op_type == "GRU" for n in proto.graph.node):
        reason = "the exported graph has no native GRU op (tf2onnx backend)"
    else:
        try:
            unrolled = unroll_grus(proto, timesteps)
        except UnsupportedModelError as exc:
            reason = str(exc)
    if reason:
        manifest["unrolled"] = {"supported": False, "reason": reason}
        log(f"  unrolled batch graph: not built ({reason})")
        return
    path = Path(staging) / artifact.UNROLLED_MODEL_FILE
    unrolled = raw_input(unrolled)
    path.write_bytes(unrolled.SerializeToString())
    manifest["unrolled"] = {"supported": True, "file": artifact.UNROLLED_MODEL_FILE,
                            "sha256": artifact.sha256_file(path), "timesteps": int(timesteps),
                            "nodes": len(unrolled.graph.node)}


def export_model(
    model,
    sample: SequenceData,
    out: str | Path,
    *,
    preprocessing: Optional[dict[str, Any]] = None,
    class_names: Optional[list] = None,
    threshold: float = 0.5,
    threshold_source: str = "fixed (default 0.5)",
    masking: bool = False,
    export: Optional[ExportConfig] = None,
    verify: Optional[VerifyConfig] = None,
    seed: int = 0,
    manifest_extra: Optional[dict[str, Any]] = None,
    history: Optional[dict[str, list[float]]] = None,
    curves: Optional[dict[str, tuple[np.ndarray, np.ndarray]]] = None,
    reference_proba: Optional[Callable[[np.ndarray], np.ndarray]] = None,
    families: Optional[list] = None,
    input_spec: Optional[dict[str, Any]] = None,
    started: Optional[float] = None,
    steps: tuple[int, int] = (1, 4),
) -> ExportResult:
    """Export ``model`` to ONNX, verify it against Keras on ``sample`` and stress families, publish ``out``.

    Args:
        model: a Keras binary classifier, input (batch, time, F) -> (batch, 1) probability.
        sample: raw inputs to verify on (X (N, T, F), lengths); the first REFERENCE_ROWS rows are
            stored with Keras' outputs in reference.npz. ``sample.feature_names`` go to the manifest.
        out: the artifact folder; replaced atomically only when every check passed.
        preprocessing: the scaling of raw features the model was trained behind (default: none,
            the model takes raw features); every shipped graph does it itself.
        class_names: names of class 0 and class 1 (default [0, 1]).
        threshold, threshold_source: the decision threshold on p(class 1) and where it came from.
        masking: the model masks right-padded steps (their features equal 0.0).
        export, verify: settings (defaults of pipeline.settings when None).
        seed: seeds the stress families and the stream chunkings.
        manifest_extra: more manifest keys (training records: config, metrics, history, ...).
        history, curves: training history and (y, p) per split, for the report's plots.
        reference_proba: scaled inputs -> (N,) p(class 1) of the model whose numbers the artifact
            must reproduce (default: ``model`` itself; a user's model with a softmax or logit head
            passes its own head's p(class 1) while ``model`` is its Dense(1, sigmoid) form).
        families: the verification inputs (default: stress families around ``sample``).
        input_spec: the manifest ``input`` entry (default: float features (batch, time, F)).
        started: time.time() at which the whole job started (default: now).
        steps: (number of the first stage, total stages) for the "[k/n] stage" progress lines.
    Returns:
        ExportResult(out_dir, manifest, seconds).
    Raises:
        ConfigError: ``out`` is an existing file.
        ExportError: the conversion failed (UnsupportedModelError with backend "native").
        VerificationError: Keras and onnxruntime disagree; nothing is published and the previous
            artifact stays in place.
    """
    from pipeline.export.publish import check_out_dir, publish, recover, staging_folder

    started = time.time() if started is None else started
    export = export or ExportConfig()
    verify = verify or VerifyConfig()
    prep = preprocessing or dict(NO_PREPROCESSING)
    class_names = list(class_names) if class_names is not None else [0, 1]
    out = check_out_dir(Path(out))
    recover(out, log)
    step, total = steps

    def stage(name: str) -> None:
        nonlocal step
        log(f"[{step}/{total}] {name}")
        step += 1

    from pipeline.export.metadata import SOURCE_HASHED, source_model_hash, stamp_artifact
    from pipeline.export.scaling import embed_preprocessing
    from pipeline.export.stream import export_stream
    from pipeline.report.writer import write_plots, write_report
    from pipeline.runtime import Predictor
    from pipeline.preprocessing import apply_preprocessing
    from pipeline.verification.equivalence import format_table, results_to_manifest, stress_families, verify_equivalence
    from pipeline.verification.keras_reference import float64_proba, keras_proba
    from pipeline.verification.consumers import check_consumers, raise_on_failure
    from pipeline.verification.unrolled import verify_unrolled

    stage("export")
    proto, backend, fallback = convert(model, export.backend, export.opset)

    def raw_input(graph):  # the scaling (and a masked model's padding rule) into the graph
        return embed_preprocessing(graph, prep, bool(masking), 0.0)

    shipped = raw_input(proto)
    ops = sorted({n.op_type for n in shipped.graph.node})
    log(f"  backend {backend}, opset {export.opset}, ops: {', '.join(ops)}")
    T, F = int(sample.X.shape[1]), int(sample.X.shape[2]) if sample.X.ndim == 3 else 0

    with staging_folder(out) as staging:
        model_path = staging / artifact.MODEL_FILE
        model_path.write_bytes(shipped.SerializeToString())
        ref_n = min(REFERENCE_ROWS, sample.n_samples)
        ref_X, ref_len = sample.X[:ref_n], sample.lengths[:ref_n]
        real = np.arange(T)[None, :] < ref_len[:, None]  # (n, T): padding of right-padded rows as zeros
        ref_X = np.where(real.reshape(real.shape + (1,) * (ref_X.ndim - 2)), ref_X, np.zeros((), ref_X.dtype))
        keras_fn = _memo(reference_proba or (lambda Z: keras_proba(model, Z)))
        ref_p = keras_fn(apply_preprocessing(ref_X, prep, ref_len))
        np.savez(staging / artifact.REFERENCE_FILE, X=ref_X, lengths=ref_len, keras_proba=ref_p, ids=sample.ids[:ref_n])
        manifest: dict[str, Any] = {
            "schema_version": artifact.SCHEMA_VERSION,
            "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {"file": artifact.MODEL_FILE, "sha256": artifact.sha256_file(model_path),
                      "opset": export.opset, "backend": backend, "fallback_reason": fallback, "ops": ops},
            "input": input_spec or {"name": artifact.INPUT_NAME, "dtype": "float32", "shape": ["batch", "time", F],
                                    "kind": "features"},
            "output": {"name": proto.graph.output[0].name, "dtype": "float32", "shape": ["batch", 1],
                       "meaning": f"probability of class {class_names[1]!r}"},
            "preprocessing": {**prep, "in_graph": True} if prep.get("type", "none") != "none" else prep,
            "masking": {"enabled": bool(masking), "mask_value": 0.0 if masking else None,
                        "padding": "right" if masking else None},
            "threshold": float(threshold),
            "threshold_source": threshold_source,
            "class_names": class_names,
            "timesteps_trained": T,
            "feature_names": sample.feature_names,
            "seed": seed,
            "source_model": {"sha256": source_model_hash(model), "hashed": SOURCE_HASHED},
            **(manifest_extra or {}),
            "versions": versions(),
            "reference": {"file": artifact.REFERENCE_FILE, "rows": int(ref_n)},
        }
        export_stream(model, staging, manifest, export.opset, verify.atol, seed, keras_fn, log=log, preprocessing=prep)
        _stage_unrolled(proto, staging, manifest, T, bool(masking), raw_input)
        artifact.write_manifest(staging, manifest)

        stage("verify Keras vs onnxruntime")
        predictor = Predictor.load(staging, graph="native")  # model.onnx itself; the unrolled form below
        if families is None:
            families = stress_families(sample, prep, verify.n_random, verify.odd_batch, verify.large_batch, seed, masking)
        sample_errors: dict[str, np.ndarray] = {}
        try:
            results = verify_equivalence(keras_fn, predictor.predict_proba, families, prep, verify.atol, threshold,
                                         errors_out=sample_errors, exact_fn=float64_proba(model))
        finally:
            del predictor
        table = format_table(results, verify.atol)
        log(table)
        manifest["equivalence"] = results_to_manifest(results, verify.atol)
        verify_unrolled(staging, manifest, families, keras_fn, prep, verify.atol, threshold, log)
        stamp_artifact(staging, manifest)  # metadata into every graph; computation unchanged, hashes updated
        manifest["consumers"] = check_consumers(staging, ref_X, ref_p, manifest["input"]["name"], log=log,
                                                dtype=manifest["input"]["dtype"])
        raise_on_failure(manifest["consumers"])
        artifact.write_manifest(staging, manifest)

        stage("report")
        plots = write_plots(staging, history or {}, curves or {}, threshold, class_names, sample_errors, verify.atol)
        manifest["report"] = {"file": artifact.REPORT_FILE, "plots": plots}
        artifact.write_manifest(staging, manifest)
        write_report(staging, manifest, table, plots)

        stage("publish")
        publish(staging, out)
    seconds = time.time() - started
    log(f"wrote {out} in {seconds:.1f} s (max |Keras - ONNX| = {manifest['equivalence']['max_abs_error']:.3g})")
    return ExportResult(out, manifest, seconds)
