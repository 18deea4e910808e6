"""``python -m pipeline.build`` == ``gru-build``."""

import sys

from pipeline.build.cli import main

sys.exit(main())
