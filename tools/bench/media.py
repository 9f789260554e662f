"""Where the benchmarks find real media: the checkout's ``tests/data`` (see its PROVENANCE.md).

Benchmarks run from a checkout, beside the media the test suite ships;
``$PVTT_TEST_MEDIA`` points them at another folder of the same layout.
"""

from __future__ import annotations

import os
from pathlib import Path


def test_media_dir() -> Path:
    """``$PVTT_TEST_MEDIA``, else ``tests/data`` of the checkout this file belongs to."""
    env = os.environ.get("PVTT_TEST_MEDIA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "tests" / "data"
