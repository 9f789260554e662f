"""SAM2's inference state for a clip already decoded in memory, without copying the clip.

``SAM2VideoPredictor.init_state`` reads a JPEG folder or an MP4 path and turns every frame
into a normalised float image of ``image_size`` squared (12.6 MB at 1024, 3 GB for 240
frames) before tracking starts. The pipeline already holds the clip as ``uint8`` frames, so
:func:`init_state_from_frames` leaves them where they are and hands SAM2 a feature cache
that never misses (:class:`FeatureChunks`): the images of the frames it encodes are made
from the ``uint8`` frames when it encodes them (:class:`FrameImages`), a window at a time
in the direction of travel. Building the state costs nothing up front, the device holds
one window of float images instead of the clip's, and on CUDA the next window's frames are
copied into pinned memory by a background thread while the current one is tracked, then
uploaded without blocking.

Images are made as SAM2's JPEG loader makes them: resized with anti-aliased bicubic
filtering (PIL's bicubic, which torch's anti-aliased kernel matches), divided by 255 and
normalised with SAM2's mean and std. :func:`materialized_state` builds SAM2's own layout
(every image up front, SAM2's one-frame cache) for comparisons with SAM2 as it ships.
"""

from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from sam2.sam2_video_predictor import SAM2VideoPredictor

IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)
"""SAM2's input normalisation (``sam2.utils.misc.load_video_frames``)."""

WINDOW = 16
"""Frames resized at a time: bounds the device memory of float images (200 MB at 1024)."""


class FrameImages:
    """SAM2's input images of ``uint8`` frames ``T x H x W x 3``, made a window at a time.

    :meth:`get` returns the float images ``N x 3 x size x size`` of a range of frames on
    the device. It resizes a window of as many such ranges as fit in :data:`WINDOW` frames
    (at least one) from the range on, in the direction of travel, keeps it for the calls
    that follow, and on CUDA has a background thread stage the next window's frames in
    pinned memory meanwhile, so that their upload neither copies on the tracking thread
    nor blocks it. Call :meth:`close` when done (the state's ``clear`` does not).
    """

    def __init__(
        self, frames: np.ndarray, size: int, device: torch.device, stage: bool | None = None
    ) -> None:
        """``stage``: copy the next window on a thread (``None``: on CUDA, where the copy is
        into pinned memory and would otherwise run on the tracking thread)."""
        import torch

        self.frames = frames
        self.size = size
        self.device = device
        self.mean = torch.tensor(IMG_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMG_STD, device=device).view(1, 3, 1, 1)
        self.window: tuple[int, int, torch.Tensor] | None = None
        self.staged: tuple[int, int, Future[torch.Tensor]] | None = None
        stage = device.type == "cuda" if stage is None else stage
        self.stager = ThreadPoolExecutor(1, "pvtt-frames") if stage else None

    def __len__(self) -> int:
        return len(self.frames)

    def get(self, first: int, end: int, backwards: bool = False) -> torch.Tensor:
        """Images of frames ``first`` to ``end - 1``; ``backwards``: tracking runs to frame 0."""
        if self.window is None or not self.window[0] <= first < end <= self.window[1]:
            # whole ranges of the asked size, so that the encoder's next range starts the
            # next window, which is the one staged
            span = max(1, WINDOW // (end - first)) * (end - first)
            if backwards:
                lo, hi = max(end - span, 0), end
            else:
                lo, hi = first, min(first + span, len(self.frames))
            self.window = None  # free the previous window first
            self.window = (lo, hi, self._images(lo, hi))
            if self.stager is not None:
                ahead = (max(lo - span, 0), lo) if backwards else (hi, min(hi + span, len(self)))
                if ahead[0] < ahead[1]:
                    self.staged = (*ahead, self.stager.submit(self._pinned, *ahead))
        lo, _, images = self.window
        return images[first - lo : end - lo]

    def close(self) -> None:
        """Stop the staging thread (waits for a copy under way) and drop the window."""
        if self.stager is not None:
            self.stager.shutdown(wait=True, cancel_futures=True)
        self.window = self.staged = None

    def _images(self, first: int, end: int) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        # SAM2's loader makes float32 images; the tracking's bf16 autocast must not reach them
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=False):
            batch = self._upload(first, end).permute(0, 3, 1, 2).float().div_(255.0)
            if batch.shape[-2:] != (self.size, self.size):
                batch = F.interpolate(
                    batch,
                    size=(self.size, self.size),
                    mode="bicubic",
                    align_corners=False,
                    antialias=True,
                ).clamp_(0.0, 1.0)
            return batch.sub_(self.mean).div_(self.std)  # in place: no float copies

    def _upload(self, first: int, end: int) -> torch.Tensor:
        import torch

        staged, self.staged = self.staged, None
        if staged is not None and staged[:2] == (first, end):
            host = staged[2].result()
        elif self.device.type == "cuda":
            host = self._pinned(first, end)
        else:
            return torch.from_numpy(self.frames[first:end])
        # pinned: the copy runs on the device's stream without blocking this thread, and
        # torch's pinned-memory cache keeps the buffer until the copy has finished
        return host.to(self.device, non_blocking=True)

    def _pinned(self, first: int, end: int) -> torch.Tensor:
        import torch

        source = torch.from_numpy(self.frames[first:end])
        pinned = self.device.type == "cuda"
        return torch.empty(source.shape, dtype=torch.uint8, pin_memory=pinned).copy_(source)


