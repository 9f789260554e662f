"""The data stacks ``compare.py`` measures pvtt against: how each writes and reads a pair.

Every tool stores the same per-pair record (:class:`Row`): the pair's scalar columns as
the json pvtt's tar sample holds, and four media fields (the synthesized and the source
clip, the encoded masks, the PNG cut-out). pvtt itself is measured through its own
``DatasetWriter`` and ``PairDataset``; the alternatives are used the way their
documentation shows:

- **webdataset**: ``ShardWriter`` tar shards; ``WebDataset`` (no shard shuffle), a
  filter is a ``.select`` after reading; resume starts at the shard that holds the
  position and discards the samples before it in that shard (no state API).
- **mds** (MosaicML Streaming, local): ``MDSWriter``; ``StreamingDataset``; a filter
  reads and drops; resume is its ``state_dict``/``load_state_dict``. ``import streaming``
  fails here (its ``__init__`` imports ``streaming.vision``, which imports torchvision,
  which does not import beside this CPU torch), so :func:`_streaming` puts empty
  modules for ``streaming.vision``, ``streaming.text`` and ``streaming.multimodal`` in
  ``sys.modules`` and imports ``streaming.base``; nothing of those three is used.
- **hf-datasets**: parquet shards written with ``Dataset.from_dict(...).to_parquet``;
  ``load_dataset("parquet", streaming=True)`` (an ``IterableDataset``), its ``.filter``,
  its ``state_dict``/``load_state_dict``.
- **lance-torch**: one flat Lance table (blob columns), read by
  ``lance.torch.data.LanceDataset``, whose ``filter=`` is pushed down to Lance; no
  resume API, so resume iterates and discards. lance.torch 14.0.2 recognises only the
  ``large_binary`` blob columns of Lance file format 2.1 (format 2.2 stores blobs as an
  extension type it reads as descriptors), so the table is written as 2.1; it is built
  inside the process that iterates, as Lance is not fork-safe.
- **lancedb**: a LanceDB table read by its training loader, ``StreamingDataset``
  (``compare_lancedb``): filter pushed down, resume by its ``state_dict``.

Readers yield :class:`Row` objects; :class:`Samples` turns them into what a training
loop gets, in the DataLoader worker: the bytes and the scalar columns, or the decoded
tensors (the same decoding as ``PairDataset``: :func:`decode_row`).
"""

from __future__ import annotations

import json
import sys
import types
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from torch.utils.data import IterableDataset

from pvtt.builder.sinks.base import PairSample
from pvtt.loaders.dataset import _plain_meta
from pvtt.loaders.frames import FrameSampler, decode_frames, decode_masks_at, decode_rgba
from pvtt.schemas.masks import MASKS_FILE_EXTENSION
from pvtt.schemas.records import scalar_dict
from pvtt.tools.bench.compare_base import MEDIA, Row, Selector, Tool, arrow_batches
from pvtt.tools.bench.compare_lancedb import LanceDBTool

VIDEOS = ("synth_video", "source_video")
WDS_SUFFIX = {
    "synth_video": "synth.mp4",
    "source_video": "source.mp4",
    "masks": f"masks.{MASKS_FILE_EXTENSION}",
    "target_image": "target.png",
}
"""Member names: those of a pvtt tar sample."""
LANCE_TORCH_BATCH = 16
"""Rows per ``LanceDataset`` batch (one ``take_blobs`` per media column and batch)."""


def rows_of(samples: Iterable[PairSample]) -> Iterator[Row]:
    """The per-pair rows of built samples (clip media and cut-outs copied into each pair)."""
    for s in samples:
        meta = scalar_dict(s.pair)
        media = {
            "synth_video": s.pair.synth_video,
            "source_video": s.clip.source_video,
            "masks": s.clip.masks,
            "target_image": s.product.image_rgba,
        }
        missing = [k for k, v in media.items() if not v]
        if missing:
            raise ValueError(f"pair {s.pair.pair_id}: no {', '.join(missing)}")
        yield Row(
            key=s.pair.pair_id,
            meta=json.dumps(meta, allow_nan=False).encode("utf-8"),
            difficulty=s.pair.difficulty,
            quality_score=float(s.pair.quality_score),
            media=media,  # type: ignore[arg-type]
        )


# -- what a training loop gets ----------------------------------------------------------


