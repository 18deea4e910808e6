"""``gru-build`` end to end: data -> train -> (export -> verify -> report -> publish).

Owns: the order of the training stages, the training records that go into the manifest (resolved
settings, metrics, history, refused attempts) and the conditioning retrain. Export, verification and
publishing are ``pipeline.export.exporter.export_model``, which this module calls after training.
Imports: pipeline.training (TensorFlow/Keras through it), pipeline.export, pipeline.verification,
pipeline.report. Reads: the data file(s) named in the settings. Writes: ``<out>/`` through
``export_model`` (nothing until every check passed).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any


from pipeline.errors import ConfigError, VerificationError
from pipeline.export.exporter import ExportResult, export_model
from pipeline.export.publish import check_out_dir
from pipeline.preprocessing import apply_preprocessing, fit_standardization
from pipeline.settings import BuildConfig
from pipeline.training.dataset import load_splits, pad_to

__all__ = ["BuildResult", "run_build"]

BuildResult = ExportResult  # what a build returns: out_dir, manifest, seconds


def log(message: str) -> None:
    print(message, flush=True)


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
    check_out_dir(Path(cfg.out))

    log("[1/6] data")
    splits, class_names = load_splits(cfg)
    variable = any(s.variable_length for s in (splits.train, splits.val, splits.test))
    masking = cfg.model.masking if cfg.model.masking is not None else variable
    if variable and not masking:
        raise ConfigError("the data has sequences of different lengths: masking is required (drop --no-masking)")
    T = max(s.X.shape[1] for s in (splits.train, splits.val, splits.test))
    train, val, test = (pad_to(s, T) for s in (splits.train, splits.val, splits.test))
    F = train.n_features
    prep = fit_standardization(train.X, train.lengths)

    def scale(d):  # raw -> scaled (N, T, F), the model's input
        return apply_preprocessing(d.X, prep, d.lengths)

    log(f"  train {train.n_samples}, validation {val.n_samples}, test {test.n_samples} sequences; "
        f"T={T}{' (variable, masked)' if masking else ''}, F={F}, classes {class_names}")

    log("[2/6] train")
    from pipeline.training.baseline import order_blind_accuracy
    from pipeline.training.fit import fit, seed_everything
    from pipeline.training.model import build_model
    from pipeline.verification.keras_reference import keras_proba

    seed_everything(cfg.seed)
    model = build_model(cfg.model, F, masking, cfg.train.learning_rate)
    result = fit(model, scale(train), train.y, scale(val), val.y, cfg.train)
    sched = result.schedule
    log(f"  schedule: up to {sched['epochs']} epochs x {sched['steps_per_epoch']} updates (batch {sched['batch_size']}), "
        f"patience {sched['patience']}, class weights {sched['class_weight'] or 'none'}")
    from pipeline.report.metrics import binary_metrics, choose_threshold

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

    resolved = cfg.to_dict()
    if cfg.data.path is not None:  # the default-task sizes do not apply: record the data's own
        resolved["data"].update(n_samples=int(train.n_samples + val.n_samples + test.n_samples), timesteps=int(T),
                                features=int(F))
    resolved["model"]["masking"] = bool(masking)
    return export_model(
        model, test, cfg.out, preprocessing=prep, class_names=class_names, threshold=threshold,
        threshold_source=threshold_source, masking=bool(masking), export=cfg.export, verify=cfg.verify,
        seed=cfg.seed, started=started, steps=(3, 6), history=result.history,
        curves={k: probas[k] for k in ("validation", "test")},
        manifest_extra={
            "config": resolved,
            "metrics": metrics,
            "training_history": result.history,
            "conditioning_retries": refused,  # earlier attempts refused by verification (see run_build)
        },
    )
