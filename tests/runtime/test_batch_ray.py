"""Batch jobs on Ray Data: a local 2-CPU Ray, the public RayScorer, a killed actor, a two-node cluster."""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.data", reason="the ray extra is not installed (pip install -e '.[ray]')")
import pyarrow as pa  # noqa: E402

from pipeline.runtime.batch.job import run_job  # noqa: E402
from tests.runtime.parquet_data import (EXPORTED, as_map, descendants, nested_table, ragged, read_output,  # noqa: E402
                                        run_predict, reference_input, write_files, write_long_files)

pytestmark = pytest.mark.slow
ACTOR = "MapBatches(FragmentScorer)"


@pytest.fixture(scope="module")
def ray_local():
    """Ray on this machine with 2 CPUs and no dashboard, shared by the tests of this module."""
    from pipeline.runtime.batch import ray_engine

    ray = ray_engine.start(2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """4000 reference-shaped sequences (T=50, F=8) in 16 files."""
    return reference_input(tmp_path_factory.mktemp("ray") / "in", 4000, 16, 250, seed=11)


@pytest.fixture(scope="module")
def long_data(tmp_path_factory):
    """16000 sequences in 64 files: about 2 s of scoring, so an actor that starts a second later on
    another node still gets fragments (with 16 files the first actor could finish them all in 0.7 s)."""
    return reference_input(tmp_path_factory.mktemp("ray_long") / "in", 16000, 64, 250, seed=12)


def test_ray_engine_both_layouts_equal_predict_proba(ray_local, tmp_path, predictor, data):
    X, folder = data
    s = run_job(str(EXPORTED), str(folder), str(tmp_path / "out"), engine="ray", workers=2)
    got = as_map(read_output(tmp_path / "out")[0])
    np.testing.assert_allclose([got[i] for i in range(4000)], predictor.predict_proba(X), atol=1e-6, rtol=0)
    assert s["rows_out"] == 4000 and s["parts"] == 16 and s["engine"] == "ray"
    assert len(s["workers_seen"]) == 2  # two actors, two processes
    assert all(w.split(":")[1].split("@")[0] != str(os.getpid()) for w in s["workers_seen"])
    seqs = ragged(200, 8, lo=1, hi=40, seed=6)
    write_long_files(tmp_path / "long", seqs, [f"s{i}" for i in range(200)], 3, shuffle_seed=1)
    s = run_job(str(EXPORTED), str(tmp_path / "long"), str(tmp_path / "out_long"), engine="ray", workers=2)
    got = as_map(read_output(tmp_path / "out_long")[0])
    np.testing.assert_allclose([got[f"s{i}"] for i in range(200)], predictor.predict_proba(seqs), atol=1e-6, rtol=0)
    assert s["layout"] == "long" and s["rows_in"] == 200


def test_ray_scorer_in_the_users_own_pipeline(ray_local, tmp_path, predictor):
    from pipeline.runtime.batch.api import RayScorer

    ray = ray_local
    seqs = ragged(300, 8, lo=1, hi=30, seed=8)
    seqs[7] = seqs[7][:, :5]  # a bad row: 5 features
    table = nested_table([s if s.shape[1] == 8 else np.zeros((1, 8), np.float32) for s in seqs], list(range(300)))
    x = table.column("x").to_pylist()
    x[7] = seqs[7].tolist()
    table = table.set_column(1, "x", pa.array(x, type=table.schema.field("x").type))
    write_files(tmp_path / "in", table, 3)
    ds = ray.data.read_parquet(str(tmp_path / "in"))
    # one 1-CPU actor: on this 2-CPU Ray the reading tasks need the other CPU
    out = ds.map_batches(RayScorer, fn_constructor_kwargs={"model_dir": str(EXPORTED)}, batch_format="pyarrow",
                         batch_size=64, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1)
    rows = out.take_all()
    assert len(rows) == 300 and len({r["id"] for r in rows}) == 300
    bad = [r for r in rows if r["error"] is not None]
    assert [(r["id"], r["error"], r["probability"]) for r in bad] == [
        (7, "expected 8 features per timestep, got 5 at timestep 0", None)]
    got = {r["id"]: r["probability"] for r in rows if r["error"] is None}
    good = [i for i in range(300) if i != 7]
    np.testing.assert_allclose([got[i] for i in good], predictor.predict_proba([seqs[i] for i in good]), atol=1e-6)
    # long layout: group a sequence's rows together first
    write_long_files(tmp_path / "long", seqs[:20:2], list(range(0, 20, 2)), 2, shuffle_seed=2)
    grouped = ray.data.read_parquet(str(tmp_path / "long")).groupby("sample_id")
    rows = grouped.map_groups(RayScorer, fn_constructor_kwargs={"model_dir": str(EXPORTED), "layout": "long"},
                              batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=1)).take_all()
    got = {r["sample_id"] if "sample_id" in r else r["id"]: r["probability"] for r in rows}
    np.testing.assert_allclose([got[i] for i in range(0, 20, 2)], predictor.predict_proba(seqs[:20:2]), atol=1e-6)


