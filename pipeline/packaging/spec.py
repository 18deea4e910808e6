"""What ``export_model`` is given: the artifact's promises, the reference model, the checks, the training record.

Owns: the four objects that replace export_model's long keyword list, with their defaults.
Layer: packaging. Imports: numpy, pipeline.settings, pipeline.datafiles (SequenceData).
Reads/writes: nothing.

Example:
    >>> spec = ArtifactSpec(class_names=["normal", "fault"], threshold=0.4)
    >>> export_model(Reference(model), spec, VerificationPlan(sample), "exported")
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from pipeline.datafiles import SequenceData
from pipeline.settings import VerifyConfig

__all__ = ["ArtifactSpec", "Reference", "VerificationPlan", "TrainingRecord", "NO_PREPROCESSING"]

NO_PREPROCESSING = {"type": "none"}


@dataclass
class ArtifactSpec:
    """What the artifact promises its users: classes, decision rule, input, scaling and padding.

    Every field goes into manifest.json and the graphs' metadata_props.
    """

    class_names: list = field(default_factory=lambda: [0, 1])   # names of class 0 and class 1
    threshold: float = 0.5                                      # decision threshold on p(class 1)
    threshold_source: str = "fixed (default 0.5)"               # where the threshold came from
    preprocessing: dict[str, Any] = field(default_factory=lambda: dict(NO_PREPROCESSING))  # raw -> model input
    masking: bool = False            # the model masks right-padded steps (their raw features all 0.0)
    input: Optional[dict[str, Any]] = None  # the manifest input entry; None: float features (batch, time, F)


@dataclass
class Reference:
    """The Keras model the artifact is exported from, and the numbers it must reproduce.

    ``model`` outputs p(class 1) as (batch, 1). ``proba`` maps scaled inputs to (N,) p(class 1) of the
    model whose numbers matter (default: ``model`` itself; a user's softmax or logit head passes its own
    head while ``model`` is its Dense(1, sigmoid) form).
    """

    model: Any
    proba: Optional[Callable[[np.ndarray], np.ndarray]] = None


@dataclass
class VerificationPlan:
    """The inputs and tolerance of the Keras-vs-ONNX checks.

    ``sample``: raw inputs (X (N, T, F), lengths); its first rows are stored with Keras' outputs in
    reference.npz and its feature names go to the manifest. ``families``: the verification inputs
    (default: stress families around ``sample``). ``seed`` seeds the stress families and the stream chunkings.
    """

    sample: SequenceData
    families: Optional[list] = None
    settings: VerifyConfig = field(default_factory=VerifyConfig)
    seed: int = 0


@dataclass
class TrainingRecord:
    """What a training run adds: manifest keys (config, metrics, ...), history and (y, p) curves, start time."""

    manifest: dict[str, Any] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)  # the job's start: "wrote ... in N s" counts from it
