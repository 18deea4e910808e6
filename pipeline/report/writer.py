"""The artifact's report: report.md and PNG plots in the artifact folder.

Owns: rendering the manifest's data, model, training, metrics, equivalence and cross-runtime results and plots as
Markdown, and drawing the plots. Binary artifacts: threshold, 2 x 2 confusion matrix, ROC and precision-recall
curves. Multi-class: argmax, k x k confusion matrix (table and heatmap), per-class precision / recall / F1 and
macro-F1; no ROC / PR plots (one curve per class pair would say less than the confusion matrix). Multi-label:
per-class thresholds, precision / recall / F1.
Imports: numpy, pipeline.decision, pipeline.report.metrics; matplotlib (Agg backend) only inside ``write_plots``.
Writes: ``<dir>/report.md`` and ``<dir>/*.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from pipeline import artifact
from pipeline.decision import decide
from pipeline.report.metrics import auc, average_precision, pr_curve, roc_curve

__all__ = ["write_plots", "write_report", "format_consumers", "PLOT_FILES"]

PLOT_FILES = {
    "training": "training_curves.png",
    "roc": "roc_curve.png",
    "pr": "precision_recall_curve.png",
    "confusion": "confusion_matrix.png",
    "errors": "equivalence_errors.png",
}


# ---------------------------------------------------------------------------- plots

def write_plots(folder: Path, history: dict[str, list[float]], curves: dict[str, tuple[np.ndarray, np.ndarray]],
                decision: dict[str, Any], class_names: list, errors: Optional[dict[str, np.ndarray]],
                atol: float) -> dict[str, str]:
    """Write the PNG plots; returns {kind: file name} of those written.

    Args:
        history: Keras history (loss, val_loss, accuracy, val_accuracy, learning_rate...).
        curves: split name -> (y, p): binary y (N,) in {0, 1} and p (N,) p(class 1); multi-class y (N,)
            class indices and p (N, k). "test" is plotted for the confusion matrix, every split for ROC / PR
            (binary only).
        decision: the artifact's decision rule (pipeline.decision): threshold, argmax or thresholds.
        errors: family name -> per-sample |p_keras - p_onnx| from verification, or None.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: dict[str, str] = {}

    def save(fig, kind: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / PLOT_FILES[kind], dpi=100)
        plt.close(fig)
        written[kind] = PLOT_FILES[kind]

    if history.get("loss"):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        epochs = np.arange(1, len(history["loss"]) + 1)
        for ax, key in zip(axes, ("loss", "accuracy")):
            for name, style in ((key, "-"), (f"val_{key}", "--")):
                if name in history:
                    ax.plot(epochs, history[name], style, label="validation" if name.startswith("val_") else "training")
            ax.set_xlabel("round of updates")
            ax.set_ylabel(key)
            ax.grid(alpha=0.3)
            if ax.get_lines():
                ax.legend()
            else:  # a history without this metric (e.g. a model compiled without accuracy)
                ax.text(0.5, 0.5, f"{key} not recorded", ha="center", va="center", transform=ax.transAxes)
        axes[0].set_title("loss")
        axes[1].set_title("accuracy")
        save(fig, "training")

    binary = decision["rule"] == "threshold"
    valid = {k: v for k, v in curves.items() if binary and len(v[0]) and 0 < np.sum(v[0]) < len(v[0])}
    if valid:
        fig, ax = plt.subplots(figsize=(5, 5))
        for name, (y, p) in valid.items():
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(f"ROC, positive class {class_names[1]!r}")
        ax.legend(loc="lower right")
        save(fig, "roc")

        fig, ax = plt.subplots(figsize=(5, 5))
        for name, (y, p) in valid.items():
            recall, precision, _ = pr_curve(y, p)
            ax.step(recall, precision, where="post", label=f"{name} (AP {average_precision(y, p):.3f})")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"precision-recall, positive class {class_names[1]!r}")
        ax.legend(loc="lower left")
        save(fig, "pr")

    if "test" in curves and len(curves["test"][0]) and decision["rule"] in ("threshold", "argmax"):
        y, p = curves["test"]
        k = len(class_names)
        cm = np.zeros((k, k), np.int64)  # rows: true class, columns: predicted
        np.add.at(cm, (np.asarray(y, np.int64), decide(p, decision)), 1)
        fig, ax = plt.subplots(figsize=(max(4.5, 0.6 * k + 2), max(4.0, 0.6 * k + 1.5)))
        ax.imshow(cm, cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=14 if k <= 4 else 9)
        labels = [str(c) for c in class_names]
        ax.set_xticks(range(k), labels, rotation=45 if k > 4 else 0)
        ax.set_yticks(range(k), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"test confusion matrix (threshold {decision['threshold']:.3g})" if binary else
                     "test confusion matrix (argmax)")
        save(fig, "confusion")

    if errors:
        allerr = np.concatenate([np.asarray(e, np.float64).ravel() for e in errors.values()])
        fig, ax = plt.subplots(figsize=(7, 4))
        floor = 1e-12
        bins = np.logspace(np.log10(floor), np.log10(max(allerr.max(), atol) * 2), 50)
        ax.hist(np.maximum(allerr, floor), bins=bins, color="tab:blue")
        ax.set_xscale("log")
        ax.axvline(atol, color="red", ls="--", label=f"atol {atol:g}")
        ax.set_xlabel(f"|p_keras - p_onnx| (values below {floor:g} drawn at {floor:g})")
        ax.set_ylabel("samples")
        ax.set_title(f"Keras vs onnxruntime, {len(allerr)} samples in {len(errors)} families")
        ax.legend()
        save(fig, "errors")
    return written


