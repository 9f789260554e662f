"""Benchmark a whole build on this machine: pairs per minute, where the time goes, mask sizes.

Run ``python -m pvtt.tools.bench.build [--quick] [--json FILE]``. It writes the synthetic
demo catalog into a temporary folder and builds it twice with the CPU backends:

- *cold*: empty artefact cache, so every stage runs (shots, detect, segment, inpaint,
  matte, insert, score, encode, write);
- *warm*: a new output folder over the same cache, so only the per-pair stages (and
  decoding the cached clips) run: the rate of adding pairs to clips already prepared.

Each build reports pairs per minute of wall time and each stage's share of the timed
seconds. Then the masks the build stored (the ``clips`` table's ``masks`` column) are
decoded and measured with :func:`pvtt.tools.bench.masks_codec.measure`, every codec
against 1-bit PNG per frame; sizes and decode times are summed over the clips, since the
dataset stores one mask blob per clip. ``--quick`` builds three of the six products.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pvtt.builder.catalog import load_catalog
from pvtt.builder.demo import PRODUCTS, make_demo_catalog
from pvtt.builder.pipeline import Build
from pvtt.loaders.store import open_dataset, read_blobs_by_key
from pvtt.schemas.config import load_config
from pvtt.schemas.masks import decode_masks, read_header
from pvtt.tools.bench.masks_codec import measure

QUICK_PRODUCTS = ("neck-gold", "ring-ruby", "mug-blue")
"""Two categories, three subcategories, two form families: medium, hard or expert pairs."""


def timed_build(catalog_dir: Path, out: Path, cache_dir: Path) -> dict[str, Any]:
    """Build ``catalog_dir`` into ``out`` over ``cache_dir``; the figures of that build."""
    config = load_config(None, {"cache_dir": str(cache_dir)})
    start = time.perf_counter()
    result = Build(load_catalog(catalog_dir), out, config, progress=False).run()
    wall = time.perf_counter() - start
    report = result.report.as_dict()
    return {
        "pairs_written": result.written,
        "pairs_passed": result.manifest_counts.get("passed", 0),
        "wall_s": round(wall, 3),
        "pairs_per_min": round(result.written / wall * 60, 2),
        "time_per_stage_s": report["time_per_stage_s"],
        "time_share": report["time_share"],
        "cache": report["cache"],
        "rejects": report["rejects"],
    }


def stored_masks(out: Path) -> dict[str, bytes]:
    """Every clip's encoded masks as the build committed them, by clip id."""
    clips = open_dataset(out).table("clips")
    ids = clips.to_table(columns=["clip_id"]).column("clip_id").to_pylist()
    blobs = read_blobs_by_key(clips, "masks", "clip_id", ids)
    missing = sorted(k for k, v in blobs.items() if not v)
    if missing or len(blobs) != len(ids):
        raise RuntimeError(f"{out}: clips without stored masks: {missing or 'some rows'}")
    return {k: v for k, v in sorted(blobs.items()) if v}


def codec_figures(blobs: dict[str, bytes], repeat: int) -> dict[str, Any]:
    """Each codec against PNG per frame over all clips, and the stored blobs' own size."""
    per_clip: dict[str, list[dict[str, Any]]] = {}
    frames = pixels = foreground = 0
    for clip_id, data in blobs.items():
        masks = decode_masks(data)
        per_clip[clip_id] = measure(masks, repeat)
        frames += masks.shape[0]
        pixels += masks.size
        foreground += int(np.count_nonzero(masks))
    totals: dict[str, dict[str, float]] = {}
    for rows in per_clip.values():
        for row in rows:
            acc = totals.setdefault(
                str(row["codec"]), {"bytes": 0, "decode_ms": 0.0, "encode_ms": 0.0}
            )
            for key in acc:
                acc[key] += float(row[key])
    png = totals["png-per-frame"]
    summary = [
        {
            "codec": codec,
            "bytes": int(t["bytes"]),
            "bytes_per_frame": t["bytes"] / frames,
            "size": t["bytes"] / png["bytes"],
            "decode_ms": t["decode_ms"],
            "decode_ms_per_frame": t["decode_ms"] / frames,
            "decode": png["decode_ms"] / t["decode_ms"],
            "encode_ms": t["encode_ms"],
        }
        for codec, t in totals.items()
    ]
    stored_codecs = sorted({read_header(d)[0] for d in blobs.values()})
    stored_bytes = sum(len(d) for d in blobs.values())
    _, h, w = read_header(next(iter(blobs.values())))[1]
    return {
        "clips": len(blobs),
        "frames": frames,
        "frame_size": [w, h],
        "foreground_share": foreground / pixels,
        "stored_codecs": stored_codecs,
        "stored_bytes": stored_bytes,
        "stored_size": stored_bytes / png["bytes"],
        "codecs": summary,
        "per_clip": per_clip,
    }


