"""The local engine: fragments scored by worker processes on this machine.

Owns: running ``process_fragment`` over the fragments on one machine. Imports: the standard
library and ``score`` (no engine packages). Reads/writes: through ``score.process_fragment``.

``workers`` fragments run at once, each in its own process (started with ``spawn``: nothing of
this process's onnxruntime state is inherited), each loading one Predictor. Processes, not
threads: decoding Parquet into arrays holds the GIL often enough that two threads reached 33-40k
samples/s where two processes reach 56-66k on the 1M-sequence benchmark (2 cores). With one
fragment or one worker, the fragment is scored in this process, with the Predictor's own threads.
A killed worker process stops the job (BrokenProcessPool); ``--resume`` completes it.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Optional

from pipeline.runtime.batch.score import JobSpec, process_fragment_safe

__all__ = ["run"]


def run(spec: JobSpec, fragments: list, workers: int, threads: Optional[int] = None) -> tuple[list, float]:
    """Score ``fragments``; returns (per-fragment results, engine start-up seconds = 0)."""
    if not fragments:
        return [], 0.0
    pool = max(1, min(workers, len(fragments)))
    per = threads or spec.threads or max(1, workers // pool)  # onnxruntime threads per worker
    if pool == 1:
        return [process_fragment_safe(spec, f, per) for f in fragments], 0.0
    with ProcessPoolExecutor(pool, mp_context=multiprocessing.get_context("spawn")) as ex:
        futures = [ex.submit(process_fragment_safe, spec, f, per) for f in fragments]
        return [f.result() for f in futures], 0.0
