"""Human-readable build report (report.md in the artifact folder).

Owns: rendering the manifest's metrics, model and equivalence results as Markdown.
Imports: standard library only. Writes: ``<dir>/report.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline import artifact

__all__ = ["write_report"]


def write_report(folder: Path, manifest: dict[str, Any], equivalence_table: str) -> Path:
    """Write report.md summarising data, model, metrics and the Keras-vs-ONNX check."""
    m = manifest["metrics"]
    cfg = manifest["config"]
    model = manifest["model"]
    lines = [
        "# GRU classifier build report",
        "",
        f"Built {manifest.get('built_at', '?')} with seed {manifest['seed']}.",
        "",
        "## Data and model",
        "",
        f"- data: {cfg['data']['path'] or 'embedded default task (pulse order)'}",
        f"- input: {manifest['input']['shape']} float32, classes {manifest['class_names']}, "
        f"masking {'on' if manifest['masking']['enabled'] else 'off'}",
        f"- model: {json.dumps(cfg['model'])}",
        f"- export: backend `{model['backend']}`, opset {model['opset']}, ops {', '.join(model['ops'])}"
        + (f" (fallback: {model['fallback_reason']})" if model.get("fallback_reason") else ""),
        f"- sha256 of {artifact.MODEL_FILE}: `{model['sha256']}`",
        "",
        "## Metrics",
        "",
        "| split | accuracy | loss | n |",
        "|---|---:|---:|---:|",
    ]
    for split in ("train", "validation", "test"):
        s = m[split]
        lines.append(f"| {split} | {s['accuracy']:.4f} | {s['loss']:.4f} | {s['n']} |")
    lines += [
        "",
        f"Order-blind baseline (logistic regression on per-feature mean and std) test accuracy: "
        f"{m['order_blind_baseline_test_accuracy']:.4f}. Best epoch {m['best_epoch']} of {m['epochs_run']}.",
        "",
        "## Equivalence: Keras vs onnxruntime",
        "",
        equivalence_table,
        "",
    ]
    path = folder / artifact.REPORT_FILE
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
