"""Batch a model's inputs across the threads that call it, without making anyone wait.

The local engine makes several pairs at once, each in its own thread, and each asks a
model stage for a handful of images (the scorer's 8 frames x 2 crops). One forward
per pair leaves a GPU mostly idle: the batch is small and the launches are serial.
:class:`MicroBatcher` merges the requests that arrive while the model is busy into
the next forward, up to ``max_items``, so the batch grows with the load and a lone
caller still runs at once (no timer: opportunistic batching, as in inference
servers). Results go back to each caller in its own order; an exception of the
batched call goes to every caller of that batch.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Request(Generic[In, Out]):
    items: Sequence[In]
    finished: bool = False
    results: list[Out] | None = None
    error: BaseException | None = None


@dataclass
class BatchStats:
    """How full the forwards were: the figure that says whether batching pays."""

    calls: int = 0
    batches: int = 0
    items: int = 0
    largest: int = 0

    @property
    def mean_batch(self) -> float:
        return self.items / self.batches if self.batches else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "batches": self.batches,
            "items": self.items,
            "largest": self.largest,
            "mean_batch": round(self.mean_batch, 2),
        }


class MicroBatcher(Generic[In, Out]):
    """``batcher(items)`` returns ``run(items)``, computed in a batch with other callers'.

    ``run`` maps a list of inputs to a list of outputs of the same length, in order.
    The first caller to find the model idle becomes the leader: it takes the queued
    requests (up to ``max_items`` inputs, always at least one request), runs them as one
    call in its own thread and hands each caller its slice; callers that arrive
    meanwhile wait and queue for the next call, which one of them leads. No thread of
    its own: nothing to start or stop, and a build that makes one pair at a time runs
    exactly as without it.
    """

    def __init__(self, run: Callable[[list[In]], Sequence[Out]], max_items: int) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self._run = run
        self.max_items = max_items
        self._cond = threading.Condition()
        self._queue: deque[_Request[In, Out]] = deque()
        self._busy = False
        self.stats = BatchStats()

    def __call__(self, items: Sequence[In]) -> list[Out]:
        request: _Request[In, Out] = _Request(items)
        with self._cond:
            self.stats.calls += 1
            self._queue.append(request)
            while not request.finished:
                if self._busy:
                    self._cond.wait()  # woken when the running batch ends
                    continue
                batch = self._take()
                self._cond.release()
                try:
                    _execute(self._run, batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    for done in batch:
                        done.finished = True
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        assert request.results is not None
        return request.results

    def _take(self) -> list[_Request[In, Out]]:
        """Queued requests, oldest first, up to ``max_items`` inputs (at least one request)."""
        self._busy = True
        batch: list[_Request[In, Out]] = []
        size = 0
        while self._queue and (not batch or size + len(self._queue[0].items) <= self.max_items):
            request = self._queue.popleft()
            batch.append(request)
            size += len(request.items)
        self.stats.batches += 1
        self.stats.items += size
        self.stats.largest = max(self.stats.largest, size)
        return batch


def _execute(run: Callable[[list[In]], Sequence[Out]], batch: list[_Request[In, Out]]) -> None:
    """One call of ``run`` over the batch; each request gets its slice or the exception."""
    flat = [item for request in batch for item in request.items]
    try:
        results = list(run(flat))
        if len(results) != len(flat):
            raise RuntimeError(
                f"batched call returned {len(results)} results for {len(flat)} inputs"
            )
    except BaseException as exc:  # noqa: BLE001 - handed to every caller of the batch
        for request in batch:
            request.error = exc
        return
    start = 0
    for request in batch:
        request.results = results[start : start + len(request.items)]
        start += len(request.items)
