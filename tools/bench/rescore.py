"""What ``pvtt rescore`` costs against rebuilding the dataset to get new scores.

Run ``python -m pvtt.tools.bench.rescore [--quick] [--json FILE]``. It writes the
synthetic demo catalog into a temporary folder and, in the same run, with the CPU
backends:

- *rebuild, cold*: builds it into a fresh folder with an empty artefact cache (the
  baseline: what getting new scores costs without rescore, on a new machine);
- *rebuild, warm*: builds it again into another fresh folder over that cache (clip
  and cut-out stages cached; insert, score, encode and write run again);
- *rescore*: :func:`pvtt.tools.rescore.rescore` on the first build's dataset with the
  same CPU scorer (every pair's stored media decoded and scored, then published);
- *resynth*: :func:`pvtt.tools.resynth.resynth` of the rejected pairs
  (``passed = false``) of the second build's dataset with another seed.

Printed per way: seconds; bytes *kept*, the files it added or changed in the dataset
folder (and, for the builds, the cache); bytes *written*, what the process passed to
write calls (``wchar`` of ``/proc/self/io``: staging files deleted afterwards count);
each as a ratio to the cold rebuild. ``--quick`` uses three of the six demo products.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from pvtt.builder.catalog import load_catalog
from pvtt.builder.demo import PRODUCTS, make_demo_catalog
from pvtt.builder.pipeline import Build
from pvtt.schemas.config import load_config
from pvtt.tools.bench.build import QUICK_PRODUCTS
from pvtt.tools.rescore import rescore
from pvtt.tools.resynth import resynth


def wchar() -> int:
    """Bytes this process has passed to write calls so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no wchar")


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: (size, mtime in ns), by relative path."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def bytes_written(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> int:
    """Bytes of the files added or rewritten between two :func:`tree` listings."""
    return sum(size for name, (size, mtime) in after.items() if before.get(name) != (size, mtime))


def timed_build(catalog: Path, out: Path, cache: Path) -> dict[str, Any]:
    config = load_config(None, {"cache_dir": str(cache)})
    before, wrote = tree(cache), wchar()
    start = time.perf_counter()
    result = Build(load_catalog(catalog), out, config, progress=False).run()
    seconds = time.perf_counter() - start
    kept = bytes_written({}, tree(out)) + bytes_written(before, tree(cache))
    return {"seconds": seconds, "kept": kept, "written": wchar() - wrote, "pairs": result.written}


def timed_rescore(out: Path) -> dict[str, Any]:
    before, wrote = tree(out), wchar()
    start = time.perf_counter()
    result = rescore(out, progress=False)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "kept": bytes_written(before, tree(out)),
        "written": wchar() - wrote,
        "pairs": result.pairs,
        "flipped": result.to_pass + result.to_fail,
    }


def timed_resynth(out: Path, where: str) -> dict[str, Any]:
    config = load_config(None, {"pairs.seed": 1})
    before, wrote = tree(out), wchar()
    start = time.perf_counter()
    result = resynth(out, where, config, progress=False)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "kept": bytes_written(before, tree(out)),
        "written": wchar() - wrote,
        "pairs": result.replaced,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three of the six demo products")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    products = [p for p in PRODUCTS if not args.quick or p.id in QUICK_PRODUCTS]
    with tempfile.TemporaryDirectory(prefix="pvtt-bench-rescore-") as tmp:
        root = Path(tmp)
        catalog = make_demo_catalog(root / "catalog", products=products)
        cache = root / "cache"
        figures = {
            "rebuild_cold": timed_build(catalog, root / "cold", cache),
            "rebuild_warm": timed_build(catalog, root / "warm", cache),
        }
        figures["rescore"] = timed_rescore(root / "cold")
        figures["resynth"] = timed_resynth(root / "warm", "passed = false")
    base = figures["rebuild_cold"]
    print(
        f"{'way':<14}{'pairs':>6}{'seconds':>9}{'x cold':>8}"
        f"{'MB kept':>9}{'x cold':>8}{'MB written':>11}{'x cold':>8}"
    )
    for name, fig in figures.items():
        for key in ("seconds", "kept", "written"):
            fig[f"{key}_ratio"] = fig[key] / base[key]
        print(
            f"{name:<14}{fig['pairs']:>6}{fig['seconds']:>9.2f}{fig['seconds_ratio']:>8.3f}"
            f"{fig['kept'] / 1e6:>9.3f}{fig['kept_ratio']:>8.4f}"
            f"{fig['written'] / 1e6:>11.3f}{fig['written_ratio']:>8.4f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
