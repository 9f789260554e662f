"""Output tensors that leave a DataLoader worker without being copied.

A DataLoader worker sends each sample to the main process pickled. A tensor whose storage
is ordinary memory is first copied into a new shared-memory segment by that pickling
(``torch.multiprocessing``'s reduction), then travels as a file descriptor; a tensor that
already lives in shared memory travels as its descriptor with no copy. A decoded sample
of two 16-frame 720p clips, masks and a cut-out (~106 MB) took 33-47 ms to pickle here,
a third of the 96-121 ms its decoding took (``tools/bench/compare.py``'s data). So inside
a worker the loader allocates its outputs in shared memory and writes straight into
them; in any other process it allocates ordinary memory, which nothing copies.

Each shared storage costs the main process a descriptor hand-over (~0.4 ms measured with
2 workers): a sample's undecoded fields therefore share one storage
(:func:`empty` once per sample, views into it), where a decoded sample's few large
tensors each have their own.

A fresh shared storage has no pages yet: writing it faults them in one 4 KB page at a
time. :func:`empty` has the kernel make them all in one call (``madvise``
``MADV_POPULATE_WRITE``, Linux 5.14+; elsewhere the pages fault in as before): reading a
4 MB sample from the page cache into a new storage took 1.2 ms instead of 1.5 ms here.
"""

from __future__ import annotations

import ctypes
import math
import mmap
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

    The storage comes from ``UntypedStorage._new_shared``, the call DataLoader's own
    ``default_collate`` makes for the batches it builds in workers: it honours the
    sharing strategy (file descriptor or file system) torch is set to.
    """
    shape = tuple(int(n) for n in shape)
    nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    if nbytes == 0 or not in_worker():
        return torch.empty(shape, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(nbytes)
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
