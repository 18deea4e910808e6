"""``python -m pipeline.build``: the same command as ``gru-build`` (kept for scripts that call it so).

The training code lives in ``pipeline.training``; this module only forwards.
"""

import sys

from pipeline.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
