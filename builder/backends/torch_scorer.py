"""The statistics scorer's identity and lighting scores as batched torch ops.

Same scorer as :class:`pvtt.builder.backends.cpu_scorer.StatisticsScorer` (same
parameters and definitions; read its docstring for what each score means), with the
per-region work of all sampled frames, of one pair or several, done as one batch on the
build's device: the box cut back out onto the cut-out's grid (anti-aliasing blur,
inverse placement with a replicated border), the opaque and inside masks (erosions), the Lab histograms (a lookup table made by OpenCV's own
8-bit RGB-to-Lab, so bins are OpenCV's), SSIM's contrast-structure term, and the
insert's and the scene's light. The cut-out resized to each box's grid is made on
the host by the CPU scorer's own function (see :meth:`TorchStatisticsScorer._cutout_on_grid`).

The **temporal** score runs through the CPU scorer itself (windows, warps, medians on
the host); with ``flow_on_device`` its Farneback flows are computed on the device
(:mod:`pvtt.builder.backends.torch_flow` restates OpenCV's Farneback in torch).
"""

from __future__ import annotations

import math
from collections import defaultdict
from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pvtt.builder.backends import torch_ops
from pvtt.builder.backends.cpu_scorer import StatisticsScorer, cutout_on_grid, frames_to_score
from pvtt.builder.backends.cpu_scorer import weights as cpu_weights
from pvtt.builder.backends.torch_flow import farneback_flow_torch
from pvtt.builder.backends.torch_inserter import scene_light, srgb_to_linear_t
from pvtt.builder.batching import MicroBatcher
from pvtt.builder.illuminant import CLIPPED_SHARE, SATURATED, angle_deg, luminance
from pvtt.builder.stages.cutout import placement_matrix
from pvtt.builder.stages.protocols import BackendInfo, ScoringInput, StageRejected
from pvtt.schemas.config import BackendConfig, ConfigError

_SSIM_C2 = (0.03 * 255) ** 2


@lru_cache(maxsize=4)
def _lab_bins(device: str) -> torch.Tensor:
    """The 8 x 8 x 8 Lab histogram bin of every 8-bit RGB colour (index ``r<<16|g<<8|b``).

    Made by ``cv2.cvtColor`` itself, so the bins are exactly the CPU scorer's.
    """
    codes = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], -1).astype(np.uint8)
    lab = cv2.cvtColor(rgb.reshape(4096, 4096, 3), cv2.COLOR_RGB2Lab).reshape(-1, 3)
    ab = (np.clip(lab[:, 1:], 64, 191).astype(np.int16) - 64) >> 4
    bins = (lab[:, 0].astype(np.int16) >> 5) * 64 + ab[:, 0] * 8 + ab[:, 1]
    return torch.from_numpy(bins).to(device)


