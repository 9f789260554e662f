"""What ``pvtt calibrate --apply`` writes to publish new verdicts, against Lance's row updates.

Run ``python -m pvtt.tools.bench.verdict_update [--pairs N] [--blob-kb K] [--json FILE]``.

A ``pairs``-like table (pair_id, quality_score, passed, reject_reason and a blob column
of ``K`` KiB per row standing in for the synthesized mp4, fragments of 64 rows, a
bitmap index on ``passed``) gets every pair's ``passed`` and ``reject_reason``
replaced, three ways, each on a fresh copy in the same run:

- ``pvtt``: :func:`pvtt.tools.dataset_edit.replace_pair_columns` (Lance's per-fragment
  column update, then the index refreshed and the manifest rewritten);
- ``merge_insert``: ``merge_insert("pair_id").when_matched_update_all()`` with the same
  three columns (the baseline: Lance's documented upsert);
- ``update``: ``LanceDataset.update`` with SQL, one pass for the passed pairs and one
  for the rest (its expressions take no ``CASE``).

Printed per way: seconds, bytes added to the table folder, and both as a ratio to the
baseline, plus the bytes added as a share of the table's media bytes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa

from pvtt.schemas.manifest import Manifest, TableInfo, write_manifest
from pvtt.tools.dataset_edit import replace_pair_columns

THRESHOLD = 0.8
ROWS_PER_FRAGMENT = 64


def make_table(root: Path, pairs: int, blob_kb: int, seed: int = 0) -> int:
    """A dataset folder with a manifest and ``lance/pairs.lance``; returns its media bytes."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.3, 1.0, pairs).astype(np.float32)
    blob = pa.field("synth_video", pa.large_binary(), metadata={"lance-encoding:blob": "true"})
    schema = pa.schema(
        [
            pa.field("pair_id", pa.string(), nullable=False),
            pa.field("quality_score", pa.float32()),
            pa.field("passed", pa.bool_(), nullable=False),
            pa.field("reject_reason", pa.string()),
            blob,
        ]
    )
    payload = [rng.bytes(blob_kb << 10) for _ in range(pairs)]
    table = pa.table(
        {
            "pair_id": [f"c{i // 8:05d}__t{i % 8}__img0" for i in range(pairs)],
            "quality_score": scores,
            "passed": scores >= 0.7,
            "reject_reason": [None if s >= 0.7 else f"quality {s:.3f} < 0.700" for s in scores],
            "synth_video": payload,
        },
        schema=schema,
    )
    uri = root / "lance" / "pairs.lance"
    ds = lance.write_dataset(table, str(uri), max_rows_per_file=ROWS_PER_FRAGMENT)
    ds.create_scalar_index("passed", index_type="BITMAP")
    ds = lance.dataset(str(uri))
    manifest = Manifest(build_id="bench", formats=["lance"])
    manifest.tables["pairs"] = TableInfo("lance/pairs.lance", ds.version, ds.count_rows())
    write_manifest(root, manifest)
    return sum(len(p) for p in payload)


def updates_for(root: Path) -> pa.Table:
    scores = lance.dataset(str(root / "lance/pairs.lance")).to_table(
        columns=["pair_id", "quality_score"]
    )
    q = scores.column("quality_score").to_numpy()
    return pa.table(
        {
            "pair_id": scores.column("pair_id"),
            "passed": pa.array(q >= THRESHOLD),
            "reject_reason": [
                None if s >= THRESHOLD else f"quality {s:.3f} < {THRESHOLD:.3f}" for s in q
            ],
        }
    )


def way_pvtt(root: Path, updates: pa.Table) -> None:
    replace_pair_columns(root, updates)


def way_merge_insert(root: Path, updates: pa.Table) -> None:
    ds = lance.dataset(str(root / "lance/pairs.lance"))
    ds.merge_insert("pair_id").when_matched_update_all().execute(updates)


def way_update(root: Path, updates: pa.Table) -> None:
    ds = lance.dataset(str(root / "lance/pairs.lance"))
    ds.update({"passed": "true", "reject_reason": "NULL"}, where=f"quality_score >= {THRESHOLD}")
    reason = f"'quality < {THRESHOLD:.3f}'"  # Lance's update takes no CASE: two passes
    ds.update({"passed": "false", "reject_reason": reason}, where=f"quality_score < {THRESHOLD}")


WAYS: dict[str, Callable[[Path, pa.Table], None]] = {
    "merge_insert": way_merge_insert,  # the baseline: first
    "pvtt": way_pvtt,
    "update": way_update,
}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def check(root: Path, updates: pa.Table) -> None:
    """Every way must leave the same verdicts (the comparison is void otherwise)."""
    got = lance.dataset(str(root / "lance/pairs.lance")).to_table(columns=["pair_id", "passed"])
    want = dict(zip(*updates.select(["pair_id", "passed"]).to_pydict().values(), strict=True))
    have = dict(zip(*got.to_pydict().values(), strict=True))
    if have != want:
        raise AssertionError(f"{root}: verdicts differ after the update")


def run(pairs: int, blob_kb: int, work: Path) -> dict[str, Any]:
    template = work / "template"
    media = make_table(template, pairs, blob_kb)
    updates = updates_for(template)
    table_bytes = folder_bytes(template / "lance/pairs.lance")
    results: dict[str, Any] = {}
    for name, way in WAYS.items():
        root = work / name
        shutil.copytree(template, root)
        start = time.perf_counter()
        way(root, updates)
        seconds = time.perf_counter() - start
        check(root, updates)
        added = folder_bytes(root / "lance/pairs.lance") - table_bytes
        results[name] = {"seconds": seconds, "bytes_added": added}
    base = results["merge_insert"]
    for r in results.values():
        r["time_ratio"] = r["seconds"] / base["seconds"]
        r["bytes_ratio"] = r["bytes_added"] / base["bytes_added"]
        r["bytes_per_media_byte"] = r["bytes_added"] / media
    return {"pairs": pairs, "blob_kb": blob_kb, "media_bytes": media, "ways": results}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1024)
    parser.add_argument("--blob-kb", type=int, default=256)
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pvtt-bench-verdicts-") as tmp:
        report = run(args.pairs, args.blob_kb, Path(tmp))
    print(
        f"{report['pairs']} pairs, {report['blob_kb']} KiB media each "
        f"({report['media_bytes'] / 1e6:.0f} MB); baseline: merge_insert"
    )
    print(f"{'way':<14}{'seconds':>9}{'x base':>8}{'MB added':>10}{'x base':>9}{'/ media':>9}")
    for name, r in report["ways"].items():
        print(
            f"{name:<14}{r['seconds']:>9.3f}{r['time_ratio']:>8.3f}"
            f"{r['bytes_added'] / 1e6:>10.3f}{r['bytes_ratio']:>9.4f}"
            f"{r['bytes_per_media_byte']:>9.4f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
