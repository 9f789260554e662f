"""Pairs made in worker processes: the same records as in-process, rejects and errors come
back, timings reach the report, and every shared segment is gone afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import replace
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import numpy as np
import pytest

from pvtt.builder.catalog import Product
from pvtt.builder.clips import ClipArtefacts
from pvtt.builder.pair_pool import (
    EncodeStage,
    ProcessPairPool,
    ThreadPairPool,
    attach_arrays,
    pair_seed,
    share_arrays,
)
from pvtt.builder.pairs import ImageRef, PairPlan
from pvtt.builder.products import ProductArtefacts
from pvtt.builder.registry import create_backend
from pvtt.builder.report import BuildReport
from pvtt.builder.stages.dedup import Fingerprint
from pvtt.builder.stages.protocols import StageRejected
from pvtt.builder.stages.shots import Shot
from pvtt.builder.synthesis import SynthesizedPair, encode_pair, make_pair, synthesize_pair
from pvtt.schemas.config import BuildConfig
from pvtt.schemas.keys import pair_id
from pvtt.schemas.records import PairRecord
from pvtt.schemas.taxonomy import Difficulty

FRAMES, HEIGHT, WIDTH = 12, 48, 64


def _product(pid: str) -> Product:
    return Product(
        pid,
        "Jewelry",
        "ring",
        Path(f"/nowhere/{pid}.mp4"),
        (Path(f"/nowhere/{pid}.png"),),
        None,
        None,
        0,
    )


def _clip(clip_id: str, boxes: np.ndarray) -> ClipArtefacts:
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    masks = np.zeros((FRAMES, HEIGHT, WIDTH), dtype=np.uint8)
    masks[:, 10:30, 20:40] = 1
    return ClipArtefacts(
        clip_id=clip_id,
        product=_product("src"),
        shot_index=0,
        shot=Shot(0, FRAMES, 0.0, 0.5),
        frames=frames,
        fps=24.0,
        masks=masks,
        boxes=boxes,
        background=frames[:, ::-1].copy(),
        source_video=b"source",
        background_video=b"background",
        masks_bytes=b"masks",
        detection={"frame_index": 0, "box": [20.0, 10.0, 40.0, 30.0]},
    )


def _cutout() -> ProductArtefacts:
    cutout = np.zeros((20, 16, 4), dtype=np.uint8)
    cutout[2:18, 2:14] = (200, 40, 40, 255)
    target = _product("tgt")
    return ProductArtefacts(
        ref=ImageRef(target, target.images[0], "tgt-1", 0),
        image_bytes=b"photo",
        width=16,
        height=20,
        cutout=cutout,
        cutout_png=b"png",
        aspect=16 / 20,
        completeness=1.0,
        fingerprint=Fingerprint(0, (0,) * 48),
    )


def _plan(clip: ClipArtefacts, product: ProductArtefacts) -> PairPlan:
    ref = product.ref
    return PairPlan(
        pair_id(clip.clip_id, ref.product.id, ref.token),
        clip.clip_id,
        clip.product,
        ref,
        Difficulty.HARD,
    )


def _in_process(
    plan: PairPlan, clip: ClipArtefacts, product: ProductArtefacts, config: BuildConfig
) -> object:
    try:
        return make_pair(
            plan,
            clip,
            product,
            create_backend("inserter", config.inserter),
            create_backend("scorer", config.scorer),
            config,
            BuildReport(),
            build_id="b",
            backends_json="{}",
            seed=pair_seed(plan.pair_id, config),
            target_image="images/tgt-1.png",
        )
    except StageRejected as exc:
        return exc


def _gone(name: str) -> bool:
    try:
        SharedMemory(name=name).close()
    except FileNotFoundError:
        return True
    return False


def test_shared_arrays_round_trip() -> None:
    arrays = {
        "a": np.arange(10, dtype=np.uint8),
        "b": np.ones((3, 5), np.float64),
        "c": np.full((2, 2, 2), np.nan, np.float32),
    }
    shm, handle = share_arrays(arrays)
    try:
        other, views = attach_arrays(handle)
        for key, array in arrays.items():
            np.testing.assert_array_equal(views[key], array)
            assert views[key].dtype == array.dtype and not views[key].flags.writeable
            assert views[key].ctypes.data % 64 == 0
        views.clear()
        other.close()
    finally:
        shm.close()
        shm.unlink()
    assert _gone(handle.name)


def test_process_workers_make_the_in_process_pairs() -> None:
    config = BuildConfig()
    track = np.tile(np.array([20.0, 10.0, 40.0, 30.0]), (FRAMES, 1))
    good, lost = _clip("src_s000", track), _clip("src_s001", np.full((FRAMES, 4), np.nan))
    product = _cutout()
    plans = [(_plan(good, product), good), (_plan(lost, product), lost)]
    report = BuildReport()
    with ProcessPairPool(
        2,
        config,
        report,
        build_id="b",
        backends_json="{}",
        products={"tgt__tgt-1": product},
        target_images={"tgt__tgt-1": "images/tgt-1.png"},
    ) as pool:
        assert len(pool._executor._processes) == 2  # started with the pool, before any pair
        futures = [pool.submit(plan, clip) for plan, clip in plans]
        segments = [h.name for _, h in [*pool._clips.values(), *pool._cutouts.values()]]
        for _, clip in plans:
            pool.clip_submitted(clip.clip_id)
        made = [f.result(timeout=120) for f in futures]
    expected = [_in_process(plan, clip, product, config) for plan, clip in plans]
    assert isinstance(made[0], PairRecord) and isinstance(expected[0], PairRecord)
    # every field, the encoded clip's bytes included, but the time it was made
    assert replace(made[0], created_at=expected[0].created_at) == expected[0]
    assert isinstance(made[1], StageRejected) and made[1].reason == expected[1].reason
    assert report.calls["insert"] == 2 and report.calls["score"] == 2
    assert report.calls["encode"] == 1 and report.seconds["encode"] > 0
    assert len(segments) == 3 and all(_gone(name) for name in segments)
    assert good.frames.flags.writeable and good.source_video == b"source"  # the caller's own


def test_a_worker_error_reaches_the_caller() -> None:
    config = BuildConfig()
    clip = _clip("src_s000", np.tile(np.array([20.0, 10.0, 40.0, 30.0]), (FRAMES, 1)))
    clip.background = clip.background[:, :, :, :2]  # two channels: the inserter refuses it
    product = _cutout()
    with ProcessPairPool(
        1,
        config,
        BuildReport(),
        build_id="b",
        backends_json="{}",
        products={"tgt__tgt-1": product},
        target_images={"tgt__tgt-1": "images/tgt-1.png"},
    ) as pool:
        future = pool.submit(_plan(clip, product), clip)
        pool.clip_submitted(clip.clip_id)
        with pytest.raises(Exception) as caught:
            future.result(timeout=120)
    assert not isinstance(caught.value, StageRejected)


def test_pair_pool_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from pvtt.tools.bench.pair_pool import run

    figures = run(quick=True, rounds=1, workers=2, strategy="single")
    assert figures["same_output"] is True
    assert all(len(runs) == 1 and runs[0]["pairs"] > 0 for runs in figures["runs"].values())
    assert figures["processes_over_threads"] > 0
    assert "processes / threads" in capsys.readouterr().out


KILLED_BUILD = """
import json, sys, time
import numpy as np
sys.path.insert(0, {tests!r})
from test_pair_pool import FRAMES, _clip, _cutout, _plan
from pvtt.builder.pair_pool import ProcessPairPool
from pvtt.builder.report import BuildReport
from pvtt.schemas.config import BuildConfig

