"""Check the staged unrolled batch graph: it ships only when it is as trustworthy as model.onnx.

Owns: the two checks on ``model_unrolled.onnx`` (staged by pipeline.packaging.graphs) and the
completion of its manifest entry: Keras vs the unrolled graph on every verification family (same tolerance as model.onnx;
failing it drops the file), and the unrolled vs the native graph within ``STRATEGY_ATOL``. Only
when the second holds too may the runtime pick the unrolled graph by itself ("auto": true), so
that its automatic choice never changes a result by more than that; otherwise the graph ships
for callers who ask for it (``graph="unrolled"``) with the measured difference in the manifest.
Imports: numpy, pipeline.verification.equivalence, pipeline.runtime.
Reads: the staged folder. Writes: removes ``<staging>/model_unrolled.onnx`` if a check fails; fills
``manifest["unrolled"]`` (the caller writes the manifest).

Manifest entry::

    "unrolled": {"supported": true, "file": "model_unrolled.onnx", "sha256": ..., "timesteps": 50,
                 "auto": true | false, "auto_reason": "<why not>" (when false),
                 "verification": {"atol": 1e-5, "max_abs_error_vs_keras": ..., "strategy_atol": 1e-6,
                                  "max_abs_error_vs_native": ..., "inputs_over_strategy_atol": ...,
                                  "inputs": ..., "families": [...]}}

or ``{"supported": false, "reason": "<why>"}``: the runtime then always uses model.onnx.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline import artifact, progress
from pipeline.errors import VerificationError
from pipeline.verification.tolerances import STRATEGY_ATOL

__all__ = ["verify_unrolled", "STRATEGY_ATOL"]


def _drop(staging: Path, manifest: dict[str, Any], reason: str) -> None:
    (Path(staging) / artifact.UNROLLED_MODEL_FILE).unlink(missing_ok=True)
    manifest["unrolled"] = {"supported": False, "reason": reason}
    progress.log(f"  unrolled batch graph: not shipped ({reason})")


def verify_unrolled(staging: Path, manifest: dict[str, Any], families, keras_fn, prep: dict[str, Any],
                    atol: float, decision: dict[str, Any]) -> None:
    """Check a staged unrolled graph against Keras and the native graph; drop it on any failure."""
    from pipeline.verification.equivalence import verify_equivalence
    from pipeline.runtime import Predictor

    entry = manifest.get("unrolled") or {}
    if not entry.get("supported"):
        return
    T = entry["timesteps"]
    fams = [f for f in families if f.X.shape[1] == T and f.lengths is None]
    unrolled = Predictor.load(staging, graph="unrolled")
    native = Predictor.load(staging, graph="native")
    try:
        results = verify_equivalence(keras_fn, unrolled.predict_proba, fams, prep, atol, decision)
    except VerificationError as exc:
        _drop(staging, manifest, f"unrolled graph vs Keras: {exc}")
        return
    diffs = np.concatenate([np.abs(unrolled.predict_proba(f.X).astype(np.float64)  # (N,) largest column per row
                                   - native.predict_proba(f.X).astype(np.float64)).reshape(len(f.X), -1).max(axis=1)
                            for f in fams])
    vs_native, over = float(diffs.max()), int((~(diffs <= STRATEGY_ATOL)).sum())
    worst = max(r.max_abs for r in results)
    entry["verification"] = {"atol": atol, "max_abs_error_vs_keras": worst, "strategy_atol": STRATEGY_ATOL,
                             "max_abs_error_vs_native": vs_native, "inputs_over_strategy_atol": over,
                             "inputs": int(diffs.size), "families": [r.name for r in results]}
    entry["auto"] = over == 0
    if over:
        entry["auto_reason"] = (f"unrolled and native graphs differ by up to {vs_native:.3g} > {STRATEGY_ATOL:g} on "
                                f"{over} of {diffs.size} verification inputs (float32 rounding order), so the "
                                "runtime does not switch graphs by itself; pass graph='unrolled' to use it")
    progress.log(f"  unrolled batch graph (T={T}, {entry['nodes']} nodes): max |Keras - unrolled| {worst:.3g}, "
        f"max |unrolled - native| {vs_native:.3g} on {diffs.size} inputs; "
        + ("used automatically for large batches" if not over else entry["auto_reason"]))
