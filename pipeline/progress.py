"""Progress lines of long jobs (builds, exports, checks): one logger, one format, numbered stages.

Owns: the ``pipeline`` logger's progress lines, the ``[k/n] stage`` numbering and the handler the
CLIs install. Library code calls ``log`` and ``stage``; what is shown is the caller's choice
(standard ``logging``): the CLIs call ``show_progress()``, which prints the lines as they are to
stdout; a Python caller who wants them does the same or configures the ``pipeline`` logger.
Layer: shared. Imports: the standard library only. Reads/writes: nothing (stdout through logging).

Example:
    >>> from pipeline import progress
    >>> progress.show_progress()
    >>> with progress.stages("data", "train", *EXPORT_STAGES):   # a job declares its stages once
    ...     progress.stage("data")                                  # prints "[1/6] data"
"""

from __future__ import annotations

import contextvars
import logging
import sys
from contextlib import contextmanager
from typing import Iterator, Optional

__all__ = ["LOGGER_NAME", "log", "stage", "stages", "show_progress"]

LOGGER_NAME = "pipeline"
_logger = logging.getLogger(LOGGER_NAME)
_plan: contextvars.ContextVar[Optional[tuple[str, ...]]] = contextvars.ContextVar("pipeline_stages", default=None)


def log(message: str) -> None:
    """One progress line (INFO on the ``pipeline`` logger)."""
    _logger.info(message)


@contextmanager
def stages(*names: str) -> Iterator[None]:
    """Declare the stages of the job run inside the block; an enclosing declaration wins.

    A build declares data, train and the export's stages; the export it calls then numbers its own
    stages within the build's (``[3/6] export``) instead of starting again at 1.
    """
    if _plan.get() is not None:
        yield
        return
    token = _plan.set(tuple(names))
    try:
        yield
    finally:
        _plan.reset(token)


def stage(name: str) -> None:
    """Announce a stage: ``[k/n] name`` when the job declared it, else ``[name]``."""
    plan = _plan.get() or ()
    log(f"[{plan.index(name) + 1}/{len(plan)}] {name}" if name in plan else f"[{name}]")


class _StdoutHandler(logging.StreamHandler):
    """Writes to the current ``sys.stdout`` (looked up at each line, so redirections and test captures work)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # logging.StreamHandler assigns it; the property always answers sys.stdout
        pass


def show_progress() -> None:
    """Print the ``pipeline`` logger's INFO lines to stdout, message only; idempotent."""
    if not any(isinstance(h, _StdoutHandler) for h in _logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        _logger.addHandler(handler)
    _logger.setLevel(logging.INFO)
    _logger.propagate = False
