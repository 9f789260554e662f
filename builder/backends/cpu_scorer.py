"""A weight-free scorer: is the inserted product the target, steady, and lit like the scene?

It stands in for the seed's DINO / optical-flow / VLM scorer with image statistics, so
a build without weights still filters its worst pairs. The three scores are
deliberately blunt: each looks at one failure (wrong or misplaced product, an insert
that flickers or shakes, an insert whose colours belong to another light) and falls
steeply when it happens. All measurements are taken where the product was inserted:
the region its boxes give, cut back out of the clip with the inserter's own placement
(:func:`pvtt.builder.stages.cutout.placement_matrix`), so sub-pixel placement is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from pvtt.builder.illuminant import (
    CLIPPED_SHARE,
    SATURATED,
    angle_deg,
    luminance,
    scene_light,
    srgb_to_linear,
)
from pvtt.builder.stages.cutout import placement_matrix, trim_to_alpha
from pvtt.builder.stages.protocols import BackendInfo, ScoringInput, StageRejected
from pvtt.schemas.config import BackendConfig, ConfigError

_SSIM_C2 = (0.03 * 255) ** 2


@dataclass(frozen=True)
class _FlowWindow:
    """One step of the temporal score: the two frames' grey windows (``size``, cut at
    ``win`` around the boxes' centres ``c0`` and ``c1``) and the second frame's box."""

    prev_grey: np.ndarray
    next_grey: np.ndarray
    win: tuple[int, int]
    size: tuple[int, int]
    c0: np.ndarray
    c1: np.ndarray
    box1: np.ndarray


@dataclass(frozen=True)
class _Region:
    """What a box holds on one frame, resampled to the cut-out's grid."""

    synth: np.ndarray
    """The clip's pixels under the box, ``h x w x 3`` float32 RGB."""
    target: np.ndarray
    """The cut-out at the same size, ``h x w x 3`` float32 RGB."""
    mask: np.ndarray
    """Where the cut-out is opaque (alpha >= 0.5, eroded by a pixel), ``h x w`` bool."""
    core: np.ndarray
    """Its inside (alpha >= 0.9, eroded by 2 px): pixels the inserter's feathered edge and
    the resampling leave unmixed with the background, ``h x w`` bool."""


