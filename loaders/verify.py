"""Full consistency check of a built dataset: every shard, row and media blob.

Used by ``pvtt verify`` and by the crash tests: after any kill, the committed
dataset must pass this check. Shards are walked in order, so on an object store
they are read sequentially with readahead rather than one request per member.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from pvtt.loaders.decode import MediaDecodeError, decode_image, decode_video
from pvtt.loaders.store import BuiltDataset
from pvtt.loaders.tar_reader import ShardFormatError, iter_members
from pvtt.schemas.keys import PAIR_ROW_IDS, InvalidKeyError, check_pair_row_ids, split_pair_id
from pvtt.schemas.manifest import ManifestError
from pvtt.schemas.masks import decode_masks
from pvtt.schemas.shards import FILTER_COLUMNS, overlaid_meta
from pvtt.schemas.tables import MEDIA_COLUMNS, TABLE_KEYS, TABLE_SCHEMAS, scalar_columns

BLOB_BATCH = 16


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    pairs_lance: int = 0
    pairs_tar: int = 0
    media_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _decoder(column: str) -> Callable[[bytes, str], object]:
    if column.endswith("video"):
        return lambda data, what: decode_video(data, what=what)
    if column == "masks":
        return lambda data, what: decode_masks(data)
    return lambda data, what: decode_image(data, what=what)


def _member_decoder(field_name: str) -> Callable[[bytes, str], object] | None:
    if field_name.endswith(".mp4"):
        return lambda data, what: decode_video(data, what=what)
    if field_name.endswith(".png"):
        return lambda data, what: decode_image(data, what=what)
    if field_name.startswith("masks."):
        return lambda data, what: decode_masks(data)
    return None


def verify_dataset(dataset: BuiltDataset, *, media: bool = True) -> VerifyReport:
    report = VerifyReport()
    lance_ids = _verify_lance(dataset, report, media) if dataset.has_lance else None
    metas: dict[str, dict[str, object]] = {}
    tar_ids = _verify_tar(dataset, report, media, metas) if dataset.has_tar else None
    if lance_ids is not None and tar_ids is not None:
        if lance_ids != tar_ids:
            only_lance = sorted(lance_ids - tar_ids)[:5]
            only_tar = sorted(tar_ids - lance_ids)[:5]
            report.problems.append(
                f"tar and Lance hold different pairs: only in Lance {only_lance}, "
                f"only in tar {only_tar}"
            )
        _verify_agreement(dataset, metas, report)
    return report


AGREEMENT_COLUMNS = tuple(
    c
    for c in scalar_columns("pairs")
    if c in FILTER_COLUMNS or c.startswith("score_") or c == "reject_reason"
)
"""Columns whose tar view (a sample's json under its index entry, :func:`overlaid_meta`)
must equal the Lance row: those a filter reads and those ``pvtt rescore`` and ``pvtt
calibrate --apply`` update after the build."""
AGREEMENT_SHOWN = 5


def _verify_agreement(
    dataset: BuiltDataset, metas: dict[str, dict[str, object]], report: VerifyReport
) -> None:
    """Every pair's scores and verdict read the same in both formats."""
    try:
        table = dataset.table("pairs").to_table(columns=list(AGREEMENT_COLUMNS))
    except ManifestError:
        return  # already reported by the Lance check
    differ: list[str] = []
    for row in table.to_pylist():
        meta = metas.get(row["pair_id"])
        if meta is None:
            continue
        bad = [c for c in AGREEMENT_COLUMNS if not _same_value(row[c], meta.get(c))]
        if bad:
            differ.append(f"{row['pair_id']} ({', '.join(bad)})")
    if differ:
        report.problems.append(
            f"tar and Lance disagree on {len(differ)} pairs: {'; '.join(differ[:AGREEMENT_SHOWN])}"
        )


def _same_value(lance_value: object, tar_value: object) -> bool:
    """Equal as Lance stores them: floats at float32 precision, null only equal to null."""
    if isinstance(lance_value, float) and isinstance(tar_value, (int, float)):
        if isinstance(tar_value, bool):
            return False
        a, b = np.float32(lance_value), np.float32(tar_value)
        return bool(a == b or (np.isnan(a) and np.isnan(b)))
    return lance_value == tar_value


def _verify_lance(dataset: BuiltDataset, report: VerifyReport, media: bool) -> set[str]:
    keys: dict[str, set[str]] = {}
    for name, info in dataset.manifest.tables.items():
        if name not in TABLE_SCHEMAS:  # the labels log: one row per verdict, pair_ids repeat
            continue
        try:
            table = dataset.table(name)
        except ManifestError as exc:
            report.problems.append(str(exc))
            keys[name] = set()
            continue
        key = TABLE_KEYS[name]
        values = table.to_table(columns=[key]).column(key).to_pylist()
        keys[name] = set(values)
        if len(values) != info.rows:
            report.problems.append(f"lance/{name}: {len(values)} rows, manifest says {info.rows}")
        if len(keys[name]) != len(values):
            report.problems.append(
                f"lance/{name}: {len(values) - len(keys[name])} duplicate {key}s"
            )
        if not media:
            continue
        for column in MEDIA_COLUMNS[name]:
            decode = _decoder(column)
            for start in range(0, len(values), BLOB_BATCH):
                idx = list(range(start, min(start + BLOB_BATCH, len(values))))
                for i, (_addr, data) in zip(
                    idx, table.read_blobs(column, indices=idx, preserve_order=True), strict=True
                ):
                    if data is None:
                        if column in ("synth_video", "source_video", "image_rgba"):
                            report.problems.append(f"lance/{name} {values[i]}: {column} is null")
                        continue
                    what = f"lance/{name} {values[i]} {column}"
                    try:
                        decode(data, what)
                        report.media_checked += 1
                    except (MediaDecodeError, ValueError) as exc:
                        report.problems.append(f"{what}: {exc}")
    if "pairs" in keys:
        pairs = dataset.table("pairs").to_table(columns=list(PAIR_ROW_IDS))
        clips, products = keys.get("clips", set()), keys.get("products", set())
        for row in pairs.to_pylist():
            try:
                check_pair_row_ids(row)
            except InvalidKeyError as exc:
                report.problems.append(f"lance/pairs row {row['pair_id']!r}: {exc}")
                continue
            if row["clip_id"] not in clips:
                report.problems.append(
                    f"lance/pairs {row['pair_id']}: clip {row['clip_id']} missing"
                )
            image = row["pair_id"].split("__", 2)[2]
            if f"{row['target_id']}__{image}" not in products:
                report.problems.append(f"lance/pairs {row['pair_id']}: product image missing")
    report.pairs_lance = len(keys.get("pairs", ()))
    return keys.get("pairs", set())


def _verify_tar(
    dataset: BuiltDataset, report: VerifyReport, media: bool, metas: dict[str, dict[str, object]]
) -> set[str]:
    """Every committed shard against its index; each sample's current scalar columns (its
    json under its index entry) go into ``metas``."""
    ids: set[str] = set()
    for shard in dataset.shards:
        path = dataset.shard_path(shard)
        size = dataset.storage.size(shard.path)
        if size is None:
            report.problems.append(f"{shard.path}: shard missing")
            continue
        if size != shard.bytes:
            report.problems.append(f"{shard.path}: {size} bytes, manifest says {shard.bytes}")
        try:
            entries = dataset.shard_index(shard)
        except ManifestError as exc:
            report.problems.append(str(exc))
            continue
        if len(entries) != shard.samples:
            report.problems.append(
                f"{shard.path}: {len(entries)} samples, manifest says {shard.samples}"
            )
        with dataset.storage.open(shard.path) as fh:
            for entry in entries:
                key = entry["key"]
                try:
                    split_pair_id(key)
                except InvalidKeyError as exc:
                    report.problems.append(f"{shard.path}: sample key: {exc}")
                if key in ids:
                    report.problems.append(f"{shard.path}: duplicate pair {key}")
                ids.add(key)
                try:
                    for problem in _check_sample(fh, path, entry, media, report, metas):
                        report.problems.append(f"{shard.path} {key}: {problem}")
                except ShardFormatError as exc:
                    report.problems.append(str(exc))
    report.pairs_tar = len(ids)
    return ids


def _check_sample(fh, path, entry, media: bool, report: VerifyReport, metas: dict) -> Iterator[str]:  # noqa: ANN001
    fields: dict[str, bytes] = {}
    want = None if media else {"json"}
    for name, data in iter_members(fh, path, entry, want):
        fields[name] = data if data is not None else b""
    for required in ("json", "synth.mp4", "source.mp4", "target.png"):
        if required not in fields:
            yield f"member {required} missing"
    if "json" in fields:
        try:
            meta = json.loads(fields["json"])
            if meta.get("pair_id") != entry["key"]:
                yield f"json pair_id {meta.get('pair_id')!r} does not match the key"
            check_pair_row_ids(meta)
            metas[entry["key"]] = overlaid_meta(meta, entry)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            yield f"json does not parse: {exc}"
        except InvalidKeyError as exc:
            yield f"json: {exc}"
    if not media:
        return
    for name, data in fields.items():
        decode = _member_decoder(name)
        if decode is None:
            continue
        try:
            decode(data, name)
            report.media_checked += 1
        except (MediaDecodeError, ValueError) as exc:
            yield f"{name}: {exc}"
