"""Arrow schemas of the three Lance tables (the data contract, version 1).

Column names are the contract (``../shared/DESIGN.md``); types may widen in later
versions. Media columns are marked as Lance blobs so that a scan of the metadata
columns never reads the media bytes.
"""

from __future__ import annotations

import pyarrow as pa

from pvtt.schemas.version import SCHEMA_VERSION, SCHEMA_VERSION_KEY

_BLOB = {"lance-encoding:blob": "true"}

BOX = pa.list_(pa.float32(), 4)
"""``[x0, y0, x1, y1]`` in pixels of the clip; ``nan`` where a frame has no box."""
BOX_TRACK = pa.list_(BOX)
KEYFRAMES = pa.list_(pa.int32())
"""Frame numbers (display order, from 0) of a video's keyframes, ascending: where decoding
of a window can start. Null in datasets built before videos were indexed."""
TIMESTAMP = pa.timestamp("us", tz="UTC")


def _media(name: str) -> pa.Field:
    return pa.field(name, pa.large_binary(), nullable=True, metadata=_BLOB)


def _provenance() -> list[pa.Field]:
    return [
        pa.field("backends", pa.string()),
        pa.field("build_id", pa.string(), nullable=False),
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("created_at", TIMESTAMP, nullable=False),
    ]


def _with_version(fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION)})