def frames_to_score(
    sample: ScoringInput, frames: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Checked inputs of a scorer: ``(synth, boxes, valid, picked, cutout)``.

    ``valid`` marks frames with a box, ``picked`` is up to ``frames`` of them spread over
    the clip, ``cutout`` the trimmed cut-out. Raises :class:`StageRejected` when no
    frame has a box (nothing was inserted).
    """
    synth, boxes = sample.synth, np.asarray(sample.boxes, np.float64)
    if synth.dtype != np.uint8 or synth.ndim != 4 or synth.shape[3] != 3:
        raise ValueError(f"synth must be T x H x W x 3 uint8, got {synth.dtype} {synth.shape}")
    if boxes.shape != (len(synth), 4):
        raise ValueError(f"boxes must be T x 4 for T={len(synth)}, got {boxes.shape}")
    valid = (
        np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    )
    if not valid.any():
        raise StageRejected("nothing to score: no frame of the synthesized clip has a box")
    picked = np.flatnonzero(valid)
    picked = picked[np.unique(np.linspace(0, len(picked) - 1, frames).round().astype(int))]
    return synth, boxes, valid, picked, trim_to_alpha(sample.cutout)


def box_on_grid(
    area: np.ndarray, box: np.ndarray, origin: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """The box's content of ``area`` (float32, cut at ``origin``) resampled to ``size``.

    Uses the inserter's own placement, so insert and cut-out line up pixel for pixel;
    a shrinking resample is anti-aliased first.
    """
    cw, ch = size
    shrink = max((box[2] - box[0]) / cw, (box[3] - box[1]) / ch)
    if shrink > 1.5:
        area = cv2.GaussianBlur(area, (0, 0), 0.5 * shrink)
    return cv2.warpAffine(
        area,
        placement_matrix(cw, ch, box, origin=origin),
        (cw, ch),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def cutout_on_grid(cutout: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The RGBA cut-out resized to ``size``: un-premultiplied RGB (float32) and its alpha."""
    cw, ch = size
    alpha = cutout[..., 3].astype(np.float32) / 255.0
    interp = cv2.INTER_AREA if cw < cutout.shape[1] else cv2.INTER_LINEAR
    premult = cv2.resize(
        cutout[..., :3].astype(np.float32) * alpha[..., None], (cw, ch), interpolation=interp
    )
    a = cv2.resize(alpha, (cw, ch), interpolation=interp)
    return premult / np.maximum(a, 1e-3)[..., None], a


FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(gray_next, gray_prev) -> H x W x 2`` float32 flow from the next frame back."""
FLOWS = ("farneback", "raft")
FlowsFn = Callable[[list[tuple[np.ndarray, np.ndarray]]], list[np.ndarray]]
"""``[(gray_next, gray_prev), ...] -> [flow, ...]``: the flows of one clip's window pairs
at once (a device computes them as a few batches; see the torch scorer)."""


def farneback_flow(gray_next: np.ndarray, gray_prev: np.ndarray) -> np.ndarray:
    return cv2.calcOpticalFlowFarneback(gray_next, gray_prev, None, 0.5, 3, 9, 3, 5, 1.2, 0)


RAFT_WEIGHTS_NEEDED = (
    "flow = 'raft' needs flow_weights, a local state dict of torchvision's raft_small "
    "(Raft_Small_Weights.C_T_V2): an untrained RAFT gives a meaningless temporal score"
)


def raft_flow(weights: str | None, device: str = "cpu") -> FlowFn:
    """RAFT (torchvision's ``raft_small``) as the flow of the temporal score.

    Same definition as with Farneback, only a better flow, so scores stay comparable.
    It needs torchvision (not importable beside this machine's CPU torch; present on
    GPU nodes). ``weights``: a local state dict, loaded with ``weights_only=True``;
    required, since torchvision would build the network untrained without it.
    """
    if not weights:
        raise ValueError(RAFT_WEIGHTS_NEEDED)
    try:
        import torch
        from torchvision.models.optical_flow import raft_small
    except (ImportError, RuntimeError) as exc:
        raise ValueError(f"flow = 'raft' needs torchvision: {exc}") from None
    model = raft_small(weights=None)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model = model.to(device).eval()

    def flow(gray_next: np.ndarray, gray_prev: np.ndarray) -> np.ndarray:
        h, w = gray_next.shape
        # RAFT's correlation pyramid needs both sides >= 128 px and multiples of 8
        scale = max(1.0, 128.0 / min(h, w))
        sw, sh = (int(math.ceil(v * scale / 8.0)) * 8 for v in (w, h))

        def prep(g: np.ndarray) -> torch.Tensor:
            big = cv2.resize(g, (sw, sh), interpolation=cv2.INTER_LINEAR)
            t = torch.from_numpy(big).float()
            return (t / 127.5 - 1.0).expand(1, 3, -1, -1).to(device)

        with torch.inference_mode():
            out = model(prep(gray_next), prep(gray_prev), num_flow_updates=12)[-1]
        big_flow = out[0].permute(1, 2, 0).float().cpu().numpy()
        small = cv2.resize(big_flow, (w, h), interpolation=cv2.INTER_AREA)
        small[..., 0] *= w / sw
        small[..., 1] *= h / sh
        return small.astype(np.float32)

    return flow


class StatisticsScorer:
    """Identity, temporal and lighting scores from colour, structure and optical flow.

    **identity**: is the target product where the boxes say? On up to ``frames`` frames
    spread over the clip, the box is cut out of the clip and compared with the cut-out,
    both at the box's size (long side at most ``compare_size``), over the cut-out's
    opaque pixels::

        hist      = Bhattacharyya coefficient of the Lab histograms (8 x 8 x 8 bins)
        structure = mean of SSIM's contrast-structure term, grey, Gaussian window 1.5
        identity  = mean over frames of 0.5 * hist + 0.5 * max(structure, 0)

    The coarse histogram tolerates the inserter's harmonisation but not another
    product's colours; the structure term (SSIM without its luminance factor, which
    harmonisation changes on purpose) needs the same shape in the same place, so
    another product or an insert off its boxes loses it.

    **temporal**: does the insert stay consistent from frame to frame? For each pair of
    consecutive frames with boxes, each frame is cut around its own box (one window
    size, long side at most ``flow_size`` px), Farneback flow from window t+1 back to
    window t finds what the boxes' motion leaves, window t is warped onto t+1, and over
    the insert's pixels on frame t+1::

        e_t  = median |gray_{t+1} - warp(gray_t)| / 255             (flicker)
        d_t  = (box centre motion + median flow over the insert)
               / box diagonal                                        (its motion)
        jerk = mean over t of |d_{t+1} - 2 d_t + d_{t-1}|
               / (mean over t of |d_t| + speed_floor)                (jitter)
        temporal = exp(-(mean(e_t) / warp_scale + jerk / jerk_scale))

    A brightness flicker is not explained by any flow, so it stays in ``e``; a jittered
    insert is followed by the flow, so it shows as erratic motion in ``jerk`` instead.
    ``jerk`` is the change of acceleration against the speed: a product swinging fast
    across the frame (the template's motion) changes its acceleration in proportion to
    its speed, a jittered one far beyond it (on the fidelity benchmark's ideal inserts:
    0.1-0.2 at moderate motion, 0.2-0.35 at 20-30 px a frame; 1.5 px of jitter on a slow
    insert about 1.5). The median
    keeps the occlusion errors along the insert's edge out of ``e``.

    **lighting**: is the insert lit by the scene's light? Two estimates of a light are
    compared (:mod:`pvtt.builder.illuminant`), in linear RGB:

        gain     = per channel, mean of the insert over mean of the photo, over the
                   cut-out's opaque, unsaturated pixels of the sampled frames (the
                   light the inserter put on the product: 1 when pasted as is)
        scene    = shades of grey (p = ``grey_norm``) over the background's sampled frames
        angle    = degrees between gain and scene (colour of the light)
        stops    = log2 lum(gain) - (log2 lum(scene) - ``white_stops``)  (its level)
        lighting = exp(-(max(0, angle - angle_tolerance) / angle_scale
                         + max(0, |stops| - stop_tolerance) / stop_scale))

    A daylight photo pasted as is into a warm, dim room keeps gain 1 against a warm, low
    scene light and scores low; the same photo relit to the room scores high, however
    unlike the room's colours the product is. The level is the weaker half (a dark-coloured
    set and a dim one look alike), so it is allowed three quarters of a stop before it
    costs anything. Where over 1 % of the background has clipped,
    the scene's level is only a lower bound, and a brighter insert is not penalised.
    ``white_stops`` is where shades of grey puts
    a scene under white light at normal exposure (-0.4 to -0.9 stops on the benchmark's
    white-lit scenes). What it cannot see: a scene whose own colours dominate (a red wall
    reads as red light), and light that varies over the frame.

    ``overall`` is ``None``: judging realism as a whole needs a model.
    """

    def __init__(
        self,
        frames: int = 8,
        compare_size: int = 160,
        flow_size: int = 128,
        warp_scale: float = 0.06,
        jerk_scale: float = 1.0,
        speed_floor: float = 0.02,
        angle_tolerance: float = 3.0,
        angle_scale: float = 6.0,
        stop_tolerance: float = 0.75,
        stop_scale: float = 1.0,
        white_stops: float = -0.65,
        grey_norm: float = 8.0,
        flow: str = "farneback",
        flow_weights: str | None = None,
        flow_device: str = "cpu",
        flow_fn: FlowFn | None = None,
        flows_fn: FlowsFn | None = None,
    ) -> None:
        if flow not in FLOWS:
            raise ValueError(f"flow must be one of {FLOWS}, got {flow!r}")
        if flow_fn is not None:
            self.flow_fn: FlowFn = flow_fn
        elif flow == "raft":
            self.flow_fn = raft_flow(flow_weights, flow_device)
        else:
            self.flow_fn = farneback_flow
        self.flows_fn: FlowsFn = flows_fn or self._each_flow
        self.frames = frames
        self.compare_size = compare_size
        self.flow_size = flow_size
        self.warp_scale = warp_scale
        self.jerk_scale = jerk_scale
        self.speed_floor = speed_floor
        self.angle_tolerance = angle_tolerance
        self.angle_scale = angle_scale
        self.stop_tolerance = stop_tolerance
        self.stop_scale = stop_scale
        self.white_stops = white_stops
        self.grey_norm = grey_norm
        self.info = BackendInfo(
            kind="scorer",
            name="cpu-statistics",
            version="3",
            params={
                "frames": frames,
                "compare_size": compare_size,
                "flow_size": flow_size,
                "warp_scale": warp_scale,
                "jerk_scale": jerk_scale,
                "speed_floor": speed_floor,
                "angle_tolerance": angle_tolerance,
                "angle_scale": angle_scale,
                "stop_tolerance": stop_tolerance,
                "stop_scale": stop_scale,
                "white_stops": white_stops,
                "grey_norm": grey_norm,
                **({"flow": flow, "flow_weights": flow_weights} if flow != "farneback" else {}),
            },
        )

    def score(self, sample: ScoringInput) -> dict[str, float | None]:
        """``identity``, ``temporal`` and ``lighting`` in [0, 1]; ``overall`` None.

        ``temporal`` is None when no two consecutive frames have boxes.
        Raises :class:`StageRejected` when no frame has a box (nothing was inserted).
        """
        synth, boxes, valid, picked, cutout = frames_to_score(sample, self.frames)
        regions = [self._region(synth[t], boxes[t], cutout) for t in picked]
        regions = [r for r in regions if r is not None]
        if not regions:
            raise StageRejected(
                "nothing to score: every box of the synthesized clip is off the frame"
            )
        return {
            "identity": float(np.mean([_identity(r) for r in regions])),
            "temporal": self._temporal(synth, boxes, valid, cutout),
            "lighting": self._lighting(regions, sample.background, picked),
            "overall": None,
        }

    def _lighting(
        self, regions: list[_Region], background: np.ndarray, picked: np.ndarray
    ) -> float | None:
        """``exp(-(angle term + stops term))``; None when no pixel tells the insert's light."""
        gain = _insert_gain(regions)
        if gain is None:
            return None
        scene, clipped = scene_light(background[picked[picked < len(background)]], self.grey_norm)
        angle = angle_deg(gain, scene)
        stops = math.log2(max(float(luminance(gain)), 1e-6)) - (
            math.log2(max(float(luminance(scene)), 1e-6)) - self.white_stops
        )
        if clipped > CLIPPED_SHARE:  # the scene may be brighter than its unclipped pixels say
            stops = min(stops, 0.0)
        penalty = max(0.0, angle - self.angle_tolerance) / self.angle_scale + max(
            0.0, abs(stops) - self.stop_tolerance
        ) / self.stop_scale
        return float(math.exp(-penalty))

    def _region(self, frame: np.ndarray, box: np.ndarray, cutout: np.ndarray) -> _Region | None:
        """The box's content and the cut-out on one frame (None if off the frame)."""
        h, w = frame.shape[:2]
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0
        fit = min(1.0, self.compare_size / max(bw, bh))
        cw, ch = max(8, round(bw * fit)), max(8, round(bh * fit))
        margin = 2.0  # resampling reads a pixel past the box
        ex0, ey0 = max(0, math.floor(x0 - margin)), max(0, math.floor(y0 - margin))
        ex1, ey1 = min(w, math.ceil(x1 + margin)), min(h, math.ceil(y1 + margin))
        if ex1 - ex0 < 2 or ey1 - ey0 < 2 or x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
            return None
        area = frame[ey0:ey1, ex0:ex1].astype(np.float32)
        synth = box_on_grid(area, box, (ex0, ey0), (cw, ch))
        target, a = cutout_on_grid(cutout, (cw, ch))
        mask = cv2.erode((a >= 0.5).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        if mask.sum() < 16:
            mask = a >= 0.5
        core = cv2.erode((a >= 0.9).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        return _Region(synth=synth, target=target, mask=mask, core=core)

    def _temporal(
        self, synth: np.ndarray, boxes: np.ndarray, valid: np.ndarray, cutout: np.ndarray
    ) -> float | None:
        """``exp(-(mean e_t / warp_scale + jerk / jerk_scale))``, None if no pair of frames.

        Every step's windows are cut first and their flows computed in one call of
        ``flows_fn``, then each step is measured from its flow."""
        alpha = cutout[..., 3].astype(np.float32) / 255.0
        windows = [
            (int(t), window)
            for t in np.flatnonzero(valid[:-1] & valid[1:])
            if (window := self._flow_window(synth[t], synth[t + 1], boxes[t], boxes[t + 1]))
            is not None
        ]
        flows = self.flows_fn([(w.next_grey, w.prev_grey) for _, w in windows])
        errors: list[float] = []
        motion: dict[int, np.ndarray] = {}
        for (t, window), flow in zip(windows, flows, strict=True):
            step = self._flow_step(window, flow, alpha, synth.shape[1:3])
            if step is not None:
                errors.append(step[0])
                motion[t] = step[1]
        if not errors:
            return None
        jerks = [
            np.linalg.norm(motion[t + 1] - 2 * motion[t] + motion[t - 1])
            for t in motion
            if t - 1 in motion and t + 1 in motion
        ]
        speed = float(np.mean([np.linalg.norm(d) for d in motion.values()]))
        jerk = float(np.mean(jerks)) / (speed + self.speed_floor) if jerks else 0.0
        return float(math.exp(-(np.mean(errors) / self.warp_scale + jerk / self.jerk_scale)))

    def _each_flow(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        return [self.flow_fn(nxt, prev) for nxt, prev in pairs]

    def _flow_window(
        self, frame0: np.ndarray, frame1: np.ndarray, box0: np.ndarray, box1: np.ndarray
    ) -> _FlowWindow | None:
        """The grey windows of one step, each frame cut around its own box (same window
        size, centred on the box), so the flow only has to find what the boxes do not
        already say: a product crossing the frame at 30 px a frame is a small residual
        motion, not one Farneback loses. None when the boxes are too small."""
        c0, c1 = (box0[:2] + box0[2:]) / 2, (box1[:2] + box1[2:]) / 2
        margin = 0.1 * max(box1[2] - box1[0], box1[3] - box1[1]) + 3
        span = (
            max(box0[2] - box0[0], box1[2] - box1[0]) + 2 * margin,
            max(box0[3] - box0[1], box1[3] - box1[1]) + 2 * margin,
        )
        if min(span) < 8:
            return None
        fit = min(1.0, self.flow_size / max(span))
        win = (max(8, round(span[0])), max(8, round(span[1])))
        size = (max(8, round(win[0] * fit)), max(8, round(win[1] * fit)))
        g0, g1 = (
            cv2.resize(grey_window(f, win, c), size, interpolation=cv2.INTER_AREA)
            for f, c in ((frame0, c0), (frame1, c1))
        )
        return _FlowWindow(prev_grey=g0, next_grey=g1, win=win, size=size, c0=c0, c1=c1, box1=box1)

    def _flow_step(
        self, window: _FlowWindow, flow: np.ndarray, alpha: np.ndarray, frame_size: tuple[int, int]
    ) -> tuple[float, np.ndarray] | None:
        """The insert's warping error ``e_t`` and motion ``d_t`` from one frame to the next,
        given the flow between the step's windows."""
        g0, g1, size, win, c0, c1, box1 = (
            window.prev_grey, window.next_grey, window.size, window.win, window.c0,
            window.c1, window.box1,
        )  # fmt: skip
        gx, gy = np.meshgrid(
            np.arange(size[0], dtype=np.float32), np.arange(size[1], dtype=np.float32)
        )
        warped = cv2.remap(
            g0,
            gx + flow[..., 0],
            gy + flow[..., 1],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        sx, sy = size[0] / win[0], size[1] / win[1]
        wx0, wy0 = c1[0] - win[0] / 2, c1[1] - win[1] / 2
        scaled = np.array(
            [(box1[0] - wx0) * sx, (box1[1] - wy0) * sy, (box1[2] - wx0) * sx, (box1[3] - wy0) * sy]
        )
        placed = cv2.warpAffine(
            alpha, placement_matrix(alpha.shape[1], alpha.shape[0], scaled), size
        )
        inside = cv2.erode((placed >= 0.5).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        h, w = frame_size
        inside &= (wx0 + (gx + 0.5) / sx < w) & (wx0 + (gx + 0.5) / sx >= 0)  # not the
        inside &= (wy0 + (gy + 0.5) / sy < h) & (wy0 + (gy + 0.5) / sy >= 0)  # replicated edge
        if inside.sum() < 8:
            return None
        residual = np.abs(g1.astype(np.float32) - warped.astype(np.float32))[inside]
        shift = (c1 - c0) - np.median(flow[inside], axis=0) / np.array([sx, sy])
        diagonal = math.hypot(box1[2] - box1[0], box1[3] - box1[1])
        return float(np.median(residual)) / 255.0, shift / diagonal


def grey_window(frame: np.ndarray, size: tuple[int, int], centre: np.ndarray) -> np.ndarray:
    """``cv2.getRectSubPix`` of the frame's grey version, converting only the area the
    window reads (a 720p frame's grey conversion was 15 % of a pair's score).

    Equal to the whole frame's: the crop holds the window and 2 pixels around it, and where
    the window leaves the frame the crop ends at the frame's edge, whose pixels
    ``getRectSubPix`` replicates in both. The centre is rounded to float32 (what OpenCV
    takes) before the crop's integer origin is subtracted, so the sub-pixel offsets are
    the same bits.
    """
    h, w = frame.shape[:2]
    cx, cy = (float(v) for v in np.asarray(centre, np.float32))
    x0 = min(max(math.floor(cx - size[0] / 2) - 2, 0), w - 1)
    y0 = min(max(math.floor(cy - size[1] / 2) - 2, 0), h - 1)
    x1 = min(max(math.ceil(cx + size[0] / 2) + 3, x0 + 1), w)
    y1 = min(max(math.ceil(cy + size[1] / 2) + 3, y0 + 1), h)
    grey = cv2.cvtColor(np.ascontiguousarray(frame[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    return cv2.getRectSubPix(grey, size, (cx - x0, cy - y0))


def _identity(region: _Region) -> float:
    """0.5 * histogram similarity + 0.5 * structure (see :class:`StatisticsScorer`)."""
    mask = region.mask.astype(np.uint8)
    hists = []
    for rgb in (region.synth, region.target):
        lab = cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8), cv2.COLOR_RGB2Lab)
        lab[..., 1:] = np.clip(lab[..., 1:], 64, 191)
        hist = cv2.calcHist([lab], [0, 1, 2], mask, [8, 8, 8], [0, 256, 64, 192, 64, 192])
        hists.append(hist / max(float(hist.sum()), 1.0))
    similarity = float(np.sum(np.sqrt(hists[0] * hists[1])))
    grey = [
        cv2.cvtColor(np.clip(rgb, 0, 255), cv2.COLOR_RGB2GRAY).astype(np.float64)
        for rgb in (region.synth, region.target)
    ]
    structure = float(_structure_map(*grey)[region.mask].mean())
    return float(np.clip(0.5 * similarity + 0.5 * max(structure, 0.0), 0.0, 1.0))


def _structure_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM's contrast-structure term per pixel (Wang et al. 2004, Gaussian window 1.5).

    The luminance term is left out: brightness is what harmonisation changes on purpose,
    and the lighting score's business.
    """

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (0, 0), 1.5)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    return (2 * cov + _SSIM_C2) / (var_a + var_b + _SSIM_C2)


def _insert_gain(regions: list[_Region]) -> np.ndarray | None:
    """Per-channel linear gain from the photo to the insert over all sampled frames,
    over the cut-out's inside (its whole opaque area when a thin product has none)."""
    for inside in ("core", "mask"):
        insert_sum, photo_sum, count = np.zeros(3), np.zeros(3), 0
        for region in regions:
            where = getattr(region, inside)
            insert = srgb_to_linear(region.synth[where])
            photo = srgb_to_linear(region.target[where])
            keep = (insert.max(axis=1) < SATURATED) & (photo.max(axis=1) < SATURATED)
            insert_sum += insert[keep].sum(axis=0)
            photo_sum += photo[keep].sum(axis=0)
            count += int(keep.sum())
        if count >= 64 and (photo_sum > 0).all():
            return insert_sum / photo_sum
    return None


def weights(config: BackendConfig) -> list[str]:
    """The RAFT checkpoint with ``flow = "raft"`` (none with Farneback).

    ``pvtt models check`` and the build's pre-flight check refuse RAFT without
    ``flow_weights`` like any missing weights, rather than score with a random network.
    """
    if config.params.get("flow", "farneback") != "raft":
        return []
    path = config.params.get("flow_weights")
    if not path:
        raise ConfigError(f"scorer.params: {RAFT_WEIGHTS_NEEDED}")
    return [str(path)]
