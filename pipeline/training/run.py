"""The build stage end to end: data -> train -> export -> verify -> atomic publish.

Owns: the order of the stages, the manifest contents, the staging folder and the swap that
publishes it. Imports: the training, export, verification and report modules (TensorFlow/Keras through them) and
pipeline.runtime for verification. Reads: the data file(s) named in the config.
Writes: ``<out>/`` (model.onnx, manifest.json, reference.npz, report.md), only after the
equivalence check passed; until then everything lives in a hidden staging folder beside it.
"""

from __future__ import annotations

import copy
import ctypes
import datetime as _dt
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from pipeline import __version__, artifact
from pipeline.settings import BuildConfig
from pipeline.training.dataset import Splits, make_order_task, stratified_split
from pipeline.datafiles import SequenceData, read_sequences
from pipeline.errors import ConfigError, DataFormatError, VerificationError
from pipeline.preprocessing import apply_preprocessing, fit_standardization

__all__ = ["BuildResult", "run_build", "load_splits", "encode_labels"]

REFERENCE_ROWS = 256  # test rows stored with Keras' outputs in reference.npz


def log(message: str) -> None:
    print(message, flush=True)


@dataclass
class BuildResult:
    out_dir: Path
    manifest: dict[str, Any]
    seconds: float


# ---------------------------------------------------------------------------- data

def encode_labels(y: np.ndarray, where: str) -> tuple[np.ndarray, list]:
    """Map raw labels to {0, 1}; class names sorted (numbers numerically). Exactly two classes."""
    classes = np.unique(y)
    if len(classes) != 2:
        shown = ", ".join(repr(c.item() if hasattr(c, "item") else c) for c in classes[:5])
        raise DataFormatError(f"{where}: expected exactly two classes, got {len(classes)} ({shown}{', ...' if len(classes) > 5 else ''})")
    names = [c.item() if hasattr(c, "item") else c for c in classes]
    return (y == classes[1]).astype(np.int64), names


def _labelled(data: SequenceData, where: str) -> SequenceData:
    if data.y is None:
        raise DataFormatError(f"{where}: expected labels (NPZ 'y', CSV 'label' column, .ts class label), found none")
    bad = ~np.isfinite(data.X) & (np.arange(data.X.shape[1])[None, :, None] < data.lengths[:, None, None])
    if bad.any():
        i, t, f = np.argwhere(bad)[0]
        raise DataFormatError(
            f"{where}: expected finite feature values, got {int(bad.sum())} NaN/Inf (first at sample {i}, "
            f"timestep {t}, feature {f}); fill or drop them before building"
        )
    return data


def load_splits(cfg: BuildConfig) -> tuple[Splits, list]:
    """Train/val/test splits with labels encoded to {0, 1}, and the class names."""
    d = cfg.data
    if d.path is None:
        data = make_order_task(d.n_samples, d.timesteps, d.features, seed=cfg.seed)
        test_data = None
    else:
        data = _labelled(read_sequences(d.path), d.path)
        test_data = _labelled(read_sequences(d.test_path), d.test_path) if d.test_path else None
    y, names = encode_labels(data.y, d.path or "default task")
    data.y = y
    if test_data is not None:
        if test_data.n_features != data.n_features:
            raise DataFormatError(f"{d.test_path}: expected {data.n_features} features like the training data, got {test_data.n_features}")
        unknown = set(np.unique(test_data.y).tolist()) - set(names)
        if unknown:
            raise DataFormatError(f"{d.test_path}: labels {sorted(map(str, unknown))} do not occur in the training data {names}")
        test_data.y = (test_data.y == np.asarray(names, dtype=test_data.y.dtype)[1]).astype(np.int64)
        rest = data
    else:
        if min(np.bincount(y)) < 3:
            raise DataFormatError(f"{d.path}: each class needs at least 3 samples to split train/validation/test, got {np.bincount(y).tolist()}")
        rest, test_data = stratified_split(data, d.test_fraction, cfg.seed)
    train, val = stratified_split(rest, d.val_fraction, cfg.seed + 1)
    return Splits(train, val, test_data), names


