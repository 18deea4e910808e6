"""Staging and atomic publishing of an artifact folder.

Owns: the hidden staging folder beside ``--out``, the swap that publishes it, and the recovery of
what a killed export left behind. Imports: the standard library and pipeline.errors. Reads/writes: ``<out>``,
``.<out>.staging-<pid>`` and ``.<out>.previous-<pid>`` beside it.

A failed export never replaces the last good artifact: everything is written into the staging
folder, and only a verified folder is swapped in.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from pipeline.errors import ConfigError

__all__ = ["check_out_dir", "staging_folder", "publish", "recover", "exchange"]


def check_out_dir(out: Path) -> Path:
    """``out`` resolved; ConfigError when it exists and is not a directory."""
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out must be a directory, got an existing file {str(out)!r}")
    return out


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0


def publish(staging: Path, out: Path) -> None:
    """Move the verified staging folder to ``out``.

    Where the OS can swap two folders atomically, ``out`` is never missing: it holds the old
    artifact until the instant it holds the new one. Elsewhere the old folder is first renamed to
    ``.<out>.previous-<pid>``; if the process dies before the second rename, ``recover`` puts it
    back at the start of the next export.
    """
    if out.exists() and exchange(staging, out):
        shutil.rmtree(staging, ignore_errors=True)  # staging now holds the old artifact
        return
    backup = out.parent / f".{out.name}.previous-{os.getpid()}"
    if backup.exists():
        shutil.rmtree(backup)
    if out.exists():
        os.replace(out, backup)
    try:
        os.replace(staging, out)
    except BaseException:
        if backup.exists() and not out.exists():
            os.replace(backup, out)
        raise
    if backup.exists():
        shutil.rmtree(backup, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(out: Path, log: Callable[[str], None] = print) -> None:
    """Undo what a killed export left beside ``out``: restore a moved-aside artifact if ``out`` is
    missing, and delete staging/previous folders of processes that no longer run."""
    if not out.parent.is_dir():
        return
    leftovers = sorted(out.parent.glob(f".{out.name}.previous-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not out.exists() and leftovers:
        os.replace(leftovers.pop(0), out)
        log(f"  restored the previous artifact into {out} (an export was interrupted while publishing)")
    for path in leftovers + list(out.parent.glob(f".{out.name}.staging-*")):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def staging_folder(out: Path) -> Iterator[Path]:
    """A fresh ``.<out>.staging-<pid>`` beside ``out``; removed on exit unless it was published."""
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
