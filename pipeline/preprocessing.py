"""Feature scaling applied between raw user features and the model input.

Owns: fitting (build) and applying (build and runtime) the per-feature standardization
recorded in ``manifest["preprocessing"]``. Imports: numpy only.

The build fits ``mean``/``std`` on the training split (real timesteps only) and the model is
trained on scaled features. The export writes the same float32 operations into every graph
(pipeline.export.scaling), so the graphs and their callers take raw features; this function
feeds Keras during verification and lets the runtime predict what the graph will compute when
it checks inputs. Padding stays 0 after scaling (the mask value of a masked model).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

__all__ = ["fit_standardization", "apply_preprocessing"]


def fit_standardization(X: np.ndarray, lengths: Optional[np.ndarray] = None) -> dict[str, Any]:
    """Fit per-feature mean and std over the real timesteps of X (N, T, F).

    A feature with zero spread gets std 1 so scaling never divides by zero.
    Returns the manifest ``preprocessing`` entry.
    """
    if lengths is None:
        flat = X.reshape(-1, X.shape[-1])
    else:
        valid = np.arange(X.shape[1])[None, :] < lengths[:, None]  # (N, T)
        flat = X[valid]  # (real steps, F)
    mean = flat.astype(np.float64).mean(axis=0).astype(np.float32)
    std = flat.astype(np.float64).std(axis=0).astype(np.float32)
    std[~(std > 1e-12)] = 1.0
    return {"type": "standardize", "mean": [float(v) for v in mean], "std": [float(v) for v in std]}


def apply_preprocessing(
    X: np.ndarray, spec: dict[str, Any], lengths: Optional[np.ndarray] = None, out: Optional[np.ndarray] = None
) -> np.ndarray:
    """Scale raw X (N, T, F) float32 as ``spec`` says; padding beyond ``lengths`` is set to 0.

    Args:
        X: raw features, (N, T, F).
        spec: manifest preprocessing entry ({"type": "standardize"|"none", ...}).
        lengths: (N,) real lengths, or None when every row is full length.
        out: optional float32 buffer of X's shape to write into.
    Returns:
        float32 array (N, T, F).
    """
    kind = spec.get("type", "none")
    if kind == "none":
        result = np.asarray(X, dtype=np.float32) if out is None else np.copyto(out, X) or out
    elif kind == "standardize":
        mean = np.asarray(spec["mean"], dtype=np.float32)
        std = np.asarray(spec["std"], dtype=np.float32)
        result = np.subtract(X, mean, out=out, dtype=np.float32)
        np.divide(result, std, out=result)
    else:
        raise ValueError(f"unknown preprocessing type {kind!r}: expected 'standardize' or 'none'")
    if lengths is not None and (lengths < result.shape[1]).any():
        if result is X:
            result = result.copy()
        result[np.arange(result.shape[1])[None, :] >= lengths[:, None]] = 0.0
    return result
