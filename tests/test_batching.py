"""MicroBatcher: callers get their own results, batches merge under load, errors reach all."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pvtt.builder.batching import MicroBatcher


def test_lone_caller_runs_at_once_with_its_own_items() -> None:
    calls: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        calls.append(items)
        return [i * 10 for i in items]

    batcher = MicroBatcher(run, max_items=8)
    assert batcher([1, 2, 3]) == [10, 20, 30]
    assert batcher([4]) == [40]
    assert calls == [[1, 2, 3], [4]]
    assert batcher.stats.as_dict()["mean_batch"] == 2.0


def test_concurrent_callers_share_forwards_and_get_their_slices() -> None:
    gate = threading.Event()
    sizes: list[int] = []

    def run(items: list[tuple[int, int]]) -> list[tuple[int, int]]:
        if not sizes:
            gate.wait(5)  # hold the first forward until every caller has queued
        sizes.append(len(items))
        time.sleep(0.01)
        return [(who, i * i) for who, i in items]

    batcher = MicroBatcher(run, max_items=12)
    callers = 9

    def call(who: int) -> list[tuple[int, int]]:
        return batcher([(who, i) for i in range(4)])

    with ThreadPoolExecutor(callers) as pool:
        futures = [pool.submit(call, who) for who in range(callers)]
        while batcher.stats.calls < callers:
            time.sleep(0.005)
        gate.set()
        results = [f.result(timeout=10) for f in futures]
    for who, got in enumerate(results):
        assert got == [(who, i * i) for i in range(4)]
    assert sum(sizes) == 4 * callers
    assert max(sizes) == 12  # three callers' four items each in one forward
    assert len(sizes) < callers
    assert batcher.stats.largest == 12


def test_an_error_reaches_every_caller_of_the_batch_and_the_next_batch_runs() -> None:
    gate = threading.Event()
    seen: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        if not seen:
            gate.wait(5)
        seen.append(items)
        if -1 in items:
            raise ValueError("bad input in batch")
        return items

    batcher = MicroBatcher(run, max_items=2)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(batcher, [0])
        while batcher.stats.calls < 1:
            time.sleep(0.005)
        bad = pool.submit(batcher, [-1])
        good = pool.submit(batcher, [5])
        while batcher.stats.calls < 3:
            time.sleep(0.005)
        gate.set()
        assert first.result(timeout=10) == [0]
        with pytest.raises(ValueError, match="bad input"):
            bad.result(timeout=10)
        with pytest.raises(ValueError, match="bad input"):
            good.result(timeout=10)  # it shared the failing forward
    assert seen[1] == [-1, 5]
    assert batcher([7]) == [7]


def test_a_request_larger_than_max_items_still_runs() -> None:
    batcher = MicroBatcher(lambda items: items, max_items=2)
    assert batcher(list(range(5))) == list(range(5))


def test_wrong_result_count_is_an_error() -> None:
    batcher = MicroBatcher(lambda items: items[:-1], max_items=4)
    with pytest.raises(RuntimeError, match="2 results for 3 inputs"):
        batcher([1, 2, 3])


def test_max_items_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(lambda items: items, max_items=0)