PAIRS_SCHEMA = _with_version(
    [
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("shot_index", pa.int32(), nullable=False),
        pa.field("target_id", pa.string(), nullable=False),
        pa.field("target_image", pa.string(), nullable=False),
        pa.field("source_category", pa.string(), nullable=False),
        pa.field("source_subcategory", pa.string(), nullable=False),
        pa.field("target_category", pa.string(), nullable=False),
        pa.field("target_subcategory", pa.string(), nullable=False),
        pa.field("difficulty", pa.string(), nullable=False),
        pa.field("difficulty_level", pa.int8(), nullable=False),
        pa.field("score_identity", pa.float32()),
        pa.field("score_temporal", pa.float32()),
        pa.field("score_lighting", pa.float32()),
        pa.field("score_overall", pa.float32()),
        pa.field("score_removal", pa.float32()),
        pa.field("score_mask", pa.float32()),
        pa.field("score_insert", pa.float32()),
        pa.field("score_cutout", pa.float32()),
        pa.field("quality_score", pa.float32()),
        pa.field("passed", pa.bool_(), nullable=False),
        pa.field("reject_reason", pa.string()),
        pa.field("frame_count", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("fps", pa.float32(), nullable=False),
        pa.field("duration_s", pa.float32(), nullable=False),
        pa.field("target_boxes", BOX_TRACK),
        pa.field("synth_keyframes", KEYFRAMES),
        _media("synth_video"),
        *_provenance(),
    ]
)

CLIPS_SCHEMA = _with_version(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("shot_index", pa.int32(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("subcategory", pa.string(), nullable=False),
        pa.field("start_frame", pa.int32(), nullable=False),
        pa.field("end_frame", pa.int32(), nullable=False),
        pa.field("frame_count", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("fps", pa.float32(), nullable=False),
        pa.field("duration_s", pa.float32(), nullable=False),
        pa.field("source_boxes", BOX_TRACK),
        pa.field("masks_codec", pa.string(), nullable=False),
        pa.field("source_keyframes", KEYFRAMES),
        pa.field("background_keyframes", KEYFRAMES),
        _media("source_video"),
        _media("background_video"),
        _media("masks"),
        *_provenance(),
    ]
)

PRODUCTS_SCHEMA = _with_version(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("image_path", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("subcategory", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("aspect", pa.float32(), nullable=False),
        _media("image"),
        _media("image_rgba"),
        *_provenance(),
    ]
)

TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "pairs": PAIRS_SCHEMA,
    "clips": CLIPS_SCHEMA,
    "products": PRODUCTS_SCHEMA,
}
TABLE_KEYS: dict[str, str] = {"pairs": "pair_id", "clips": "clip_id", "products": "image_id"}
MEDIA_COLUMNS: dict[str, tuple[str, ...]] = {
    name: tuple(f.name for f in schema if f.metadata and b"lance-encoding:blob" in f.metadata)
    for name, schema in TABLE_SCHEMAS.items()
}
"""Blob columns of each table: never read by metadata scans."""


KEYFRAME_COLUMNS: dict[str, dict[str, str]] = {
    "pairs": {"synth_keyframes": "synth_video"},
    "clips": {"source_keyframes": "source_video", "background_keyframes": "background_video"},
    "products": {},
}
"""Each table's keyframe index columns and the video each indexes. They describe how the
media are laid out, not the pair, so they are not scalar columns: a pair's ``meta`` and
plan never carry them (lists of varying length would not batch), and filters cannot name
them. Added to schema version 1 as optional columns: datasets written before have none
(read as null)."""


def scalar_columns(table: str) -> tuple[str, ...]:
    """Every column of ``table`` except its media columns and keyframe indexes."""
    layout = set(MEDIA_COLUMNS[table]) | set(KEYFRAME_COLUMNS[table])
    return tuple(f.name for f in TABLE_SCHEMAS[table] if f.name not in layout)


COLUMN_DOCS: dict[str, str] = {
    "pair_id": "`{clip_id}__{target_id}__{image}`, unique; the WebDataset key",
    "clip_id": "source clip (`{source_id}_s{shot}`)",
    "source_id": "product shown in the source clip",
    "shot_index": "kept shot of the source video, from 0",
    "target_id": "product inserted",
    "target_image": "which photo of the target product (path in the catalog)",
    "source_category": "taxonomy category of the source product",
    "source_subcategory": "taxonomy subcategory of the source product",
    "target_category": "taxonomy category of the target product",
    "target_subcategory": "taxonomy subcategory of the target product",
    "difficulty": "easy (same subcategory), medium (same category), hard (other category, same form family), expert",
    "difficulty_level": "0..3 for easy..expert",
    "score_identity": "target cut-out vs the inserted region, [0,1]; null if not scored",
    "score_temporal": "consistency of the insert from frame to frame, [0,1]; null if not scored",
    "score_lighting": "agreement of the light on the insert with the scene's light (colour as an angle, level in stops), [0,1]; null if not scored",
    "score_overall": "a VLM judge's overall realism, [0,1]; null without one",
    "score_removal": "hard check, lower is better: how much the background still looks like the source product inside the removed region against the ring around it (its colour model back-projected), [0,1]; fails above its limit; null in datasets built before the check",
    "score_mask": "hard check: the mask's box against the prompt box, times the steadiness of the mask area over time and the share of frames masked, [0,1]; fails below its limit; null before the check",
    "score_insert": "hard check: the inserted product's realised opacity where the cut-out is opaque, times the share of its box inside the frame and a size factor, [0,1]; a translucent, clipped or tiny insert fails; null before the check",
    "score_cutout": "hard check: the cut-out's area and extent against the photo's foreground (what differs from its border colour, shadows excluded), [0,1]; a cut-out with a lost part fails; null before the check",
    "quality_score": "0.3 identity + 0.2 temporal + 0.2 lighting + 0.3 overall, renormalised over the scores present",
    "passed": "every hard check within its limit and quality_score >= the build's threshold",
    "reject_reason": "why not passed (null when passed): the failed checks, e.g. `removal 0.412 > 0.300`, else the quality score and its weakest scores",
    "frame_count": "frames of the synthesized clip",
    "width": "width of the synthesized clip in pixels",
    "height": "height of the synthesized clip in pixels",
    "fps": "frame rate of the synthesized clip",
    "duration_s": "duration of the synthesized clip",
    "target_boxes": "per frame [x0, y0, x1, y1] where the target was inserted (x1, y1 exclusive; NaN = none)",
    "synth_keyframes": "frame numbers of the synthesized clip's keyframes (where decoding a window starts); null in datasets built before",
    "synth_video": "the synthesized clip, H.264 mp4 (Lance blob)",
    "backends": "JSON: backend and model of every stage",
    "build_id": "the build that wrote the row",
    "schema_version": "pvtt data contract version",
    "created_at": "when the row was written (UTC)",
}
"""What each ``pairs`` column means (the dataset card prints it)."""