def bytes_sample(row: Row) -> dict[str, Any]:
    """The media bytes and the scalar columns (parsed, as ``PairDataset`` gives ``meta``)."""
    return {**row.media, "meta": _plain_meta(json.loads(row.meta))}


def decode_row(row: Row, sampler: FrameSampler, seed: int = 0) -> dict[str, Any]:
    """``PairDataset``'s decoding of one pair: the same frames, the same functions.

    Frame indices come from a generator seeded like ``PairDataset`` seeds it (seed, epoch
    0, CRC-32 of the pair id), so every tool decodes the same frames of a pair.
    """
    meta = json.loads(row.meta)
    rng = np.random.default_rng([seed, 0, zlib.crc32(row.key.encode())])
    frames = sampler.indices(int(meta["frame_count"]), rng)
    out: dict[str, Any] = {
        name: decode_frames(row.media[name], frames, what=name) for name in VIDEOS
    }
    out["masks"] = decode_masks_at(row.media["masks"], frames)
    out["target_image"] = decode_rgba(row.media["target_image"], what="target_image")
    out["meta"] = _plain_meta(meta)
    return out


class Samples(IterableDataset):
    """A tool's rows as training samples, converted inside the process that iterates.

    ``source`` is the tool's own iterable dataset; worker splitting is the tool's own
    (its dataset sees the DataLoader worker it runs in).
    """

    def __init__(self, source: Iterable[Row], transform: Callable[[Row], dict[str, Any]]) -> None:
        super().__init__()
        self.source = source
        self.transform = transform

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self.source:
            yield self.transform(row)


# -- the alternatives -------------------------------------------------------------------


def _skip(rows: Iterable[Row], count: int) -> Row:
    it = iter(rows)
    for _ in range(count):
        next(it)
    return next(it)


class WebDatasetTool(Tool):
    name = "webdataset"
    needs = "webdataset"

    def write(self, folder: Path, rows: Iterable[Row], shard_samples: int) -> None:
        wds = self._import()
        folder.mkdir(parents=True)
        pattern = str(folder / "shard-%06d.tar")
        with wds.ShardWriter(pattern, maxcount=shard_samples, maxsize=1 << 40, verbose=0) as sink:
            for row in rows:
                sample = {"__key__": row.key, "json": row.meta}
                sample.update({WDS_SUFFIX[k]: v for k, v in row.media.items()})
                sink.write(sample)

    def _urls(self, folder: Path) -> list[str]:
        return [str(p) for p in sorted(folder.glob("shard-*.tar"))]

    def _dataset(self, urls: Sequence[str], select: Selector | None) -> Any:
        wds = self._import()
        ds = wds.WebDataset(list(urls), shardshuffle=False, empty_check=False).map(_wds_row)
        if select is not None:
            ds = ds.select(lambda row: select(row.difficulty, row.quality_score))
        return ds

    def rows(self, folder: Path, select: Selector | None = None) -> Iterable[Row]:
        return self._dataset(self._urls(folder), select)

    def resume_state(self, folder: Path, skip: int) -> Any:
        """(first shard to open, samples to discard in it): shards hold ``maxcount`` each."""
        per_shard = _wds_shard_samples(self._urls(folder)[0])
        return skip // per_shard, skip % per_shard

    def resume(self, folder: Path, state: Any) -> Row:
        shard, within = state
        return _skip(self._dataset(self._urls(folder)[shard:], None), within)


def _wds_row(sample: dict[str, Any]) -> Row:
    meta = sample["json"]
    parsed = json.loads(meta)
    return Row(
        key=sample["__key__"],
        meta=meta,
        difficulty=parsed["difficulty"],
        quality_score=parsed["quality_score"],
        media={k: sample[suffix] for k, suffix in WDS_SUFFIX.items()},
    )


def _wds_shard_samples(url: str) -> int:
    import tarfile

    with tarfile.open(url) as tar:
        return len({name.split(".", 1)[0] for name in tar.getnames()})


def _streaming() -> types.ModuleType:
    """``streaming.base`` without the package's ``__init__`` imports of torchvision users.

    ``streaming/__init__.py`` imports ``streaming.vision`` (torchvision), ``.text`` and
    ``.multimodal``; empty stand-ins in ``sys.modules`` satisfy those imports, and the
    bench uses only ``streaming.base`` (``MDSWriter``, ``StreamingDataset``).
    """
    if "streaming" not in sys.modules:
        for name in ("streaming.vision", "streaming.text", "streaming.multimodal"):
            sys.modules.setdefault(name, types.ModuleType(name))
    import streaming.base

    return streaming.base


MDS_COLUMNS = {
    "key": "str",
    "difficulty": "str",
    "quality_score": "float64",
    "json": "bytes",
    **{name: "bytes" for name in MEDIA},
}


class MDSTool(Tool):
    name = "mds"
    needs = "streaming"

    def _import(self) -> Any:
        return _streaming()

    def write(self, folder: Path, rows: Iterable[Row], shard_samples: int) -> None:
        """``size_limit`` sized for about ``shard_samples`` pairs (MDS cuts shards by bytes)."""
        base = self._import()
        writer = None
        pending: list[Row] = []
        for row in rows:
            if writer is None:  # the first rows give the shard size in bytes
                pending.append(row)
                if len(pending) < min(shard_samples, 8):
                    continue
                size = int(np.mean([r.nbytes for r in pending]) * shard_samples * 1.02)
                writer = base.MDSWriter(out=str(folder), columns=MDS_COLUMNS, size_limit=size)
                for r in pending:
                    writer.write(_mds_sample(r))
                pending = []
            else:
                writer.write(_mds_sample(row))
        if writer is None:  # fewer rows than the probe
            writer = base.MDSWriter(out=str(folder), columns=MDS_COLUMNS)
            for r in pending:
                writer.write(_mds_sample(r))
        writer.finish()

    def dataset(self, folder: Path) -> Any:
        base = self._import()
        return base.StreamingDataset(local=str(folder), shuffle=False, batch_size=1)

    def rows(self, folder: Path, select: Selector | None = None) -> Iterable[Row]:
        return _MDSRows(self.dataset(folder), select)

    def resume_state(self, folder: Path, skip: int) -> Any:
        """The state a training loop saves after ``skip`` samples of epoch 0.

        ``state_dict`` belongs to a dataset whose epoch has begun (a fresh one reports
        epoch -1), so the epoch is started first.
        """
        ds = self.dataset(folder)
        it = iter(ds)
        next(it)
        state = ds.state_dict(num_samples=skip, from_beginning=True)
        del it, ds
        return state

    def resume(self, folder: Path, state: Any) -> Row:
        ds = self.dataset(folder)
        ds.load_state_dict(state)
        return _mds_row(next(iter(ds)))


def _mds_sample(row: Row) -> dict[str, Any]:
    return {
        "key": row.key,
        "difficulty": row.difficulty,
        "quality_score": row.quality_score,
        "json": row.meta,
        **row.media,
    }


def _mds_row(sample: dict[str, Any]) -> Row:
    return Row(
        key=sample["key"],
        meta=sample["json"],
        difficulty=sample["difficulty"],
        quality_score=sample["quality_score"],
        media={name: sample[name] for name in MEDIA},
    )


class _MDSRows(IterableDataset):
    """A ``StreamingDataset`` as rows; a filter reads each sample and drops it."""

    def __init__(self, ds: Any, select: Selector | None) -> None:
        super().__init__()
        self.ds = ds
        self.select = select

    def __iter__(self) -> Iterator[Row]:
        for sample in self.ds:
            if self.select is None or self.select(sample["difficulty"], sample["quality_score"]):
                yield _mds_row(sample)


HF_FEATURES = {
    "key": "string",
    "difficulty": "string",
    "quality_score": "float64",
    "json": "binary",
    **{name: "binary" for name in MEDIA},
}


class HFTool(Tool):
    name = "hf-datasets"
    needs = "datasets"

    def _import(self) -> Any:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
        return datasets

    def write(self, folder: Path, rows: Iterable[Row], shard_samples: int) -> None:
        datasets = self._import()
        features = datasets.Features({k: datasets.Value(v) for k, v in HF_FEATURES.items()})
        folder.mkdir(parents=True)
        batch: list[Row] = []

        def flush(number: int) -> None:
            columns = {
                "key": [r.key for r in batch],
                "difficulty": [r.difficulty for r in batch],
                "quality_score": [r.quality_score for r in batch],
                "json": [r.meta for r in batch],
                **{name: [r.media[name] for r in batch] for name in MEDIA},
            }
            part = datasets.Dataset.from_dict(columns, features=features)
            part.to_parquet(str(folder / f"part-{number:06d}.parquet"))

        number = 0
        for row in rows:
            batch.append(row)
            if len(batch) == shard_samples:
                flush(number)
                number, batch = number + 1, []
        if batch:
            flush(number)

    def dataset(self, folder: Path) -> Any:
        datasets = self._import()
        files = [str(p) for p in sorted(folder.glob("part-*.parquet"))]
        return datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)

    def rows(self, folder: Path, select: Selector | None = None) -> Iterable[Row]:
        ds = self.dataset(folder)
        if select is not None:
            ds = ds.filter(lambda ex: select(ex["difficulty"], ex["quality_score"]))
        return _Mapped(ds, _hf_row)

    def resume_state(self, folder: Path, skip: int) -> Any:
        """The ``IterableDataset``'s own state after ``skip`` examples (it has no other way)."""
        ds = self.dataset(folder)
        it = iter(ds)
        for _ in range(skip):
            next(it)
        state = ds.state_dict()
        del it
        return state

    def resume(self, folder: Path, state: Any) -> Row:
        ds = self.dataset(folder)
        ds.load_state_dict(state)
        return _hf_row(next(iter(ds)))


def _hf_row(ex: dict[str, Any]) -> Row:
    return Row(
        key=ex["key"],
        meta=ex["json"],
        difficulty=ex["difficulty"],
        quality_score=ex["quality_score"],
        media={name: ex[name] for name in MEDIA},
    )


class _Mapped(IterableDataset):
    def __init__(self, ds: Iterable[Any], fn: Callable[[Any], Row]) -> None:
        super().__init__()
        self.ds = ds
        self.fn = fn

    def __iter__(self) -> Iterator[Row]:
        for item in self.ds:
            yield self.fn(item)


_BLOB = {"lance-encoding:blob": "true"}
LANCE_FLAT_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("difficulty", pa.string()),
        pa.field("quality_score", pa.float64()),
        pa.field("json", pa.binary()),
        *[pa.field(name, pa.large_binary(), metadata=_BLOB) for name in MEDIA],
    ]
)


class LanceTorchTool(Tool):
    name = "lance-torch"
    needs = "lance.torch.data"

    def _import(self) -> Any:
        import lance.torch.data

        return lance.torch.data

    def write(self, folder: Path, rows: Iterable[Row], shard_samples: int) -> None:
        import lance

        reader = pa.RecordBatchReader.from_batches(
            LANCE_FLAT_SCHEMA, arrow_batches(rows, LANCE_FLAT_SCHEMA)
        )
        lance.write_dataset(
            reader,
            str(folder / "pairs.lance"),
            schema=LANCE_FLAT_SCHEMA,
            max_rows_per_file=shard_samples,
            data_storage_version="2.1",
        )

    def rows(self, folder: Path, select: Selector | None = None) -> Iterable[Row]:
        return _LanceTorchRows(
            str(folder / "pairs.lance"), None if select is None else select.sql()
        )

    def resume(self, folder: Path, state: Any) -> Row:
        return _skip(self.rows(folder), state)


def _lance_rows(batch: dict[str, Any], **_: Any) -> list[Row]:
    """``LanceDataset``'s ``to_tensor_fn``: a batch (blob columns as ``BlobFile``) as rows."""
    keys = batch["key"].to_pylist()
    metas = batch["json"].to_pylist()
    diffs = batch["difficulty"].to_pylist()
    scores = batch["quality_score"].to_pylist()
    media = {name: [blob.readall() for blob in batch[name]] for name in MEDIA}
    return [
        Row(keys[i], metas[i], diffs[i], scores[i], {n: media[n][i] for n in MEDIA})
        for i in range(len(keys))
    ]


class _LanceTorchRows(IterableDataset):
    """``lance.torch.data.LanceDataset`` made in the iterating process, batches as rows."""

    def __init__(self, uri: str, sql: str | None) -> None:
        super().__init__()
        self.uri = uri
        self.sql = sql

    def __iter__(self) -> Iterator[Row]:
        from lance.torch.data import LanceDataset

        ds = LanceDataset(
            self.uri,
            batch_size=LANCE_TORCH_BATCH,
            columns=["key", "difficulty", "quality_score", "json", *MEDIA],
            filter=self.sql,
            to_tensor_fn=_lance_rows,
        )
        for rows in ds:
            yield from rows


ALTERNATIVES: dict[str, Tool] = {
    t.name: t for t in (WebDatasetTool(), MDSTool(), HFTool(), LanceTorchTool(), LanceDBTool())
}