# ---------------------------------------------------------------------------- report.md

def format_consumers(entry: dict[str, Any]) -> str:
    """Markdown table of the manifest ``consumers`` entry (pipeline.verification.consumers)."""
    lines = [f"| runtime | version | max abs err vs Keras | status (atol {entry['atol']:g}) |", "|---|---|---:|---|"]
    for r in entry["results"]:
        err = "-" if r["max_abs_error_vs_keras"] is None else f"{r['max_abs_error_vs_keras']:.3g}"
        status = r["status"] + (f": {r['reason']}" if r["reason"] else "")
        lines.append(f"| {r['runtime']} | {r['version'] or '-'} | {err} | {status} |")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"


def _classes_line(names: list) -> str:
    """``classes ['a', 'b'] (0 = 'a', 1 = 'b')``, or for k classes ``classes [...] (indices 0..k-1 in this order)``."""
    if len(names) == 2:
        return f"classes {names} (0 = {names[0]!r}, 1 = {names[1]!r})"
    return f"{len(names)} classes {names} (indices 0..{len(names) - 1} in this order)"


def _confusion_table(cm: list[list[int]], names: list) -> list[str]:
    """k x k Markdown table, rows true class, columns predicted."""
    return ([f"| | {' | '.join(f'pred {n!r}' for n in names)} |", "|---|" + "---:|" * len(names)]
            + [f"| true {n!r} | {' | '.join(str(v) for v in row)} |" for n, row in zip(names, cm)])


