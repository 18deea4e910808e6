"""The local engine: fragments scored by a thread pool in this process.

Owns: running ``process_fragment`` over the fragments on one machine. Imports: the standard
library and ``score`` (no engine packages). Reads/writes: through ``score.process_fragment``.

``workers`` fragments run at once (onnxruntime and the Parquet decoder release the GIL, so
reading one fragment overlaps scoring another); each shares one Predictor whose own threads
make up the rest of ``workers`` when there are fewer fragments than workers.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from pipeline.runtime.batch.score import JobSpec, process_fragment_safe

__all__ = ["run"]


def run(spec: JobSpec, fragments: list, workers: int, threads: Optional[int] = None) -> tuple[list, float]:
    """Score ``fragments``; returns (per-fragment results, engine start-up seconds = 0)."""
    if not fragments:
        return [], 0.0
    pool = max(1, min(workers, len(fragments)))
    per = threads or spec.threads or max(1, workers // pool)
    if pool == 1:
        return [process_fragment_safe(spec, f, per) for f in fragments], 0.0
    with ThreadPoolExecutor(pool, thread_name_prefix="gru-batch") as ex:
        return list(ex.map(lambda f: process_fragment_safe(spec, f, per), fragments)), 0.0
