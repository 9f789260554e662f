"""A tracked clip's masks gathered frame by frame, with their boxes and encoding overlapped.

A tracker yields one frame's mask logits at a time, on its device. Waiting for each mask on
the host would stall the device once a frame, and boxing and encoding the masks after the
last frame would add a pass over every pixel of the clip to the stage's time. Instead
:class:`MaskCollector` thresholds each mask where it lies and copies it into pinned host
memory without waiting (a CUDA event marks when it has landed), and a background thread
takes each frame as soon as it is on the host: its box, and the pixels where it changes
value, which is the part of :func:`pvtt.schemas.masks.encode_masks` that reads every pixel.
:meth:`MaskCollector.finish` then only joins and compresses. The thread's numpy work
releases the GIL, so the tracking thread keeps launching kernels meanwhile.

A failure in the thread is raised in the tracking thread, at its next frame or at
:meth:`~MaskCollector.finish`.
"""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING

import numpy as np

from pvtt.builder.boxes import masks_to_boxes
from pvtt.schemas.masks import encode_masks, frame_changes

if TYPE_CHECKING:
    import torch


class MaskCollector:
    """Bool masks ``T x H x W`` filled from device logits in any frame order.

    Use as a context manager (the thread is stopped however the block ends): :meth:`put`
    each frame's logits, then :meth:`finish` for the masks, boxes and encoded masks.
    """

    def __init__(self, count: int, height: int, width: int, device: torch.device) -> None:
        import torch

        pinned = device.type == "cuda"  # so that copies from the device need not wait
        self.masks = torch.empty((count, height, width), dtype=torch.bool, pin_memory=pinned)
        self.host = self.masks.numpy()
        self.boxes = np.full((count, 4), np.nan, dtype=np.float32)
        self.queued = np.zeros(count, dtype=bool)
        self.seen = np.zeros(count, dtype=bool)
        self.changes: list[np.ndarray] | None = [np.zeros(0, np.int64)] * count
        # more changes than this and encode_masks picks the bitmap codec: stop gathering them
        # (a speckled mask changes at every other pixel, which would take 8 bytes a pixel)
        self.change_budget = (count * height * width // 8 + 1024) // 4
        self.changed = 0
        self.error: BaseException | None = None
        self.queue: queue.SimpleQueue[tuple[int, torch.cuda.Event | None] | None]
        self.queue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._work, name="pvtt-masks", daemon=True)
        self.thread.start()

    def __enter__(self) -> MaskCollector:
        return self

    def __exit__(self, *_: object) -> None:
        self._stop()

    def put(self, frame: int, logits: torch.Tensor) -> None:
        """Frame ``frame``'s mask: ``logits`` ``H x W`` above 0, copied without waiting."""
        import torch

        self._raise()
        if self.queued[frame]:
            return  # SAM2 yields the prompted frame in both directions, the same mask
        self.queued[frame] = True
        self.masks[frame].copy_(logits > 0, non_blocking=logits.is_cuda)
        event = None
        if logits.is_cuda:  # the copy runs on the logits' device's stream: mark its end there
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(logits.device))
        self.queue.put((frame, event))

    def finish(self) -> tuple[np.ndarray, np.ndarray, bytes]:
        """The masks, their boxes (``nan`` rows where empty) and ``encode_masks`` bytes."""
        self._stop()
        self._raise()
        if not self.seen.all():
            raise RuntimeError(f"SAM2 propagation skipped frames {np.flatnonzero(~self.seen)}")
        return self.host, self.boxes, encode_masks(self.host, changes=self.changes)

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _stop(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()

    def _work(self) -> None:
        try:
            while (item := self.queue.get()) is not None:
                frame, event = item
                if event is not None:
                    event.synchronize()
                mask = self.host[frame]
                self.boxes[frame] = masks_to_boxes(mask)
                self.seen[frame] = True
                if self.changes is not None:
                    changes = frame_changes(mask)
                    self.changed += len(changes)
                    if self.changed > self.change_budget:
                        self.changes = None
                    else:
                        self.changes[frame] = changes
        except BaseException as exc:  # noqa: BLE001 - raised in the tracking thread
            self.error = exc
