"""Where a build makes its pairs (insert, score, check, encode): threads or processes.

The pair stages of the CPU backends are Python, NumPy and OpenCV work that holds the
GIL for a large part of each pair, so threads of one process do not add up to the
cores of the machine. ``pair_pool = "processes"`` makes pairs in worker processes
instead:

- the inserter and scorer are built once per worker (its initializer), not sent with
  every pair;
- a clip's decoded arrays (frames, masks, background, boxes) are copied once into one
  shared-memory segment, which every worker maps on its first pair of that clip (a pair
  sends only the segment's name and layout); a cut-out is shared the same way, once per
  photo for the whole build; a segment is unlinked when the last pair using it is done;
- each pair's stage timings come back with its record and are added to the build's
  report, so ``statistics.json`` and ``rates.json`` count the same calls as a threaded
  build;
- a :class:`StageRejected` comes back as a value, any other error is raised where the
  build waits for that pair, and the writer stays in the build's process, so an
  interrupted or failed build aborts its open shard as a threaded one does;
- workers ignore SIGINT: Ctrl-C reaches the build's process, which cancels the queued
  pairs and waits only for those already running;
- workers exit when the build's process is gone, killed included: each holds the read
  end of a pipe only the build writes to, and a thread exits the worker at its end of
  file. (An executor's idle workers otherwise wait on their task queue forever, holding
  the fork server, the resource tracker and the shared segments alive; with them gone
  the tracker unlinks the segments a killed build left.)

Workers start with ``forkserver``: ``fork`` copies a process whose Lance, tokio and
OpenCV threads may hold locks (a forked child can deadlock on them), and ``spawn``
imports pvtt afresh in every worker. The fork server is a fresh interpreter that
imports the pair stages once (preloaded) and forks each worker from that clean
single-threaded state. As with any such pool, a script that runs a build with
processes needs the ``if __name__ == "__main__":`` guard: each worker imports the
script's main module (``pvtt build`` has it).

The output is the threaded build's: each pair is made from the same arrays with the
same seed by the same functions, and the build writes the results in plan order.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from types import TracebackType
from typing import Any

import cv2
import numpy as np
import torch

from pvtt.builder.clips import ClipArtefacts
from pvtt.builder.launch import local_ranks, node_cpus, rank_workers
from pvtt.builder.pairs import PairPlan
from pvtt.builder.products import ProductArtefacts
from pvtt.builder.registry import create_backend
from pvtt.builder.report import BuildReport
from pvtt.builder.stages.protocols import Inserter, Scorer, StageRejected
from pvtt.builder.synthesis import SynthesizedPair, make_pair
from pvtt.schemas.config import BuildConfig
from pvtt.schemas.keys import image_id
from pvtt.schemas.records import PairRecord

START_METHOD = "forkserver"
ALIGN = 64
"""Byte alignment of each array in a shared segment (a cache line)."""
ATTACHED_CLIPS = 4
"""Clip segments a worker keeps mapped: pairs arrive in clip order, a few clips in flight."""

PairOutcome = PairRecord | StageRejected


def pair_seed(pair_id: str, config: BuildConfig) -> int:
    """The seed a pair's inserter gets: the same in every worker, thread or process."""
    return zlib.crc32(pair_id.encode()) ^ config.pairs.seed


@dataclass(frozen=True)
class EncodeStage:
    """Encoding off the pair threads: they ``synthesize`` (insert, score, judge) and go on
    to the next pair while ``workers`` threads of their own ``encode`` the clips."""

    workers: int
    synthesize: Callable[[PairPlan, ClipArtefacts], SynthesizedPair | StageRejected]
    encode: Callable[[SynthesizedPair], PairRecord]


