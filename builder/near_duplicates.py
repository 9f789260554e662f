"""Near-duplicates left out before pairing (``pairs.near_duplicates``), for both engines
and ``pvtt plan``: the shots of one video, and the photos that repeat across products.

The comparison is :mod:`pvtt.builder.stages.dedup`; here are the frames and photos it
looks at, the cache, and the report. Every near-duplicate found is listed in the report
(``report/duplicates.jsonl``); in ``drop`` mode it is also a reject of stage
``dedup-shots`` or ``dedup-photos`` and left out. A shot left out keeps the index its clip
would have had, so the clip ids of the other shots do not depend on the setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pvtt.builder.cache import ArtifactCache, cache_key
from pvtt.builder.clips import clip_end, relative
from pvtt.builder.pairs import ImageRef
from pvtt.builder.report import BuildReport
from pvtt.builder.stages.dedup import (
    DEDUP_VERSION,
    Fingerprint,
    duplicate_photos,
    duplicate_shots,
    fingerprint,
)
from pvtt.builder.stages.shots import Shot
from pvtt.builder.video import iter_frames, probe
from pvtt.schemas.config import BuildConfig

SHOT_STAGE = "dedup-shots"
PHOTO_STAGE = "dedup-photos"
THUMB_SIZE = (128, 128)
"""Frames are decoded this small: the fingerprint looks at 32x32 pixels."""


def sample_frames(shot: Shot, end: int) -> list[int]:
    """The first, middle and last frame of ``[shot.start_frame, end)``."""
    last = max(shot.start_frame, end - 1)
    return sorted({shot.start_frame, (shot.start_frame + last) // 2, last})


def shot_prints(video: Path, shots: Sequence[Shot], config: BuildConfig) -> list[list[Fingerprint]]:
    """Per shot, fingerprints of the frames :func:`sample_frames` picks in the clip cut
    from it. One pass decodes the video from the first sample to the last: seeking to each
    sample decodes from the keyframe before it, up to a few hundred frames each time."""
    samples = [sample_frames(shot, clip_end(shot, config)) for shot in shots]
    wanted = {index for frames in samples for index in frames}
    first, last = min(wanted), max(wanted)
    found: dict[int, Fingerprint] = {}
    # frames at the rate they are numbered in, so the i-th one decoded is frame first + i
    rate = probe(video).frame_rate
    frames = iter_frames(video, first, last + 1, max_size=THUMB_SIZE, fps=rate)
    for index, frame in enumerate(frames, start=first):
        if index in wanted:
            found[index] = fingerprint(frame)
    return [[found[i] for i in picks if i in found] for picks in samples]


def duplicate_shot_indexes(
    video: Path,
    digest: str,
    kept: Sequence[Shot],
    config: BuildConfig,
    cache: ArtifactCache,
    report: BuildReport,
    item: str,
) -> set[int]:
    """Indexes into ``kept`` (one video's usable shots) that repeat a longer shot of it,
    reported; the set is empty unless ``pairs.near_duplicates`` is ``drop``."""
    mode = config.pairs.near_duplicates
    if mode == "off" or len(kept) < 2:
        return set()
    spans = [(s.start_frame, clip_end(s, config)) for s in kept]
    key = cache_key("shot-prints", DEDUP_VERSION, digest, spans)
    hit = cache.get(key)
    if hit is not None:
        prints = [[Fingerprint.from_json(p) for p in shot] for shot in hit[0]["prints"]]
    else:
        with report.timed(SHOT_STAGE):
            prints = shot_prints(video, kept, config)
        cache.put(key, {"prints": [[p.as_json() for p in shot] for shot in prints]}, {})
    # the longest shot of a group is kept, then the first
    order = sorted(range(len(kept)), key=lambda i: (-kept[i].frame_count, i))
    found = duplicate_shots(order, [prints[i] for i in order], config.pairs.near_duplicate_bits)
    drop = mode == "drop"
    for dup in found:
        shot, like = kept[dup.item], kept[dup.kept]
        report.near_duplicate(
            SHOT_STAGE,
            f"{item}@{shot.start_frame}",
            f"near-duplicate shot: repeats frames {like.start_frame}-{like.end_frame} "
            f"({dup.bits} of 64 hash bits differ)",
            dropped=drop,
        )
    return {dup.item for dup in found} if drop else set()


def pair_targets(
    refs: Sequence[ImageRef],
    prints: Sequence[Fingerprint],
    config: BuildConfig,
    report: BuildReport,
    root: Path,
) -> list[ImageRef]:
    """``refs`` (in catalog order) without the photos that copy an earlier product's photo,
    which are reported; all of them unless ``pairs.near_duplicates`` is ``drop``."""
    mode = config.pairs.near_duplicates
    if mode == "off":
        return list(refs)
    found = duplicate_photos(
        list(range(len(refs))),
        [r.product.id for r in refs],
        prints,
        config.pairs.near_duplicate_bits,
    )
    drop = mode == "drop"
    for dup in found:
        ref, like = refs[dup.item], refs[dup.kept]
        report.near_duplicate(
            PHOTO_STAGE,
            f"{relative(ref.path, root)} (product {ref.product.id})",
            f"near-duplicate photo: copies {relative(like.path, root)} of product "
            f"{like.product.id} ({dup.bits} of 64 hash bits differ)",
            dropped=drop,
        )
    left_out = {dup.item for dup in found} if drop else set()
    return [r for i, r in enumerate(refs) if i not in left_out]