if __name__ == "__main__":
    clip = _clip("src_s000", np.tile(np.array([20.0, 10.0, 40.0, 30.0]), (FRAMES, 1)))
    product = _cutout()
    pool = ProcessPairPool(2, BuildConfig(), BuildReport(), build_id="b", backends_json="{{}}",
                           products={{"tgt__tgt-1": product}},
                           target_images={{"tgt__tgt-1": "images/tgt-1.png"}})
    pool.submit(_plan(clip, product), clip).result(timeout=120)
    names = [h.name for _, h in [*pool._clips.values(), *pool._cutouts.values()]]
    print(json.dumps({{"workers": list(pool._executor._processes), "segments": names}}), flush=True)
    time.sleep(600)
"""


def test_a_killed_build_leaves_no_worker_and_no_segment(tmp_path: Path) -> None:
    """SIGKILL of the build's process: its workers exit (they would wait on their queue
    forever), and with them gone the segments are unlinked."""
    script = tmp_path / "killed_build.py"
    script.write_text(KILLED_BUILD.format(tests=str(Path(__file__).parent)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    started = json.loads(proc.stdout.readline())
    assert len(started["workers"]) >= 1 and len(started["segments"]) == 2
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alive = [pid for pid in started["workers"] if Path(f"/proc/{pid}").exists()]
        left = [name for name in started["segments"] if not _gone(name)]
        if not alive and not left:
            break
        time.sleep(0.1)
    assert not alive, f"workers {alive} outlived the build"
    assert not left, f"segments {left} outlived the build"


def test_encode_threads_take_synthesized_pairs_and_pass_the_rest_through() -> None:
    """With encode threads, a synthesized pair is encoded there; a rejection and an error
    of the pair threads reach the caller as they are."""
    config = BuildConfig()
    track = np.tile(np.array([20.0, 10.0, 40.0, 30.0]), (FRAMES, 1))
    good, lost = _clip("src_s000", track), _clip("src_s001", np.full((FRAMES, 4), np.nan))
    product = _cutout()
    inserter = create_backend("inserter", config.inserter)
    scorer = create_backend("scorer", config.scorer)
    encoded_on: list[str] = []

    def synthesize(plan: PairPlan, clip: ClipArtefacts) -> SynthesizedPair | StageRejected:
        if clip.clip_id == "broken":
            raise RuntimeError("pair thread failed")
        try:
            return synthesize_pair(plan, clip, product, inserter, scorer, config, BuildReport(),
                                   build_id="b", backends_json="{}",
                                   seed=pair_seed(plan.pair_id, config),
                                   target_image="images/tgt-1.png")  # fmt: skip
        except StageRejected as exc:
            return exc

    def encode(made: SynthesizedPair) -> PairRecord:
        encoded_on.append(threading.current_thread().name)
        return encode_pair(made, config, BuildReport())

    def whole(plan: PairPlan, clip: ClipArtefacts) -> PairRecord:
        raise AssertionError("with encode threads, pairs are synthesized, then encoded")

    broken = replace(good, clip_id="broken")
    with ThreadPairPool(2, whole, EncodeStage(1, synthesize, encode)) as pool:
        futures = [pool.submit(_plan(c, product), c) for c in (good, lost, broken)]
        made, rejected = futures[0].result(timeout=120), futures[1].result(timeout=120)
        with pytest.raises(RuntimeError, match="pair thread failed"):
            futures[2].result(timeout=120)
    expected = _in_process(_plan(good, product), good, product, config)
    assert isinstance(made, PairRecord) and isinstance(expected, PairRecord)
    assert replace(made, created_at=expected.created_at) == expected
    assert isinstance(rejected, StageRejected) and "nothing to score" in rejected.reason
    assert encoded_on and all(name.startswith("pvtt-encode") for name in encoded_on)
