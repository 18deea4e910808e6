"""``gru-build`` end to end: data -> train -> (export -> verify -> report -> publish).

Owns: the order of the training stages, the training records that go into the manifest (resolved
settings, metrics, history, refused attempts) and the conditioning retrain. Export, verification and
publishing are ``pipeline.packaging.exporter.export_model``, which this module calls after training.
Layer: training (the top). Imports: pipeline.training (TensorFlow/Keras through it), pipeline.packaging,
pipeline.keras_source, pipeline.report. Reads: the data file(s) named in the settings. Writes:
``<out>/`` through ``export_model`` (nothing until every check passed).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import progress
from pipeline.errors import ConfigError, DataFormatError, VerificationError
from pipeline.packaging.exporter import EXPORT_STAGES, ExportResult, export_model
from pipeline.packaging.publish import check_out_dir
from pipeline.packaging.spec import ArtifactSpec, TrainingRecord, VerificationPlan
from pipeline.preprocessing import apply_preprocessing, fit_standardization
from pipeline.settings import BuildConfig
from pipeline.training.dataset import load_splits, pad_to

__all__ = ["BuildResult", "run_build"]

BuildResult = ExportResult  # what a build returns: out_dir, manifest, seconds
BUILD_STAGES = ("data", "train", *EXPORT_STAGES)
log = progress.log


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
            with progress.stages(*BUILD_STAGES):
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


def _check_no_zero_steps(parts: dict, cfg: BuildConfig) -> None:
    """Refuse, before training, real steps whose raw features are all 0: a masked graph reads them as padding."""
    from pipeline.runtime.inputs import padding_steps

    for name, d in parts.items():
        bad = padding_steps(d.X) & (np.arange(d.X.shape[1])[None, :] < d.lengths[:, None])  # (N, T)
        if bad.any():
            i, t = (int(v) for v in np.argwhere(bad)[0])
            source = cfg.data.test_path if name == "test" and cfg.data.test_path else cfg.data.path
            sample = d.ids[i] if d.ids is not None else i  # the file's id, not the row inside the split
            raise DataFormatError(
                f"{source}: sample {sample} timestep {t} (and {int(bad.sum()) - 1} more steps in "
                f"{int(bad.any(axis=1).sum())} series) has every feature exactly 0, which marks padding in a masked "
                "(variable-length) model; expected real steps with at least one nonzero feature (add a constant "
                "feature column of 1s, or shift the values)")


def _build_once(cfg: BuildConfig, started: float, refused: list[dict[str, Any]]) -> BuildResult:
    """One train -> export -> verify -> publish pass (see ``run_build``)."""
    check_out_dir(Path(cfg.out))

    progress.stage("data")
    splits, class_names = load_splits(cfg)
    parts = {name: d for name, d in (("train", splits.train), ("validation", splits.val), ("test", splits.test))
             if d is not None}
    variable = any(d.variable_length for d in parts.values())
    masking = cfg.model.masking if cfg.model.masking is not None else variable
    if variable and not masking:
        raise ConfigError("the data has sequences of different lengths: masking is required (drop --no-masking)")
    if masking:
        _check_no_zero_steps(parts, cfg)
    T = max(d.X.shape[1] for d in parts.values())
    parts = {name: pad_to(d, T) for name, d in parts.items()}
    train, val, test = parts["train"], parts.get("validation"), parts["test"]
    F = train.n_features
    prep = fit_standardization(train.X, train.lengths)

    def scale(d):  # raw -> scaled (N, T, F), the model's input
        return apply_preprocessing(d.X, prep, d.lengths)

    log(f"  train {train.n_samples}, validation {0 if val is None else val.n_samples}, test {test.n_samples} "
        f"sequences; T={T}{' (variable, masked)' if masking else ''}, F={F}, classes {class_names}")

    progress.stage("train")
    from pipeline.training.baseline import order_blind_accuracy
    from pipeline.training.fit import fit, plan_schedule, seed_everything
    from pipeline.training.model import MemberEnsemble, build_model
    from pipeline.keras_source.run import keras_proba

    seed_everything(cfg.seed)
    members = cfg.model.resolved_members()
    ensemble = MemberEnsemble(dataclasses.replace(cfg.model, members=members), F, masking,
                              cfg.train.learning_rate) if members > 1 else None
    model = ensemble.model if ensemble else build_model(cfg.model, F, masking, cfg.train.learning_rate)
    sched = plan_schedule(train.n_samples, cfg.train, T)
    log(f"  schedule: {sched['updates']} updates of batch {sched['batch_size']} ({sched['passes_over_data']} passes "
        f"over the data), learning rate {cfg.train.learning_rate:g} decaying to 0"
        + (f"; {members} members of {cfg.model.units // members} units" if ensemble else ""))
    result = fit(model, scale(train), train.y, None if val is None else scale(val), None if val is None else val.y,
                 cfg.train, seed=cfg.seed)
    sched = result.schedule
    if ensemble:  # the exported architecture: one GRU(units), p = sigmoid(mean of the members' logits)
        model = ensemble.merged()
    from pipeline.report.metrics import binary_metrics, choose_threshold

    probas = {name: (d.y, keras_proba(model, scale(d))) for name, d in parts.items()}
    if cfg.train.threshold is not None:
        threshold, threshold_source = float(cfg.train.threshold), "fixed by train.threshold"
    elif val is not None:
        threshold, threshold_source = choose_threshold(*probas["validation"])
    else:
        threshold, threshold_source = 0.5, "0.5: no validation split (data.val_fraction = 0)"
    metrics = {
        **{name: binary_metrics(y, p, threshold) for name, (y, p) in probas.items()},
        "order_blind_baseline_test_accuracy": order_blind_accuracy(
            train.X, train.lengths, train.y, test.X, test.lengths, test.y),
        "schedule": sched,
    }
    log(f"  test accuracy {metrics['test']['accuracy']:.4f} at threshold {threshold:.4g} (order-blind baseline "
        f"{metrics['order_blind_baseline_test_accuracy']:.4f})")

    resolved = cfg.to_dict()
    if cfg.data.path is not None:  # the default-task sizes do not apply: record the data's own
        resolved["data"].update(n_samples=int(sum(d.n_samples for d in parts.values())), timesteps=int(T),
                                features=int(F))
    resolved["model"]["masking"] = bool(masking)
    resolved["model"]["members"] = members
    spec = ArtifactSpec(class_names=class_names, threshold=threshold, threshold_source=threshold_source,
                        preprocessing=prep, masking=bool(masking))
    record = TrainingRecord(
        manifest={
            "config": resolved,
            "metrics": metrics,
            "training_history": result.history,
            "conditioning_retries": refused,  # earlier attempts refused by verification (see run_build)
        },
        history=result.history, curves={k: probas[k] for k in ("validation", "test") if k in probas}, started=started)
    return export_model(model, spec, VerificationPlan(test, settings=cfg.verify, seed=cfg.seed), cfg.out, cfg.export,
                        record)
