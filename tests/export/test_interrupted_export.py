"""SIGKILL during a build never damages the artifact already published in --out.

A tiny build is published into DIR, then rebuilt over it and killed at several points (watching
the progress lines): DIR must still hold the previous artifact (same sha256, loadable); leftover
hidden ``.DIR.staging-PID`` folders must not break the next build.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import artifact

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

TINY_TOML = """\
seed = 0
[data]
n_samples = 200
timesteps = 12
features = 3
[model]
units = 8
[train]
epochs = 1
verbose = "0"
[verify]
n_random = 32
large_batch = 64
odd_batch = 5
"""


def build_cmd(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.training", "--config", str(config), "--out", str(out)]


def env() -> dict:
    e = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def run_build(config: Path, out: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(build_cmd(config, out), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def kill_at(config: Path, out: Path, marker: str, delay: float = 0.0) -> list[str]:
    """Start a build over ``out``, SIGKILL it once ``marker`` was printed (+ delay); return its lines."""
    proc = subprocess.Popen(build_cmd(config, out), cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    lines = []
    try:
        deadline = time.time() + 600
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith(marker):
                if delay:
                    time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                break
            assert time.time() < deadline, "build hung"
        else:
            pytest.fail(f"build ended before printing {marker!r}: {lines[-5:]}")
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return lines


def snapshot(folder: Path) -> dict:
    return {p.name: artifact.sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupted")
    config = root / "tiny.toml"
    config.write_text(TINY_TOML)
    out = root / "exported"
    run_build(config, out)
    return config, out, snapshot(out)


@pytest.mark.parametrize("marker, delay", [
    ("[2/6] train", 0.0),        # during training: nothing staged yet
    ("[3/6] export", 0.0),       # while converting to ONNX
    ("[4/6] verify", 0.0),       # model.onnx + manifest written to the staging folder
    ("[5/6] report", 0.0),       # verified, report being written
])
def test_kill_leaves_previous_artifact(published, marker, delay):
    from pipeline.runtime import Predictor

    config, out, before = published
    kill_at(config, out, marker, delay)
    assert snapshot(out) == before, f"killed at {marker}: the published artifact changed"
    p = Predictor.load(out)
    assert p.manifest["model"]["sha256"] == before["model.onnx"]


def test_kill_at_publish_leaves_a_loadable_artifact(published):
    """Killed right after '[6/6] publish': DIR holds the old or the new artifact, never nothing."""
    from pipeline.runtime import Predictor

    config, out, before = published
    kill_at(config, out, "[6/6] publish")
    assert out.is_dir(), "killed during publish: no artifact left in --out"
    Predictor.load(out)


def test_leftover_staging_does_not_break_next_build(published):
    from pipeline.runtime import Predictor

    config, out, before = published
    leftovers = sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.staging-"))
    # a stale staging folder of a dead build, with junk inside, as SIGKILL leaves them
    stale = out.parent / f".{out.name}.staging-999999"
    stale.mkdir(exist_ok=True)
    (stale / "model.onnx").write_bytes(b"partial")
    run_build(config, out)
    p = Predictor.load(out)
    assert snapshot(out)["model.onnx"] == p.manifest["model"]["sha256"]
    print(f"\nleftover staging folders from killed builds: {leftovers + [stale.name]}")


PUBLISH_CRASH = r"""
import os, signal, sys
from pathlib import Path
from pipeline.packaging import publish
real = os.replace
calls = []
def replace(src, dst):
    real(src, dst)
    calls.append(dst)
    if len(calls) == 1:              # the old artifact was moved aside, the new one not yet in place
        os.kill(os.getpid(), signal.SIGKILL)
publish.os.replace = replace
publish.exchange = lambda a, b: False  # force the two-rename fallback
publish.publish(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def test_crash_between_publish_renames_is_recovered(tmp_path, published):
    """Fallback path (no atomic exchange): a crash between the two renames leaves --out missing
    for a moment; the next build's _recover puts the previous artifact back."""
    import shutil

    _, out, _ = published
    target = tmp_path / "exported"
    shutil.copytree(out, target)
    staging = tmp_path / ".exported.staging-1"
    shutil.copytree(out, staging)
    proc = subprocess.run([sys.executable, "-c", PUBLISH_CRASH, str(staging), str(target)], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists() and list(tmp_path.glob(".exported.previous-*"))
    before = snapshot(out)
    builder_recover(target)
    assert target.is_dir() and snapshot(target) == before
    assert not list(tmp_path.glob(".exported.previous-*"))
    from pipeline.runtime import Predictor
    Predictor.load(target)


def test_publish_swaps_atomically_when_the_os_can(tmp_path, published, monkeypatch):
    import shutil

    from pipeline.packaging import publish

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("a")
    if not publish.exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) not available on this system")
    assert (b / "x").read_text() == "a" and not (a / "x").exists()
    _, out, _ = published
    target = tmp_path / "exported"
    shutil.copytree(out, target)
    staging = tmp_path / ".exported.staging-1"
    shutil.copytree(out, staging)
    (staging / "marker").write_text("new")

    def no_rename(*args):
        raise AssertionError("the atomic path must not rename the old artifact aside")

    monkeypatch.setattr(publish.os, "replace", no_rename)
    publish.publish(staging, target)
    assert (target / "marker").read_text() == "new" and not staging.exists()


def builder_recover(path):
    from pipeline.packaging.publish import recover
    recover(path)
