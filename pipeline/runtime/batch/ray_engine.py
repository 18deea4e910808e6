"""The Ray engine: fragments scored by a Ray Data actor pool.

Owns: starting or joining Ray, and running ``process_fragment`` over the fragments with
``Dataset.map_batches`` and a callable class, so each actor loads one Predictor (onnxruntime
threads = the actor's CPUs) and the pool size follows --workers. A killed actor is restarted
by Ray and its fragment retried; the retry rewrites the same part under the same name.
Imports: ray (the optional ``ray`` extra), ``score``. Reads/writes: through ``process_fragment``.

Ray is joined at ``RAY_ADDRESS`` when that is set (a running cluster), else started on this
machine with ``workers`` CPUs (at least the CPUs this process may use) and no dashboard.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from typing import Optional

from pipeline.errors import ConfigError
from pipeline.runtime.batch.plan import Fragment
from pipeline.runtime.batch.score import JobSpec, process_fragment_safe

__all__ = ["run", "start", "FragmentScorer"]

HINT = "pip install 'gru-onnx-pipeline[ray]'"


def start(workers: int):
    """Join or start Ray; returns the ``ray`` module."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"--engine ray needs Ray Data, which is not installed ({exc.name}): {HINT}") from None
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        kw = {} if address else {"num_cpus": max(workers, _usable_cpus())}
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, **kw)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    for name in ("ray.data", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return ray


def _usable_cpus() -> int:
    from pipeline.runtime.predictor import usable_cpus

    return usable_cpus()


class FragmentScorer:
    """Ray Data callable class: one Predictor per actor; one batch row = one fragment (as JSON)."""

    def __init__(self, spec_json: str, threads: Optional[int] = None) -> None:
        import ray

        from pipeline.runtime.batch import score

        self.spec = JobSpec.from_json(spec_json)
        ctx = ray.get_runtime_context()
        score.WORKER_TAG = f"ray-node-{ctx.get_node_id()[:12]}"
        cpus = ctx.get_assigned_resources().get("CPU", 1)
        self.threads = threads or self.spec.threads or max(1, int(cpus))

    def __call__(self, batch: dict) -> dict:
        out = [process_fragment_safe(self.spec, Fragment(**json.loads(f)), self.threads) for f in batch["fragment"]]
        return {k: [r[k] for r in out] for k in out[0]}


def run(spec: JobSpec, fragments: list, workers: int, threads: Optional[int] = None) -> tuple[list, float]:
    """Score ``fragments`` on Ray; returns (per-fragment results, start-up seconds)."""
    t0 = time.perf_counter()
    ray = start(workers)
    start_s = time.perf_counter() - t0
    if not fragments:
        return [], start_s
    cpus = max(1, threads or spec.threads or 1)
    ds = ray.data.from_items([{"fragment": json.dumps(asdict(f))} for f in fragments],
                             override_num_blocks=len(fragments))
    out = ds.map_batches(FragmentScorer, fn_constructor_kwargs={"spec_json": spec.to_json(), "threads": threads},
                         batch_size=1, batch_format="numpy", num_cpus=cpus,
                         compute=ray.data.ActorPoolStrategy(size=max(1, min(workers, len(fragments)))))
    rows = out.take_all()
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in rows], start_s