def _pad_to(data: SequenceData, T: int) -> SequenceData:
    if data.X.shape[1] == T:
        return data
    X = np.zeros((data.n_samples, T, data.n_features), np.float32)
    X[:, : data.X.shape[1]] = data.X[:, :T]
    return SequenceData(X, np.minimum(data.lengths, T), data.y, data.ids, data.feature_names)


# ---------------------------------------------------------------------------- helpers

def _versions() -> dict[str, str]:
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


def _export(model, cfg: BuildConfig) -> tuple[Any, str, Optional[str]]:
    """Convert with the configured backend: (ModelProto, backend used, fallback reason)."""
    from pipeline.training.model import INPUT_NAME
    from pipeline.export.native import OUTPUT_NAME, UnsupportedModelError, export_native

    backend = cfg.export.backend
    if backend in ("auto", "native"):
        try:
            return export_native(model, INPUT_NAME, cfg.export.opset), "native", None
        except UnsupportedModelError as exc:
            if backend == "native":
                raise
            reason = str(exc)
            log(f"  native GRU export not possible ({reason}); falling back to tf2onnx (Loop graph)")
    else:
        reason = None
    from pipeline.export.tf2onnx_fallback import export_tf2onnx

    return export_tf2onnx(model, INPUT_NAME, OUTPUT_NAME, cfg.export.opset), "tf2onnx", reason


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0


