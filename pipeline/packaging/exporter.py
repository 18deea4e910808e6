"""Export, verify and publish: a Keras classifier and sample inputs become an artifact folder.

Owns: the order of the stages (convert -> stage files -> verify -> report -> publish), the manifest
contents and ``reference.npz``. Every graph takes raw features (pipeline.export.scaling puts the
scaling into it) and carries its metadata (pipeline.export.metadata, stamped after verification); the
shipped model.onnx is run by other runtimes on the reference rows (pipeline.verification.consumers).
Training calls ``export_model`` after fitting; a model trained elsewhere goes through
``pipeline.packaging.own_model.export_keras_model``.
Layer: packaging. Imports: numpy; pipeline.export, pipeline.verification, pipeline.keras_source,
pipeline.report, pipeline.runtime (verification runs the staged folder exactly as users will).
Reads: nothing on disk. Writes: ``<out>/`` (model.onnx, manifest.json, reference.npz, report.md, plots,
stream.onnx and model_unrolled.onnx where they verify), only after every check passed; until then
everything lives in a hidden staging folder beside it (pipeline.packaging.publish).
"""

from __future__ import annotations

import hashlib
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from pipeline import __version__, artifact, progress
from pipeline.export.convert import convert
from pipeline.export.metadata import SOURCE_HASHED, source_model_hash, stamp_artifact
from pipeline.decision import n_outputs
from pipeline.export.scaling import LENGTHS_NAME, embed_preprocessing
from pipeline.keras_source.run import float64_proba, keras_proba, padding_value
from pipeline.packaging.graphs import STREAM_VERIFY_MAX_T, stage_stream, stage_unrolled
from pipeline.packaging.publish import check_out_dir, publish, recover, staging_folder
from pipeline.packaging.spec import ArtifactSpec, Reference, TrainingRecord, VerificationPlan
from pipeline.preprocessing import apply_preprocessing
from pipeline.report.writer import write_plots, write_report
from pipeline.runtime import Predictor
from pipeline.settings import ExportConfig
from pipeline.verification.consumers import check_consumers, raise_on_failure
from pipeline.verification.equivalence import format_table, results_to_manifest, stress_families, verify_equivalence
from pipeline.verification.stream import StreamPlan
from pipeline.verification.unrolled import verify_unrolled

__all__ = ["ExportResult", "export_model", "EXPORT_STAGES", "REFERENCE_ROWS"]

REFERENCE_ROWS = 256  # sample rows stored with Keras' outputs in reference.npz
EXPORT_STAGES = ("export", "verify Keras vs onnxruntime", "report", "publish")


@dataclass
class ExportResult:
    """Where the artifact was published, its manifest, and the wall time from the job's start."""

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


def _memo(fn: Callable[[np.ndarray, Optional[np.ndarray]], np.ndarray]) -> Callable:
    """Cache ``fn(Z, lengths)`` by the bytes of both: the same family is verified against two graph forms."""
    cache: dict[tuple, np.ndarray] = {}

    def digest(a: Optional[np.ndarray]) -> tuple:
        if a is None:
            return ()
        return a.shape, str(a.dtype), hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16).digest()

    def call(Z: np.ndarray, lengths: Optional[np.ndarray] = None) -> np.ndarray:
        key = (digest(Z), digest(lengths))
        if key not in cache:
            cache[key] = fn(Z, lengths)
        return cache[key]

    return call


@dataclass
class _Job:
    """One export in progress: its inputs and what the stages have made so far."""

    reference: Reference
    spec: ArtifactSpec
    plan: VerificationPlan
    export: ExportConfig
    record: TrainingRecord
    keras_fn: Callable   # (scaled inputs, lengths) -> (N,) p(class 1) or (N, k), memoized
    backend: str = ""                     # the converter used (native | tf2onnx) and why not native
    fallback: Optional[str] = None
    staging: Path = Path()
    manifest: dict[str, Any] = field(default_factory=dict)
    ref_X: Optional[np.ndarray] = None    # the reference rows, raw (n, T, F), padding as zeros
    ref_len: Optional[np.ndarray] = None  # (n,) their lengths
    ref_p: Optional[np.ndarray] = None    # (n,) Keras' p(class 1), or (n, k), on them

    def raw_input(self, graph):  # the scaling (and a variable-length model's lengths input) into the graph
        pad = padding_value(self.reference.model) if self.spec.masking else None
        return embed_preprocessing(graph, self.spec.preprocessing, bool(self.spec.masking), pad or 0.0)

    def write_manifest(self) -> None:
        artifact.write_manifest(self.staging, self.manifest)


