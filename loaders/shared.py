"""Output tensors that leave a DataLoader worker without being copied.

A DataLoader worker sends each sample to the main process pickled. A tensor whose storage
is ordinary memory is first copied into a new shared-memory segment by that pickling
(``torch.multiprocessing``'s reduction), then travels as a file descriptor; a tensor that
already lives in shared memory travels as its descriptor with no copy. A decoded sample
of two 16-frame 720p clips, masks and a cut-out (~106 MB) took 33-47 ms to pickle here,
a third of the 96-121 ms its decoding took (``tools/bench/compare.py``'s data). So inside
a worker the loader allocates its outputs in shared memory and writes straight into
them; in any other process it allocates ordinary memory, which nothing copies.

Each shared storage costs the main process a descriptor hand-over (~0.4-1 ms measured
with 2 workers): a sample's undecoded fields therefore share one storage (a batch's
samples share one, :class:`pvtt.loaders.transfer.Arena`), where a decoded sample's few
large tensors each have their own.

A fresh shared storage has no pages yet: writing it faults them in one 4 KB page at a
time. :func:`empty` has the kernel make them all in one call (``madvise``
``MADV_POPULATE_WRITE``, Linux 5.14+; elsewhere the pages fault in as before): reading a
4 MB sample from the page cache into a new storage took 1.2 ms instead of 1.5 ms here.
Better still is not to make them again: a worker's :class:`BufferPool` hands out a
storage the main process has let go of (making and filling 1.45 MB of fresh pages took
0.40 ms, reading a sample into it 0.26 ms more).
"""

from __future__ import annotations

import ctypes
import itertools
import math
import mmap
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import get_worker_info

MADV_POPULATE_WRITE = 23  # <linux/mman.h>; Python's mmap module names it from 3.13 only
_libc: ctypes.CDLL | None = None
_populate_works = True


def in_worker() -> bool:
    """Whether this process is a DataLoader worker (forked or spawned)."""
    return get_worker_info() is not None


def empty(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised contiguous tensor: in shared memory inside a DataLoader worker, so
    the worker's pickler sends a file descriptor and copies nothing; ordinary memory
    elsewhere.

    The storage is the worker's :func:`worker_pool`'s: one the main process let go of,
    or a new one from ``UntypedStorage._new_shared``, the call DataLoader's own
    ``default_collate`` makes for the batches it builds in workers (it honours the
    sharing strategy, file descriptor or file system, torch is set to).
    """
    shape = tuple(int(n) for n in shape)
    nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    if nbytes == 0 or not in_worker():
        return torch.empty(shape, dtype=dtype)
    storage, fresh = worker_pool().take(nbytes)
    if fresh:
        populate(storage.data_ptr(), nbytes)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def populate(address: int, nbytes: int) -> bool:
    """Fault in the pages of the ``nbytes`` at ``address`` for writing in one system call
    (``MADV_POPULATE_WRITE``), cheaper than the page faults of writing them one by one.
    Returns whether it did; a kernel or libc without it is asked once, then left alone
    (the writes fault the pages in as usual)."""
    global _libc, _populate_works
    if not _populate_works or nbytes <= 0:
        return False
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        except (OSError, AttributeError):
            _populate_works = False
            return False
    start = address - address % mmap.PAGESIZE
    if _libc.madvise(start, nbytes + address - start, MADV_POPULATE_WRITE) != 0:
        _populate_works = False  # EINVAL: a kernel older than 5.14
        return False
    return True


def output(array: np.ndarray) -> torch.Tensor:
    """``array`` as the tensor a sample carries: shared with it in the main process; in a
    worker copied once into shared memory (the copy pickling would make anyway), for
    arrays that a library allocated itself."""
    if not in_worker():
        if not array.flags.writeable:
            array = array.copy()
        return torch.from_numpy(array)
    out = empty(array.shape, torch.from_numpy(np.empty(0, array.dtype)).dtype)
    out.numpy()[...] = array
    return out


POOL_SLOTS = 64
"""Storages a worker's pool keeps; past them (a main process holding many batches) a
block gets a storage of its own that is not reused."""
POOL_BYTES = 2 << 30
"""Bytes of storage a worker's pool keeps at most: a main process that once held many
samples does not leave every worker holding that peak for good."""


class BufferPool:
    """Shared storages of one worker process, reused once the main process let them go
    (:mod:`pvtt.loaders.transfer` watches them there).

    ``flags[i]`` is 1 from the moment slot ``i`` is handed out until the main process
    found its storage unreferenced; only the worker sets it, only the main process
    clears it.
    """

    _serial = itertools.count()

    def __init__(self, slots: int = POOL_SLOTS) -> None:
        self.flags = torch.zeros(slots, dtype=torch.int32).share_memory_()
        self._busy = self.flags.numpy()
        self.storages: list[torch.UntypedStorage | None] = [None] * slots
        self.token = f"{os.getpid()}:{next(self._serial)}"
        self.announced = False

    def take(self, nbytes: int) -> tuple[torch.UntypedStorage, bool]:
        """A storage of ``nbytes`` to twice that the main process does not hold, and
        whether it is new (its pages not yet made). A free storage of another size makes
        way for a new one; with every slot busy, or the pool at :data:`POOL_BYTES`, the
        storage is the caller's alone."""
        free = np.flatnonzero(self._busy == 0).tolist()
        sizes = {i: s.nbytes() for i in free if (s := self.storages[i]) is not None}
        fits = [i for i, size in sizes.items() if nbytes <= size <= 2 * nbytes + (64 << 10)]
        if fits:
            slot, fresh = min(fits, key=sizes.__getitem__), False
        else:
            empty = [i for i in free if i not in sizes]
            slot = empty[0] if empty else max(sizes, key=sizes.__getitem__, default=None)
            held = sum(s.nbytes() for s in self.storages if s is not None)
            if slot is None or held - sizes.get(slot, 0) + nbytes > POOL_BYTES:
                return torch.UntypedStorage._new_shared(nbytes), True
            old = self.storages[slot]
            if old is not None:
                POOLED.pop(old.data_ptr(), None)
            self.storages[slot], fresh = torch.UntypedStorage._new_shared(nbytes), True
        storage = self.storages[slot]
        assert storage is not None
        self._busy[slot] = 1
        POOLED[storage.data_ptr()] = (self, slot)
        return storage, fresh


POOLED: dict[int, tuple[BufferPool, int]] = {}
"""Worker side: the pool and slot of each pooled storage, by its address."""
_pool: tuple[int, BufferPool] | None = None


def worker_pool() -> BufferPool:
    """This worker process's pool (made on first use; a process forked from one that had
    a pool makes its own)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        POOLED.clear()
        _pool = (os.getpid(), BufferPool())
    return _pool[1]


def block(storage: torch.UntypedStorage, start: int, nbytes: int, fresh: bool) -> torch.Tensor:
    """``nbytes`` of ``storage`` from ``start`` as a 1-D uint8 tensor, its pages made in one
    call when the storage is new."""
    if fresh:
        populate(storage.data_ptr() + start, nbytes)
    whole = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (storage.nbytes(),))
    return whole[start : start + nbytes]
