"""Re-check a shipped artifact against its Keras model: ``gru-verify`` and ``assert_artifact_matches``.

Owns: running the artifact (through the runtime) and the Keras model on the artifact's reference
inputs and on optional extra data, the per-family table, and the verdict.
Layer: packaging. Imports: numpy, pipeline.runtime, pipeline.verification.equivalence,
pipeline.keras_source (keras).
Reads: ``MODEL_DIR`` (manifest, model.onnx, reference.npz), the Keras model file, the data file.
Writes: nothing.

Example (pytest):
    >>> from pipeline.packaging import assert_artifact_matches
    >>> assert_artifact_matches("exported", "model.keras")   # AssertionError with the table on a mismatch
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from pipeline import artifact
from pipeline.errors import VerificationError
from pipeline.keras_source.describe import describe, source_proba
from pipeline.keras_source.load import load_keras_file
from pipeline.packaging.own_model import read_sample
from pipeline.runtime import Predictor
from pipeline.settings import VerifyConfig
from pipeline.verification.equivalence import Family, format_table, verify_equivalence

__all__ = ["recheck", "assert_artifact_matches"]


def recheck(model_dir: str | Path, keras_model, data: Optional[str | Path] = None,
            atol: Optional[float] = None) -> str:
    """Compare the artifact with ``keras_model`` (a model or a file path); return the Markdown table.

    Raises:
        VerificationError: they disagree beyond ``atol`` (default: the artifact's own tolerance);
            the message holds the table.
    """
    predictor = Predictor.load(model_dir)
    manifest = predictor.manifest
    model = load_keras_file(keras_model) if isinstance(keras_model, (str, Path)) else keras_model
    source = describe(model, logits=(manifest.get("source") or {}).get("head") in ("logit", "logit2", "logits"))
    inp = manifest["input"]
    want_kind, want_shape = inp.get("kind", "features"), inp["shape"]
    got_f = source.features if source.input_kind == "features" else None
    if source.input_kind != want_kind or (want_kind == "features" and int(want_shape[2]) != got_f):
        raise VerificationError(
            f"{model_dir} takes {want_kind} of shape {want_shape}, but the Keras model takes {source.input_kind}"
            + (f" with {got_f} features" if got_f is not None else "") + ": not the model this artifact was exported from")
    atol = float(atol if atol is not None else manifest.get("equivalence", {}).get("atol", VerifyConfig().atol))
    with np.load(Path(model_dir) / artifact.REFERENCE_FILE, allow_pickle=False) as ref:
        lengths = ref["lengths"] if predictor.masked else None
        families = [Family("reference inputs", ref["X"], lengths)]
    if data is not None:
        X, lengths, _, _ = read_sample(data, tokens=source.input_kind == "tokens")
        families.append(Family(f"data {Path(data).name}", X, lengths if predictor.masked else None))
    prep = manifest.get("preprocessing", {"type": "none"})
    try:
        results = verify_equivalence(lambda Z, lengths: source_proba(source, Z, lengths), predictor.predict_proba,
                                     families, prep, atol, manifest["decision"])
    except VerificationError as exc:
        raise VerificationError(f"{model_dir} no longer equals the Keras model: {exc}") from None
    return format_table(results, atol)


def assert_artifact_matches(model_dir: str | Path, keras_model, data: Optional[str | Path] = None,
                            atol: Optional[float] = None) -> str:
    """``recheck`` for test suites: AssertionError (with the table) instead of VerificationError."""
    try:
        return recheck(model_dir, keras_model, data, atol)
    except VerificationError as exc:
        raise AssertionError(str(exc)) from None
