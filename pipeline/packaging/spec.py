"""What ``export_model`` is given: the artifact's promises, the reference model, the checks, the training record.

Owns: the four objects that replace export_model's long keyword list, with their defaults.
Layer: packaging. Imports: numpy, pipeline.settings, pipeline.datafiles (SequenceData).
Reads/writes: nothing.

Example:
    >>> spec = ArtifactSpec(class_names=["normal", "fault"], decision=decision_entry("binary", 2, 0.4))
    >>> export_model(Reference(model), spec, VerificationPlan(sample), "exported")
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from pipeline.datafiles import SequenceData
from pipeline.decision import check_decision, decision_entry
from pipeline.settings import VerifyConfig

__all__ = ["ArtifactSpec", "Reference", "VerificationPlan", "TrainingRecord", "NO_PREPROCESSING"]

NO_PREPROCESSING = {"type": "none"}


@dataclass
class ArtifactSpec:
    """What the artifact promises its users: task, classes, decision rule, input, scaling and padding.

    Every field goes into manifest.json and the graphs' metadata_props (docs/artifact.md).
    """

    class_names: list = field(default_factory=lambda: [0, 1])   # k names (binary: class 0, class 1)
    task: str = "binary"                                        # binary | multiclass | multilabel
    decision: Optional[dict[str, Any]] = None                   # None: the task's default rule (pipeline.decision)
    decision_source: str = "default"                            # where the rule's thresholds came from
    preprocessing: dict[str, Any] = field(default_factory=lambda: dict(NO_PREPROCESSING))  # raw -> model input
    masking: bool = False    # variable length: the graph takes ``lengths`` and pads past them itself
    mask_value: Optional[float] = None  # a user model's Masking value: trailing steps equal to it are padding
                                        # when X comes without lengths (None: X without lengths is full length)
    input: Optional[dict[str, Any]] = None  # the manifest input entry; None: float features (batch, time, F)

    def __post_init__(self) -> None:
        self.decision = check_decision(self.decision or decision_entry(self.task, len(self.class_names)), self.task,
                                       len(self.class_names))


@dataclass
class Reference:
    """The Keras model the artifact is exported from, and the numbers it must reproduce.

    ``model`` outputs the artifact's probabilities: p(class 1) as (batch, 1), or (batch, k). ``proba``
    maps (scaled inputs, lengths or None) to the probabilities of the model whose numbers matter
    (default: ``model`` itself; a user's softmax or logit head passes its own head while ``model`` is
    its probability form).
    """

    model: Any
    proba: Optional[Callable[[np.ndarray, Optional[np.ndarray]], np.ndarray]] = None  # (scaled Z, lengths) -> p


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
