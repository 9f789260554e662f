"""The dataset card, ``OUT/README.md``, written at the end of every build and merge.

A dataset is often found long after it was built, by someone who did not build it;
the card says what it is, what every column means, how many pairs of each
difficulty it holds, which config and models made it, and how to load it with
``PairDataset`` and with plain Lance or WebDataset.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pvtt.builder.stages.checks import DEFAULT_LIMITS, Limit
from pvtt.schemas.manifest import Manifest, atomic_write_bytes
from pvtt.schemas.tables import COLUMN_DOCS, PAIRS_SCHEMA

CARD_NAME = "README.md"
DIFFICULTIES = ("easy", "medium", "hard", "expert")


def _webdataset_pattern(manifest: Manifest) -> str | None:
    names = sorted(Path(s.path).name for s in manifest.shards)
    if not names:
        return None
    if len(names) == 1:
        return f"tar/{names[0]}"
    return "tar/{" + ",".join(n.removesuffix(".tar") for n in names) + "}.tar"


def _keeps(limit: Limit) -> str:
    """The side of a check's limit that passes, e.g. ``<= 0.3``."""
    return f"{'<=' if limit.op == '>' else '>='} {limit.bound:g}"


def render_card(manifest: Manifest, stats: dict[str, Any] | None = None) -> str:
    counts = manifest.counts
    by_difficulty = counts.get("by_difficulty", {})
    lines = [
        "# pvtt training pairs",
        "",
        "Pairs for product video template transfer built by [pvtt]: each pair is a source",
        "clip of a product, its clean background and masks, a photo of another product cut",
        "out, the clip with that product inserted, quality scores and a difficulty.",
        "",
        f"- build `{manifest.build_id}`, schema version {manifest.schema_version}, "
        f"{'complete' if manifest.complete else 'incomplete'}, updated {manifest.updated_at}",
        f"- formats: {', '.join(manifest.formats)}; {len(manifest.shards)} tar shards",
        f"- {counts.get('pairs', 0)} pairs, {counts.get('passed', 0)} passed the quality threshold",
        "",
        "| difficulty | pairs |",
        "|---|---|",
        *[f"| {d} | {by_difficulty.get(d, 0)} |" for d in DIFFICULTIES],
        "",
        "## Columns of `lance/pairs.lance`",
        "",
        "| column | type | meaning |",
        "|---|---|---|",
        *[f"| `{f.name}` | {f.type} | {COLUMN_DOCS.get(f.name, '')} |" for f in PAIRS_SCHEMA],
        "",
        "A pair is `passed` when every hard check is within its limit ("
        + ", ".join(f"`score_{name}` {_keeps(limit)}" for name, limit in DEFAULT_LIMITS.items())
        + ") and `quality_score` reaches the build's threshold; a failed check is named in "
        "`reject_reason`. The checks are statistics of the build's own artefacts, no model. "
        "Datasets built before the checks lack their columns (same schema version: a reader "
        "ignores what it does not know).",
        "",
        "`lance/clips.lance` holds each source clip (`source_video`, `background_video`, "
        "`masks` in the codec named by `masks_codec`, `source_boxes`); "
        "`lance/products.lance` each product photo (`image`, and `image_rgba` the cut-out).",
        "",
        "## Loading",
        "",
        "```python",
        "from pvtt.loaders import PairDataset",
        'ds = PairDataset(".", difficulty={"hard", "expert"}, min_score=0.7,',
        '                 fields=("synth_video", "source_video", "masks", "target_image", "meta"),',
        "                 num_frames=16)",
        "```",
    ]
    if "pairs" in manifest.tables:
        version = manifest.tables["pairs"].version
        lines += [
            "",
            "With Lance alone (open the version the manifest commits):",
            "",
            "```python",
            "import lance",
            f'pairs = lance.dataset("lance/pairs.lance", version={version})',
            'pairs.to_table(columns=["pair_id", "difficulty", "quality_score"], filter="passed")',
            "```",
        ]
    pattern = _webdataset_pattern(manifest)
    if pattern:
        lines += [
            "",
            "With WebDataset (members: `json`, `synth.mp4`, `source.mp4`, `target.png`):",
            "",
            "```python",
            "import webdataset as wds",
            f'ds = wds.WebDataset("{pattern}", shardshuffle=False)',
            "```",
        ]
    lines += [
        "",
        "## How it was built",
        "",
        "Backends (stage: backend, model, settings):",
        "",
        "```json",
        json.dumps(manifest.backends, indent=2, sort_keys=True, default=str),
        "```",
        "",
        "Config:",
        "",
        "```json",
        json.dumps(manifest.config, indent=2, sort_keys=True, default=str),
        "```",
    ]
    if stats:
        rejects = stats.get("rejects_by_reason", {})
        if rejects:
            lines += ["", "Rejects by reason (see `report/rejects.jsonl`):", ""]
            lines += [f"- {n} x {reason}" for reason, n in rejects.items()]
    return "\n".join(lines) + "\n"


def write_card(out: str | os.PathLike[str], manifest: Manifest, stats: dict[str, Any] | None = None) -> None:
    atomic_write_bytes(Path(out) / CARD_NAME, render_card(manifest, stats).encode("utf-8"))