def export_model(reference: Reference | Any, spec: ArtifactSpec, plan: VerificationPlan, out: str | Path,
                 export: Optional[ExportConfig] = None, record: Optional[TrainingRecord] = None) -> ExportResult:
    """Export a Keras classifier to ONNX, verify it against Keras on the plan's inputs, publish ``out``.

    Args:
        reference: the model and the numbers to reproduce (a bare Keras model means ``Reference(model)``).
        spec: what the artifact promises (classes, threshold, input, scaling, masking).
        plan: the sample and families to verify on, the tolerance and the seed.
        out: the artifact folder; replaced atomically only when every check passed.
        export: conversion settings (default: pipeline.settings.ExportConfig()).
        record: a training run's manifest keys, history and curves (default: none).
    Returns:
        ExportResult(out_dir, manifest, seconds).
    Raises:
        ConfigError: ``out`` is an existing file.
        ExportError: the conversion failed (UnsupportedModelError with backend "native").
        VerificationError: Keras and onnxruntime disagree; nothing is published and the previous
            artifact stays in place.
    """
    reference = reference if isinstance(reference, Reference) else Reference(reference)
    record = record or TrainingRecord()
    keras_fn = _memo(reference.proba or (lambda Z, lengths: keras_proba(reference.model, Z, lengths)))
    job = _Job(reference, spec, plan, export or ExportConfig(), record, keras_fn)
    out = check_out_dir(Path(out))
    with progress.stages(*EXPORT_STAGES):
        recover(out)
        progress.stage("export")
        proto = _convert(job)
        with staging_folder(out) as staging:
            job.staging = staging
            _stage_files(job, proto)
            progress.stage("verify Keras vs onnxruntime")
            table, sample_errors = _verify(job)
            progress.stage("report")
            _report(job, table, sample_errors)
            progress.stage("publish")
            publish(staging, out)
    seconds = time.time() - record.started
    progress.log(f"wrote {out} in {seconds:.1f} s (max |Keras - ONNX| = "
                 f"{job.manifest['equivalence']['max_abs_error']:.3g})")
    return ExportResult(out, job.manifest, seconds)


def _convert(job: _Job):
    """The batch graph (before scaling); the backend used and the fallback reason go on the job."""
    proto, job.backend, job.fallback = convert(job.reference.model, job.export.backend, job.export.opset)
    return proto


def _stage_files(job: _Job, proto) -> None:
    """model.onnx, reference.npz, the manifest, stream.onnx and model_unrolled.onnx into the staging folder."""
    spec, sample, verify = job.spec, job.plan.sample, job.plan.settings
    shipped = job.raw_input(proto)
    ops = sorted({n.op_type for n in shipped.graph.node})
    progress.log(f"  backend {job.backend}, opset {job.export.opset}, ops: {', '.join(ops)}")
    model_path = job.staging / artifact.MODEL_FILE
    model_path.write_bytes(shipped.SerializeToString())
    T = int(sample.X.shape[1])
    ref_n = min(REFERENCE_ROWS, sample.n_samples)
    ref_X, ref_len = sample.X[:ref_n], sample.lengths[:ref_n]
    real = np.arange(T)[None, :] < ref_len[:, None]  # (n, T): padding of right-padded rows as zeros
    job.ref_X = np.where(real.reshape(real.shape + (1,) * (ref_X.ndim - 2)), ref_X, np.zeros((), ref_X.dtype))
    job.ref_len = np.asarray(ref_len, np.int64)
    job.ref_p = job.keras_fn(apply_preprocessing(job.ref_X, spec.preprocessing, ref_len),
                             job.ref_len if spec.masking else None)
    np.savez(job.staging / artifact.REFERENCE_FILE, X=job.ref_X, lengths=job.ref_len, keras_proba=job.ref_p,
             ids=sample.ids[:ref_n])
    job.manifest = _manifest(job, proto, ops, ref_n)
    shape = job.manifest["input"]["shape"]  # (batch, time, F) features, (batch, time) token ids (no stream)
    stage_stream(job.reference.model, job.staging, job.manifest, job.export.opset, job.keras_fn, StreamPlan(
        F=int(shape[2]) if len(shape) > 2 else 0, T=min(T or 20, STREAM_VERIFY_MAX_T), seed=job.plan.seed,
        atol=verify.atol, preprocessing=spec.preprocessing))
    stage_unrolled(proto, job.staging, job.manifest, T, bool(spec.masking), job.raw_input)
    job.write_manifest()


