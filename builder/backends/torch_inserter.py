"""The alpha-composite inserter as batched torch ops, on the build's device.

Same compositor as :class:`pvtt.builder.backends.cpu_inserter.AlphaCompositeInserter`
(same parameters, formulas and rounding; read its docstring for what it does and
why), re-stated so that every frame with a box, of one pair or of several, is one item
of a batch: the cut-out resized to each box (weight matrices), placed into each box's
region (a gather of four taps), feathered (OpenCV's Gaussian, reflected at each
region's own edge), blended and rounded, on CUDA when the build runs there. The
scene's light is estimated on the device too. Only the contact shadow's ellipse is
drawn by OpenCV on the host (a drawing primitive, off by default); its blur runs on
the device.

Outputs equal the CPU inserter's to within a level or two of 8 bits at the insert's
edges (float rounding of resampling weights); ``tests/test_torch_pair_stages.py``
states and checks the tolerance.
"""

from __future__ import annotations

import math
import threading
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from pvtt.builder.backends import torch_ops
from pvtt.builder.backends.cpu_inserter import composite_params
from pvtt.builder.batching import MicroBatcher
from pvtt.builder.illuminant import LUMA, SATURATED, srgb_to_linear
from pvtt.builder.stages.cutout import placement_matrix, trim_to_alpha
from pvtt.builder.stages.protocols import BackendInfo, InsertionInput, StageRejected
from pvtt.schemas.config import BackendConfig, ConfigError

_SRGB_TO_LINEAR = srgb_to_linear(np.arange(256))
"""The linear value of each 8-bit level, from the CPU definition itself."""


@dataclass
class _Plan:
    """Host-side geometry of one pair's frames with a box."""

    frames: np.ndarray
    """Frame index of each item."""
    roi: np.ndarray
    """``N x 4`` int: ``rx0, ry0, rx1, ry1`` of the region each item touches."""
    sizes: np.ndarray
    """``N x 2`` int: the resized cut-out's ``(width, height)``."""
    boxes: np.ndarray
    """``N x 4`` float64 boxes."""

    def __getitem__(self, items: slice) -> _Plan:
        return _Plan(self.frames[items], self.roi[items], self.sizes[items], self.boxes[items])


BATCH_PIXELS = 1 << 24
"""Region pixels composited in one batch at most (each holds a few float32 planes): a
720p clip of 240 frames with a large box would otherwise take several GB at once, in
every worker process that shares the GPU."""


def batches(plans: list[_Plan], budget: int = BATCH_PIXELS) -> list[list[tuple[int, _Plan]]]:
    """The items of ``plans`` in batches of at most ``budget`` padded region pixels (a
    batch pads its regions to their largest height and width; one item always fits):
    each a list of ``(plan index, that plan's slice)``."""
    out: list[list[tuple[int, _Plan]]] = []
    batch: list[tuple[int, _Plan]] = []
    count, rows, cols = 0, 0, 0
    for i, plan in enumerate(plans):
        start = 0
        heights = plan.roi[:, 3] - plan.roi[:, 1]
        widths = plan.roi[:, 2] - plan.roi[:, 0]
        for n in range(len(plan.frames)):
            r, c = max(rows, int(heights[n])), max(cols, int(widths[n]))
            if count and (count + 1) * r * c > budget:
                if n > start:
                    batch.append((i, plan[start:n]))
                out.append(batch)
                batch, start, count = [], n, 0
                r, c = int(heights[n]), int(widths[n])
            count, rows, cols = count + 1, r, c
        if len(plan.frames) > start:
            batch.append((i, plan[start:]))
    if batch:
        out.append(batch)
    return out


