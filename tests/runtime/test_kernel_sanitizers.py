"""``make kernel-check``: the fused kernel built under AddressSanitizer + UndefinedBehaviorSanitizer
and, separately, under ThreadSanitizer, each running tests/runtime/test_fused.py, test_fused_streams.py,
test_fused_lengths_heads.py (variable length) and test_fused_tokens_tanh.py (the folded token path, the
Dense tanh) in a child python; any sanitizer report fails the check.

Owns: the two sanitizer builds and their runs. Imports: os, subprocess, sys, shutil, pathlib,
tomllib (tomli before Python 3.11), pytest. Reads: pyproject.toml's ext-module (the sources and
compile flags the installed library is built with). Writes: the builds, a suppressions file and the
sanitizer logs under pytest's tmp_path.

How: gcc compiles the same sources with the same flags plus -O1 -g -fsanitize=... into a separate
shared object; the child loads it through GRU_KERNEL_LIBRARY (pipeline.runtime.fused; with the
variable set, tests/fused_support.py fails instead of skipping when it does not load) with the
sanitizer's runtime in LD_PRELOAD, because python itself is not instrumented. The sanitizers write
their reports to log files (ASan, TSan) or to stderr (UBSan, which ignores log_path; the child
runs pytest with -s so that a report ending the process is not lost in pytest's capture) and halt on
the first one: the check passes only when the child exits 0, no test skipped for want of the
library, no log file exists and stderr holds no report. Options, and why:
  ASan  detect_leaks=0: python, numpy and onnxruntime are not instrumented and keep memory until exit;
        leak reports would be about them
  TSan  die_after_fork=0: test_a_forked_child_runs_the_kernel forks with threads running and the
        child starts a pool of its own, which is what it tests (TSan would end such a child);
        one suppression, race:onnxruntime_pybind11_state: at exit onnxruntime (not instrumented)
        destroys a condition variable one of its finished threads broadcast on, synchronized by its
        own atomics that TSan cannot see; it suppresses only reports with an onnxruntime frame (the
        kernel is called from ctypes: none of its stacks has one)

Runs only with GRU_KERNEL_CHECK=1, which ``make kernel-check`` (a step of ``make test``) sets: the
two builds and runs take about a minute and a half on two cores, so the full pytest run skips them
rather than repeat them. Without gcc or its sanitizer runtimes the check skips and says which.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the build extra's tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
FUSED_TESTS = ["tests/runtime/test_fused.py", "tests/runtime/test_fused_streams.py",
               "tests/runtime/test_fused_lengths_heads.py", "tests/runtime/test_fused_tokens_tanh.py"]
SANITIZE_FLAGS = ["-O1", "-g", "-fno-omit-frame-pointer"]  # after the project's flags: -O1 replaces -O3
TSAN_SUPPRESSIONS = "race:onnxruntime_pybind11_state\n"
# name -> (compile flags, runtime to preload, options variable -> options)
SANITIZERS = {
    "asan+ubsan": (["-fsanitize=address,undefined", "-fno-sanitize-recover=all"], "libasan.so",
                   {"ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1", "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}),
    "tsan": (["-fsanitize=thread"], "libtsan.so",
             {"TSAN_OPTIONS": "halt_on_error=1:exitcode=66:die_after_fork=0:suppressions={suppressions}"}),
}

pytestmark = pytest.mark.skipif(os.environ.get("GRU_KERNEL_CHECK") != "1",
                                reason="run by `make kernel-check` (a step of make test): GRU_KERNEL_CHECK=1")


def _ext_module() -> dict:
    """pyproject.toml's fused-kernel ext-module: name, sources, extra-compile-args..."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (ext,) = [e for e in config["tool"]["setuptools"]["ext-modules"] if e["name"].endswith("._gru_kernel")]
    return ext


def _runtime(name: str) -> Path:
    """The sanitizer runtime gcc links against (gcc -print-file-name); skip when it is not installed."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: no sanitizer build")
    path = Path(subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip())
    if not path.is_absolute() or not path.exists():
        pytest.skip(f"gcc's {name} is not installed (Debian: the libasan/libtsan package of this gcc)")
    return path.resolve()


@pytest.mark.parametrize("sanitizer", list(SANITIZERS))
def test_fused_tests_pass_under_the_sanitizer(sanitizer, tmp_path):
    cflags, runtime_name, options = SANITIZERS[sanitizer]
    runtime = _runtime(runtime_name)
    ext = _ext_module()
    library = tmp_path / f"_gru_kernel_{sanitizer.replace('+', '_')}.so"
    build = subprocess.run(["gcc", *ext.get("extra-compile-args", []), *SANITIZE_FLAGS, *cflags, "-fPIC", "-shared",
                            "-pthread", *ext["sources"], *[f"-l{lib}" for lib in ext.get("libraries", [])],
                            "-o", str(library)], cwd=ROOT, capture_output=True, text=True)
    assert build.returncode == 0, f"{sanitizer} build failed:\n{build.stderr[-3000:]}"
    (tmp_path / "tsan.supp").write_text(TSAN_SUPPRESSIONS)
    logs = tmp_path / "logs"
    logs.mkdir()
    env = dict(os.environ, GRU_KERNEL_LIBRARY=str(library), LD_PRELOAD=str(runtime), PYTHONDONTWRITEBYTECODE="1")
    for var, value in options.items():  # every report to logs/<var>.<pid>
        env[var] = value.format(suppressions=tmp_path / "tsan.supp") + f":log_path={logs / var.lower()}"
    child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-rs", "-p", "no:cacheprovider", *FUSED_TESTS],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    reports = "\n".join(f"--- {p.name}\n{p.read_text()[:6000]}" for p in sorted(logs.iterdir()))
    found = re.search(r"runtime error:|Sanitizer", child.stderr)
    if found:
        reports += f"\n--- stderr\n{child.stderr[max(0, found.start() - 300):found.start() + 6000]}"
    summary = child.stdout.strip().splitlines()[-1] if child.stdout.strip() else "(no output)"
    assert not reports, f"{sanitizer} reported (child exit {child.returncode}, {summary}):\n{reports}"
    assert child.returncode == 0, f"{sanitizer}: child exit {child.returncode}, {summary}\n{child.stdout[-3000:]}\n{child.stderr[-3000:]}"
    assert re.search(r"\d+ passed", summary) and "library not built" not in child.stdout, f"{sanitizer}: {summary}"
