"""One pair's media (synthesized clip, source clip, background, masks, cut-out), for tools.

``pvtt export-pairs`` and ``pvtt preview`` read whole media of a few pairs; the
training loader (:mod:`pvtt.loaders.dataset`) has its own planned, cached path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvtt.loaders.store import BuiltDataset, read_blobs_by_key
from pvtt.loaders.where_tree import sql_literal


class LancePairMedia:
    """Media of a pair from the Lance tables (clip media read once per clip)."""

    def __init__(self, dataset: BuiltDataset) -> None:
        self.pairs, self.clips, self.products = (
            dataset.table("pairs"),
            dataset.table("clips"),
            dataset.table("products"),
        )
        self._clip: tuple[str, dict[str, bytes | None]] | None = None

    def _clip_media(self, clip_id: str) -> dict[str, bytes | None]:
        if self._clip is None or self._clip[0] != clip_id:
            cols = ("source_video", "background_video", "masks")
            self._clip = (
                clip_id,
                {
                    c: read_blobs_by_key(self.clips, c, "clip_id", [clip_id]).get(clip_id)
                    for c in cols
                },
            )
        return self._clip[1]

    def synth(self, row: dict[str, Any]) -> bytes:
        return read_blobs_by_key(self.pairs, "synth_video", "pair_id", [row["pair_id"]])[
            row["pair_id"]
        ]

    def target_rgba(self, row: dict[str, Any]) -> bytes:
        key = f"{row['target_id']}__{row['pair_id'].split('__', 2)[2]}"
        return read_blobs_by_key(self.products, "image_rgba", "image_id", [key])[key]

    def source_image(self, row: dict[str, Any]) -> tuple[bytes | None, str]:
        """The source product's first photo (its original bytes) and file extension."""
        keys = self.products.to_table(
            columns=["image_id", "image_path"],
            filter=f"product_id = {sql_literal(row['source_id'])}",
            limit=1,
        ).to_pylist()
        if not keys:
            return None, ""
        data = read_blobs_by_key(self.products, "image", "image_id", [keys[0]["image_id"]])
        return data.get(keys[0]["image_id"]), Path(keys[0]["image_path"]).suffix.lower()

    def source_video(self, row: dict[str, Any]) -> bytes:
        return self._clip_media(row["clip_id"])["source_video"]

    def background(self, row: dict[str, Any]) -> bytes | None:
        return self._clip_media(row["clip_id"])["background_video"]

    def masks(self, row: dict[str, Any]) -> bytes | None:
        return self._clip_media(row["clip_id"])["masks"]


class TarPairMedia:
    """Media of a pair from its tar sample (background and masks only if the build kept them)."""

    def __init__(self, dataset: BuiltDataset) -> None:
        self.dataset = dataset
        self.where = {
            e["key"]: (shard, e) for shard in dataset.shards for e in dataset.shard_index(shard)
        }
        self._cache: tuple[str, dict[str, bytes]] | None = None

    def _sample(self, pair_id: str) -> dict[str, bytes]:
        if self._cache is None or self._cache[0] != pair_id:
            shard, entry = self.where[pair_id]
            self._cache = (pair_id, self.dataset.read_sample(shard.path, entry))
        return self._cache[1]

    def synth(self, row: dict[str, Any]) -> bytes:
        return self._sample(row["pair_id"])["synth.mp4"]

    def target_rgba(self, row: dict[str, Any]) -> bytes:
        return self._sample(row["pair_id"])["target.png"]

    def source_image(self, row: dict[str, Any]) -> tuple[bytes | None, str]:
        return None, ""

    def source_video(self, row: dict[str, Any]) -> bytes:
        return self._sample(row["pair_id"])["source.mp4"]

    def background(self, row: dict[str, Any]) -> bytes | None:
        return self._sample(row["pair_id"]).get("background.mp4")

    def masks(self, row: dict[str, Any]) -> bytes | None:
        sample = self._sample(row["pair_id"])
        return next((v for k, v in sample.items() if k.startswith("masks.")), None)


def pair_media(dataset: BuiltDataset) -> LancePairMedia | TarPairMedia:
    """Lance tables when the dataset has them (background and masks always there), else tar."""
    return LancePairMedia(dataset) if dataset.has_lance else TarPairMedia(dataset)