def _metrics_lines(manifest: dict[str, Any], m: dict[str, Any], names: list) -> list[str]:
    """The Metrics section: the decision rule, one row per split, the test confusion matrix, per-class scores."""
    decision = manifest["decision"]
    source = manifest.get("decision_source", "default")
    splits = [s for s in ("train", "validation", "test", "sample") if s in m]
    lines = ["## Metrics", ""]
    if decision["rule"] == "threshold":
        th = decision["threshold"]
        lines += [
            f"Decision threshold on p({names[1]!r}): **{th:.4g}** — {source}.",
            "",
            "| split | accuracy | balanced acc. | loss | ROC AUC | avg. precision | n |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for split in splits:
            s = m[split]
            lines.append(f"| {split} | {_fmt(s['accuracy'])} | {_fmt(s.get('balanced_accuracy'))} | {_fmt(s['loss'])} | "
                         f"{_fmt(s.get('roc_auc'))} | {_fmt(s.get('average_precision'))} | {s['n']} |")
        cm = (m.get("test") or {}).get("confusion_matrix")
        if cm:
            lines += ["", f"Test confusion matrix at threshold {th:.4g} (rows true, columns predicted):", "",
                      *_confusion_table(cm, names)]
    else:
        rule = ("**argmax**: the class with the largest probability" if decision["rule"] == "argmax" else
                "**per-class thresholds** " + ", ".join(f"{n!r} {t:.4g}" for n, t in zip(names, decision["thresholds"])))
        lines += [
            f"Decision over the {len(names)} classes: {rule} — {source}.",
            "",
            f"| split | {'accuracy' if decision['rule'] == 'argmax' else 'exact-match accuracy'} | macro-F1 | loss | n |",
            "|---|---:|---:|---:|---:|",
        ]
        for split in splits:
            s = m[split]
            lines.append(f"| {split} | {_fmt(s['accuracy'])} | {_fmt(s.get('macro_f1'))} | {_fmt(s.get('loss'))} | "
                         f"{s['n']} |")
        shown = "test" if "test" in m else ("sample" if "sample" in m else None)
        if shown and m[shown].get("per_class"):
            lines += ["", f"Per class on the {shown} split (precision and recall of the decided classes):", "",
                      "| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
            for name, c in m[shown]["per_class"].items():
                lines.append(f"| {name} | {_fmt(c['precision'])} | {_fmt(c['recall'])} | {_fmt(c['f1'])} | "
                             f"{c['support']} |")
            lines.append(f"| **macro** | | | **{_fmt(m[shown].get('macro_f1'))}** | {m[shown]['n']} |")
        if shown and m[shown].get("confusion_matrix"):
            lines += ["", f"{shown.capitalize()} confusion matrix, argmax (rows true, columns predicted):", "",
                      *_confusion_table(m[shown]["confusion_matrix"], names)]
    baseline = m.get("order_blind_baseline_test_accuracy", "absent")
    if baseline != "absent":
        lines += ["", "Order-blind baseline (logistic regression on per-feature mean and std"
                  + (", multinomial over the classes" if len(names) > 2 else "") + ") test accuracy: "
                  + ("not computed." if baseline is None else f"{baseline:.4f}.")]
    return lines


def write_report(folder: Path, manifest: dict[str, Any], equivalence_table: str,
                 plots: Optional[dict[str, str]] = None) -> Path:
    """Write report.md summarising data, model, training, metrics, plots and the Keras-vs-ONNX check."""
    m = manifest.get("metrics") or {}
    cfg = manifest.get("config") or {}
    model = manifest["model"]
    plots = plots or {}
    names = manifest["class_names"]
    export_line = (f"- export: backend `{model['backend']}`, opset {model['opset']}, ops {', '.join(model['ops'])}"
                   + (f" (fallback: {model['fallback_reason']})" if model.get("fallback_reason") else ""))
    source = manifest.get("source")
    if source:  # a user's own Keras model (gru-export)
        lines = [
            "# GRU classifier export report",
            "",
            f"Exported from {source.get('file') or 'an in-memory model'} "
            f"(Keras {source['keras_version']}, backend {source['keras_backend']}).",
            "",
            "## Source model and export",
            "",
            f"- source: `{source.get('file')}` sha256 `{source.get('sha256')}`, model {source['model_name']!r}, "
            f"head {source['head']}",
            f"- input: {manifest['input']['shape']} {manifest['input']['dtype']} ({manifest['input'].get('kind')}), "
            f"{_classes_line(names)}, task {manifest.get('task', 'binary')}, "
            f"masking {'on' if manifest['masking']['enabled'] else 'off'}; no preprocessing outside the model",
            export_line,
            f"- sha256 of {artifact.MODEL_FILE}: `{model['sha256']}`",
            "",
        ]
    else:
        data = cfg["data"]
        lines = [
            "# GRU classifier build report",
            "",
            f"Built with seed {manifest['seed']} (the manifest records every tool's version; no build time, so a "
            "rebuild from the same code and data writes the same files).",
            "",
            "## Data and model",
            "",
            f"- data: {data['path'] or 'embedded default task (pulse order)'}"
            + (f"; test data: {data['test_path']}" if data.get("test_path") else
               (f" (stratified held-out test split {data['test_fraction']:g})" if data["path"] else "")),
            f"- input: {manifest['input']['shape']} float32, {manifest.get('timesteps_trained', '?')} timesteps trained, "
            f"{_classes_line(names)}, task {manifest.get('task', 'binary')}, "
            f"masking {'on (lengths are an input; steps past them never reach the model)' if manifest['masking']['enabled'] else 'off'}",
            f"- preprocessing: {manifest['preprocessing'].get('type', '?')} (fitted on the training split)"
            + (", inside every graph: they take raw features" if manifest["preprocessing"].get("in_graph") else ""),
            f"- model: {json.dumps(cfg['model'])}",
            export_line,
            f"- sha256 of {artifact.MODEL_FILE}: `{model['sha256']}`",
            "",
        ]
    sched = m.get("schedule")
    if sched:
        lines += [
            "## Training",
            "",
            f"- schedule: {sched['updates']} updates of batch {sched['batch_size']} "
            f"({sched['passes_over_data']} passes over the training data) in {sched['rounds']} rounds, the learning "
            f"rate decaying from {manifest.get('config', {}).get('train', {}).get('learning_rate', '?')} to 0 "
            f"(cosine); the final weights are kept",
            f"- class weights: {sched.get('class_weight') or 'none'}",
            f"- recurrent kernel spectral norm capped at {manifest.get('config', {}).get('model', {}).get('recurrent_norm_max', 0) or 'off'}",
        ]
        for attempt in manifest.get("conditioning_retries") or []:
            lines.append(f"- an earlier attempt with the cap at {attempt['recurrent_norm_max']:g} was refused by "
                         f"verification and retrained: {attempt['error'][:300]}")
        lines.append("")
    lines += _metrics_lines(manifest, m, names)
    if not m:
        lines.append("No labels came with the sample, so there are no metrics.")
    lines.append("")
    captions = {
        "training": "Training (and validation, when split off) loss / accuracy per round of updates",
        "roc": "ROC curves (AUC in the legend)",
        "pr": "Precision-recall curves (average precision in the legend)",
        "confusion": ("Test confusion matrix at the chosen threshold" if manifest["decision"]["rule"] == "threshold"
                      else "Test confusion matrix, each row's class decided by argmax"),
        "errors": "Histogram of per-sample |Keras - ONNX| from verification",
    }
    if plots:
        lines += ["## Plots", ""]
        for kind, fname in plots.items():
            lines += [f"**{captions.get(kind, kind)}**", "", f"![{captions.get(kind, kind)}]({fname})", ""]
    lines += [
        "## Equivalence: Keras vs onnxruntime",
        "",
        equivalence_table,
        "",
    ]
    consumers = manifest.get("consumers")
    if consumers:
        lines += [
            "## Other runtimes: model.onnx alone on the reference inputs",
            "",
            f"`{consumers['file']}` run by each runtime on the {consumers['rows']} rows of `{artifact.REFERENCE_FILE}` "
            "(raw features fed as they are: the graph scales them"
            + ("; variable-length rows fed with their lengths" if manifest["masking"].get("enabled")
               else "") + "), "
            "compared with Keras. \"not run\": the runtime is not installed here; \"unsupported\": it cannot load this graph.",
            "",
            format_consumers(consumers),
            "",
        ]
    path = folder / artifact.REPORT_FILE
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
