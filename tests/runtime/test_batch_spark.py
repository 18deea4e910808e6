"""Batch jobs on Spark: local[2], the public SparkScorer (mapInPandas, mapInArrow, applyInPandas,
predict_batch_udf), a killed Python worker, and local-cluster[2,1,1024] (two executor processes)."""

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyspark", reason="the spark extra is not installed (pip install -e '.[spark]')")
from pipeline.runtime.batch import spark_engine  # noqa: E402

if spark_engine.java_available() is not None:  # `make test` installs openjdk-17-jre-headless where it can
    pytest.skip(f"Spark tests skipped: {spark_engine.java_available()}", allow_module_level=True)

import pyarrow as pa  # noqa: E402

from pipeline.runtime.batch.job import run_job  # noqa: E402
from tests.runtime.parquet_data import (EXPORTED, as_map, descendants, nested_table, ragged, read_output,  # noqa: E402
                                        run_predict, reference_input, write_files, write_long_files)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark():
    """One local[2] session (task retries on) for the tests of this module."""
    s = spark_engine.session(2)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """4000 reference-shaped sequences (T=50, F=8) in 16 files."""
    return reference_input(tmp_path_factory.mktemp("spark") / "in", 4000, 16, 250, seed=12)


def _pid(worker: str) -> int:
    return int(worker.split(":")[1].split("@")[0])


def test_spark_engine_both_layouts_equal_predict_proba(spark, tmp_path, predictor, data):
    X, folder = data
    s = run_job(str(EXPORTED), str(folder), str(tmp_path / "out"), engine="spark", workers=2)
    got = as_map(read_output(tmp_path / "out")[0])
    np.testing.assert_allclose([got[i] for i in range(4000)], predictor.predict_proba(X), atol=1e-6, rtol=0)
    assert s["rows_out"] == 4000 and s["parts"] == 16 and s["engine"] == "spark"
    pids = {_pid(w) for w in s["workers_seen"]}
    assert len(pids) == 2 and os.getpid() not in pids  # local[2]: two Python worker processes
    seqs = ragged(200, 8, lo=1, hi=40, seed=7)
    write_long_files(tmp_path / "long", seqs, [f"s{i}" for i in range(200)], 3, shuffle_seed=5)
    s = run_job(str(EXPORTED), str(tmp_path / "long"), str(tmp_path / "out_long"), engine="spark", workers=2)
    got = as_map(read_output(tmp_path / "out_long")[0])
    np.testing.assert_allclose([got[f"s{i}"] for i in range(200)], predictor.predict_proba(seqs), atol=1e-6, rtol=0)


def test_spark_scorer_in_the_users_own_job(spark, tmp_path, predictor):
    from pyspark.sql import functions as F

    from pipeline.runtime.batch.api import SparkScorer

    seqs = ragged(120, 8, lo=1, hi=25, seed=9)
    table = nested_table(seqs, list(range(120)))
    x = table.column("x").to_pylist()
    x[3][1][4] = float("nan")
    table = table.set_column(1, "x", pa.array(x, type=table.schema.field("x").type))
    write_files(tmp_path / "in", table, 2)
    df = spark.read.parquet(str(tmp_path / "in"))
    s = SparkScorer(str(EXPORTED))
    ref = predictor.predict_proba([seqs[i] for i in range(120) if i != 3])
    for how in ("mapInPandas", "mapInArrow"):
        fn = s.nested if how == "mapInPandas" else s.nested_arrow
        rows = getattr(df, how)(fn, s.output_schema(df)).collect()
        assert len(rows) == 120 and len({r.id for r in rows}) == 120, how
        bad = [(r.id, r.error, r.probability) for r in rows if r.error is not None]
        assert bad == [(3, "expected finite values, got NaN at timestep 1, feature 4", None)], how
        got = {r.id: r.probability for r in rows}
        np.testing.assert_allclose([got[i] for i in range(120) if i != 3], ref, atol=1e-6, err_msg=how)
    # long layout: groupBy the id, then applyInPandas
    write_long_files(tmp_path / "long", seqs[:30], list(range(30)), 1, shuffle_seed=3)
    dfl = spark.read.parquet(str(tmp_path / "long")).repartition(3)  # a sequence's rows now sit in several partitions
    sl = SparkScorer(str(EXPORTED), id_column="sample_id")
    rows = dfl.groupBy("sample_id").applyInPandas(sl.long, sl.output_schema(dfl)).collect()
    got = {r.id: r.probability for r in rows}
    assert len(rows) == 30
    np.testing.assert_allclose([got[i] for i in range(30)], predictor.predict_proba(seqs[:30]), atol=1e-6)
    # fixed-length rows: predict_batch_udf on the flattened values
    X = np.random.default_rng(1).standard_normal((64, 50, 8)).astype(np.float32)
    write_files(tmp_path / "fixed", nested_table(list(X), list(range(64))), 1)
    dff = spark.read.parquet(str(tmp_path / "fixed"))
    rows = dff.withColumn("probability", s.fixed_length_udf(50)(F.flatten("x"))).select("id", "probability").collect()
    got = {r.id: r.probability for r in rows}
    np.testing.assert_allclose([got[i] for i in range(64)], predictor.predict_proba(X), atol=1e-6)