def _publish(staging: Path, out: Path) -> None:
    """Move the verified staging folder to ``out``.

    Where the OS can swap two folders atomically, ``out`` is never missing: it holds the old
    artifact until the instant it holds the new one. Elsewhere the old folder is first renamed to
    ``.<out>.previous-<pid>``; if the process dies before the second rename, ``_recover`` puts it
    back at the start of the next build.
    """
    if out.exists() and _exchange(staging, out):
        shutil.rmtree(staging, ignore_errors=True)  # staging now holds the old artifact
        return
    backup = out.parent / f".{out.name}.previous-{os.getpid()}"
    if backup.exists():
        shutil.rmtree(backup)
    if out.exists():
        os.replace(out, backup)
    try:
        os.replace(staging, out)
    except BaseException:
        if backup.exists() and not out.exists():
            os.replace(backup, out)
        raise
    if backup.exists():
        shutil.rmtree(backup, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _recover(out: Path) -> None:
    """Undo what a killed build left beside ``out``: restore a moved-aside artifact if ``out`` is
    missing, and delete staging/previous folders of processes that no longer run."""
    if not out.parent.is_dir():
        return
    leftovers = sorted(out.parent.glob(f".{out.name}.previous-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not out.exists() and leftovers:
        os.replace(leftovers.pop(0), out)
        log(f"  restored the previous artifact into {out} (a build was interrupted while publishing)")
    for path in leftovers + list(out.parent.glob(f".{out.name}.staging-*")):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------- the build

def _memo(fn):
    """Cache ``fn(Z)`` by the bytes of Z: the same family is verified against two graph forms."""
    import hashlib

    cache: dict[tuple, np.ndarray] = {}

    def call(Z: np.ndarray) -> np.ndarray:
        key = (Z.shape, str(Z.dtype), hashlib.blake2b(np.ascontiguousarray(Z).tobytes(), digest_size=16).digest())
        if key not in cache:
            cache[key] = fn(Z)
        return cache[key]

    return call


def run_build(cfg: BuildConfig) -> BuildResult:
    """Train, export, verify and publish according to ``cfg``; returns where and what was written.

    When verification fails and ``train.conditioning_retries`` allows, the model is trained again
    from the same seed with ``model.recurrent_norm_max`` halved (a better-conditioned recurrence)
    and exported and verified again; nothing is published until a model passes, and the manifest
    lists the refused attempts under ``conditioning_retries``.

    Raises:
        PipelineError subclasses: bad data/config (nothing written), export or verification
        failure (the previous artifact stays in place).
    """
    started = time.time()
    cfg.validate()
    refused: list[dict[str, Any]] = []
    while True:
        try:
            return _build_once(cfg, started, refused)
        except VerificationError as exc:
            cap = cfg.model.recurrent_norm_max
            if not cap or len(refused) >= cfg.train.conditioning_retries:
                raise
            refused.append({"recurrent_norm_max": cap, "error": str(exc)})
            cfg = copy.deepcopy(cfg)
            cfg.model.recurrent_norm_max = cap / 2
            log(f"  refused: {str(exc)[:160]}...\n  retraining with model.recurrent_norm_max = {cap / 2:g} "
                f"(was {cap:g}; attempt {len(refused) + 1} of {cfg.train.conditioning_retries + 1})")


def _build_once(cfg: BuildConfig, started: float, refused: list[dict[str, Any]]) -> BuildResult:
    """One train -> export -> verify -> publish pass (see ``run_build``)."""
    out = Path(cfg.out).resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out must be a directory, got an existing file {str(out)!r}")
    _recover(out)

    log("[1/6] data")
    splits, class_names = load_splits(cfg)
    variable = any(s.variable_length for s in (splits.train, splits.val, splits.test))
    masking = cfg.model.masking if cfg.model.masking is not None else variable
    if variable and not masking:
        raise ConfigError("the data has sequences of different lengths: masking is required (drop --no-masking)")
    T = max(s.X.shape[1] for s in (splits.train, splits.val, splits.test))
    train, val, test = (_pad_to(s, T) for s in (splits.train, splits.val, splits.test))
    F = train.n_features
    prep = fit_standardization(train.X, train.lengths)
    scale = lambda d: apply_preprocessing(d.X, prep, d.lengths)  # noqa: E731  (N, T, F) scaled
    log(f"  train {train.n_samples}, validation {val.n_samples}, test {test.n_samples} sequences; "
        f"T={T}{' (variable, masked)' if masking else ''}, F={F}, classes {class_names}")

    log("[2/6] train")
    from pipeline.training.baseline import order_blind_accuracy
    from pipeline.training.model import INPUT_NAME, build_model
    from pipeline.training.fit import fit, keras_proba, seed_everything

    seed_everything(cfg.seed)
    model = build_model(cfg.model, F, masking, cfg.train.learning_rate)
    result = fit(model, scale(train), train.y, scale(val), val.y, cfg.train)
    sched = result.schedule
    log(f"  schedule: up to {sched['epochs']} epochs x {sched['steps_per_epoch']} updates (batch {sched['batch_size']}), "
        f"patience {sched['patience']}, class weights {sched['class_weight'] or 'none'}")
    from pipeline.report.writer import binary_metrics, choose_threshold

    probas = {name: (d.y, keras_proba(model, scale(d)))
              for name, d in (("train", train), ("validation", val), ("test", test))}
    if cfg.train.threshold is not None:
        threshold, threshold_source = float(cfg.train.threshold), "fixed by train.threshold"
    else:
        threshold, threshold_source = choose_threshold(*probas["validation"])
    metrics = {
        **{name: binary_metrics(y, p, threshold) for name, (y, p) in probas.items()},
        "order_blind_baseline_test_accuracy": order_blind_accuracy(
            train.X, train.lengths, train.y, test.X, test.lengths, test.y),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "schedule": sched,
    }
    log(f"  test accuracy {metrics['test']['accuracy']:.4f} at threshold {threshold:.4g} (order-blind baseline "
        f"{metrics['order_blind_baseline_test_accuracy']:.4f}), best epoch {result.best_epoch}/{result.epochs_run}")

    log("[3/6] export")
    proto, backend, fallback = _export(model, cfg)
    ops = sorted({n.op_type for n in proto.graph.node})
    log(f"  backend {backend}, opset {cfg.export.opset}, ops: {', '.join(ops)}")

    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        model_path = staging / artifact.MODEL_FILE
        model_path.write_bytes(proto.SerializeToString())
        ref_n = min(REFERENCE_ROWS, test.n_samples)
        ref_X, ref_len = test.X[:ref_n], test.lengths[:ref_n]
        ref_p = keras_proba(model, apply_preprocessing(ref_X, prep, ref_len))
        np.savez(staging / artifact.REFERENCE_FILE, X=ref_X, lengths=ref_len, keras_proba=ref_p, ids=test.ids[:ref_n])
        manifest: dict[str, Any] = {
            "schema_version": artifact.SCHEMA_VERSION,
            "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {"file": artifact.MODEL_FILE, "sha256": artifact.sha256_file(model_path),
                      "opset": cfg.export.opset, "backend": backend, "fallback_reason": fallback, "ops": ops},
            "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", "time", F], "kind": "features"},
            "output": {"name": proto.graph.output[0].name, "dtype": "float32", "shape": ["batch", 1],
                       "meaning": f"probability of class {class_names[1]!r}"},
            "preprocessing": prep,
            "masking": {"enabled": bool(masking), "mask_value": 0.0 if masking else None,
                        "padding": "right" if masking else None},
            "threshold": threshold,
            "threshold_source": threshold_source,
            "class_names": class_names,
            "timesteps_trained": T,
            "feature_names": train.feature_names,
            "seed": cfg.seed,
            "config": cfg.to_dict(),
            "versions": _versions(),
            "metrics": metrics,
            "training_history": result.history,
            "conditioning_retries": refused,  # earlier attempts refused by verification (see run_build)
            "reference": {"file": artifact.REFERENCE_FILE, "rows": int(ref_n)},
        }
        from pipeline.export.stream import export_stream  # stream.onnx + manifest["stream"], verified

        export_stream(model, staging, manifest, cfg, lambda Z: keras_proba(model, Z))
        from pipeline.verification.unrolled import stage_unrolled, verify_unrolled

        stage_unrolled(proto, staging, manifest, T, bool(masking), log)
        artifact.write_manifest(staging, manifest)

        log("[4/6] verify Keras vs onnxruntime")
        from pipeline.verification.equivalence import (format_table, results_to_manifest, stress_families,
                                           verify_equivalence)
        from pipeline.runtime import Predictor

        predictor = Predictor.load(staging, graph="native")  # model.onnx itself; the unrolled form below
        keras_fn = _memo(lambda Z: keras_proba(model, Z))
        families = stress_families(test, prep, cfg.verify.n_random, cfg.verify.odd_batch,
                                   cfg.verify.large_batch, cfg.seed, masking)
        sample_errors: dict[str, np.ndarray] = {}
        try:
            from pipeline.training.model import float64_twin

            twin64: list = []  # built on first use: only a failure needs it

            def exact_proba(Z: np.ndarray) -> np.ndarray:
                if not twin64:
                    twin64.append(float64_twin(model))
                twin = twin64[0]
                return np.concatenate([np.asarray(twin(Z[s:s + 1024].astype(np.float64), training=False)).reshape(-1)
                                       for s in range(0, len(Z), 1024)])

            results = verify_equivalence(keras_fn, predictor.predict_proba,
                                         families, prep, cfg.verify.atol, threshold, errors_out=sample_errors,
                                         exact_fn=exact_proba)
        finally:
            del predictor
        table = format_table(results, cfg.verify.atol)
        log(table)
        manifest["equivalence"] = results_to_manifest(results, cfg.verify.atol)
        verify_unrolled(staging, manifest, families, keras_fn, prep, cfg.verify.atol, threshold, log)
        artifact.write_manifest(staging, manifest)

        log("[5/6] report")
        from pipeline.report.writer import write_plots, write_report

        plots = write_plots(staging, result.history, {k: probas[k] for k in ("validation", "test")}, threshold,
                            class_names, sample_errors, cfg.verify.atol)
        manifest["report"] = {"file": artifact.REPORT_FILE, "plots": plots}
        artifact.write_manifest(staging, manifest)
        write_report(staging, manifest, table, plots)

        log("[6/6] publish")
        _publish(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    seconds = time.time() - started
    log(f"wrote {out} in {seconds:.1f} s (max |Keras - ONNX| = {manifest['equivalence']['max_abs_error']:.3g})")
    return BuildResult(out, manifest, seconds)
