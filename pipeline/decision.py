"""Tasks and decision rules: from probabilities to classes (docs/artifact.md).

Owns: the three tasks (binary, multiclass, multilabel), the ``decision`` entry each writes into the
manifest and the graph's metadata_props, checking such an entry, and applying it. The runtime's
``predict``, the verification's decision-flip count and the report's metrics all decide through
``decide``, so they cannot disagree.
Layer: shared. Imports: numpy. Reads/writes: nothing.

Example:
    >>> rule = decision_entry("multiclass", 3)
    >>> decide(np.array([[0.2, 0.5, 0.3]]), rule)
    array([1])
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["TASKS", "decision_entry", "check_decision", "decide", "n_outputs"]

TASKS = ("binary", "multiclass", "multilabel")


def n_outputs(task: str, n_classes: int) -> int:
    """Width of the graph output: 1 (p(class 1)) for a binary task, k otherwise."""
    return 1 if task == "binary" else int(n_classes)


def decision_entry(task: str, n_classes: int, threshold: Optional[float | Sequence[float]] = None) -> dict[str, Any]:
    """The manifest ``decision`` entry of ``task``: threshold (binary, default 0.5), argmax, or one threshold per class.

    Raises ValueError with a one-line reason for an unknown task or a threshold outside (0, 1).
    """
    if task == "binary":
        return check_decision({"rule": "threshold", "threshold": 0.5 if threshold is None else float(threshold)},
                              task, 2)
    if task == "multiclass":
        if threshold is not None:
            raise ValueError("a multi-class model decides by argmax: expected no threshold, got one")
        return {"rule": "argmax"}
    if task == "multilabel":
        ts = [0.5] * n_classes if threshold is None else (
            [float(threshold)] * n_classes if np.ndim(threshold) == 0 else [float(t) for t in threshold])
        return check_decision({"rule": "thresholds", "thresholds": ts}, task, n_classes)
    raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")


def check_decision(entry: Any, task: str, n_classes: int) -> dict[str, Any]:
    """``entry`` when it is a valid decision rule of ``task`` with ``n_classes`` classes, else ValueError."""
    want = {"binary": "threshold", "multiclass": "argmax", "multilabel": "thresholds"}.get(task)
    if want is None:
        raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")
    if not isinstance(entry, dict) or entry.get("rule") != want:
        raise ValueError(f"decision: a {task} model expected the rule {want!r}, got {entry!r}")
    values = [entry.get("threshold")] if want == "threshold" else entry.get("thresholds", []) if want == "thresholds" \
        else []
    if want == "thresholds" and (not isinstance(values, list) or len(values) != n_classes):
        raise ValueError(f"decision: expected {n_classes} thresholds, one per class, got {values!r}")
    for t in values:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < float(t) < 1.0:
            raise ValueError(f"decision: expected thresholds in (0, 1), got {t!r}")
    return entry


def decide(proba: np.ndarray, entry: dict[str, Any]) -> np.ndarray:
    """Class decisions of ``proba`` by the rule ``entry``.

    Args:
        proba: (N,) p(class 1) for the threshold rule; (N, k) for argmax and thresholds.
    Returns:
        (N,) class indices (threshold: 0 or 1; argmax: the first largest), or (N, k) booleans for the
        per-class thresholds of a multi-label model.
    """
    p = np.asarray(proba)
    rule = entry["rule"]
    if rule == "threshold":
        return (p >= float(entry["threshold"])).astype(np.int64)  # compared in float64, as p >= 0.5 is
    if rule == "argmax":
        return np.argmax(p, axis=1)
    if rule == "thresholds":
        return p >= np.asarray(entry["thresholds"], np.float64)[None, :]
    raise ValueError(f"decision rule: expected threshold, argmax or thresholds, got {rule!r}")
