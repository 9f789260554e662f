"""The command adapter, driving a fake research tool: a Python script run like a checkout's.

The fake tool inverts the frames inside the masks (an "inpainter") or fills the boxes
with the reference's mean colour (an "inserter"), so every answer is known exactly;
its other modes fail the ways real tools do.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pvtt.builder.backends.command_adapter import (
    CommandError,
    CommandInpainter,
    CommandInserter,
    CommandSpec,
)
from pvtt.builder.registry import create_backend
from pvtt.builder.stages.protocols import Inpainter, Inserter, InsertionInput, StageRejected
from pvtt.schemas.config import BackendConfig, ConfigError

TOOL = r"""
import json, os, subprocess, sys, time
from pathlib import Path

args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
mode = args["--mode"]
print("fake tool starting", mode, flush=True)
if mode == "sleep":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    Path(args["--pid-file"]).write_text(str(child.pid))
    time.sleep(120)
if mode == "fail":
    print("loading weights from ./weights/model.pth", file=sys.stderr)
    print("RuntimeError: CUDA out of memory", file=sys.stderr)
    sys.exit(3)
if mode == "nothing":
    sys.exit(0)
import cv2  # after the failure modes, so that the timeout's child starts at once
import numpy as np
assert Path.cwd() == Path(args["--expect-cwd"]), (Path.cwd(), args["--expect-cwd"])
assert os.environ["FAKE_TOOL_FLAG"] == "on"
if "--frames" in args:
    names = sorted(os.listdir(args["--frames"]))
    frames = [cv2.imread(os.path.join(args["--frames"], n))[..., ::-1] for n in names]
else:
    cap = cv2.VideoCapture(args["--video"])
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image[..., ::-1])
masks = [cv2.imread(os.path.join(args["--masks"], n), cv2.IMREAD_GRAYSCALE) > 127
         for n in sorted(os.listdir(args["--masks"]))]
out = []
if "--reference" in args:
    ref = cv2.imread(args["--reference"], cv2.IMREAD_UNCHANGED)
    assert ref.shape[2] == 4
    colour = ref[..., :3][ref[..., 3] > 128].mean(axis=0)[::-1].round().astype(np.uint8)
    boxes = json.loads(Path(args["--boxes"]).read_text())
    assert len(boxes) == len(frames)
    for frame, box in zip(frames, boxes):
        frame = frame.copy()
        if box is not None:
            x0, y0, x1, y1 = (round(v) for v in box)
            frame[y0:y1, x0:x1] = colour
        out.append(frame)
    assert int(args["--seed"]) == 5
else:
    for frame, mask in zip(frames, masks):
        frame = frame.copy()
        frame[mask] = 255 - frame[mask]
        out.append(frame)
if mode == "short":
    out = out[:-1]
if mode == "crop":
    out = [f[:-8] for f in out]
if "--out-video" in args:
    from pvtt.builder.video import write_mp4
    Path(args["--out-video"]).parent.mkdir(parents=True, exist_ok=True)
    write_mp4(args["--out-video"], np.stack(out), float(args["--fps"]), crf=0)
else:
    target = Path(args["--out-dir"])
    target.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(out):  # unpadded names: 10.png must sort after 9.png
        cv2.imwrite(str(target / f"{t}.png"), frame[..., ::-1])
"""

T, H, W = 12, 48, 64


@pytest.fixture(scope="module")
def tool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake tool, in a checkout whose path has spaces and quotes."""
    checkout = tmp_path_factory.mktemp("tools") / 'my "research" tool\'s checkout'
    checkout.mkdir()
    script = checkout / "infer video.py"
    script.write_text(TOOL)
    return script


