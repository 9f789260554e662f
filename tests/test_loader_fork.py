"""DataLoader workers forked after the main process used Lance, and the README's training example.

Lance is not fork-safe once started: before, a script that called ``len(ds)`` (or looked at a
sample, or ran a query) and then iterated a ``DataLoader(num_workers=2)`` with the default
``fork`` start method lost its workers to SIGSEGV about half the time. Now the plan is made
in the parent and workers read with plain file reads: here every worker has Lance disabled
(:func:`_no_lance`), so a worker that touched Lance would fail the test every time, not by
chance. The dataset's cut-outs differ in size, as real product photos do.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import boto3
import lance
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from records_factory import make_samples
from torch.utils.data import DataLoader

from pvtt.builder.writer import DatasetWriter
from pvtt.loaders import PairDataset, lance_blobs
from pvtt.loaders import dataset as dataset_module
from pvtt.loaders.lance_blobs import DEDICATED, INLINE, PACKED, RangeFiles, locate
from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.store import open_dataset

PAIRS = 60
FIELDS = ("synth_video", "source_video", "masks", "target_image", "meta")
README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.filterwarnings("ignore:lance is not fork-safe")  # Lance's, at each fork


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Lance tables and tar shards whose product cut-outs have different sizes."""
    out = tmp_path_factory.mktemp("fork") / "out"
    cutouts: dict[str, bytes] = {}
    with DatasetWriter(out, max_samples=10, include_masks=True) as writer:
        for sample in make_samples(shared_data, PAIRS):
            product = sample.product
            if product.image_id not in cutouts:
                n = len(cutouts)
                rgba = Image.open(io.BytesIO(product.image_rgba)).convert("RGBA")
                cutouts[product.image_id] = _png(rgba.resize((30 + 7 * (n % 5), 20 + 5 * (n % 3))))
            product = dataclasses.replace(product, image_rgba=cutouts[product.image_id])
            writer.write(dataclasses.replace(sample, product=product))
    return out


def _no_lance(_worker: int) -> None:
    """DataLoader ``worker_init_fn``: any use of Lance in this worker raises."""

    def refuse(*_args, **_kwargs):  # noqa: ANN202
        raise AssertionError(f"worker {os.getpid()} used Lance")

    lance.dataset = refuse
    lance.write_dataset = refuse
    for name in ("to_table", "scanner", "read_blobs", "take_blobs", "count_rows", "get_fragments"):
        setattr(lance.LanceDataset, name, refuse)


def _dataset(out: Path | str, fmt: str, **kwargs) -> PairDataset:
    if fmt == "tar":
        kwargs.setdefault("where", "shot_index = 1 OR quality_score >= 0.5")
    return PairDataset(out, format=fmt, fields=FIELDS, num_frames=3, size=(32, 48),
                       target_size=40, passed=None, seed=1, batch_size=4, **kwargs)  # fmt: skip


def _batched_ids(ds: PairDataset, **loader_kwargs) -> list[str]:
    ids = []
    for batch in DataLoader(ds, batch_size=4, **loader_kwargs):
        n = len(batch["meta"]["pair_id"])
        assert batch["synth_video"].shape == (n, 3, 3, 32, 48)
        assert batch["masks"].shape == (n, 3, 32, 48)
        assert batch["target_image"].shape == (n, 4, 40, 40)
        ids += batch["meta"]["pair_id"]
    return ids


def _error_in_a_fork(ds: PairDataset) -> str:
    """What iterating ``ds`` raises in a forked child, as a DataLoader worker would (a
    DataLoader whose workers raised costs 5 s per worker when torch collects it)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave, running nothing of pytest's
        os.close(read)
        try:
            next(iter(ds))
            message = "no error"
        except BaseException as exc:  # noqa: BLE001 - any error is the answer
            message = f"{type(exc).__name__}: {exc}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    return message


@pytest.mark.parametrize("fmt", ["lance", "tar"])
@pytest.mark.parametrize("touch", ["len", "iterate", "query"])
def test_forked_workers_after_the_main_process_used_lance(
    built: Path, fmt: str, touch: str
) -> None:
    ds = _dataset(built, fmt)
    if touch == "len":
        assert len(ds) > 8
    elif touch == "iterate":
        next(iter(ds))
    else:  # Lance used by other code; this dataset is opened only when the workers fork
        assert select_pairs(open_dataset(built), PairFilter(passed=None)).num_rows == PAIRS
    expected = _batched_ids(_dataset(built, fmt))  # in this process, no workers
    got = _batched_ids(ds, num_workers=2, worker_init_fn=_no_lance)  # default start method
    assert got == expected and len(got) == len(set(got))


def test_every_epoch_and_a_resume_reuse_the_plan(built: Path) -> None:
    ds = _dataset(built, "lance")
    full = _batched_ids(ds, num_workers=2, worker_init_fn=_no_lance)
    ds.set_epoch(1)
    second = _batched_ids(ds, num_workers=2, worker_init_fn=_no_lance)
    assert sorted(second) == sorted(full) and second != full
    ds.set_epoch(1)
    state = ds.state_dict(samples_seen=8)
    resumed = _dataset(built, "lance")
    resumed.load_state_dict(state)
    assert len(resumed) > 0  # the main process uses Lance, then forks
    assert _batched_ids(resumed, num_workers=2, worker_init_fn=_no_lance) == second[8:]


def test_media_only_lance_can_read_stop_a_forked_worker_at_once(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storage layout the check does not recognise is read through Lance, in the
    planning process only; a forked worker fails at once with the fix in the message."""
    real = lance_blobs.BlobSpans.span

    def one_byte_off(self: lance_blobs.BlobSpans, slot: int) -> tuple[str, int, int]:
        path, offset, size = real(self, slot)
        return path, offset + 1, size

    monkeypatch.setattr(lance_blobs.BlobSpans, "span", one_byte_off)
    ds = _dataset(built, "lance")
    assert [r for r in ds._ctx().reader.lance_only() if "is not Lance's" in r]
    monkeypatch.undo()
    assert _batched_ids(ds) == _batched_ids(_dataset(built, "lance"))  # through Lance, here
    error = _error_in_a_fork(ds)
    assert re.match(
        r"LanceForkError: .*only be read through Lance.*multiprocessing_context='spawn'", error
    )


