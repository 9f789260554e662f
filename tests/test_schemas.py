"""Schema v1: records validate themselves; keys are WebDataset-safe; versions are checked."""

from __future__ import annotations

import math

import pytest

from pvtt.schemas.config import ConfigError, load_config
from pvtt.schemas.keys import InvalidKeyError, clip_id, pair_id, split_pair_id
from pvtt.schemas.records import PairRecord, RecordError, scalar_dict
from pvtt.schemas.tables import MEDIA_COLUMNS, PAIRS_SCHEMA, scalar_columns
from pvtt.schemas.version import SchemaVersionError, check_schema_version


def _pair(**kw) -> PairRecord:
    base = dict(
        pair_id="a_s000__b__img", clip_id="a_s000", source_id="a", shot_index=0, target_id="b",
        target_image="images/b.jpg", source_category="Home", source_subcategory="mug",
        target_category="Home", target_subcategory="vase", difficulty="medium",
        difficulty_level=1, score_identity=0.8, quality_score=0.8, passed=True, frame_count=2,
        width=64, height=48, fps=24.0, duration_s=2 / 24,
        target_boxes=[(1, 2, 3, 4), (math.nan,) * 4], build_id="b1",
    )
    base.update(kw)
    return PairRecord(**base)


def test_valid_record_and_json_scalars() -> None:
    record = _pair(difficulty="Medium")
    assert record.difficulty == "medium"
    meta = scalar_dict(record)
    assert meta["target_boxes"][1] == [None] * 4 and "synth_video" not in meta


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"difficulty": "impossible"}, "difficulty"),
        ({"difficulty_level": 3}, "difficulty_level"),
        ({"score_identity": 1.5}, r"\[0, 1\]"),
        ({"quality_score": -0.1}, r"\[0, 1\]"),
        ({"pair_id": "a_s000.b__img"}, "pair id"),
        ({"pair_id": "a_s000__c__img"}, "does not match"),
        ({"passed": False}, "reject_reason"),
        ({"reject_reason": "x"}, "passed pair"),
        ({"target_boxes": [(1, 2, 3, 4)]}, "1 boxes for 2 frames"),
        ({"target_boxes": [(3, 2, 1, 4), (1, 2, 3, 4)]}, "x1 < x0"),
        ({"target_id": "a", "pair_id": "a_s000__a__img"}, "itself"),
        ({"build_id": ""}, "build_id"),
    ],
)
def test_bad_records_are_refused(changes: dict, message: str) -> None:
    with pytest.raises((RecordError, InvalidKeyError), match=message):
        _pair(**changes)


def test_keys() -> None:
    assert pair_id(clip_id("neck-01", 2), "mug_7", "front") == "neck-01_s002__mug_7__front"
    assert split_pair_id("a_s000__b__c") == ("a_s000", "b", "c")
    for bad in ("", "a.b", "a__b", "_a", "a b"):
        with pytest.raises(InvalidKeyError):
            clip_id(bad, 0)


def test_schema_versions() -> None:
    assert PAIRS_SCHEMA.metadata[b"pvtt.schema_version"] == b"1"
    assert check_schema_version(b"1", "x") == 1
    with pytest.raises(SchemaVersionError, match="upgrade"):
        check_schema_version(2, "x")
    assert MEDIA_COLUMNS["pairs"] == ("synth_video",)
    assert "synth_video" not in scalar_columns("pairs")


def test_config_rejects_unknown_keys(tmp_path) -> None:
    bad = tmp_path / "b.toml"
    bad.write_text("[pairs]\nstratgy = 'all'\n")
    with pytest.raises(ConfigError, match="stratgy"):
        load_config(bad)
    with pytest.raises(ConfigError, match="strategy"):
        load_config(None, {"pairs.strategy": "everything"})
    assert load_config(None, {"pairs.limit": 5}).pairs.limit == 5



def test_clip_preset_is_an_x264_preset_and_reaches_the_encoder(monkeypatch, shared_data) -> None:
    """``clip.preset`` is checked when the config loads, the synthesized clip's encode is
    given it, and x264 encodes with it (its options, which it writes into the stream)."""
    from dataclasses import replace

    import numpy as np
    from records_factory import make_samples

    from pvtt.builder import synthesis
    from pvtt.builder.report import BuildReport
    from pvtt.builder.video import encode_mp4

    with pytest.raises(ConfigError, match="clip.preset must be one of ultrafast"):
        load_config(None, {"clip.preset": "warp"})
    config = load_config(None, {"clip.preset": "superfast"})
    seen = []
    monkeypatch.setattr(synthesis, "encode_mp4", lambda *a, **kw: seen.append(kw["preset"]) or b"")
    record = replace(make_samples(shared_data, 1)[0].pair, synth_video=None)
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    synthesis.encode_pair(synthesis.SynthesizedPair(record, frames), config, BuildReport())
    assert seen == ["superfast"]
    assert b"subme=1" in encode_mp4(frames, 24, preset="superfast")  # superfast's subpixel search
    assert b"subme=2" in encode_mp4(frames, 24, preset="veryfast")
