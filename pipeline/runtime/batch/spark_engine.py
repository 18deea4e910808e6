"""The Spark engine: fragments scored by Spark tasks with ``mapInPandas``.

Owns: starting or joining a SparkSession, and running ``process_fragment`` over the fragments,
one fragment per Spark partition, through ``DataFrame.mapInPandas``. Each Python worker
process loads one Predictor (onnxruntime threads = ``spark.task.cpus``). A failed task is
retried by Spark (up to 4 attempts, also in local mode); a retry rewrites the same part under
the same name. Imports: pyspark (the optional ``spark`` extra), ``score``.
Reads/writes: through ``process_fragment``.

The session is the active one when there is one, else a new one on ``GRU_SPARK_MASTER``
(e.g. ``spark://host:7077`` or ``local-cluster[2,1,1024]``) or ``local[workers,4]``. Workers run
this interpreter (``PYSPARK_PYTHON = sys.executable``) so they import the same packages.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from typing import Optional

from pipeline.errors import ConfigError
from pipeline.runtime.batch.plan import Fragment
from pipeline.runtime.batch.score import JobSpec, process_fragment_safe

__all__ = ["run", "session", "java_available"]

HINT = "pip install 'gru-onnx-pipeline[spark]'"
RESULT_SCHEMA = ("index long, rows_in long, rows_out long, rows_refused long, worker string, seconds double, "
                 "fatal string, exit_code long")


def java_available() -> Optional[str]:
    """None when a java launcher is found (JAVA_HOME or PATH), else why not."""
    import shutil

    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return None
    return None if shutil.which("java") else "no java on PATH and JAVA_HOME unset: Spark needs a JRE 17 or newer"


def session(workers: int):
    """The active SparkSession, or a new one (see the module docstring)."""
    try:
        import pyspark
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ConfigError(f"--engine spark needs pyspark, which is not installed ({exc.name}): {HINT}") from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    why = java_available()
    if why:
        raise ConfigError(f"--engine spark: {why}")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_HOME", os.path.dirname(pyspark.__file__))  # local-cluster needs its scripts
    master = os.environ.get("GRU_SPARK_MASTER") or f"local[{workers},4]"
    builder = SparkSession.builder.master(master).appName("gru-predict")
    if not os.environ.get("SPARK_CONF_DIR"):  # no site configuration: keep the JVM's log to errors
        builder = builder.config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={_quiet_log4j()}")
    spark = (builder
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true")
             .config("spark.python.worker.reuse", "true")
             .config("spark.task.maxFailures", "4")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _quiet_log4j() -> str:
    import tempfile

    path = os.path.join(tempfile.gettempdir(), "gru-predict-spark-log4j2.properties")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as fh:
            fh.write("rootLogger.level = error\nrootLogger.appenderRef.stderr.ref = console\n"
                     "appender.console.type = Console\nappender.console.name = console\n"
                     "appender.console.target = SYSTEM_ERR\nappender.console.layout.type = PatternLayout\n"
                     "appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex\n")
        os.replace(tmp, path)
    return path


def _score_partitions(spec_json: str, threads: Optional[int]):
    """The mapInPandas function: each input row is one fragment (JSON); yields its counts."""

    def fn(batches):
        import pandas as pd
        from pyspark import TaskContext

        from pipeline.runtime.batch import score

        spec = JobSpec.from_json(spec_json)
        dirs = os.environ.get("SPARK_EXECUTOR_DIRS")  # set for executors of a cluster: .../<app>/<executor id>
        if dirs:
            score.WORKER_TAG = os.path.basename(dirs.split(os.pathsep)[0].rstrip("/"))[:21]  # executor-1234abcd...
        ctx = TaskContext.get()
        cpus = threads or spec.threads or max(1, int(ctx.cpus()) if ctx is not None else 1)
        for pdf in batches:
            out = [process_fragment_safe(spec, Fragment(**json.loads(f)), cpus) for f in pdf["fragment"]]
            yield pd.DataFrame(out, columns=["index", "rows_in", "rows_out", "rows_refused", "worker", "seconds",
                                             "fatal", "exit_code"])

    return fn


def run(spec: JobSpec, fragments: list, workers: int, threads: Optional[int] = None) -> tuple[list, float]:
    """Score ``fragments`` on Spark; returns (per-fragment results, start-up seconds)."""
    t0 = time.perf_counter()
    spark = session(workers)
    start_s = time.perf_counter() - t0
    if not fragments:
        return [], start_s
    rows = [(json.dumps(asdict(f)),) for f in fragments]
    df = spark.sparkContext.parallelize(rows, len(rows)).toDF("fragment string")
    got = df.mapInPandas(_score_partitions(spec.to_json(), threads), RESULT_SCHEMA).collect()
    return [r.asDict() for r in got], start_s
