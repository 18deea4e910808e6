"""``python -m pipeline.training`` == ``gru-build``."""

import sys

from pipeline.training.cli import main

sys.exit(main())