def test_killed_actor_is_restarted_and_every_id_comes_out_once(ray_local, tmp_path, predictor, data):
    """Fault test: SIGKILL one scoring actor once the first part is written; Ray restarts it and
    retries its fragment; the retry rewrites the same part, so no id is lost or doubled."""
    X, folder = data
    out = tmp_path / "out"
    killed = {}

    def killer():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            parts = list(out.glob("part-*.parquet")) if out.exists() else []
            actors = [pid for pid, cmd in descendants(os.getpid()) if ACTOR in cmd]
            if parts and actors:
                killed["parts_done"] = len(parts)
                os.kill(actors[0], signal.SIGKILL)
                killed["pid"] = actors[0]
                return
            time.sleep(0.02)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    s = run_job(str(EXPORTED), str(folder), str(out), engine="ray", workers=2)
    t.join(5)
    assert killed and killed["parts_done"] < 16, f"the actor was not killed mid-job: {killed}"
    scored, refused, _ = read_output(out)
    assert refused is None and scored.num_rows == 4000
    got = as_map(scored)  # asserts no id twice
    assert sorted(got) == list(range(4000))
    np.testing.assert_allclose([got[i] for i in range(4000)], predictor.predict_proba(X), atol=1e-6, rtol=0)
    print(f"fault test (ray): killed actor pid {killed['pid']} after {killed['parts_done']}/16 parts; "
          f"job completed by Ray's actor restart: {s['rows_out']} ids once each, workers {s['workers_seen']}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_nodes(n: int, address: str, env: dict, timeout: float = 120.0) -> None:
    """Block until the Ray cluster at ``address`` has ``n`` live nodes (asked from a child process)."""
    probe = ("import ray; ray.init(address=%r, logging_level='ERROR'); "
             "print(sum(1 for node in ray.nodes() if node['Alive']))" % address)
    deadline = time.time() + timeout
    seen = "nothing"
    while time.time() < deadline:
        res = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
        seen = (res.stdout.strip().splitlines() or [res.stderr.strip()[-200:]])[-1]
        if seen == str(n):
            return
        time.sleep(2)
    raise AssertionError(f"the Ray cluster at {address} did not reach {n} live nodes in {timeout:g} s (last: {seen})")


def test_two_node_ray_cluster_runs_two_worker_processes(tmp_path, long_data, predictor):
    """A Ray head plus a second node started with `ray start` (1 CPU each): gru-predict joins it
    through RAY_ADDRESS and its two actors run on the two nodes."""
    X, folder = long_data
    ray_bin = str(Path(sys.executable).parent / "ray")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # unix socket paths must stay short
    token = tmp_path / "token"
    token.write_text(secrets.token_hex(32))  # this test cluster's own auth token
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    port = _free_port()
    common = ["--block", "--num-cpus=1", "--disable-usage-stats"]
    procs = []
    try:
        procs.append(subprocess.Popen([ray_bin, "start", "--head", f"--port={port}", "--include-dashboard=false",
                                       f"--temp-dir={temp}", f"--ray-client-server-port={_free_port()}",
                                       f"--dashboard-agent-listen-port={_free_port()}", *common],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(6)
        procs.append(subprocess.Popen([ray_bin, "start", f"--address=127.0.0.1:{port}",
                                       f"--dashboard-agent-listen-port={_free_port()}", *common],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_for_nodes(2, f"127.0.0.1:{port}", env)  # a loaded machine may take longer than a fixed sleep
        res = run_predict(EXPORTED, folder, "--output", tmp_path / "out", "--engine", "ray", "--workers", "2",
                          env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                               "RAY_ADDRESS": f"127.0.0.1:{port}"})
        assert res.returncode == 0, res.stderr[-3000:]
        scored, _, s = read_output(tmp_path / "out")
        pids = {int(w.split(":")[1].split("@")[0]) for w in s["workers_seen"]}
        nodes = {w.split("@")[1] for w in s["workers_seen"]}
        assert len(pids) == 2 and len(nodes) == 2, s["workers_seen"]  # two processes, one on each node
        got = as_map(scored)
        np.testing.assert_allclose([got[i] for i in range(len(X))], predictor.predict_proba(X), atol=1e-6, rtol=0)
        print(f"two-node ray: worker processes {sorted(pids)}; wall {s['wall_seconds']} s")
    finally:
        for p in reversed(procs):  # stop what this test started: the nodes' processes, then the nodes
            for pid, _ in descendants(p.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            p.kill()
            p.wait(10)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_ray_engine_k_class_model_writes_label_and_probabilities(ray_local, tmp_path, task):
    from tests.runtime.test_classes import check_k_class_job
    from tests.tiny_models import write_tiny_model

    from pipeline.runtime import Predictor

    check_k_class_job(Predictor.load(write_tiny_model(tmp_path / task, task=task)), tmp_path, "ray")