class ThreadPairPool:
    """Pairs made by ``make`` on a pool of threads of this process (shared backends), or
    synthesized there and encoded on threads of their own (``encoding``)."""

    def __init__(
        self,
        workers: int,
        make: Callable[[PairPlan, ClipArtefacts], PairOutcome],
        encoding: EncodeStage | None = None,
    ) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="pvtt-pair")
        self._make = make
        self._encoding = encoding
        self._encoders = (
            ThreadPoolExecutor(encoding.workers, thread_name_prefix="pvtt-encode")
            if encoding
            else None
        )

    def submit(self, plan: PairPlan, clip: ClipArtefacts) -> Future[PairOutcome]:
        if self._encoding is None:
            return self._executor.submit(self._make, plan, clip)
        outer: Future[PairOutcome] = Future()
        made = self._executor.submit(self._encoding.synthesize, plan, clip)
        made.add_done_callback(lambda done: self._encode(done, outer))
        return outer

    def _encode(
        self, done: Future[SynthesizedPair | StageRejected], outer: Future[PairOutcome]
    ) -> None:
        """A synthesized pair to the encode threads (a rejection or error straight out)."""
        assert self._encoding is not None and self._encoders is not None
        if done.cancelled():
            outer.cancel()
        elif done.exception() is not None:
            outer.set_exception(done.exception())
        elif isinstance(made := done.result(), StageRejected):
            outer.set_result(made)
        else:
            encoded = self._encoders.submit(self._encoding.encode, made)
            encoded.add_done_callback(lambda e: _settle(e, outer))

    def clip_submitted(self, clip_id: str) -> None:
        """Every pair of ``clip_id`` is submitted; nothing to free (threads read the clip's
        own arrays)."""

    def __enter__(self) -> ThreadPairPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._executor.shutdown(wait=True, cancel_futures=exc is not None)
        if self._encoders is not None:  # after the pair threads, which feed it
            self._encoders.shutdown(wait=True, cancel_futures=exc is not None)


def _settle(done: Future[PairRecord], outer: Future[PairOutcome]) -> None:
    """``outer`` as ``done`` ended: its result, its error, or cancelled."""
    if done.cancelled():
        outer.cancel()
    elif done.exception() is not None:
        outer.set_exception(done.exception())
    else:
        outer.set_result(done.result())


# -- arrays in shared memory ------------------------------------------------------------------
@dataclass(frozen=True)
class SharedArrays:
    """Where arrays lie in a shared-memory segment: ``(key, dtype, shape, offset)`` each."""

    name: str
    layout: tuple[tuple[str, str, tuple[int, ...], int], ...]


