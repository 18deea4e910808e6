"""Export a user's own Keras classifier: ``export_keras_model`` and the sample-file loader of ``gru-export``.

Owns: turning a trained Keras 3 classifier (binary, multi-class or multi-label) and sample inputs into
a verified artifact folder (the same contract as ``gru-build``), with the source model's name, hash, Keras version and backend
in the manifest. The inputs are the model's own: no scaling outside the model is assumed.
Layer: packaging. Imports: numpy, keras (heavy side), pipeline.keras_source, pipeline.packaging.exporter,
pipeline.verification.equivalence, pipeline.report.metrics. Reads: the model and sample files.
Writes: ``<out>/`` through ``export_model``.

Example:
    >>> from pipeline.packaging import export_keras_model
    >>> export_keras_model(model, X_sample, "exported")   # X_sample (N, T, F) float or (N, T) ids
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from pipeline import artifact, progress
from pipeline.datafiles import SequenceData, read_sequences, read_token_ids
from pipeline.decision import decision_entry
from pipeline.errors import ConfigError, DataFormatError
from pipeline.keras_source.describe import check_sample, describe, source_proba
from pipeline.keras_source.stateful import free_batch_size
from pipeline.packaging.exporter import ExportResult, export_model
from pipeline.packaging.spec import ArtifactSpec, Reference, TrainingRecord, VerificationPlan
from pipeline.report.metrics import binary_metrics, class_metrics
from pipeline.settings import ExportConfig, VerifyConfig
from pipeline.verification.equivalence import sample_families

__all__ = ["export_keras_model", "read_sample"]


def read_sample(path: str | Path, tokens: bool) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray], list | None]:
    """Read sample inputs: (X, lengths or None, labels or None, feature names or None).

    ``tokens``: the model takes token ids, read from NPZ/NPY by ``pipeline.datafiles.read_token_ids``;
    otherwise features in any format through ``pipeline.datafiles.read_sequences``.
    """
    if tokens:
        X, lengths, _, y = read_token_ids(path)
        return X, lengths, y, None
    data = read_sequences(path)
    full = bool((data.lengths == data.X.shape[1]).all())
    return data.X, None if full else data.lengths, data.y, data.feature_names


def _label_indices(y: np.ndarray, class_names: list, task: str) -> np.ndarray:
    """Sample labels as class indices (N,) (or (N, k) 0/1 for multi-label); DataFormatError for others.

    Integer labels 0..k-1 index the class names; other labels must be class names.
    """
    y = np.asarray(y)
    k = len(class_names)
    if task == "multilabel":
        if y.ndim != 2 or y.shape[1] != k or not np.isin(y, [0, 1]).all():
            raise DataFormatError(f"sample labels: a multi-label model expected (N, {k}) labels of 0 and 1, got shape "
                                  f"{y.shape}")
        return y.astype(np.int64)
    if y.dtype.kind in "iub" and y.size and 0 <= int(y.min()) and int(y.max()) < k:
        return y.astype(np.int64)
    names = np.asarray(class_names, dtype=y.dtype) if y.dtype.kind in "US" else np.asarray(class_names)
    known = np.isin(y, names)
    if not known.all():
        raise DataFormatError(f"sample labels: expected class indices 0..{k - 1} or the class names {class_names}, got "
                              f"{y[~known][0]!r}")
    index = {v: j for j, v in enumerate(names.tolist())}
    return np.array([index[v] for v in y.tolist()], np.int64)


def _decision(task: str, k: int, threshold) -> tuple[dict[str, Any], str]:
    """The artifact's decision rule from ``--threshold`` (None: the task's default), and its source."""
    try:
        entry = decision_entry(task, k, threshold)
    except ValueError as exc:
        raise ConfigError(f"--threshold: {exc}") from None
    return entry, ("default" if threshold is None else "given")


def export_keras_model(
    model,
    X: np.ndarray,
    out: str | Path = "exported",
    *,
    lengths: Optional[np.ndarray] = None,
    y: Optional[np.ndarray] = None,
    class_names: Optional[Sequence] = None,
    threshold: Optional[float | Sequence[float]] = None,
    logits: bool = False,
    export: Optional[ExportConfig] = None,
    verify: Optional[VerifyConfig] = None,
    seed: int = 0,
    source_file: Optional[str | Path] = None,
    feature_names: Optional[list] = None,
) -> ExportResult:
    """Export a trained Keras classifier (binary, multi-class or multi-label) to a verified artifact folder.

    Args:
        model: a Keras 3 Sequential or Functional model with one input and one output, ending in
            Dense(1, sigmoid), Dense(k, softmax), Dense(k, sigmoid) (multi-label) or (with
            ``logits=True``) Dense(k) logits (docs/artifact.md).
        X: sample inputs exactly as the model takes them: (N, T, F) float features or (N, T) token
            ids; right-padded rows when ``lengths`` is given (masked models).
        out: artifact folder (default ``exported``); replaced only after every check passed.
        lengths: (N,) real lengths of right-padded rows, or None.
        y: optional labels of the sample (class names or indices; (N, k) 0/1 for multi-label); the
            report then adds metrics.
        class_names: the k class names (default: 0..k-1).
        threshold: binary: the threshold on p(class 1) (default 0.5); multi-label: one for every class
            or one per class (default 0.5 each); multi-class decides by argmax and takes none.
        logits: the model's Dense(k) output holds logits (k = 1: the logit of class 1).
        export, verify: settings (defaults: native GRU op with tf2onnx fallback, opset 17, atol 1e-5).
        seed: seeds the verification families.
        source_file: the file the model was loaded from (its name and sha256 go to the manifest).
        feature_names: names of the F features, if known.
    Returns:
        ExportResult(out_dir, manifest, seconds).
    Raises:
        ModelKindError (exit 2): not a classifier with one input and one output we can export.
        DataFormatError (exit 2): the sample does not fit the model (shape, dtype, NaN/Inf, ids, empty).
        ConfigError (exit 2): class names or thresholds that do not fit the model's head.
        VerificationError (exit 5): Keras and onnxruntime disagree; nothing is written.
    """
    import keras

    export = export or ExportConfig()
    verify = verify or VerifyConfig()
    describe(model, logits)  # refusals (initial_state, heads, inputs) name the user's own layers
    model, stateful_note = free_batch_size(model)
    if stateful_note:
        progress.log(f"  {stateful_note}")
    source = describe(model, logits)
    lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)
    Xs = check_sample(source, X, lengths, "sample")
    if lengths is not None and (lengths.shape != (Xs.shape[0],) or (lengths < 1).any() or (lengths > Xs.shape[1]).any()):
        raise DataFormatError(f"sample lengths: expected ({Xs.shape[0]},) integers in [1, {Xs.shape[1]}], got shape "
                              f"{lengths.shape}")
    if lengths is not None and not source.masking:
        raise DataFormatError("sample lengths given, but the model has no Masking layer or Embedding(mask_zero=True): "
                              "it would read the padding as data")
    n, T = Xs.shape[0], Xs.shape[1]
    names = list(class_names) if class_names is not None else list(range(source.n_classes))
    if len(names) != source.n_classes:
        raise ConfigError(f"class names: the model's head has {source.n_classes} classes, got {len(names)} names "
                          f"({names})")
    decision, decision_source = _decision(source.task, source.n_classes, threshold)
    sample = SequenceData(X=Xs, lengths=lengths if lengths is not None else np.full(n, T, np.int64),
                          y=None, ids=np.array([str(i) for i in range(n)]), feature_names=feature_names)
    families = sample_families(Xs, lengths, source, verify, seed)
    dims: list[Any] = ["batch", T if source.timesteps is not None else "time"]
    if source.input_kind == "tokens":
        input_spec = {"name": artifact.INPUT_NAME, "dtype": "int64", "shape": dims, "kind": "tokens",
                      "vocabulary_size": source.vocabulary_size}
    else:
        input_spec = {"name": artifact.INPUT_NAME, "dtype": "float32", "shape": dims + [source.features],
                      "kind": "features"}
    source_entry: dict[str, Any] = {
        "file": Path(source_file).name if source_file else None,
        "sha256": artifact.sha256_file(source_file) if source_file else None,
        "model_name": model.name, "head": source.head, "keras_version": keras.__version__,
        "keras_backend": keras.backend.backend(), "timesteps": source.timesteps,
    }
    if stateful_note:
        source_entry["stateful"] = stateful_note
    extra: dict[str, Any] = {
        "source": source_entry,
        "config": {"export": vars(export).copy(), "verify": vars(verify).copy(), "logits": bool(logits)},
    }
    curves = None
    if y is not None:
        labels = _label_indices(y, names, source.task)
        p = source_proba(source, Xs, lengths)
        if source.task == "binary":
            extra["metrics"] = {"sample": binary_metrics(labels, p, decision["threshold"])}
            curves = {"sample": (labels, p)}
        else:
            extra["metrics"] = {"sample": class_metrics(labels, p, decision, names)}
    spec = ArtifactSpec(class_names=names, task=source.task, decision=decision, decision_source=decision_source,
                        masking=source.masking, mask_value=source.mask_value, input=input_spec)
    plan = VerificationPlan(sample, families=families, settings=verify, seed=seed)
    record = TrainingRecord(manifest=extra, curves=curves or {})
    reference = Reference(source.proba_model, lambda Z, lengths: source_proba(source, Z, lengths))
    return export_model(reference, spec, plan, out, export, record)