class TorchCompositeInserter:
    """:class:`~pvtt.builder.backends.cpu_inserter.AlphaCompositeInserter` on ``device``.

    ``insert`` serves the :class:`~pvtt.builder.stages.protocols.Inserter` protocol and
    batches the pairs that threads ask for at once, up to ``batch_pairs``;
    ``insert_many`` composites the pairs it is given in one batch.
    """

    def __init__(
        self,
        feather_px: float = 1.0,
        harmonize: float = 0.6,
        shadow: float = 0.0,
        grey_norm: float = 8.0,
        batch_pairs: int = 4,
        device: str = "cpu",
    ) -> None:
        params = composite_params(feather_px, harmonize, shadow, grey_norm)
        self._batcher = MicroBatcher(self._insert_each, batch_pairs)
        self.feather_px = feather_px
        self.harmonize = harmonize
        self.shadow = shadow
        self.grey_norm = grey_norm
        self.device = torch.device(device)
        self._resident = _ResidentClips(self.device)
        self.info = BackendInfo(
            kind="inserter", name="torch-alpha-composite", version="1", params=params
        )

    def insert(self, job: InsertionInput) -> np.ndarray:
        """The synthesized clip ``T x H x W x 3`` uint8; frames with a ``nan`` box are copied.

        Pairs asked for at once by the build's pair threads are composited together, up
        to ``batch_pairs`` a batch (:class:`~pvtt.builder.batching.MicroBatcher`); a lone
        caller runs at once.
        """
        return _raised(self._batcher([job])[0])

    def insert_many(self, jobs: list[InsertionInput]) -> list[np.ndarray | torch.Tensor]:
        """Each job's synthesized clip, all frames of all jobs composited as one batch.

        A job's ``background`` may also be a ``T x H x W x 3`` uint8 tensor on the
        inserter's device (frames decoded on the GPU): its clip then stays there and
        comes back as a tensor, with no copy through the host.
        """
        return [_raised(out) for out in self._insert_each(jobs)]

    def batch_stats(self) -> dict[str, dict[str, float]]:
        """How many pairs each batch held (see :class:`~pvtt.builder.batching.MicroBatcher`)."""
        return {self.info.name: self._batcher.stats.as_dict()}

    @torch.inference_mode()
    def _insert_each(
        self, jobs: list[InsertionInput]
    ) -> list[np.ndarray | torch.Tensor | Exception]:
        """Each job's clip, or the error of that job alone (a bad job spoils no other)."""
        results: list[np.ndarray | torch.Tensor | Exception] = []
        clips, cutouts, plans, where = [], [], [], []
        for job in jobs:
            try:
                clip, cutout, plan = self._prepare(job)
            except (ValueError, StageRejected) as exc:
                results.append(exc)
                continue
            where.append(len(results))
            results.append(clip)  # replaced by the composited clip below
            clips.append(clip)
            cutouts.append(cutout)
            plans.append(plan)
        self._composite(clips, cutouts, plans)
        for i, clip in zip(where, clips, strict=True):
            on_device = isinstance(jobs[i].background, torch.Tensor)
            results[i] = clip if on_device else _to_host(clip)
        return results

    def _prepare(self, job: InsertionInput) -> tuple[torch.Tensor, torch.Tensor | None, _Plan]:
        """The job's frames on the device, its relit cut-out and its plan; checks its input."""
        frames, boxes = job.background, np.asarray(job.boxes, np.float64)
        uint8 = frames.dtype in (np.uint8, torch.uint8)
        if not uint8 or frames.ndim != 4 or frames.shape[3] != 3:
            raise ValueError(
                f"background must be T x H x W x 3 uint8, got {frames.dtype} {tuple(frames.shape)}"
            )
        if boxes.shape != (len(frames), 4):
            raise ValueError(f"boxes must be T x 4 for T={len(frames)}, got {boxes.shape}")
        if isinstance(frames, torch.Tensor):
            if not _same_device(frames.device, self.device):
                raise ValueError(f"background is on {frames.device}, the inserter on {self.device}")
            clip = frames.clone()  # composited in place
        else:
            clip = self._resident.get(frames).clone()
        plan = self._plan(boxes, frames.shape[1:3])
        cutout = trim_to_alpha(job.cutout)  # rejects an empty cut-out, as the CPU inserter
        if not len(plan.frames):
            return clip, None, plan
        return clip, self._relit_cutout(cutout, clip, plan.frames), plan

    def _plan(self, boxes: np.ndarray, shape: tuple[int, int]) -> _Plan:
        """Regions, resize sizes and interpolation of every frame with a usable box."""
        h, w = shape
        valid = (
            np.isfinite(boxes).all(axis=1)
            & (boxes[:, 2] > boxes[:, 0])
            & (boxes[:, 3] > boxes[:, 1])
        )
        picked = np.flatnonzero(valid)
        kept, rois, sizes = [], [], []
        pad = 2 + 3 * self.feather_px
        for t in picked:
            x0, y0, x1, y1 = boxes[t]
            below = 0.35 * (y1 - y0) if self.shadow > 0 else 0.0
            rx0, ry0 = max(0, math.floor(x0 - pad)), max(0, math.floor(y0 - pad))
            rx1, ry1 = min(w, math.ceil(x1 + pad)), min(h, math.ceil(y1 + pad + below))
            if rx1 <= rx0 or ry1 <= ry0:
                continue
            kept.append(t)
            rois.append((rx0, ry0, rx1, ry1))
            sizes.append((max(1, round(x1 - x0)), max(1, round(y1 - y0))))
        return _Plan(
            frames=np.asarray(kept, np.int64),
            roi=np.asarray(rois, np.int64).reshape(-1, 4),
            sizes=np.asarray(sizes, np.int64).reshape(-1, 2),
            boxes=boxes[kept].reshape(-1, 4),
        )

    def gains(self, clip: torch.Tensor, picked: np.ndarray) -> np.ndarray:
        """The CPU inserter's :meth:`gains`, from the frames on the device."""
        if self.harmonize == 0.0:
            return np.ones(3)
        picked = picked[np.unique(np.linspace(0, len(picked) - 1, 8).round().astype(int))]
        light, _ = scene_light(clip[torch.from_numpy(picked).to(clip.device)], self.grey_norm)
        colour = np.maximum(light, 1e-6) ** self.harmonize
        return colour / float(colour @ LUMA)

    def _relit_cutout(
        self, cutout: np.ndarray, clip: torch.Tensor, picked: np.ndarray
    ) -> torch.Tensor:
        """``4 x h x w`` float32: relit premultiplied colour and alpha (CPU ``_relit``)."""
        rgba = torch.from_numpy(cutout).to(self.device).permute(2, 0, 1).float()
        alpha = rgba[3:] / 255.0
        premult = rgba[:3] * alpha
        gains = self.gains(clip, picked)
        if not np.allclose(gains, 1.0):
            straight = torch.clamp(premult / torch.clamp(alpha, min=1e-3), 0, 255)
            gain = torch.from_numpy(gains.astype(np.float32)).to(self.device)[:, None, None]
            premult = linear_to_srgb(srgb_to_linear_t(straight) * gain) * alpha
        return torch.cat([premult, alpha])

    def _composite(
        self, clips: list[torch.Tensor], cutouts: list[torch.Tensor | None], plans: list[_Plan]
    ) -> None:
        """Paste every planned item into its clip, in place, in batches of bounded memory
        (:func:`batches`)."""
        for batch in batches(plans, BATCH_PIXELS):
            self._composite_batch(
                [clips[i] for i, _ in batch], [cutouts[i] for i, _ in batch], [p for _, p in batch]
            )

    def _composite_batch(
        self, clips: list[torch.Tensor], cutouts: list[torch.Tensor | None], plans: list[_Plan]
    ) -> None:
        """Paste every planned item into its clip, in place, as one batch."""
        jobs = [i for i, p in enumerate(plans) if len(p.frames)]
        if not jobs:
            return
        rois = np.concatenate([plans[i].roi for i in jobs])
        heights, widths = rois[:, 3] - rois[:, 1], rois[:, 2] - rois[:, 0]
        out_h, out_w = int(heights.max()), int(widths.max())
        sources, inverse, sizes = [], [], []
        for i in jobs:
            plan, cutout = plans[i], cutouts[i]
            ch, cw = cutout.shape[1:]
            weights = []
            for (sw, sh), box, roi in zip(plan.sizes, plan.boxes, plan.roi, strict=True):
                shrink = sw < cw or sh < ch
                weights.append(torch_ops.resize_weights((cw, ch), (int(sw), int(sh)), shrink))
                inverse.append(placement_matrix(int(sw), int(sh), box, origin=(roi[0], roi[1])))
            wy, wx = torch_ops.stack_weights(weights, self.device)
            sources.append(torch_ops.resize_batch(cutout, wy, wx))
            sizes.append(plan.sizes[:, ::-1])
        rows = max(s.shape[2] for s in sources)
        cols = max(s.shape[3] for s in sources)
        source = torch.cat(
            [
                torch.nn.functional.pad(s, (0, cols - s.shape[3], 0, rows - s.shape[2]))
                for s in sources
            ]
        )
        size_t = torch.from_numpy(np.concatenate(sizes).copy()).to(self.device)
        warped = torch_ops.warp_affine(
            source, size_t, torch_ops.inverse_placement(np.stack(inverse)), out_h, out_w
        )
        colour, a = warped[:, :3], warped[:, 3]
        h_t = torch.from_numpy(heights).to(self.device)
        w_t = torch.from_numpy(widths).to(self.device)
        soft = a
        if self.feather_px > 0:
            soft = torch.minimum(a, torch_ops.gaussian_blur(a, self.feather_px, h_t, w_t))
        ys = torch.arange(out_h, device=self.device)
        xs = torch.arange(out_w, device=self.device)
        start = 0
        for i in jobs:
            plan, clip = plans[i], clips[i]
            stop = start + len(plan.frames)
            roi_t = torch.from_numpy(plan.roi).to(self.device)
            y = (roi_t[:, 1, None] + ys).clamp(max=clip.shape[1] - 1)
            x = (roi_t[:, 0, None] + xs).clamp(max=clip.shape[2] - 1)
            t = torch.from_numpy(plan.frames).to(self.device)
            index = (t[:, None, None], y[:, :, None], x[:, None, :])
            region = clip[index].float()
            if self.shadow > 0:
                darkness = self._shadows(plan, out_h, out_w)
                region = region * (1.0 - self.shadow * darkness[..., None])
            straight = colour[start:stop] / torch.clamp(a[start:stop], min=1e-3)[:, None]
            region = region + soft[start:stop, ..., None] * (straight.permute(0, 2, 3, 1) - region)
            rows_in = (ys < h_t[start:stop, None])[:, :, None]
            inside = rows_in & (xs < w_t[start:stop, None])[:, None]
            pasted = torch.clamp(region + 0.5, 0, 255).to(torch.uint8)
            clip[tuple(ix.expand_as(inside)[inside] for ix in index)] = pasted[inside]
            start = stop

    def _shadows(self, plan: _Plan, out_h: int, out_w: int) -> torch.Tensor:
        """``N x out_h x out_w``: the CPU inserter's contact shadow of each item's region."""
        out = torch.zeros((len(plan.frames), out_h, out_w), device=self.device)
        for n, (box, roi) in enumerate(zip(plan.boxes, plan.roi, strict=True)):
            shape = (int(roi[3] - roi[1]), int(roi[2] - roi[0]))
            canvas = torch.from_numpy(_ellipse(box, (int(roi[0]), int(roi[1])), shape))
            sigma = max(1.0, 0.08 * (box[3] - box[1]))
            height, width = (torch.tensor([v], device=self.device) for v in shape)
            blurred = torch_ops.gaussian_blur(canvas.to(self.device)[None], sigma, height, width)
            out[n, : shape[0], : shape[1]] = blurred[0]
        return out