def share_arrays(arrays: dict[str, np.ndarray]) -> tuple[SharedMemory, SharedArrays]:
    """One new segment holding a copy of ``arrays``; the caller closes and unlinks it."""
    layout = []
    offset = 0
    for key, array in arrays.items():
        offset = -(-offset // ALIGN) * ALIGN
        layout.append((key, array.dtype.str, tuple(array.shape), offset))
        offset += array.nbytes
    shm = SharedMemory(create=True, size=max(offset, 1))
    for (_key, dtype, shape, start), array in zip(layout, arrays.values(), strict=True):
        np.ndarray(shape, dtype, buffer=shm.buf, offset=start)[...] = array
    return shm, SharedArrays(shm.name, tuple(layout))


def attach_arrays(handle: SharedArrays) -> tuple[SharedMemory, dict[str, np.ndarray]]:
    """The arrays of ``handle`` as read-only views of the mapped segment."""
    shm = SharedMemory(name=handle.name)
    arrays = {}
    for key, dtype, shape, start in handle.layout:
        view = np.ndarray(shape, dtype, buffer=shm.buf, offset=start)
        view.flags.writeable = False
        arrays[key] = view
    return shm, arrays


# -- the worker side ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PairTask:
    """What a worker needs for one pair: the plan, the clip and cut-out without their
    arrays (those are in shared memory) or encoded media (the writer's, not the pair's)."""

    plan: PairPlan
    clip: ClipArtefacts
    clip_arrays: SharedArrays
    product: ProductArtefacts
    product_arrays: SharedArrays
    target_image: str
    seed: int


@dataclass
class _Worker:
    config: BuildConfig
    build_id: str
    backends_json: str
    inserter: Inserter
    scorer: Scorer
    clips: OrderedDict[str, tuple[SharedMemory, dict[str, np.ndarray]]]
    products: dict[str, tuple[SharedMemory, dict[str, np.ndarray]]]


_worker: _Worker | None = None


def _exit_with(build: Connection) -> None:
    """Block until the build's end of the pipe closes (it never sends), then exit."""
    try:
        build.recv_bytes()
    except EOFError:
        pass
    os._exit(1)


def worker_threads(workers: int) -> int:
    """Threads that each of ``workers`` processes gives torch and OpenCV: this rank's share of
    the node's CPUs over its workers. Left alone, every worker sizes its pools to the whole
    node, and 16 workers on 16 cores run 256 threads that preempt one another (and the
    build's own process, which feeds the GPU)."""
    return max(1, rank_workers("processes", node_cpus(), local_ranks()) // max(1, workers))


def _init_worker(config: BuildConfig, build_id: str, backends_json: str, build: Connection,
                 threads: int) -> None:
    """A worker process's backends, built once; Ctrl-C is left to the build's process,
    and the worker goes when that process goes (``build`` closes)."""
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    threading.Thread(target=_exit_with, args=(build,), name="pvtt-build-watch", daemon=True).start()
    _worker = _Worker(
        config,
        build_id,
        backends_json,
        inserter=create_backend("inserter", config.inserter, config.device),  # type: ignore[arg-type]
        scorer=create_backend("scorer", config.scorer, config.device),  # type: ignore[arg-type]
        clips=OrderedDict(),
        products={},
    )


def _clip_arrays(worker: _Worker, handle: SharedArrays) -> dict[str, np.ndarray]:
    if handle.name in worker.clips:
        worker.clips.move_to_end(handle.name)
        return worker.clips[handle.name][1]
    worker.clips[handle.name] = attach_arrays(handle)
    while len(worker.clips) > ATTACHED_CLIPS:
        shm, arrays = worker.clips.popitem(last=False)[1]
        arrays.clear()  # the views go before the mapping they point into
        shm.close()
    return worker.clips[handle.name][1]


def _make_in_worker(task: PairTask) -> tuple[PairOutcome, dict[str, dict[str, Any]]]:
    """One pair, and the stage timings it took (for the build's report)."""
    worker = _worker
    assert worker is not None, "pair worker used before its initializer ran"
    arrays = _clip_arrays(worker, task.clip_arrays)
    clip = replace(task.clip, **arrays)
    name = task.product_arrays.name
    if name not in worker.products:
        worker.products[name] = attach_arrays(task.product_arrays)
    product = replace(task.product, **worker.products[name][1])
    report = BuildReport()
    try:
        outcome: PairOutcome = make_pair(
            task.plan,
            clip,
            product,
            worker.inserter,
            worker.scorer,
            worker.config,
            report,
            build_id=worker.build_id,
            backends_json=worker.backends_json,
            seed=task.seed,
            target_image=task.target_image,
        )
    except StageRejected as exc:
        outcome = exc
    return outcome, {
        "seconds": dict(report.seconds),
        "calls": dict(report.calls),
        "counts": dict(report.counts),
    }


def _started() -> None:
    """Nothing: one is submitted per worker when the pool opens, so that all of them start
    (and run their initializer) at once; the executor starts workers only for work."""


# -- the build side -------------------------------------------------------------------------------
CLIP_ARRAYS = ("frames", "masks", "background", "boxes")
NO_MEDIA = {"source_video": b"", "background_video": b"", "masks_bytes": b""}


class ProcessPairPool:
    """Pairs made in ``workers`` processes; see the module docstring."""

    def __init__(
        self,
        workers: int,
        config: BuildConfig,
        report: BuildReport,
        *,
        build_id: str,
        backends_json: str,
        products: dict[str, ProductArtefacts],
        target_images: dict[str, str],
    ) -> None:
        context = multiprocessing.get_context(START_METHOD)
        context.set_forkserver_preload([__name__])
        watch, self._alive = context.Pipe(duplex=False)
        self._executor = ProcessPoolExecutor(
            workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(config, build_id, backends_json, watch, worker_threads(workers)),
        )
        self._config = config
        self._report = report
        self._products = products
        self._target_images = target_images
        self._lock = threading.Lock()
        self._clips: dict[str, tuple[SharedMemory, SharedArrays]] = {}
        self._clip_pending: dict[str, int] = {}
        self._clip_closed: set[str] = set()
        self._cutouts: dict[str, tuple[SharedMemory, SharedArrays]] = {}
        # Start every worker now, not when the first clip's pairs arrive: each builds its
        # backends (on a GPU node a CUDA context and the pair models, seconds) while the
        # build makes its first clips.
        for _ in range(workers):
            self._executor.submit(_started)

    def submit(self, plan: PairPlan, clip: ClipArtefacts) -> Future[PairOutcome]:
        key = image_id(plan.target.product.id, plan.target.token)
        with self._lock:
            if clip.clip_id not in self._clips:
                self._clips[clip.clip_id] = share_arrays(
                    {k: np.ascontiguousarray(getattr(clip, k)) for k in CLIP_ARRAYS}
                )
                self._clip_pending[clip.clip_id] = 0
            self._clip_pending[clip.clip_id] += 1
            if key not in self._cutouts:
                self._cutouts[key] = share_arrays(
                    {"cutout": np.ascontiguousarray(self._products[key].cutout)}
                )
            clip_handle, cutout_handle = self._clips[clip.clip_id][1], self._cutouts[key][1]
        empty = np.empty(0, np.uint8)
        task = PairTask(
            plan=plan,
            clip=replace(clip, **{k: empty for k in CLIP_ARRAYS}, **NO_MEDIA),
            clip_arrays=clip_handle,
            product=replace(self._products[key], cutout=empty, image_bytes=b"", cutout_png=b""),
            product_arrays=cutout_handle,
            target_image=self._target_images[key],
            seed=pair_seed(plan.pair_id, self._config),
        )
        outer: Future[PairOutcome] = Future()
        inner = self._executor.submit(_make_in_worker, task)
        inner.add_done_callback(lambda done: self._finished(clip.clip_id, done, outer))
        return outer

    def _finished(
        self,
        clip_id: str,
        done: Future[tuple[PairOutcome, dict[str, Any]]],
        outer: Future[PairOutcome],
    ) -> None:
        """The pair's timings into the report, its clip's segment freed if it was the last."""
        with self._lock:
            self._clip_pending[clip_id] -= 1
            self._release_if_done(clip_id)
        if done.cancelled():
            outer.cancel()
            return
        error = done.exception()
        if error is not None:
            outer.set_exception(error)
            return
        outcome, delta = done.result()
        self._report.add(delta["seconds"], delta["calls"], delta["counts"])
        outer.set_result(outcome)

    def clip_submitted(self, clip_id: str) -> None:
        with self._lock:
            self._clip_closed.add(clip_id)
            self._release_if_done(clip_id)

    def _release_if_done(self, clip_id: str) -> None:
        if clip_id in self._clip_closed and not self._clip_pending.get(clip_id):
            self._clip_closed.discard(clip_id)
            self._clip_pending.pop(clip_id, None)
            shm = self._clips.pop(clip_id, (None,))[0]
            if shm is not None:
                shm.close()
                shm.unlink()

    def __enter__(self) -> ProcessPairPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._executor.shutdown(wait=True, cancel_futures=exc is not None)
        finally:
            self._alive.close()  # after the shutdown: a worker still busy would exit at once
            with self._lock:
                for shm, _ in [*self._clips.values(), *self._cutouts.values()]:
                    shm.close()
                    shm.unlink()
                self._clips.clear()
                self._cutouts.clear()