def test_a_plan_that_failed_before_the_fork_is_reported_by_the_worker(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning in the fork hook failed (Python drops errors raised there): the worker, which
    must not plan with Lance itself, says so and why."""
    assert select_pairs(open_dataset(built), PairFilter(passed=None)).num_rows == PAIRS

    def unreadable(*_args, **_kwargs):  # noqa: ANN202
        raise ValueError("the pairs table is unreadable")

    monkeypatch.setattr(dataset_module, "select", unreadable)
    ds = _dataset(built, "lance")
    error = _error_in_a_fork(ds)
    assert re.match(
        r"LanceForkError: .*opening it there failed: the pairs table is unreadable", error
    )


def test_plain_reads_of_every_blob_kind(tmp_path: Path) -> None:
    """Inline, packed and dedicated blobs, an empty and a null one, in fragments of two data
    files: located, then read with plain reads, they equal Lance's own read."""
    rng = np.random.default_rng(0)
    values = [rng.bytes(n) for n in (1_000, 80_000, 300_000, 6_000_000)] + [b"", None]
    field = pa.field("b", pa.large_binary(), metadata={"lance-encoding:blob": "true"})
    schema = pa.schema([pa.field("k", pa.string()), field])
    table = pa.table({"k": [str(i) for i in range(len(values))], "b": values}, schema=schema)
    uri = str(tmp_path / "t.lance")
    ds = lance.write_dataset(table, uri, schema=schema, max_rows_per_file=3)
    ds.add_columns({"extra": "k || 'x'"})  # a second data file in each fragment
    assert all(len(f.data_files()) == 2 for f in ds.get_fragments())
    located = locate(ds, uri, ["b"], "k")
    spans = located.columns["b"]
    assert spans.plain, spans.why_not
    assert {INLINE, PACKED, DEDICATED} <= set(spans.kind[spans.data_file >= 0].tolist())
    files = RangeFiles()
    for key, value in enumerate(values):
        slot = located.keys[str(key)]
        assert spans.is_null(slot) == (value is None)
        if value is not None:
            assert files.read(*spans.span(slot)) == value
            ((_address, lance_read),) = ds.read_blobs("b", ids=[int(located.row_ids[slot])])
            assert lance_read == value
    files.close()


def test_readme_training_example_runs(built: Path, tmp_path: Path) -> None:
    """The README's PairDataset example, as a script, against a small dataset: it batches
    cut-outs of different sizes with the default (fork) start method."""
    text = README.read_text()
    section = text[text.index("## Training: `PairDataset`") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 'if __name__ == "__main__":' in code and "multiprocessing_context" not in code
    script = tmp_path / "train.py"
    script.write_text(code.replace("demo-out/dataset", str(built)))
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    epochs = re.findall(r"epoch (\d): (\d+) batches, \((\d+), 16, 3, 216, 384\)", run.stdout)
    assert [e[0] for e in epochs] == ["0", "1"] and all(int(e[1]) > 0 for e in epochs), run.stdout


def test_forked_workers_read_lance_media_over_s3(built: Path, s3_endpoint: str) -> None:
    keys = {"access_key_id": "testing", "secret_access_key": "testing", "region": "us-east-1"}
    client = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")  # fmt: skip
    client.create_bucket(Bucket="pvtt-fork")
    for path in sorted(p for p in built.rglob("*") if p.is_file()):
        client.upload_file(str(path), "pvtt-fork", f"out/{path.relative_to(built).as_posix()}")
    options = {**keys, "endpoint_url": s3_endpoint}
    remote = _dataset("s3://pvtt-fork/out", "lance", storage_options=options)
    assert len(remote) > 8 and remote._ctx().reader.lance_only() == []
    got = _batched_ids(remote, num_workers=2, worker_init_fn=_no_lance)
    assert got == _batched_ids(_dataset(built, "lance"))