def _manifest(job: _Job, proto, ops: list[str], ref_n: int) -> dict[str, Any]:
    """The manifest as staged (verification, consumers and report entries come later)."""
    spec, sample = job.spec, job.plan.sample
    prep, names = spec.preprocessing, list(spec.class_names)
    F = int(sample.X.shape[2]) if sample.X.ndim == 3 else 0
    width = n_outputs(spec.task, len(names))
    inp = dict(spec.input or {"name": artifact.INPUT_NAME, "dtype": "float32", "shape": ["batch", "time", F],
                              "kind": "features"})
    inp["lengths"] = LENGTHS_NAME if spec.masking else None
    meaning = (f"probability of class {names[1]!r}" if spec.task == "binary" else
               f"probability of each class, in class_names order ({spec.task})")
    return {
        "schema_version": artifact.SCHEMA_VERSION,
        "model": {"file": artifact.MODEL_FILE, "sha256": artifact.sha256_file(job.staging / artifact.MODEL_FILE),
                  "opset": job.export.opset, "backend": job.backend, "fallback_reason": job.fallback, "ops": ops},
        "input": inp,
        "output": {"name": proto.graph.output[0].name, "dtype": "float32", "shape": ["batch", width],
                   "meaning": meaning},
        "preprocessing": {**prep, "in_graph": True} if prep.get("type", "none") != "none" else prep,
        "masking": {"enabled": bool(spec.masking), "mask_value": spec.mask_value if spec.masking else None,
                    "padding": "lengths" if spec.masking else None},
        "task": spec.task,
        "class_names": names,
        "decision": spec.decision,
        "decision_source": spec.decision_source,
        "timesteps_trained": int(sample.X.shape[1]),
        "feature_names": sample.feature_names,
        "seed": job.plan.seed,
        "source_model": {"sha256": source_model_hash(job.reference.model), "hashed": SOURCE_HASHED},
        **job.record.manifest,
        "versions": versions(),
        "reference": {"file": artifact.REFERENCE_FILE, "rows": int(ref_n)},
    }


def _verify(job: _Job) -> tuple[str, dict[str, np.ndarray]]:
    """Keras vs model.onnx (through the runtime) and the unrolled graph; metadata stamped; other runtimes.

    Returns the equivalence table and the per-family errors (for the report's plot).
    """
    spec, plan, verify = job.spec, job.plan, job.plan.settings
    families = plan.families
    if families is None:
        families = stress_families(plan.sample, spec.preprocessing, verify, plan.seed, spec.masking)
    predictor = Predictor.load(job.staging, graph="native")  # model.onnx itself; the unrolled form below
    sample_errors: dict[str, np.ndarray] = {}
    try:
        results = verify_equivalence(job.keras_fn, predictor.predict_proba, families, spec.preprocessing, verify.atol,
                                     spec.decision, errors_out=sample_errors,
                                     exact_fn=float64_proba(job.reference.model))
    finally:
        del predictor
    table = format_table(results, verify.atol)
    progress.log(table)
    job.manifest["equivalence"] = results_to_manifest(results, verify.atol)
    verify_unrolled(job.staging, job.manifest, families, job.keras_fn, spec.preprocessing, verify.atol, spec.decision)
    stamp_artifact(job.staging, job.manifest)  # metadata into every graph; computation unchanged, hashes updated
    job.manifest["consumers"] = check_consumers(job.staging, job.ref_X, job.ref_p, job.manifest["input"],
                                                job.ref_len if spec.masking else None)
    raise_on_failure(job.manifest["consumers"])
    job.write_manifest()
    return table, sample_errors


def _report(job: _Job, table: str, sample_errors: dict[str, np.ndarray]) -> None:
    """Plots and report.md into the staging folder."""
    spec = job.spec
    plots = write_plots(job.staging, job.record.history, job.record.curves, spec.decision, list(spec.class_names),
                        sample_errors, job.plan.settings.atol)
    job.manifest["report"] = {"file": artifact.REPORT_FILE, "plots": plots}
    job.write_manifest()
    write_report(job.staging, job.manifest, table, plots)
