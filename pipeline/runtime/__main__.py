"""``python -m pipeline.runtime`` == ``gru-predict``."""

import sys

from pipeline.runtime.cli import main

sys.exit(main())
