"""Shared pytest settings: project paths and quiet TensorFlow logs."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = ROOT / "exported"
