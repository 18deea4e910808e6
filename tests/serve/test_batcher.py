"""The dynamic batcher alone: coalescing up to max_batch rows, each item its own result, a failing item
alone, a full queue refused at once, cancelled items never run, drain on close."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pipeline.serve.batcher import Batcher, Closed, QueueFull


def test_items_queued_while_the_worker_is_busy_form_one_batch():
    gate = threading.Event()
    calls: list = []

    def run(items):
        calls.append(list(items))
        if items == ["first"]:
            gate.wait(10)
        return [f"r-{i}" for i in items]

    async def main():
        b = Batcher(run, max_batch=4, max_delay_s=0, max_queue=100)
        first = b.submit("first", 1)
        while not calls:  # the worker has taken "first" and is busy
            await asyncio.sleep(0.001)
        rest = [b.submit(i, 1) for i in range(6)]
        gate.set()
        results = await asyncio.gather(first, *rest)
        b.close()
        return results

    results = asyncio.run(main())
    assert results == ["r-first"] + [f"r-{i}" for i in range(6)]
    assert calls == [["first"], [0, 1, 2, 3], [4, 5]]  # max_batch rows a call, in arrival order


def test_rows_count_and_a_large_item_runs_alone():
    calls: list = []
    gate = threading.Event()

    def run(items):
        calls.append([name for name, _ in items])
        gate.wait(10)
        return [name for name, _ in items]

    async def main():
        b = Batcher(run, max_batch=10, max_delay_s=0, max_queue=100)
        futs = [b.submit(("a", 1), 1)]
        while not calls:
            await asyncio.sleep(0.001)
        futs += [b.submit(("big", 30), 30), b.submit(("c", 6), 6), b.submit(("d", 4), 4), b.submit(("e", 1), 1)]
        gate.set()
        await asyncio.gather(*futs)
        b.close()

    asyncio.run(main())
    assert calls == [["a"], ["big"], ["c", "d"], ["e"]]


def test_max_delay_waits_for_more_items():
    calls: list = []

    async def main():
        b = Batcher(lambda items: (calls.append(list(items)), list(items))[1], max_batch=3, max_delay_s=0.5,
                    max_queue=100)
        futs = []
        for i in range(3):
            futs.append(b.submit(i, 1))
            await asyncio.sleep(0.01)
        await asyncio.gather(*futs)
        b.close()

    asyncio.run(main())
    assert calls == [[0, 1, 2]]  # the first waited (less than 0.5 s) until three rows were there


def test_a_failing_item_fails_only_its_own_future():
    def run(items):
        return [ValueError(f"bad {i}") if i == 2 else i * 10 for i in items]

    async def main():
        b = Batcher(run, max_batch=8, max_delay_s=0.05, max_queue=100)
        futs = [b.submit(i, 1) for i in range(4)]
        out = await asyncio.gather(*futs, return_exceptions=True)
        b.close()
        return out

    out = asyncio.run(main())
    assert out[:2] == [0, 10] and out[3] == 30
    assert isinstance(out[2], ValueError) and str(out[2]) == "bad 2"


def test_a_run_that_raises_fails_every_item_of_its_batch_and_the_worker_goes_on():
    def run(items):
        if "boom" in items:
            raise RuntimeError("kernel failed")
        return list(items)

    async def main():
        b = Batcher(run, max_batch=1, max_delay_s=0, max_queue=100)
        with pytest.raises(RuntimeError, match="kernel failed"):
            await b.submit("boom", 1)
        ok = await b.submit("fine", 1)
        b.close()
        return ok

    assert asyncio.run(main()) == "fine"


def test_full_queue_refuses_at_once_and_cancelled_items_never_run():
    gate = threading.Event()
    ran: list = []

    def run(items):
        ran.extend(items)
        gate.wait(10)
        return list(items)

    async def main():
        b = Batcher(run, max_batch=1, max_delay_s=0, max_queue=2)
        first = b.submit("first", 1)
        while not ran:
            await asyncio.sleep(0.001)
        queued = [b.submit("q1", 1), b.submit("q2", 1)]
        with pytest.raises(QueueFull):
            b.submit("q3", 1)
        queued[0].cancel()  # its client went away
        gate.set()
        await first
        assert await queued[1] == "q2"
        assert b.drain(5)
        with pytest.raises(Closed):
            b.submit("late", 1)

    asyncio.run(main())
    assert ran == ["first", "q2"]