def test_killed_python_worker_is_retried_and_every_id_comes_out_once(spark, tmp_path, predictor, data):
    """Fault test: SIGKILL a Spark Python worker once the first part is written; Spark retries the
    task (local[2,4]); the retry rewrites the same part, so no id is lost or doubled."""
    X, folder = data
    out = tmp_path / "out"
    killed = {}

    def workers():
        procs = descendants(os.getpid())
        daemons = {pid for pid, cmd in procs if "pyspark.daemon" in cmd}
        return [pid for pid in daemons if _ppid(pid) in daemons]  # forked from the daemon: a worker

    def killer():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            parts = list(out.glob("part-*.parquet")) if out.exists() else []
            found = workers() if parts else []
            if found:
                killed["parts_done"] = len(parts)
                os.kill(found[0], signal.SIGKILL)
                killed["pid"] = found[0]
                return
            time.sleep(0.02)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    s = run_job(str(EXPORTED), str(folder), str(out), engine="spark", workers=2)
    t.join(5)
    assert killed and killed["parts_done"] < 16, f"no worker was killed mid-job: {killed}"
    scored, refused, _ = read_output(out)
    assert refused is None and scored.num_rows == 4000
    got = as_map(scored)
    assert sorted(got) == list(range(4000))
    np.testing.assert_allclose([got[i] for i in range(4000)], predictor.predict_proba(X), atol=1e-6, rtol=0)
    print(f"fault test (spark): killed Python worker pid {killed['pid']} after {killed['parts_done']}/16 parts; "
          f"Spark retried the task: {s['rows_out']} ids once each, workers {s['workers_seen']}")


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def test_local_cluster_runs_two_executor_processes(tmp_path, data, predictor):
    """Spark local-cluster[2,1,1024]: two executor JVMs, each with its own Python worker."""
    X, folder = data
    res = run_predict(EXPORTED, folder, "--output", tmp_path / "out", "--engine", "spark", "--workers", "2",
                      env={"GRU_SPARK_MASTER": "local-cluster[2,1,1024]"}, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    scored, _, s = read_output(tmp_path / "out")
    pids = {_pid(w) for w in s["workers_seen"]}
    executors = {w.split("@")[1] for w in s["workers_seen"]}
    assert len(pids) == 2 and len(executors) == 2, s["workers_seen"]  # one Python worker in each executor
    got = as_map(scored)
    np.testing.assert_allclose([got[i] for i in range(4000)], predictor.predict_proba(X), atol=1e-6, rtol=0)
    print(f"local-cluster: Python workers {s['workers_seen']}; wall {s['wall_seconds']} s")


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_spark_engine_k_class_model_writes_label_and_probabilities(spark, tmp_path, task):
    from tests.runtime.test_classes import check_k_class_job
    from tests.tiny_models import write_tiny_model

    from pipeline.runtime import Predictor

    check_k_class_job(Predictor.load(write_tiny_model(tmp_path / task, task=task)), tmp_path, "spark")
