"""Which (clip, target image) pairs a build makes, following the seed's strategies.

Planning is a pure function of the catalog, the clips that survived their stages,
the product images whose cut-out succeeded, and the config, so every rank of a
distributed build plans the same pairs and takes its own share.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pvtt.builder.catalog import Catalog, Product
from pvtt.schemas.config import PairsConfig
from pvtt.schemas.keys import image_token, pair_id
from pvtt.schemas.taxonomy import Difficulty


@dataclass(frozen=True)
class ImageRef:
    """One product photo and its key-safe token (``{product_id}__{token}`` is its id)."""

    product: Product
    path: Path
    token: str
    index: int


@dataclass(frozen=True)
class PairPlan:
    pair_id: str
    clip_id: str
    source: Product
    target: ImageRef
    difficulty: Difficulty


def image_refs(product: Product) -> list[ImageRef]:
    """Every image of a product with a unique token (the file stem, disambiguated)."""
    refs: list[ImageRef] = []
    seen: set[str] = set()
    for i, path in enumerate(product.images):
        token = image_token(path.stem)
        if token in seen:
            token = f"{token}-{i}"
        seen.add(token)
        refs.append(ImageRef(product, path, token, i))
    return refs


def choose_images(product: Product, config: PairsConfig) -> list[ImageRef]:
    """The images of ``product`` used as targets under the configured strategy."""
    refs = image_refs(product)
    if config.strategy == "single":
        return refs[:1]
    if config.strategy == "all":
        return refs
    rng = random.Random(f"{config.seed}:{product.id}")
    k = min(config.images_per_product, len(refs))
    return sorted(rng.sample(refs, k), key=lambda r: r.index)


def plan_pairs(
    catalog: Catalog,
    clips: Sequence[tuple[str, Product]],
    targets: Sequence[ImageRef],
    config: PairsConfig,
) -> list[PairPlan]:
    """All pairs of ``clips`` x ``targets`` allowed by the config, in a stable order:
    :func:`sample_pairs` of the :func:`candidate_pairs`."""
    return sample_pairs(candidate_pairs(catalog, clips, targets, config), config)


def candidate_pairs(
    catalog: Catalog,
    clips: Sequence[tuple[str, Product]],
    targets: Sequence[ImageRef],
    config: PairsConfig,
) -> list[PairPlan]:
    """Every pair of ``clips`` x ``targets`` the config allows, before any sampling.

    ``targets`` are the images whose cut-out succeeded. A product is never paired
    with itself.
    """
    candidates: list[PairPlan] = []
    for clip_id, source in clips:
        for ref in targets:
            target = ref.product
            if target.id == source.id:
                continue
            if config.same_category and target.category != source.category:
                continue
            candidates.append(
                PairPlan(
                    pair_id=pair_id(clip_id, target.id, ref.token),
                    clip_id=clip_id,
                    source=source,
                    target=ref,
                    difficulty=catalog.difficulty(source, target),
                )
            )
    return candidates


def sample_pairs(candidates: list[PairPlan], config: PairsConfig) -> list[PairPlan]:
    """The ``candidates`` a build makes, in their order. With ``difficulty_mix`` they are
    sampled (seeded) so that the shares of the difficulties come as close to the mix as
    the candidates allow; with ``limit``, at most that many (seeded)."""
    if config.difficulty_mix:
        return _sample_mix(candidates, config.difficulty_mix, config.limit, config.seed)
    if config.limit is not None and config.limit < len(candidates):
        rng = random.Random(config.seed)
        keep = set(rng.sample(range(len(candidates)), config.limit))
        return [c for i, c in enumerate(candidates) if i in keep]
    return candidates


def _sample_mix(
    candidates: list[PairPlan], mix: dict[str, float], limit: int | None, seed: int
) -> list[PairPlan]:
    by_level: dict[str, list[int]] = {d.value: [] for d in Difficulty}
    for i, c in enumerate(candidates):
        by_level[c.difficulty.value].append(i)
    total_share = sum(mix.values())
    shares = {d: mix.get(d, 0.0) / total_share for d in by_level}
    # the largest total whose every share is available, capped by the limit
    feasible = [len(by_level[d]) / s for d, s in shares.items() if s > 0]
    total = int(min(feasible)) if feasible else 0
    if limit is not None:
        total = min(total, limit)
    rng = random.Random(seed)
    keep: set[int] = set()
    quotas = {d: int(round(shares[d] * total)) for d in by_level}
    for d, quota in quotas.items():
        keep.update(rng.sample(by_level[d], min(quota, len(by_level[d]))))
    return [c for i, c in enumerate(candidates) if i in keep]