class _ResidentClips:
    """Device copies of the last few background clips, so that the pairs of one clip
    (tens of them: one per target photo) upload its frames once, not once each.

    Keyed by the host array's identity and dropped when that array is freed (or when more
    than ``keep`` clips are held), so a clip's copy lives as long as the build holds the
    clip. On a CPU device the host array is used as it is (the composite clones it anyway).
    """

    def __init__(self, device: torch.device, keep: int = 2) -> None:
        self.device = device
        self.keep = keep
        self._clips: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, frames: np.ndarray) -> torch.Tensor:
        if self.device.type == "cpu":
            return torch.from_numpy(np.ascontiguousarray(frames))
        key = id(frames)
        with self._lock:
            held = self._clips.get(key)
            if held is not None:
                self._clips.move_to_end(key)
                return held
        with warnings.catch_warnings():  # a read-only (shared-memory) array, only read here
            warnings.simplefilter("ignore", UserWarning)
            host = torch.from_numpy(np.ascontiguousarray(frames))
        uploaded = host.to(self.device)
        with self._lock:
            self._clips[key] = uploaded
            while len(self._clips) > self.keep:
                self._clips.popitem(last=False)
        weakref.finalize(frames, self._forget, key)  # runs before the id can be reused
        return uploaded

    def _forget(self, key: int) -> None:
        with self._lock:
            self._clips.pop(key, None)