def _print_build(name: str, fig: dict[str, Any]) -> None:
    print(
        f"\n{name}: {fig['pairs_written']} pairs ({fig['pairs_passed']} passed) in "
        f"{fig['wall_s']:.1f} s wall = {fig['pairs_per_min']:.1f} pairs/min; "
        f"cache {fig['cache']['hits']} hits, {fig['cache']['misses']} misses; "
        f"{fig['rejects']} rejects"
    )
    seconds, shares = fig["time_per_stage_s"], fig["time_share"]
    print(
        f"  stage seconds sum to {sum(seconds.values()):.1f} s "
        "(the next clip is prepared in a thread while pairs are made, so it can exceed wall)"
    )
    for stage in sorted(seconds, key=seconds.get, reverse=True):
        print(f"  {stage:<10}{seconds[stage]:>9.2f} s{shares[stage]:>8.1%}")


def _print_codecs(fig: dict[str, Any]) -> None:
    w, h = fig["frame_size"]
    print(
        f"\nmasks of the build: {fig['clips']} clips, {fig['frames']} frames of {w}x{h}, "
        f"{fig['foreground_share']:.1%} foreground; stored as {', '.join(fig['stored_codecs'])}: "
        f"{fig['stored_bytes']:,} bytes = {fig['stored_size']:.3f}x PNG per frame"
    )
    print(
        f"{'codec':<20}{'bytes':>10}{'B/frame':>9}{'size/PNG':>10}"
        f"{'decode ms':>11}{'ms/frame':>10}{'speed/PNG':>11}{'encode ms':>11}"
    )
    for r in fig["codecs"]:
        print(
            f"{r['codec']:<20}{r['bytes']:>10,}{r['bytes_per_frame']:>9.0f}{r['size']:>10.3f}"
            f"{r['decode_ms']:>11.1f}{r['decode_ms_per_frame']:>10.3f}{r['decode']:>10.1f}x"
            f"{r['encode_ms']:>11.1f}"
        )


def run(quick: bool, repeat: int) -> dict[str, Any]:
    """Make the demo catalog, build it cold and warm, measure its masks; every figure."""
    products = [p for p in PRODUCTS if p.id in QUICK_PRODUCTS] if quick else list(PRODUCTS)
    with tempfile.TemporaryDirectory(prefix="pvtt-bench-build-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        catalog = make_demo_catalog(root / "catalog", products=products)
        catalog_s = time.perf_counter() - start
        print(f"demo catalog: {len(products)} products written in {catalog_s:.1f} s")
        cold = timed_build(catalog, root / "cold", root / "cache")
        _print_build("cold build (empty cache)", cold)
        warm = timed_build(catalog, root / "warm", root / "cache")
        _print_build("warm build (new OUT, same cache: clip artefacts cached)", warm)
        codecs = codec_figures(stored_masks(root / "cold"), repeat)
        _print_codecs(codecs)
    return {
        "quick": quick,
        "products": [p.id for p in products],
        "catalog_s": round(catalog_s, 3),
        "cold": cold,
        "warm": warm,
        "masks": codecs,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 of the 6 demo products")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every figure to FILE")
    parser.add_argument("--repeat", type=int, default=3, help="codec timing repeats (best kept)")
    args = parser.parse_args(argv)
    figures = run(args.quick, args.repeat)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
        print(f"\nfigures written to {args.json}")


if __name__ == "__main__":
    main()
