"""A writer process for the kill tests: writes ``count`` samples into OUT, resuming.

Run as ``python tests/writer_worker.py OUT SHARED COUNT``; prints ``done`` at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from records_factory import make_samples  # noqa: E402

from pvtt.builder.writer import DatasetWriter  # noqa: E402


def main(out: str, shared: str, count: int) -> None:
    samples = make_samples(Path(shared), count)
    writer = DatasetWriter(out, max_samples=7, commit_interval_s=0.05)
    done = writer.open()
    for sample in samples:
        if sample.pair.pair_id not in done:
            writer.write(sample)
    writer.close()
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