def _to_host(clip: torch.Tensor) -> np.ndarray:
    """The clip in host memory; from a GPU through pinned memory (several times the rate of
    a copy into pageable memory, and it does not serialise the copies of other threads)."""
    if clip.device.type == "cpu":
        return clip.numpy()
    host = torch.empty(clip.shape, dtype=clip.dtype, pin_memory=True)
    host.copy_(clip, non_blocking=True)
    torch.cuda.current_stream(clip.device).synchronize()
    return host.numpy()


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:N`` are one device when N is the current one."""
    if a.type != b.type or a.type != "cuda":
        return a.type == b.type
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


def _raised(result: np.ndarray | Exception) -> np.ndarray:
    if isinstance(result, Exception):
        raise result
    return result


def _ellipse(box: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """The CPU inserter's shadow ellipse before its blur (OpenCV's anti-aliased fill)."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    shift = 4
    scale = 1 << shift
    centre = (
        round(((x0 + x1) / 2 - origin[0] - 0.5) * scale),
        round((y1 - origin[1] - 0.5) * scale),
    )
    axes = (max(1, round(0.45 * bw * scale)), max(1, round(0.06 * bh * scale + scale)))
    canvas = np.zeros(shape, np.float32)
    cv2.ellipse(canvas, centre, axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA, shift)
    return canvas


