"""gru-serve's command line: refusals are one line and a non-zero exit code before anything listens;
its flags, defaults and metrics are the ones docs/serving.md and the README list; the benchmark runs."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import pytest

from pipeline.serve import cli

from conftest import EXPORTED, ROOT


def _run(*args, timeout=60):
    r = subprocess.run([sys.executable, "-m", "pipeline.serve.cli", *map(str, args)], capture_output=True, text=True,
                       cwd=ROOT, timeout=timeout)
    return r.returncode, r.stderr


@pytest.mark.parametrize("args, code, message", [
    (["no/such/folder"], 3, "gru-serve: error: model folder not found: expected a directory, got 'no/such/folder'"),
    ([EXPORTED, "--max-batch", "0"], 2, "gru-serve: error: --max-batch: expected a positive integer, got 0"),
    ([EXPORTED, "--port", "70000"], 2, "gru-serve: error: --port: expected a port from 0 to 65535, got 70000"),
    ([EXPORTED, "--replicas", "2"], 2, "gru-serve: error: --replicas: applies to --engine ray, got --engine local"),
    ([EXPORTED, EXPORTED], 2, "gru-serve: error: two models named 'exported'"),
    ([EXPORTED, EXPORTED, "--name", "a"], 2, "gru-serve: error: --name: expected one MODEL_DIR, got 2"),
])
def test_refusals_are_one_line(args, code, message):
    rc, err = _run(*args)
    assert rc == code, err
    assert err.startswith(message), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_a_port_in_use_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        rc, err = _run(EXPORTED, "--port", str(port), "--grpc-port", "-1")
    assert rc == 2 and err.startswith(f"gru-serve: error: --port: cannot listen on 127.0.0.1:{port}"), err
    assert len(err.strip().splitlines()) == 1, err


def test_docs_list_every_flag_with_its_default():
    doc = (ROOT / "docs" / "serving.md").read_text()
    readme = (ROOT / "README.md").read_text()
    synopsis = readme[readme.index("gru-serve [MODEL_DIR ...]"):]
    synopsis = synopsis[:synopsis.index("```")]
    for action in cli.parser()._actions:
        flag = next((o for o in action.option_strings if o.startswith("--")), None)
        if flag in (None, "--help"):
            continue
        row = re.search(rf"^\| `{flag}` \| ([^|]+) \|", doc, re.M)
        assert row, f"docs/serving.md has no row for {flag}"
        if action.default not in (None, False, "local"):
            default = f"{action.default:g}" if isinstance(action.default, float) else str(action.default)
            assert default in row.group(1), f"{flag}: the code's default {default}, the docs' {row.group(1)!r}"
        assert flag in synopsis, f"the README's gru-serve synopsis lacks {flag}"


def test_docs_list_every_metric():
    from pipeline.serve.metrics import ServeMetrics

    doc = (ROOT / "docs" / "serving.md").read_text()
    names = {m.name for m in ServeMetrics().registry.collect()}
    for name in names:
        shown = name + ("_total" if name in ("gru_serve_requests", "gru_serve_errors") else "")
        assert f"`{shown}`" in doc, f"docs/serving.md does not list {shown}"


@pytest.mark.slow
def test_bench_serve_quick_run(tmp_path):
    r = subprocess.run([sys.executable, "tools/bench_serve.py", "--quick", "--runs", "1", "--scale", "0.05",
                        "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    table = (tmp_path / "serve.md").read_text()
    for row in ("in-process Predictor (ceiling)", "gru-serve (JSON)", "gru-serve (binary)", "naive one-call-per-request"):
        assert row in table
    assert "c=1 single rows: p50 <= 1 ms" in table and "c=8 64-row binary requests" in table
