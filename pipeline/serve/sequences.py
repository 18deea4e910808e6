"""Stateful sequences: each sequence id's GRU state, kept between requests and stepped in batches.

Owns: ``SequenceStore`` (id -> state, idle eviction, the ``max_sequences`` bound) and ``SequenceItem``.
Imports: threading, time, numpy, pipeline.errors, pipeline.serve.protocol (ProtocolError).
Reads/writes nothing on disk.

A sequence's state is the runtime stream's state for one stream: ``{name: (D, H) float32}``
(``Stream.get_state``). ``step(items)`` runs on the batcher's worker: the items of one round (at most
one per id, the same chunk length) are stacked into one ``Predictor.stream(m)`` push of (m, T, F)
rows, and each id gets its own row of the new state back. States never cross ids: every id owns
its arrays, and a round never holds an id twice (a second request for an id waits for the next
round, so an id's steps run in the order they arrived).

Lifecycle (the V2 sequence extension's parameters): ``sequence_start`` opens the id (or restarts
it), a request without it must name a live id (unknown or evicted: 400), ``sequence_end`` closes it
after its steps. An id idle for ``idle_s`` is evicted; opening a new id when ``max_sequences`` are
live is refused with 503 (never by evicting a live one).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from pipeline.errors import PipelineError
from pipeline.serve.protocol import ProtocolError

__all__ = ["SequenceStore", "SequenceItem"]


@dataclass
class SequenceItem:
    """One request's steps for one sequence."""

    sid: Any
    start: bool
    end: bool
    steps: np.ndarray   # (1, T, F) raw features
    generation: int = 0  # the id's generation when the request was admitted


@dataclass
class _Sequence:
    state: Optional[dict]  # {name: (D, H)} after the last step; None: zeros (just started)
    last_used: float
    generation: int
    pending: int = 0       # admitted requests not yet answered (never evicted meanwhile)


class SequenceStore:
    """The live sequences of one model.

    Args:
        open_stream: n -> a runtime ``Stream`` of n streams (``Predictor.stream``); called on the worker.
        max_sequences: live ids at most.
        idle_s: an id unused this long is evicted.
    """

    def __init__(self, open_stream: Callable[[int], Any], max_sequences: int, idle_s: float) -> None:
        self._open_stream = open_stream
        self.max_sequences = max(1, int(max_sequences))
        self.idle_s = float(idle_s)
        self._live: dict[Any, _Sequence] = {}
        self._lock = threading.Lock()
        self._streams: dict[int, Any] = {}  # m -> Stream(m), used by the worker thread only
        self._generations = 0

    def __len__(self) -> int:
        return len(self._live)

    def admit(self, sid: Any, start: bool, end: bool, steps: np.ndarray) -> SequenceItem:
        """Check a request against the live ids and reserve its place (event loop thread)."""
        now = time.monotonic()
        with self._lock:
            seq = self._live.get(sid)
            if start:
                if seq is None:
                    if len(self._live) >= self.max_sequences:
                        self._evict_idle(now)
                    if len(self._live) >= self.max_sequences:
                        raise ProtocolError(503, f"sequence {sid!r}: {self.max_sequences} sequences are live "
                                                 "(--max-sequences); end one or retry later", "sequence_capacity")
                    self._generations += 1
                    seq = self._live[sid] = _Sequence(None, now, self._generations)
                # a restart of a live id: its steps run after the ones already admitted
            elif seq is None:
                raise ProtocolError(400, f"sequence {sid!r}: unknown or evicted sequence id (idle sequences are "
                                         f"evicted after {self.idle_s:g} s); start it with sequence_start", "unknown_sequence")
            seq.pending += 1
            seq.last_used = now
            return SequenceItem(sid, start, end, steps, seq.generation)

    def release(self, item: SequenceItem) -> None:
        """Undo ``admit`` for a request that will not run (refused by the queue, or cancelled)."""
        with self._lock:
            seq = self._live.get(item.sid)
            if seq is not None and seq.generation == item.generation:
                seq.pending -= 1
                if item.start and seq.state is None and seq.pending == 0:
                    del self._live[item.sid]  # opened by this request alone: nothing to keep

    def _evict_idle(self, now: float) -> int:
        old = [sid for sid, s in self._live.items() if s.pending == 0 and now - s.last_used > self.idle_s]
        for sid in old:
            del self._live[sid]
        return len(old)

    def evict_idle(self) -> int:
        """Drop every id idle longer than ``idle_s``; how many were dropped."""
        with self._lock:
            return self._evict_idle(time.monotonic())

    def clear(self) -> None:
        with self._lock:
            self._live.clear()

    # ------------------------------------------------------------------ the worker side
    def step(self, items: list[SequenceItem]) -> list[Any]:
        """Run the queued items' steps: one result ((k,) or scalar-row proba) or exception per item, in order."""
        results: list[Any] = [None] * len(items)
        todo = list(range(len(items)))
        while todo:
            seen, now_round, later = set(), [], []
            for i in todo:  # one request per id a round, in arrival order
                (later if items[i].sid in seen else now_round).append(i)
                seen.add(items[i].sid)
            by_t: dict[int, list[int]] = {}
            for i in now_round:
                by_t.setdefault(items[i].steps.shape[1], []).append(i)
            for group in by_t.values():
                self._step_group(items, group, results)
            todo = later
        return results

    def _states_of(self, items: list[SequenceItem], group: list[int], results: list) -> list[int]:
        """The group's members whose id is still live (results get an error for the others)."""
        ok = []
        with self._lock:
            for i in group:
                seq = self._live.get(items[i].sid)
                if seq is None or seq.generation != items[i].generation:
                    results[i] = ProtocolError(400, f"sequence {items[i].sid!r}: the sequence ended or was evicted "
                                                    "before this request ran", "unknown_sequence")
                else:
                    if items[i].start:
                        seq.state = None  # (re)start from zeros
                    ok.append(i)
        return ok

    def _stream(self, m: int):
        s = self._streams.get(m)
        if s is None:
            if len(self._streams) >= 16:
                self._streams.pop(next(iter(self._streams))).close()
            s = self._streams[m] = self._open_stream(m)
        return s

    def _step_group(self, items: list[SequenceItem], group: list[int], results: list) -> None:
        live = self._states_of(items, group, results)
        if not live:
            return
        try:
            new_states, proba = self._push([items[i] for i in live])
        except PipelineError as e:
            if len(live) > 1:  # a bad row: run each alone, so only its own request fails
                for i in live:
                    self._step_group(items, [i], results)
                return
            self._finish(items[live[0]], None, ok=False)  # the state is unchanged
            results[live[0]] = e
            return
        for j, i in enumerate(live):
            self._finish(items[i], {k: v[j] for k, v in new_states.items()}, ok=True)
            results[i] = proba[j]

    def _push(self, group: list[SequenceItem]) -> tuple[dict, np.ndarray]:
        """One native push of the group's steps from their states: ({name: (m, D, H)}, (m,) or (m, k))."""
        m = len(group)
        stream = self._stream(m)
        with self._lock:
            states = [self._live[it.sid].state for it in group]
        if all(s is None for s in states):
            stream.reset()
        else:
            zero = {k: np.zeros_like(v) for k, v in next(s for s in states if s is not None).items()}
            stream.set_state({k: np.stack([(s or zero)[k] for s in states]) for k in zero})
        steps = group[0].steps if m == 1 else np.concatenate([it.steps for it in group])  # (m, T, F)
        proba = stream.push(steps)
        return stream.get_state(), np.asarray(proba)

    def _finish(self, item: SequenceItem, state: Optional[dict], ok: bool) -> None:
        with self._lock:
            seq = self._live.get(item.sid)
            if seq is None or seq.generation != item.generation:
                return
            seq.pending -= 1
            seq.last_used = time.monotonic()
            if ok:
                seq.state = state
            if item.end and ok:
                del self._live[item.sid]