def srgb_to_linear_t(rgb: torch.Tensor) -> torch.Tensor:
    """:func:`pvtt.builder.illuminant.srgb_to_linear` of a float tensor in 0..255."""
    c = rgb / 255.0
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: torch.Tensor) -> torch.Tensor:
    """:func:`pvtt.builder.illuminant.linear_to_srgb` of a float tensor."""
    c = torch.clamp(linear, 0.0, 1.0)
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055) * 255.0


def scene_light(
    frames: torch.Tensor, grey_norm: float, long_side: int = 128
) -> tuple[np.ndarray, float]:
    """:func:`pvtt.builder.illuminant.scene_light` of ``T x H x W x 3`` uint8 frames: the
    light and the share of clipped pixels left out."""
    h, w = frames.shape[1:3]
    fit = min(1.0, long_side / max(h, w))
    size = (max(1, round(w * fit)), max(1, round(h * fit)))
    wy, wx = torch_ops.resize_weights((w, h), size, True)
    wy_t = torch.from_numpy(wy).to(frames.device)
    wx_t = torch.from_numpy(wx).to(frames.device)
    small = torch.einsum("yh,thwc,xw->tyxc", wy_t, frames.double(), wx_t)
    levels = torch.floor(small + 0.5).clamp(0, 255).long().reshape(-1, 3)  # ties: as OpenCV
    pixels = torch.from_numpy(_SRGB_TO_LINEAR).to(frames.device)[levels]
    unclipped = pixels[pixels.max(dim=1).values < SATURATED]
    chosen = unclipped if len(unclipped) >= 64 else pixels
    clipped = 1.0 - len(unclipped) / len(pixels)
    p = grey_norm
    return (chosen.double() ** p).mean(dim=0).pow(1.0 / p).cpu().numpy(), clipped


def create(config: BackendConfig, device: str) -> TorchCompositeInserter:
    """The registry's factory: the config's params, on the build's device."""
    try:
        return TorchCompositeInserter(**config.params, device=device)
    except TypeError as exc:
        raise ConfigError(f"TorchCompositeInserter: bad params {config.params}: {exc}") from None
