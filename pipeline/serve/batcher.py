"""Dynamic batching: concurrent requests coalesced into one native call, each answered with its own rows.

Owns: ``Batcher``, a bounded queue drained by one worker thread. Imports: asyncio, threading, time,
collections (no numpy, no model: the caller's ``run`` function does the work). Reads/writes nothing.

The event loop thread calls ``submit(item, rows)``, which queues the item and returns an asyncio
future. The worker takes the queued items in order until they hold ``max_batch`` rows (the first
item is always taken, however many rows it has), waiting at most ``max_delay_s`` after the first
item's arrival for more to come, then calls ``run(items)``, which returns one result or one
exception per item: a bad row fails only its own request. Results reach the futures through one
``call_soon_threadsafe`` per batch.

Bounds: a queue already holding ``max_queue`` items refuses at once (``QueueFull``), so memory never
grows without bound. Items whose future was cancelled (a client that went away) are dropped before
they run. ``close()`` stops taking new items; ``drain(timeout)`` waits for the queued ones.
While ``run`` works the GIL is free (the fused kernel and onnxruntime release it), so the loop keeps
parsing requests, which then wait in the queue and form the next batch.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any, Callable, Optional, Sequence

__all__ = ["Batcher", "QueueFull", "Closed"]


class QueueFull(Exception):
    """The queue holds ``max_queue`` items already."""


class Closed(Exception):
    """The batcher is shutting down and takes no new items."""


class Batcher:
    """One worker thread that runs queued items in batches of up to ``max_batch`` rows.

    Args:
        run: items -> one result or Exception per item, in order (called on the worker thread).
        max_batch: rows per call (an item larger than this runs alone).
        max_delay_s: longest wait for more items once one is queued (0: take what is there).
        max_queue: items the queue may hold.
        on_batch: called on the worker with the rows of each call (metrics), or None.
        name: the worker thread's name.
    """

    def __init__(self, run: Callable[[list], Sequence[Any]], max_batch: int, max_delay_s: float, max_queue: int,
                 on_batch: Optional[Callable[[int], None]] = None, name: str = "batcher") -> None:
        self._run = run
        self.max_batch = max(1, int(max_batch))
        self.max_delay_s = max(0.0, float(max_delay_s))
        self.max_queue = max(1, int(max_queue))
        self._on_batch = on_batch
        self._queue: deque = deque()  # (item, rows, future, loop, arrival)
        self._cond = threading.Condition()
        self._closed = False
        self._busy = 0  # items taken by the worker and not yet answered
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Items waiting (not yet taken by the worker)."""
        return len(self._queue)

    def submit(self, item: Any, rows: int) -> "asyncio.Future":
        """Queue ``item`` (``rows`` rows); a future of its result. Call from the event loop thread.

        Raises:
            QueueFull: ``max_queue`` items are waiting already.
            Closed: the batcher is shutting down.
        """
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._cond:
            if self._closed:
                raise Closed()
            if len(self._queue) >= self.max_queue:
                raise QueueFull()
            self._queue.append((item, rows, fut, loop, time.monotonic()))
            self._cond.notify()
        return fut

    def _take(self) -> Optional[list]:
        """Block until items are queued; take up to max_batch rows of them (None: closed and empty)."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            if self.max_delay_s > 0:
                deadline = self._queue[0][4] + self.max_delay_s
                while sum(e[1] for e in self._queue) < self.max_batch and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            taken, rows = [], 0
            while self._queue and (not taken or rows + self._queue[0][1] <= self.max_batch):
                entry = self._queue.popleft()
                if entry[2].cancelled():  # the client went away before its turn: no work for it
                    continue
                taken.append(entry)
                rows += entry[1]
            self._busy += len(taken)
            return taken

    def _work(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            if not taken:
                continue
            try:
                results = list(self._run([e[0] for e in taken]))
                if len(results) != len(taken):
                    raise RuntimeError(f"batch run returned {len(results)} results for {len(taken)} items")
            except BaseException as exc:  # noqa: BLE001 - every waiting request must hear of it
                results = [exc] * len(taken)
            if self._on_batch is not None:
                self._on_batch(sum(e[1] for e in taken))
            by_loop: dict = {}
            for entry, result in zip(taken, results):
                by_loop.setdefault(entry[3], []).append((entry[2], result))
            for loop, pairs in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_deliver, pairs)
                except RuntimeError:  # the loop closed: nobody is waiting any more
                    pass
            with self._cond:
                self._busy -= len(taken)
                self._cond.notify_all()

    def close(self) -> None:
        """Take no new items; the worker finishes the queued ones and stops."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def drain(self, timeout: float) -> bool:
        """Close, then wait up to ``timeout`` seconds for every queued and running item; True if all ran."""
        self.close()
        end = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True


def _deliver(pairs: list) -> None:
    for fut, result in pairs:
        if fut.done():  # cancelled meanwhile
            continue
        if isinstance(result, BaseException):
            fut.set_exception(result)
        else:
            fut.set_result(result)