class FeatureChunks:
    """SAM2's image-feature cache, filled ``batch`` frames ahead in the direction of travel.

    SAM2 encodes one frame per step (batch 1), which leaves a GPU mostly waiting on kernel
    launches with the small encoders. Its ``_get_image_feature`` looks a frame up with
    ``cached_features.get(frame)`` and computes it only on a miss, so a cache that never
    misses lets the encoder run on a batch of the coming frames at once: forwards after
    an earlier frame, backwards after a later one. Only one chunk is held at a time. At
    batch 1 it computes what SAM2's own cache does, from :class:`FrameImages`.
    """

    def __init__(self, predictor: SAM2VideoPredictor, images: FrameImages, batch: int) -> None:
        self.predictor = predictor
        self.images = images
        self.batch = batch
        self.chunk: dict[int, tuple[torch.Tensor, dict[str, list[torch.Tensor]]]] = {}
        self.last: int | None = None

    def get(self, frame: int, default: Any = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Features of ``frame`` (``default`` is SAM2's miss value, never returned)."""
        if frame not in self.chunk:
            self._encode(frame, backwards=self.last is not None and frame < self.last)
        self.last = frame
        return self.chunk[frame]

    def _encode(self, frame: int, backwards: bool) -> None:
        if backwards:
            first, end = max(frame - self.batch + 1, 0), frame + 1
        else:
            first, end = frame, min(frame + self.batch, len(self.images))
        self.chunk = {}  # free the previous chunk first
        images = self.images.get(first, end, backwards)
        out = self.predictor.forward_image(images)
        for i in range(end - first):
            self.chunk[first + i] = (
                images[i : i + 1],
                {
                    "backbone_fpn": [x[i : i + 1] for x in out["backbone_fpn"]],
                    "vision_pos_enc": [x[i : i + 1] for x in out["vision_pos_enc"]],
                },
            )


def init_state_from_frames(
    predictor: SAM2VideoPredictor,
    frames: np.ndarray,
    *,
    offload_state_to_cpu: bool = False,
    encoder_batch: int = 1,
) -> dict[str, Any]:
    """SAM2's inference state for RGB ``uint8`` frames ``T x H x W x 3`` held in memory.

    The keys of ``SAM2VideoPredictor.init_state`` (sam2 1.1.0), without its warm-up of
    frame 0 (the prompt frame's features are computed when it is prompted); ``images`` is
    a :class:`FrameImages` (close it when done) and ``cached_features`` a
    :class:`FeatureChunks` of ``encoder_batch`` frames.
    """
    images = FrameImages(frames, int(predictor.image_size), predictor.device)
    return _state(
        predictor,
        images,
        frames.shape,
        FeatureChunks(predictor, images, encoder_batch),
        offload_video_to_cpu=False,
        offload_state_to_cpu=offload_state_to_cpu,
    )


def materialized_state(
    predictor: SAM2VideoPredictor,
    frames: np.ndarray,
    *,
    offload_video_to_cpu: bool = False,
    offload_state_to_cpu: bool = False,
) -> dict[str, Any]:
    """SAM2's inference state as its ``init_state`` lays it out: every image made up front
    (float ``T x 3 x size x size``, on the device or in CPU memory) and SAM2's own
    one-frame feature cache. For measuring and checking SAM2 as it ships."""
    import torch

    device = predictor.device
    count = len(frames)
    size = int(predictor.image_size)
    pinned = offload_video_to_cpu and device.type == "cuda"
    images = torch.empty(
        (count, 3, size, size),
        dtype=torch.float32,
        device="cpu" if offload_video_to_cpu else device,
        pin_memory=pinned,
    )
    maker = FrameImages(frames, size, device)
    try:
        for first in range(0, count, WINDOW):
            end = min(first + WINDOW, count)
            images[first:end].copy_(maker.get(first, end), non_blocking=pinned)
    finally:
        maker.close()
    if pinned:
        torch.cuda.current_stream(device).synchronize()
    return _state(
        predictor,
        images,
        frames.shape,
        {},
        offload_video_to_cpu=offload_video_to_cpu,
        offload_state_to_cpu=offload_state_to_cpu,
    )


def _state(
    predictor: SAM2VideoPredictor,
    images: Any,
    shape: tuple[int, ...],
    cache: Any,
    *,
    offload_video_to_cpu: bool,
    offload_state_to_cpu: bool,
) -> dict[str, Any]:
    import torch

    device = predictor.device
    return {
        "images": images,
        "num_frames": len(images),
        "offload_video_to_cpu": offload_video_to_cpu,
        "offload_state_to_cpu": offload_state_to_cpu,
        "video_height": shape[1],
        "video_width": shape[2],
        "device": device,
        "storage_device": torch.device("cpu") if offload_state_to_cpu else device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": cache,
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }
