"""Seekable media: keyframe interval and front index of encoded clips, keyframe indexes in
the tables and shard indexes, and window decoding that starts at the nearest keyframe."""

from __future__ import annotations

import io
import json
from pathlib import Path

import av
import numpy as np
import pytest
from records_factory import make_samples

from pvtt.builder.sinks import lance as lance_sink
from pvtt.builder.video import encode_mp4, keyframe_index, mp4_keyframe_index
from pvtt.builder.writer import DatasetWriter
from pvtt.loaders import PairDataset
from pvtt.loaders.decode import decode_video
from pvtt.loaders.frames import _decode_span, _display_ranks, decode_frames
from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.store import open_dataset
from pvtt.schemas.config import ConfigError, load_config
from pvtt.schemas.records import PairRecord, RecordError
from pvtt.schemas.tables import KEYFRAME_COLUMNS, TABLE_SCHEMAS, scalar_columns
from pvtt.tools.bench import seek

FRAMES, HEIGHT, WIDTH = 26, 48, 64


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    """Moving noise: a frame decoded from wrong references would not match."""
    rng = np.random.default_rng(7)
    wide = rng.integers(0, 256, size=(HEIGHT, WIDTH + 2 * FRAMES, 3), dtype=np.uint8)
    return np.stack([wide[:, 2 * t : 2 * t + WIDTH] for t in range(FRAMES)])


@pytest.fixture(scope="module")
def every_4(texture: np.ndarray) -> bytes:
    return encode_mp4(texture, 25, keyframe_interval=4)


def _boxes(data: bytes) -> list[bytes]:
    """The top-level MP4 box types, in file order."""
    out, at = [], 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        out.append(data[at + 4 : at + 8])
        at += size if size >= 8 else len(data)
    return out


def test_clips_get_a_keyframe_every_interval_and_the_index_first(every_4: bytes) -> None:
    index = keyframe_index(io.BytesIO(every_4))
    assert index.frames[0] == 0 and len(index.frames) >= FRAMES // 4
    assert max(np.diff([*index.frames, FRAMES])) <= 4  # x264 may add one at a scene cut
    boxes = _boxes(every_4)
    assert boxes.index(b"moov") < boxes.index(b"mdat")  # faststart
    assert every_4.find(b"mdat") < index.offsets[0]
    assert index.offsets == sorted(index.offsets)
    with av.open(io.BytesIO(every_4)) as container:  # each offset is a keyframe's data
        stream = container.streams.video[0]
        flagged = [p.pos for p in container.demux(stream) if p.size and p.is_keyframe]
    assert flagged == index.offsets
    assert mp4_keyframe_index(every_4) == index
    assert mp4_keyframe_index(b"\x00" * 64) is None  # stand-in bytes are not indexed


def test_default_interval_and_bad_intervals(texture: np.ndarray) -> None:
    frames = keyframe_index(io.BytesIO(encode_mp4(texture, 25))).frames
    assert frames[0] == 0 and 2 <= len(frames) and max(np.diff([*frames, FRAMES])) <= 16
    for bad in (0, -4, True, 2.5):
        with pytest.raises(ValueError, match="keyframe_interval"):
            encode_mp4(texture[:4], 25, keyframe_interval=bad)


def test_windows_decode_exactly_the_frames_of_a_whole_decode(every_4: bytes) -> None:
    whole = decode_video(every_4)
    for start in range(FRAMES - 5 + 1):
        for stride in (1, 2):
            wanted = np.arange(start, min(FRAMES, start + 5 * stride), stride)
            got = decode_frames(every_4, wanted).permute(0, 2, 3, 1).numpy()
            np.testing.assert_array_equal(got, whole[wanted], err_msg=f"{wanted}")


def test_decoding_starts_at_the_keyframe_and_stops_after_the_window(every_4: bytes) -> None:
    with av.open(io.BytesIO(every_4)) as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.size]
    ranks = _display_ranks(packets)
    assert ranks is not None
    shown = [ranks[p.pts] for p in packets]
    for first, last in ((0, 3), (9, 13), (12, 12), (14, 25)):
        begin, skip_until, end = _decode_span(packets, ranks, first, last)
        keyframes = [rank for rank, p in zip(shown, packets, strict=True) if p.is_keyframe]
        assert packets[begin].is_keyframe
        assert shown[begin] == max(k for k in keyframes if k <= first)
        assert shown[skip_until] >= first
        assert all(rank < first for rank in shown[begin:skip_until])
        assert set(range(first, last + 1)) <= set(shown[begin:end])  # all it needs
        assert all(rank > last for rank in shown[end:])  # and nothing it does not


def test_config_knob() -> None:
    assert load_config(None).clip.keyframe_interval == 16
    assert load_config(None, {"clip.keyframe_interval": 8}).clip.keyframe_interval == 8
    for bad in (0, 5000):
        with pytest.raises(ConfigError, match="clip.keyframe_interval"):
            load_config(None, {"clip.keyframe_interval": bad})
    with pytest.raises(ConfigError, match="clip.keyframe_interval: expected int"):
        load_config(None, {"clip.keyframe_interval": "16"})


def test_records_check_their_keyframes(shared_data: Path) -> None:
    pair = make_samples(shared_data, 1)[0].pair
    fields = {k: v for k, v in vars(pair).items() if not k.startswith("_")}
    assert PairRecord(**{**fields, "synth_keyframes": [0, 4]}).synth_keyframes == [0, 4]
    for bad in ([], [1, 4], [0, 4, 4], [0, pair.frame_count], [0, True], [0, 2.0]):
        with pytest.raises(RecordError, match="synth_keyframes"):
            PairRecord(**{**fields, "synth_keyframes": bad})


def test_sinks_index_the_videos_they_write(tmp_path: Path, shared_data: Path) -> None:
    samples = make_samples(shared_data, 6)
    out = tmp_path / "out"
    with DatasetWriter(out, include_background=True) as writer:
        for sample in samples:
            writer.write(sample)
    dataset = open_dataset(out)
    clips = dataset.table("clips").to_table(columns=["source_keyframes", "background_keyframes"])
    assert clips.column("source_keyframes").to_pylist() == [[0]] * clips.num_rows
    assert clips.column("background_keyframes").to_pylist() == [[0]] * clips.num_rows
    pairs = dataset.table("pairs").to_table(columns=["synth_keyframes"])
    assert pairs.column("synth_keyframes").to_pylist() == [[0]] * len(samples)

    shard = dataset.shards[0]
    index = json.loads((out / shard.index).read_text())
    entry = index["keyframes"][samples[0].pair.pair_id]
    assert set(entry) == {"synth.mp4", "source.mp4", "background.mp4"}
    expected = keyframe_index(io.BytesIO(samples[0].pair.synth_video))
    assert entry["synth.mp4"] == {"frames": expected.frames, "offsets": expected.offsets}
    assert all("keyframes" not in e for e in index["samples"])
    sample_json = dataset.read_sample_json(shard.path, index["samples"][0])
    assert "synth_keyframes" not in sample_json  # layout, not a scalar column

    for fmt in ("lance", "tar"):
        meta = next(iter(PairDataset(out, format=fmt, fields=("meta",), passed=None)))["meta"]
        assert not any(name.endswith("_keyframes") for name in meta)


def test_datasets_written_before_the_index_still_load(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lance tables without keyframe columns are read as before (loaders never ask for them)."""
    old = dict(TABLE_SCHEMAS)
    for name, columns in KEYFRAME_COLUMNS.items():
        for column in columns:
            old[name] = old[name].remove(old[name].get_field_index(column))
    monkeypatch.setattr(lance_sink, "TABLE_SCHEMAS", old)
    monkeypatch.setattr(lance_sink, "KEYFRAME_COLUMNS", {name: {} for name in KEYFRAME_COLUMNS})
    samples = make_samples(shared_data, 4)
    out = tmp_path / "out"
    with DatasetWriter(out) as writer:
        for sample in samples:
            writer.write(sample)
    monkeypatch.undo()
    dataset = open_dataset(out)
    assert "synth_keyframes" not in dataset.table("pairs").schema.names
    table = select_pairs(dataset, PairFilter(passed=None))
    assert table.num_rows == len(samples) and table.column_names == list(scalar_columns("pairs"))
    got = next(iter(PairDataset(out, format="lance", fields=("synth_video", "meta"), passed=None)))
    assert got["synth_video"].shape[0] == 16


def test_seek_bench_smoke(texture: np.ndarray, capsys: pytest.CaptureFixture[str]) -> None:
    clip = {
        "frames": FRAMES,
        "encoded": {
            interval: {"data": encode_mp4(texture, 25, keyframe_interval=interval), "keyframes": 1}
            for interval in seek.INTERVALS
        },
    }
    rows = seek.measure([clip], windows=2, seed=0)
    assert rows[seek.BASE_INTERVAL]["ratio_bytes"] == 1.0
    assert rows[seek.BASE_INTERVAL]["ratio_vs_today"] == 1.0
    for row in rows.values():
        assert row["loader_frames"] == row["plain_frames"] == 2 * seek.WINDOW
        assert row["ratio_vs_plain"] > 0 and row["all_frames"] == FRAMES
    seek.report(rows, [clip], 2)
    assert "x plain" in capsys.readouterr().out


def test_the_build_encodes_clips_at_the_configured_interval(tmp_path: Path, shared_data: Path) -> None:
    """``clip.keyframe_interval`` reaches the encoder, and is part of the clip's cache key."""
    from pvtt.builder.cache import ArtifactCache, file_digest
    from pvtt.builder.catalog import Product
    from pvtt.builder.clips import _cut
    from pvtt.builder.report import BuildReport
    from pvtt.builder.stages.shots import Shot

    video = shared_data / "sam2" / "04_coffee.mp4"
    product = Product(id="mug", category="Home", subcategory="mug", video=video, images=(),
                      prompt="mug", first_frame_box=None, row=1)
    shot = Shot(0, 24, 0.0, 1.0)
    cache = ArtifactCache(tmp_path / "cache")
    keys = {}
    for every in (4, 12):
        config = load_config(None, overrides={"clip.keyframe_interval": every,
                                              "clip.max_width": 160, "clip.max_height": 160})
        key, data, _, _ = _cut(file_digest(video), product, shot, config, cache, BuildReport())
        frames = keyframe_index(io.BytesIO(data)).frames
        assert frames[0] == 0 and max(np.diff(frames + [24])) <= every
        keys[every] = key
    assert keys[4] != keys[12]
