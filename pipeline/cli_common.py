"""Shared CLI plumbing: turn PipelineError into one line on stderr and an exit code.

Owns: ``run_cli``. Imports: standard library and pipeline.errors only.
"""

from __future__ import annotations

import sys
from typing import Callable

from pipeline.errors import PipelineError

__all__ = ["run_cli"]


def run_cli(main: Callable[[], int], prog: str) -> int:
    """Run ``main``; expected errors print ``prog: error: <message>`` and return their exit code."""
    try:
        return main()
    except PipelineError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except MemoryError:
        print(f"{prog}: error: out of memory; process the input in smaller files", file=sys.stderr)
        return 1
