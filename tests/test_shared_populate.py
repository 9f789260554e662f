"""``shared.populate`` makes a fresh shared storage's pages in one call.

Residency is read with ``mincore``: a fresh shared-memory storage has no pages (but the
one torch's header may be on) until it is written, and one that ``populate`` was given has them all.
"""

from __future__ import annotations

import ctypes
import mmap
import sys

import numpy as np
import pytest
import torch

from pvtt.loaders import shared

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="madvise and mincore of Linux")

PAGES = 64


def _resident(storage: torch.UntypedStorage) -> int:
    """How many of ``storage``'s pages are in memory (``mincore``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    address = storage.data_ptr()
    start = address - address % mmap.PAGESIZE
    length = storage.nbytes() + address - start
    vec = np.zeros(-(-length // mmap.PAGESIZE), np.uint8)
    if libc.mincore(start, length, vec.ctypes.data) != 0:
        pytest.skip(f"mincore failed: errno {ctypes.get_errno()}")
    return int((vec & 1).sum())


def test_populate_makes_every_page_of_a_fresh_shared_storage() -> None:
    storage = torch.UntypedStorage._new_shared(PAGES * mmap.PAGESIZE)
    # torch's header may share the first page; the check below means something
    assert _resident(storage) <= 1, "a fresh storage has (almost) no pages"
    if not shared.populate(storage.data_ptr(), storage.nbytes()):
        pytest.skip("this kernel has no MADV_POPULATE_WRITE (Linux < 5.14)")
    assert _resident(storage) >= PAGES


def test_populate_leaves_the_contents_alone() -> None:
    storage = torch.UntypedStorage._new_shared(3 * mmap.PAGESIZE + 5)
    data = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (storage.nbytes(),))
    data.copy_(torch.arange(storage.nbytes()) % 251)
    shared.populate(storage.data_ptr() + 7, storage.nbytes() - 7)  # an unaligned start
    assert torch.equal(data, torch.arange(storage.nbytes()) % 251)
