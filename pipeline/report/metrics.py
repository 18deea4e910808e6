"""Classification metrics and the decision threshold (numpy only, no sklearn).

Owns: ROC / precision-recall curves and their areas, the confusion matrix, the per-split metrics
dictionary of the manifest, and the threshold chosen on validation data.
Imports: numpy only. Reads/writes: nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["roc_curve", "pr_curve", "auc", "average_precision", "confusion", "binary_metrics", "choose_threshold",
           "class_metrics"]


def _sorted_counts(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true/false positives when thresholding at each distinct score, highest first."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(-p, kind="mergesort")
    p, y = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(p)), len(p) - 1]  # last index of each run of equal scores
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return tp.astype(np.float64), fp.astype(np.float64), p[last]


def roc_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), starting at (0, 0). y in {0, 1}."""
    tp, fp, thr = _sorted_counts(y, p)
    P, N = max(tp[-1], 1.0) if len(tp) else 1.0, max(fp[-1], 1.0) if len(fp) else 1.0
    return np.r_[0.0, fp / N], np.r_[0.0, tp / P], np.r_[np.inf, thr]


def pr_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(recall, precision, thresholds) for class 1, starting at recall 0 / precision 1."""
    tp, fp, thr = _sorted_counts(y, p)
    P = max(tp[-1], 1.0) if len(tp) else 1.0
    precision = tp / np.maximum(tp + fp, 1.0)
    return np.r_[0.0, tp / P], np.r_[1.0, precision], np.r_[np.inf, thr]


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoidal area under a curve given by monotone x."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0)) if len(x) > 1 else float("nan")


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the precision-recall curve as a step function (the usual 'average precision')."""
    recall, precision, _ = pr_curve(y, p)
    return float(np.sum(np.diff(recall) * precision[1:]))


def confusion(y: np.ndarray, p: np.ndarray, threshold: float) -> list[list[int]]:
    """[[TN, FP], [FN, TP]] (rows: true class 0/1, columns: predicted 0/1) at ``p >= threshold``."""
    y = np.asarray(y, np.int64)
    pred = (np.asarray(p) >= threshold).astype(np.int64)
    return [[int(((y == t) & (pred == q)).sum()) for q in (0, 1)] for t in (0, 1)]


def _balanced_accuracy(cm: list[list[int]]) -> float:
    rates = [cm[c][c] / (cm[c][0] + cm[c][1]) for c in (0, 1) if cm[c][0] + cm[c][1] > 0]
    return float(np.mean(rates)) if rates else float("nan")


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    """Accuracy, balanced accuracy, log loss, ROC AUC, average precision and confusion matrix."""
    y = np.asarray(y, np.int64)
    p64 = np.asarray(p, np.float64)
    eps = 1e-7
    loss = -np.mean(y * np.log(np.clip(p64, eps, 1)) + (1 - y) * np.log(np.clip(1 - p64, eps, 1))) if len(y) else float("nan")
    cm = confusion(y, p64, threshold)
    both = 0 < y.sum() < len(y)
    fpr, tpr, _ = roc_curve(y, p64)
    return {
        "accuracy": float(((p64 >= threshold).astype(np.int64) == y).mean()) if len(y) else float("nan"),
        "balanced_accuracy": _balanced_accuracy(cm),
        "loss": float(loss),
        "roc_auc": auc(fpr, tpr) if both else None,
        "average_precision": average_precision(y, p64) if both else None,
        "confusion_matrix": cm,
        "n": int(len(y)),
    }


def choose_threshold(y: np.ndarray, p: np.ndarray, default: float = 0.5) -> tuple[float, str]:
    """Threshold maximising balanced accuracy on (y, p), and how it was chosen.

    Among all thresholds reaching the best balanced accuracy the one closest to ``default`` is
    taken (so 0.5 is kept whenever it is already optimal). Degenerate data (one class only, or
    no sample) gives ``default``.
    """
    y = np.asarray(y, np.int64)
    p = np.asarray(p, np.float64)
    if len(y) == 0 or y.min() == y.max():
        return float(default), "default (validation split has one class only)"
    u = np.unique(p)
    # Candidates: midpoints between distinct scores, plus just below the lowest / above the highest.
    cands = np.r_[u[0] / 2.0, (u[1:] + u[:-1]) / 2.0, (u[-1] + 1.0) / 2.0, default]
    cands = cands[(cands > 0) & (cands < 1)]
    P, N = max(int(y.sum()), 1), max(int((1 - y).sum()), 1)
    pred = p[None, :] >= cands[:, None]
    bal = ((pred & (y == 1)).sum(1) / P + (~pred & (y == 0)).sum(1) / N) / 2.0
    best = bal.max()
    tied = cands[np.isclose(bal, best, rtol=0, atol=1e-12)]
    # Within the interval of equally good thresholds that contains the default, keep the default.
    chosen = float(tied[np.argmin(np.abs(tied - default))])
    return chosen, f"max balanced accuracy on validation ({best:.4f})"


def class_metrics(y: np.ndarray, p: np.ndarray, decision: dict[str, Any], class_names: list) -> dict[str, Any]:
    """Metrics of a multi-class or multi-label model, decided by ``decision`` (pipeline.decision).

    Args:
        y: (N,) class indices (multi-class) or (N, k) 0/1 (multi-label).
        p: (N, k) probabilities.
    Returns:
        accuracy (exact match for multi-label), macro F1, per-class precision / recall / F1 / support,
        and, multi-class only, the log loss (mean -log p[true class], p clipped at 1e-7) and the k x k
        confusion matrix (rows: true class, columns: predicted).
    """
    from pipeline.decision import decide

    p = np.asarray(p, np.float64)
    k = p.shape[1]
    pred = decide(p, decision)
    y = np.asarray(y)
    if pred.ndim == 1:  # multi-class: one class per row
        truth, guess = np.eye(k, dtype=bool)[y], np.eye(k, dtype=bool)[pred]
        accuracy = float((pred == y).mean()) if len(y) else float("nan")
    else:
        truth, guess = y.astype(bool), pred
        accuracy = float((truth == guess).all(axis=1).mean()) if len(y) else float("nan")
    tp = (truth & guess).sum(axis=0).astype(np.float64)  # (k,)
    precision = tp / np.maximum(guess.sum(axis=0), 1)
    recall = tp / np.maximum(truth.sum(axis=0), 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    out: dict[str, Any] = {
        "n": int(len(y)), "accuracy": accuracy, "macro_f1": float(f1.mean()),
        "per_class": {str(name): {"precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[j]),
                                  "support": int(truth[:, j].sum())} for j, name in enumerate(class_names)},
    }
    if pred.ndim == 1:
        out["loss"] = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1)))) if len(y) else float("nan")
        cm = np.zeros((k, k), np.int64)
        np.add.at(cm, (y, pred), 1)
        out["confusion_matrix"] = cm.tolist()
    return out
