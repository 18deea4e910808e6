"""A batch job from start to end: plan, resume, run on an engine, commit.

Owns: ``run_job`` (what ``gru-predict --engine ...`` and the benchmark call) and the choice of
engine. Imports: pipeline.runtime.predictor, ``plan``, ``score`` and, only for the engine asked
for, ``local`` / ``ray_engine`` / ``spark_engine``.
Reads: the model folder, the Parquet input. Writes: the output directory (see ``plan``).
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from typing import Optional

from pipeline.errors import InputError, PipelineError
from pipeline.runtime.batch.plan import ROWS_PER_PART, OutputDir, make_plan
from pipeline.runtime.batch.score import JobSpec

__all__ = ["ENGINES", "run_job"]

ENGINES = ("local", "ray", "spark")


def _engine(name: str):
    if name == "local":
        from pipeline.runtime.batch import local as mod
    elif name == "ray":
        from pipeline.runtime.batch import ray_engine as mod
    elif name == "spark":
        from pipeline.runtime.batch import spark_engine as mod
    else:
        raise InputError(f"--engine: expected one of {', '.join(ENGINES)}, got {name!r}")
    return mod


def run_job(model_dir: str, input: str, output: str, engine: str = "local", workers: Optional[int] = None,
            layout: Optional[str] = None, id_column: Optional[str] = None, resume: bool = False,
            threads: Optional[int] = None, graph: str = "auto", rows_per_part: int = ROWS_PER_PART) -> dict:
    """Score every sequence of a Parquet file or directory into a Parquet output directory.

    Returns the summary also written to ``<output>/_summary.json``. Rows that could not be
    scored are in ``<output>/_errors`` and counted in ``rows_refused`` (the caller decides
    the exit code). Raises PipelineError for anything that stops the job.
    """
    from pipeline.runtime.predictor import Predictor, usable_cpus

    t0, epoch = time.perf_counter(), time.time()
    started = datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")
    mod = _engine(engine)
    if workers is not None and workers < 1:
        raise InputError(f"--workers: expected a positive integer, got {workers}")
    if threads is not None and threads < 1:
        raise InputError(f"--threads: expected a positive integer, got {threads}")
    workers = workers or usable_cpus()
    predictor = Predictor.load(model_dir, threads=1, graph=graph)  # checks the artifact before any work
    sha = predictor.manifest["model"]["sha256"]
    plan = make_plan(input, layout, id_column, predictor.n_features, sha, rows_per_part)
    out = OutputDir(output)
    todo = out.prepare(plan, resume, sorted({f.path for f in plan.fragments}))
    spec = JobSpec(os.path.abspath(model_dir), sha, input, output, plan.layout, plan.id_column,
                   plan.feature_columns, graph, threads)
    plan_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    results, start_s = mod.run(spec, todo, workers, threads)
    run_s = time.perf_counter() - t1
    fatal = [r for r in results if r.get("fatal")]
    if fatal:
        err = PipelineError(fatal[0]["fatal"])
        err.exit_code = int(fatal[0]["exit_code"]) or 1
        raise err
    summary = {
        "engine": engine, "workers": workers, "layout": plan.layout, "id_column": plan.id_column,
        "input": input, "output": output, "model_dir": os.path.abspath(model_dir), "model_sha256": sha,
        "started_at": started, "started_epoch": epoch, "resumed": bool(resume), "parts_done_now": len(todo),
        "parts_skipped": len(plan.fragments) - len(todo),
        "plan_seconds": round(plan_s, 3), "engine_start_seconds": round(start_s, 3),
        "run_seconds": round(run_s, 3),
    }
    return out.commit(plan, summary, t0)
