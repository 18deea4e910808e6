"""Shared fixtures for the runtime tests.

``tiny_model_dir``: a tiny, valid exported folder (``tests/tiny_models.py``, re-exported here:
``from conftest import tiny_manifest`` keeps working), so the runtime tests need neither
TensorFlow, Keras nor a trained model. ``write_tiny_model`` makes variants in any folder.

``CASE_COUNTS`` collects how many generated cases the property tests ran; the summary is
printed at the end of the session (and written to ``$GRU_CASE_COUNTS_FILE`` when set).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from tiny_models import (INPUT_NAME, OUTPUT_NAME, TINY_FEATURES, TINY_UNITS, tiny_manifest,  # noqa: F401
                         tiny_model_proto, tiny_preprocessing, write_tiny_model)

CASE_COUNTS: Counter = Counter()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A valid exported folder: F=3, 4 GRU units, standardize preprocessing, no masking."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny_model") / "exported")


@pytest.fixture(scope="session")
def tiny_masked_model_dir(tmp_path_factory) -> Path:
    """Like ``tiny_model_dir`` but the manifest says the model masks padding (mask value 0)."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny_masked") / "exported", masking=True)


@pytest.fixture(scope="session")
def tiny_model_factory():
    """``write_tiny_model(folder, n_features=3, units=4, seed=0, masking=False, preprocessing=None, schema_version=2)``."""
    return write_tiny_model


@pytest.fixture(scope="session")
def case_counts() -> Counter:
    """Counter of generated cases per property test (``case_counts[name] += 1`` in the test body)."""
    return CASE_COUNTS


@pytest.fixture(scope="session")
def tiny_predictor(tiny_model_dir):
    from pipeline.runtime import Predictor

    return Predictor.load(tiny_model_dir)


def pytest_terminal_summary(terminalreporter):
    if not CASE_COUNTS:
        return
    total = sum(CASE_COUNTS.values())
    terminalreporter.write_sep("-", f"generated cases run by property tests: {total}")
    for name, count in sorted(CASE_COUNTS.items()):
        terminalreporter.write_line(f"  {name}: {count}")
    target = os.environ.get("GRU_CASE_COUNTS_FILE")
    if target:
        Path(target).write_text(json.dumps({"total": total, **CASE_COUNTS}, indent=2) + "\n")


@pytest.fixture(scope="module")
def predictor():
    """The committed exported/ model, loaded once per test module."""
    from pipeline.runtime import Predictor

    return Predictor.load(Path(__file__).resolve().parents[2] / "exported")