def _erode(mask: torch.Tensor, size: int, valid: torch.Tensor) -> torch.Tensor:
    """``cv2.erode`` with a ``size`` square of each item's own extent (its border never erodes)."""
    filled = (mask | ~valid).float()
    eroded = -F.max_pool2d(-filled[:, None], size, stride=1, padding=size // 2)[:, 0]
    return (eroded > 0.5) & valid


class TorchStatisticsScorer:
    """:class:`~pvtt.builder.backends.cpu_scorer.StatisticsScorer` with its identity and
    lighting scores on ``device``: ``score`` batches the pairs that threads ask for at
    once, up to ``batch_pairs``; ``score_many`` scores the pairs it is given in one batch.
    Other params are the CPU scorer's.

    ``flow_on_device`` (off by default) computes the temporal score's Farneback flows on
    ``device`` too, by :func:`~pvtt.builder.backends.torch_flow.farneback_flow_torch`,
    all windows of a pair of one size as one batch: on a GPU build the CPU flow was about
    1 s of a 720p pair's worker time. Its flows are OpenCV's within float rounding on
    textured windows, and the temporal score the CPU one's within 1e-5 there; but over a
    flat-coloured product the flow is ill-posed (a near-singular 2 x 2 system) and that
    rounding moves it by pixels, and the score by up to 0.03 (measured: 0.029 on the
    demo's flat mug). So it is a choice for throughput, not the default (tested)."""

    def __init__(self, device: str = "cpu", batch_pairs: int = 8,
                 flow_on_device: bool = False, **params: object) -> None:
        self.device = torch.device(device)
        if flow_on_device and params.get("flow", "farneback") == "farneback":
            params = {**params, "flows_fn": self._device_flows}
        self.cpu = StatisticsScorer(**params)  # the parameters, and the temporal score
        self._batcher = MicroBatcher(self._measure_each, batch_pairs)
        recorded = {**self.cpu.info.params, **({"flow_on_device": True} if flow_on_device else {})}
        self.info = BackendInfo(
            kind="scorer", name="torch-statistics", version="1", params=recorded
        )  # a pair's backends say where its flows were made

    def score(self, sample: ScoringInput) -> dict[str, float | None]:
        """``identity``, ``temporal`` and ``lighting`` in [0, 1]; ``overall`` None.

        The device's part of the pairs that the build's threads ask for at once is one
        batch, up to ``batch_pairs`` pairs (:class:`~pvtt.builder.batching.MicroBatcher`);
        each caller's temporal score then runs in its own thread. Raises
        :class:`StageRejected` as the CPU scorer does.
        """
        return self._with_temporal(sample, _raised(self._batcher([sample])[0]))

    def score_many(self, samples: list[ScoringInput]) -> list[dict[str, float | None]]:
        """Each sample's scores; the regions of all samples are measured as one batch."""
        measured = self._measure_each(samples)
        return [self._with_temporal(s, _raised(m)) for s, m in zip(samples, measured, strict=True)]

    def batch_stats(self) -> dict[str, dict[str, float]]:
        """How many pairs each batch held (see :class:`~pvtt.builder.batching.MicroBatcher`)."""
        return {self.info.name: self._batcher.stats.as_dict()}

    @torch.inference_mode()
    def _device_flows(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """The flows of ``(next, prev)`` window pairs, one batch per window size."""
        by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, (nxt, _prev) in enumerate(pairs):
            by_size[nxt.shape].append(i)
        flows: list[np.ndarray] = [np.empty(0)] * len(pairs)
        for items in by_size.values():
            nxt, prev = (
                torch.from_numpy(np.stack([pairs[i][k] for i in items])).to(self.device)
                for k in (0, 1)
            )
            for i, flow in zip(items, farneback_flow_torch(nxt, prev).cpu().numpy(), strict=True):
                flows[i] = flow
        return flows

    def _with_temporal(
        self, sample: ScoringInput, measured: dict[str, float | None]
    ) -> dict[str, float | None]:
        synth, boxes, valid, _, cutout = frames_to_score(sample, self.cpu.frames)
        temporal = self.cpu._temporal(synth, boxes, valid, cutout)
        return {**measured, "temporal": temporal, "overall": None}

    @torch.inference_mode()
    def _measure_each(
        self, samples: list[ScoringInput]
    ) -> list[dict[str, float | None] | Exception]:
        """Identity and lighting of each sample, or its error alone, one batch on the device."""
        results: list[dict[str, float | None] | Exception] = []
        items, owners, inputs = [], [], []
        for sample in samples:
            try:
                synth, boxes, _, picked, cutout = frames_to_score(sample, self.cpu.frames)
            except (ValueError, StageRejected) as exc:
                results.append(exc)
                continue
            placed = [self._place(synth[t], boxes[t]) for t in picked]
            kept = [(t, p) for t, p in zip(picked, placed, strict=True) if p is not None]
            if not kept:
                results.append(
                    StageRejected(
                        "nothing to score: every box of the synthesized clip is off the frame"
                    )
                )
                continue
            inputs.append((len(results), sample, picked))
            results.append({})  # filled below
            for t, place in kept:
                items.append((synth[t], boxes[t], cutout, *place))
                owners.append(len(inputs) - 1)
        if not inputs:
            return results
        identity, gains = self._measure(items, np.asarray(owners), len(inputs))
        for k, (i, sample, picked) in enumerate(inputs):
            results[i] = {
                "identity": float(identity[k]),
                "lighting": self._lighting(gains[k], sample.background, picked),
            }
        return results

    def _place(self, frame: np.ndarray, box: np.ndarray) -> tuple | None:
        """The CPU ``_region``'s geometry: grid size and the area cut (None: off the frame)."""
        h, w = frame.shape[:2]
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0
        fit = min(1.0, self.cpu.compare_size / max(bw, bh))
        cw, ch = max(8, round(bw * fit)), max(8, round(bh * fit))
        margin = 2.0
        ex0, ey0 = max(0, math.floor(x0 - margin)), max(0, math.floor(y0 - margin))
        ex1, ey1 = min(w, math.ceil(x1 + margin)), min(h, math.ceil(y1 + margin))
        if ex1 - ex0 < 2 or ey1 - ey0 < 2 or x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
            return None
        return (cw, ch), (ex0, ey0, ex1, ey1)

    def _measure(
        self, items: list, owners: np.ndarray, pairs: int
    ) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Per pair: mean identity over its regions, and the insert's gain (or None)."""
        dev = self.device
        n = len(items)
        cols = max(it[3][0] for it in items)
        rows = max(it[3][1] for it in items)
        synth = torch.zeros((n, 3, rows, cols), device=dev)
        target = torch.zeros((n, 3, rows, cols), device=dev)
        alpha = torch.zeros((n, rows, cols), device=dev)
        for i, (frame, box, _, (cw, ch), (ex0, ey0, ex1, ey1)) in enumerate(items):
            area = frame[ey0:ey1, ex0:ex1]
            synth[i, :, :ch, :cw] = self._box_on_grid(area, box, (ex0, ey0), (cw, ch))
        for k in range(pairs):
            (where,) = np.nonzero(owners == k)
            cutout = items[where[0]][2]
            colour, a = self._cutout_on_grid(cutout, [items[i][3] for i in where])
            target[where, :, : colour.shape[2], : colour.shape[3]] = colour
            alpha[where, : a.shape[1], : a.shape[2]] = a
        sizes = np.array([it[3] for it in items])
        widths = torch.from_numpy(sizes[:, 0]).to(dev)
        heights = torch.from_numpy(sizes[:, 1]).to(dev)
        valid = (torch.arange(rows, device=dev) < heights[:, None])[:, :, None] & (
            torch.arange(cols, device=dev) < widths[:, None]
        )[:, None]
        opaque = (alpha >= 0.5) & valid
        mask = _erode(opaque, 3, valid)
        mask = torch.where((mask.sum(dim=(1, 2)) < 16)[:, None, None], opaque, mask)
        core = _erode((alpha >= 0.9) & valid, 5, valid)
        scores = self._identity(synth, target, mask, heights, widths)
        owner_t = torch.from_numpy(owners).to(dev)
        sums = torch.zeros(pairs, dtype=torch.float64, device=dev).index_add_(0, owner_t, scores)
        counts = np.bincount(owners, minlength=pairs)
        identity = sums.cpu().numpy() / counts
        return identity, self._gains(synth, target, core, mask, owner_t, pairs)

    def _box_on_grid(
        self, area: np.ndarray, box: np.ndarray, origin: tuple[int, int], size: tuple[int, int]
    ) -> torch.Tensor:
        """:func:`pvtt.builder.backends.cpu_scorer.box_on_grid` of an ``h x w x 3`` cut."""
        cw, ch = size
        image = (
            torch.from_numpy(np.ascontiguousarray(area)).to(self.device).permute(2, 0, 1).float()
        )
        h, w = image.shape[1:]
        shrink = max((box[2] - box[0]) / cw, (box[3] - box[1]) / ch)
        if shrink > 1.5:
            ht, wt = torch.tensor([h], device=self.device), torch.tensor([w], device=self.device)
            image = torch_ops.gaussian_blur(image, 0.5 * shrink, ht.expand(3), wt.expand(3))
        matrix = placement_matrix(cw, ch, box, origin=origin)
        sizes = torch.tensor([[h, w]], device=self.device)
        return torch_ops.warp_affine(image[None], sizes, matrix[None], ch, cw, replicate=True)[0]

    def _cutout_on_grid(
        self, cutout: np.ndarray, sizes: list[tuple[int, int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`pvtt.builder.backends.cpu_scorer.cutout_on_grid` at each of ``sizes``, as
        one zero-padded batch: ``N x 3 x H x W`` colour and ``N x H x W`` alpha.

        Made by the CPU function itself, on the host (a small image, one per distinct
        size): the Lab histogram truncates colours to 8 bits, and the cut-out's flat
        colours sit on whole levels, so a last-bit difference of a torch resize moves
        whole areas to the next level and sways the identity score by up to 0.02.
        """
        rows = max(h for _, h in sizes)
        cols = max(w for w, _ in sizes)
        colour = np.zeros((len(sizes), rows, cols, 3), np.float32)
        alpha = np.zeros((len(sizes), rows, cols), np.float32)
        made: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        for i, (w, h) in enumerate(sizes):
            if (w, h) not in made:
                made[(w, h)] = cutout_on_grid(cutout, (w, h))
            colour[i, :h, :w], alpha[i, :h, :w] = made[(w, h)]
        colour_t = torch.from_numpy(colour).to(self.device).permute(0, 3, 1, 2)
        return colour_t, torch.from_numpy(alpha).to(self.device)

    def _identity(
        self,
        synth: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        heights: torch.Tensor,
        widths: torch.Tensor,
    ) -> torch.Tensor:
        """0.5 * Lab histogram similarity + 0.5 * structure, per region (float64)."""
        n = len(synth)
        lut = _lab_bins(str(self.device))
        offsets = (torch.arange(n, device=self.device)[:, None, None] * 512).expand_as(mask)[mask]
        hists = []
        for rgb in (synth, target):
            levels = torch.clamp(rgb, 0, 255).to(torch.int64)  # astype(uint8) truncates
            code = (levels[:, 0] << 16) | (levels[:, 1] << 8) | levels[:, 2]
            bins = lut[code[mask]].long() + offsets
            hist = torch.bincount(bins, minlength=n * 512).reshape(n, 512).float()
            hists.append(hist / torch.clamp(hist.sum(dim=1, keepdim=True), min=1.0))
        similarity = torch.sqrt(hists[0] * hists[1]).double().sum(dim=1)
        weights = torch.tensor([0.299, 0.587, 0.114], device=self.device)[None, :, None, None]
        grey = [(torch.clamp(rgb, 0, 255) * weights).sum(dim=1).double() for rgb in (synth, target)]
        structure = self._structure_map(*grey, heights, widths)
        structure = (structure * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2))
        return torch.clamp(0.5 * similarity + 0.5 * torch.clamp(structure, min=0.0), 0.0, 1.0)

    @staticmethod
    def _structure_map(
        a: torch.Tensor, b: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor
    ) -> torch.Tensor:
        """SSIM's contrast-structure term per pixel (the CPU ``_structure_map``)."""

        def blur(x: torch.Tensor) -> torch.Tensor:
            return torch_ops.gaussian_blur(x, 1.5, heights, widths)

        mu_a, mu_b = blur(a), blur(b)
        var_a = blur(a * a) - mu_a**2
        var_b = blur(b * b) - mu_b**2
        cov = blur(a * b) - mu_a * mu_b
        return (2 * cov + _SSIM_C2) / (var_a + var_b + _SSIM_C2)

    @staticmethod
    def _gains(
        synth: torch.Tensor,
        target: torch.Tensor,
        core: torch.Tensor,
        mask: torch.Tensor,
        owners: torch.Tensor,
        pairs: int,
    ) -> list[np.ndarray | None]:
        """Per pair, the CPU ``_insert_gain``: linear insert over photo, over the inside."""
        insert, photo = srgb_to_linear_t(synth), srgb_to_linear_t(target)
        unsaturated = (insert.amax(dim=1) < SATURATED) & (photo.amax(dim=1) < SATURATED)
        found: list[np.ndarray | None] = [None] * pairs
        for inside in (core, mask):
            keep = (inside & unsaturated)[:, None]
            sums = []
            for values in (insert, photo):
                per_item = (values.double() * keep).sum(dim=(2, 3))
                total = torch.zeros((pairs, 3), dtype=torch.float64, device=synth.device)
                sums.append(total.index_add_(0, owners, per_item).cpu().numpy())
            count = torch.zeros(pairs, device=synth.device, dtype=torch.float64)
            count = count.index_add_(0, owners, keep[:, 0].sum(dim=(1, 2)).double()).cpu().numpy()
            for k in range(pairs):
                if found[k] is None and count[k] >= 64 and (sums[1][k] > 0).all():
                    found[k] = sums[0][k] / sums[1][k]
        return found

    def _lighting(
        self, gain: np.ndarray | None, background: np.ndarray, picked: np.ndarray
    ) -> float | None:
        """The CPU ``_lighting`` from the insert's gain and the background's light."""
        if gain is None:
            return None
        frames = torch.from_numpy(background[picked[picked < len(background)]]).to(self.device)
        scene, clipped = scene_light(frames, self.cpu.grey_norm)
        cpu = self.cpu
        angle = angle_deg(gain, scene)
        stops = math.log2(max(float(luminance(gain)), 1e-6)) - (
            math.log2(max(float(luminance(scene)), 1e-6)) - cpu.white_stops
        )
        if clipped > CLIPPED_SHARE:
            stops = min(stops, 0.0)
        penalty = (
            max(0.0, angle - cpu.angle_tolerance) / cpu.angle_scale
            + max(0.0, abs(stops) - cpu.stop_tolerance) / cpu.stop_scale
        )
        return float(math.exp(-penalty))


def _raised(result: dict[str, float | None] | Exception) -> dict[str, float | None]:
    if isinstance(result, Exception):
        raise result
    return result


def create(config: BackendConfig, device: str) -> TorchStatisticsScorer:
    """The registry's factory: the config's params, on the build's device."""
    try:
        return TorchStatisticsScorer(device=device, **config.params)
    except TypeError as exc:
        raise ConfigError(f"TorchStatisticsScorer: bad params {config.params}: {exc}") from None


def weights(config: BackendConfig) -> list[str]:
    """The CPU scorer's: RAFT's checkpoint with ``flow = "raft"``, none with Farneback."""
    return cpu_weights(config)
