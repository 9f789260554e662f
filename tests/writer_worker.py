"""A writer process for the kill tests: writes ``count`` samples into OUT, resuming.

Run as ``python tests/writer_worker.py OUT SHARED COUNT [RANK WORLD]``; with a rank, it
writes the samples of every WORLD-th clip from RANK as that rank of a multi-rank build, and the
product rows as rank 0. Prints ``done`` at the end.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from records_factory import make_samples  # noqa: E402

from pvtt.builder.writer import DatasetWriter  # noqa: E402


def main(out: str, shared: str, count: int, rank: int = 0, world: int = 1) -> None:
    samples = make_samples(Path(shared), count, build_id="fixed")
    writer = DatasetWriter(out, max_samples=7, commit_interval_s=0.05, rank=rank,
                           world_size=world, build_id="fixed")
    done = writer.open()
    if world > 1:
        if rank == 0:
            for product in {s.product.image_id: s.product for s in samples}.values():
                writer.write_product(product)
        clips = sorted({s.clip.clip_id for s in samples})  # partitioned by clip, as builds are
        samples = [s for s in samples if clips.index(s.clip.clip_id) % world == rank]
    die_after = int(os.environ.get("PVTT_TEST_DIE_AFTER", "-1"))
    for written, sample in enumerate(s for s in samples if s.pair.pair_id not in done):
        if written == die_after:  # a deterministic crash for the tests
            os.kill(os.getpid(), signal.SIGKILL)
        writer.write(sample)
    writer.close()
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *map(int, sys.argv[4:6]))
