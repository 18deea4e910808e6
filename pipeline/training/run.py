"""``gru-build`` end to end: data -> train -> (export -> verify -> report -> publish).

Owns: the order of the training stages, the training records that go into the manifest (resolved
settings, metrics, history, refused attempts) and the conditioning retrain. Export, verification and
publishing are ``pipeline.packaging.exporter.export_model``, which this module calls after training.
Two classes train the binary head (task "binary", a threshold); k >= 3 the softmax head (task "multiclass",
argmax). Variable-length data is masked from its lengths: every padded step of the scaled inputs holds
``dataset.PAD_VALUE`` (the Masking layer's mask value), so real all-zero steps are data; the artifact takes
the lengths as an input (``mask_value`` null).
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


from pipeline import progress
from pipeline.errors import ConfigError, VerificationError
from pipeline.packaging.exporter import EXPORT_STAGES, ExportResult, export_model
from pipeline.packaging.publish import check_out_dir
from pipeline.decision import decision_entry
from pipeline.packaging.spec import ArtifactSpec, TrainingRecord, VerificationPlan
from pipeline.preprocessing import apply_preprocessing, fit_standardization
from pipeline.settings import BuildConfig
from pipeline.training.dataset import load_splits, pad_past_lengths, pad_to

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


def _task(class_names: list, cfg: BuildConfig) -> str:
    """binary for two classes, multiclass for more; a fixed threshold only makes sense for two."""
    if len(class_names) == 2:
        return "binary"
    if cfg.train.threshold is not None:
        raise ConfigError(f"train.threshold applies to two classes: expected it unset for the {len(class_names)} "
                          f"classes {class_names} (decided by argmax), got {cfg.train.threshold:g}")
    return "multiclass"


def _build_once(cfg: BuildConfig, started: float, refused: list[dict[str, Any]]) -> BuildResult:
    """One train -> export -> verify -> publish pass (see ``run_build``)."""
    check_out_dir(Path(cfg.out))

    progress.stage("data")
    splits, class_names = load_splits(cfg)
    task = _task(class_names, cfg)
    k = len(class_names)
    parts = {name: d for name, d in (("train", splits.train), ("validation", splits.val), ("test", splits.test))
             if d is not None}
    variable = any(d.variable_length for d in parts.values())
    masking = cfg.model.masking if cfg.model.masking is not None else variable
    if variable and not masking:
        raise ConfigError("the data has sequences of different lengths: masking is required (drop --no-masking)")
    T = max(d.X.shape[1] for d in parts.values())
    parts = {name: pad_to(d, T) for name, d in parts.items()}
    train, val, test = parts["train"], parts.get("validation"), parts["test"]
    F = train.n_features
    prep = fit_standardization(train.X, train.lengths)
    sources = {"train": cfg.data.path, "validation": cfg.data.path,
               "test": cfg.data.test_path or cfg.data.path}

    def scale(name):  # raw -> scaled (N, T, F), the model's input; masked: padded steps hold PAD_VALUE
        d = parts[name]
        Z = apply_preprocessing(d.X, prep, d.lengths)
        return pad_past_lengths(Z, d.lengths, sources[name] or "default task", d.ids) if masking else Z

    scaled = {name: scale(name) for name in parts}
    log(f"  train {train.n_samples}, validation {0 if val is None else val.n_samples}, test {test.n_samples} "
        f"sequences; T={T}{' (variable, masked)' if masking else ''}, F={F}, classes {class_names}")

    progress.stage("train")
    from pipeline.keras_source.tf_import import import_tensorflow

    import_tensorflow()  # only now: the data was read and checked without it; its notices filtered
    from pipeline.training.baseline import order_blind_accuracy
    from pipeline.training.fit import fit, plan_schedule, seed_everything
    from pipeline.training.model import MemberEnsemble, build_model
    from pipeline.keras_source.run import keras_proba

    seed_everything(cfg.seed)
    members = cfg.model.resolved_members()
    ensemble = MemberEnsemble(dataclasses.replace(cfg.model, members=members), F, masking,
                              cfg.train.learning_rate, n_classes=k) if members > 1 else None
    model = ensemble.model if ensemble else build_model(cfg.model, F, masking, cfg.train.learning_rate, n_classes=k)
    sched = plan_schedule(train.n_samples, cfg.train, T)
    log(f"  schedule: {sched['updates']} updates of batch {sched['batch_size']} ({sched['passes_over_data']} passes "
        f"over the data), learning rate {cfg.train.learning_rate:g} decaying to 0"
        + (f"; {members} members of {cfg.model.units // members} units" if ensemble else ""))
    result = fit(model, scaled["train"], train.y, scaled.get("validation"), None if val is None else val.y,
                 cfg.train, seed=cfg.seed, n_classes=k)
    sched = result.schedule
    if ensemble:  # the exported architecture: one GRU(units), sigmoid / softmax of the mean of the members' logits
        model = ensemble.merged()
    probas = {name: (d.y, keras_proba(model, scaled[name], d.lengths if masking else None))  # p: (N,) or (N, k)
              for name, d in parts.items()}
    decision, decision_source, metrics = _decide_and_measure(task, class_names, probas, cfg)
    metrics["order_blind_baseline_test_accuracy"] = order_blind_accuracy(
        train.X, train.lengths, train.y, test.X, test.lengths, test.y, n_classes=k)
    metrics["schedule"] = sched
    baseline = metrics["order_blind_baseline_test_accuracy"]
    log(f"  test accuracy {metrics['test']['accuracy']:.4f}"
        + (f" at threshold {decision['threshold']:.4g}" if task == "binary" else
           f", macro-F1 {metrics['test']['macro_f1']:.4f} (argmax over {k} classes)")
        + f" (order-blind baseline {'not computed' if baseline is None else f'{baseline:.4f}'})")

    resolved = cfg.to_dict()
    if cfg.data.path is not None:  # the default-task sizes do not apply: record the data's own
        resolved["data"].update(n_samples=int(sum(d.n_samples for d in parts.values())), timesteps=int(T),
                                features=int(F))
    resolved["model"]["masking"] = bool(masking)
    resolved["model"]["members"] = members
    spec = ArtifactSpec(class_names=class_names, task=task, decision=decision, decision_source=decision_source,
                        preprocessing=prep, masking=bool(masking), mask_value=None)
    record = TrainingRecord(
        manifest={
            "config": resolved,
            "metrics": metrics,
            "training_history": result.history,
            "conditioning_retries": refused,  # earlier attempts refused by verification (see run_build)
        },
        history=result.history, curves={split: probas[split] for split in ("validation", "test") if split in probas},
        started=started)
    return export_model(model, spec, VerificationPlan(test, settings=cfg.verify, seed=cfg.seed), cfg.out, cfg.export,
                        record)


def _decide_and_measure(task: str, class_names: list, probas: dict, cfg: BuildConfig
                        ) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """The decision rule, where it came from, and each split's metrics under it.

    binary: the threshold fixed by train.threshold, else chosen on the validation split, else 0.5;
    binary_metrics per split. multiclass: argmax; class_metrics per split.
    """
    from pipeline.report.metrics import binary_metrics, choose_threshold, class_metrics

    if task == "multiclass":
        decision = decision_entry(task, len(class_names))
        return decision, "the rule of every multi-class model (no threshold to choose)", {
            name: class_metrics(y, p, decision, class_names) for name, (y, p) in probas.items()}
    if cfg.train.threshold is not None:
        threshold, source = float(cfg.train.threshold), "fixed by train.threshold"
    elif "validation" in probas:
        threshold, source = choose_threshold(*probas["validation"])
    else:
        threshold, source = 0.5, "0.5: no validation split (data.val_fraction = 0)"
    return decision_entry(task, 2, threshold), source, {
        name: binary_metrics(y, p, threshold) for name, (y, p) in probas.items()}
