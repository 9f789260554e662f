"""One CUDA stream per clip thread, so two clips' model stages overlap on one GPU.

SAM2's propagation is a long chain of small kernels with Python in between; on the
default stream a second clip thread's kernels queue behind the first's. With a stream
of its own per thread, the GPU runs one clip's kernels while the other thread is in
Python. Outside CUDA this is a no-op; torch is imported only for a CUDA device.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any


def device_stream_factory(device: str) -> Callable[[], AbstractContextManager[Any]]:
    """A factory of contexts that run the calling thread's work on its own CUDA stream."""
    if not device.startswith("cuda"):
        return nullcontext
    import torch

    local = threading.local()

    def on_thread_stream() -> AbstractContextManager[Any]:
        stream = getattr(local, "stream", None)
        if stream is None:
            stream = local.stream = torch.cuda.Stream(device=torch.device(device))
        return torch.cuda.stream(stream)

    return on_thread_stream
