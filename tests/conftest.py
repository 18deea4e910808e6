"""Shared pytest settings: project paths, quiet TensorFlow logs, and tools/ on ``sys.path``.

tools/ holds the developer code outside the package (tools/benchmarks, tools/regions.py and the
generators); its tests import those modules by name, as the scripts of tools/ do when they run.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = ROOT / "exported"
sys.path.insert(0, str(ROOT / "tools"))