def _spec(tool: Path, mode: str, *extra: str, **settings) -> CommandSpec:
    command = [
        sys.executable, str(tool), "--mode", mode, "--expect-cwd", str(tool.parent),
        "--masks", "{masks_dir}", *extra,
    ]  # fmt: skip
    settings.setdefault("env", {"FAKE_TOOL_FLAG": "on"})
    return CommandSpec(command=command, cwd=str(tool.parent), **settings)


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, np.ndarray]:
    """Smooth frames (so an mp4 keeps them nearly intact) and a moving square mask."""
    ys, xs = np.mgrid[0:H, 0:W]
    frames = np.empty((T, H, W, 3), np.uint8)
    masks = np.zeros((T, H, W), bool)
    for t in range(T):
        frames[t, ..., 0] = 40 + 2 * xs + t
        frames[t, ..., 1] = 60 + 3 * ys
        frames[t, ..., 2] = 100 + t * 5
        masks[t, 10:26, 4 + 3 * t : 20 + 3 * t] = True
    return frames, masks


def _inverted(frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    out = frames.copy()
    out[masks] = 255 - out[masks]
    return out


def test_frames_mode_reads_the_tools_frames_in_order(tool: Path, clip) -> None:
    frames, masks = clip
    backend = CommandInpainter(
        _spec(tool, "ok", "--frames", "{frames_dir}", "--out-dir", "{output_dir}")
    )
    assert isinstance(backend, Inpainter)
    out = backend.inpaint(frames, masks)
    assert np.array_equal(out, _inverted(frames, masks))


def test_video_mode_and_a_result_path_template(tool: Path, clip) -> None:
    frames, masks = clip
    spec = _spec(
        tool, "ok", "--video", "{video}", "--fps", "{fps}",
        "--out-video", "{output_dir}/sub dir/result.mp4",
        output="video", result="{output_dir}/sub dir/result.mp4",
    )  # fmt: skip
    backend = CommandInpainter(spec, fps=25.0)
    out = backend.inpaint(frames, masks)
    expected = _inverted(frames, masks).astype(int)
    assert np.abs(out - expected).mean() < 4  # two lossy H.264 passes
    for t in range(T):  # each frame is the closest to its own expectation: order kept
        errors = np.abs(out[t] - expected).mean(axis=(1, 2, 3))
        assert errors.argmin() == t, errors


def test_inserter_gets_reference_boxes_and_seed(tool: Path, clip) -> None:
    frames, _ = clip
    cutout = np.zeros((30, 20, 4), np.uint8)
    cutout[5:25, 4:16] = (200, 30, 90, 255)  # transparent margin: trimmed away
    boxes = np.array([[4 + t, 8, 24 + t, 30] for t in range(T)], np.float32)
    boxes[3] = np.nan
    spec = _spec(
        tool, "ok", "--frames", "{frames_dir}", "--reference", "{reference}",
        "--boxes", "{boxes}", "--seed", "{seed}", "--out-dir", "{output_dir}",
    )  # fmt: skip
    backend = CommandInserter(spec)
    assert isinstance(backend, Inserter)
    out = backend.insert(InsertionInput(background=frames, cutout=cutout, boxes=boxes, seed=5))
    expected = frames.copy()
    for t in range(T):
        if t != 3:
            expected[t, 8:30, 4 + t : 24 + t] = (200, 30, 90)
    assert np.array_equal(out, expected)


def test_registry_builds_it_from_a_config(tool: Path, clip) -> None:
    frames, masks = clip
    spec = _spec(tool, "ok", "--frames", "{frames_dir}", "--out-dir", "{output_dir}")
    params = {"command": spec.command, "cwd": spec.cwd, "env": spec.env, "timeout_s": 60}
    config = BackendConfig(backend="command", model="fake@1", params=params)
    backend = create_backend("inpainter", config)
    assert backend.info.model == "fake@1"
    assert backend.info.params["command"] == spec.command
    assert np.array_equal(backend.inpaint(frames[:2], masks[:2]), _inverted(frames[:2], masks[:2]))


def test_non_zero_exit_shows_the_status_and_stderr(tool: Path, clip) -> None:
    backend = CommandInpainter(_spec(tool, "fail", "--out-dir", "{output_dir}"))
    with pytest.raises(CommandError, match="exited with status 3") as info:
        backend.inpaint(*clip)
    assert "CUDA out of memory" in str(info.value) and "loading weights" in str(info.value)
    assert shlex.quote(str(tool)) in str(info.value)  # the command, quoted for a shell


def test_timeout_kills_the_tools_whole_process_group(tool: Path, clip, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    backend = CommandInpainter(_spec(tool, "sleep", "--pid-file", str(pid_file), timeout_s=3.0))
    started = time.monotonic()
    with pytest.raises(CommandError, match="timed out after 3 s"):
        backend.inpaint(*clip)
    assert time.monotonic() - started < 20
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the tool's own child process outlived the timeout"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(")")[-1].split()[0] == "Z")


def test_missing_short_and_resized_results(tool: Path, clip) -> None:
    frames, masks = clip
    nothing = CommandInpainter(_spec(tool, "nothing", "--out-dir", "{output_dir}"))
    with pytest.raises(CommandError, match="wrote no frames into .*output"):
        nothing.inpaint(frames, masks)
    short = CommandInpainter(
        _spec(tool, "short", "--frames", "{frames_dir}", "--out-dir", "{output_dir}")
    )
    with pytest.raises(CommandError, match="has 11 frames, the clip has 12"):
        short.inpaint(frames, masks)
    cropped = _spec(tool, "crop", "--frames", "{frames_dir}", "--out-dir", "{output_dir}")
    with pytest.raises(CommandError, match="frame 0 .* is 64x40, the clip is 64x48"):
        CommandInpainter(cropped).inpaint(frames, masks)
    scaled = CommandInpainter(CommandSpec(**{**cropped.__dict__, "resize_output": True})).inpaint(
        frames, masks
    )
    assert scaled.shape == frames.shape


def test_on_error_reject_turns_failures_into_rejections(tool: Path, clip) -> None:
    backend = CommandInpainter(_spec(tool, "fail", "--out-dir", "{output_dir}", on_error="reject"))
    with pytest.raises(StageRejected, match="status 3"):
        backend.inpaint(*clip)


def test_templates_are_checked_when_built(tool: Path) -> None:
    with pytest.raises(ConfigError, match="unknown placeholders \\['frame_dir'\\]"):
        CommandInpainter(CommandSpec(command=["x", "{frame_dir}"]))
    with pytest.raises(
        ConfigError, match="unknown placeholders \\['reference'\\] for the inpainter"
    ):
        CommandInpainter(CommandSpec(command=["x", "{reference}"]))
    with pytest.raises(ConfigError, match="not a placeholder name"):
        CommandInpainter(CommandSpec(command=["x", "{frames_dir.__class__}"]))
    with pytest.raises(ConfigError, match="cwd: .* is not a folder"):
        CommandInserter(CommandSpec(command=["x"], cwd=str(tool)))
    with pytest.raises(ConfigError, match="params.command is required"):
        create_backend("inserter", BackendConfig(backend="command"))
    with pytest.raises(ConfigError, match="unexpected keyword argument 'comand'"):
        create_backend(
            "inserter", BackendConfig(backend="command", params={"command": ["x"], "comand": 1})
        )


def test_a_missing_executable_is_named(clip) -> None:
    backend = CommandInpainter(CommandSpec(command=["/no/such/python", "{frames_dir}"]))
    with pytest.raises(CommandError, match="cannot start /no/such/python"):
        backend.inpaint(*clip)


def test_boxes_json_is_null_where_a_frame_has_no_box(tool: Path, clip, tmp_path: Path) -> None:
    frames, masks = clip
    masks = masks.copy()
    masks[2] = False
    copy = [sys.executable, "-c",
            "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2]); "
            "shutil.copytree(sys.argv[3], sys.argv[4], dirs_exist_ok=True)",
            "{boxes}", str(tmp_path / "boxes.json"), "{frames_dir}", "{output_dir}"]  # fmt: skip
    out = CommandInpainter(CommandSpec(command=copy)).inpaint(frames, masks)
    assert np.array_equal(out, frames)  # PNG frames go through losslessly
    boxes = json.loads((tmp_path / "boxes.json").read_text())
    assert boxes[2] is None and boxes[0] == [4.0, 10.0, 20.0, 26.0]
