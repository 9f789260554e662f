"""The shot stage against PySceneDetect's goldens and PySceneDetect itself, and `pvtt shots`."""

from __future__ import annotations

import json
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import av
import numpy as np
import pytest
from scenedetect import AdaptiveDetector, ContentDetector, SceneManager, open_video

from pvtt.builder.stages.shots import Shot, ShotConfig, ShotList, detect_shots, filter_shots
from pvtt.builder.video import VideoError, probe, read_frames
from pvtt.tools.cli import main

DETECTOR_NAMES = {"ContentDetector": "content", "AdaptiveDetector": "adaptive"}


def pyscenedetect_scenes(path: Path, detector: object) -> list[tuple[int, int, float, float]]:
    """The scene list PySceneDetect itself reports, as its documentation shows calling it."""
    video = open_video(str(path), backend="pyav")
    manager = SceneManager()
    manager.add_detector(detector)
    manager.detect_scenes(video)
    scenes = manager.get_scene_list(start_in_scene=True)
    return [(s.frame_num, e.frame_num, s.seconds, e.seconds) for s, e in scenes]


def as_tuples(shots: list[Shot]) -> list[tuple[int, int, float, float]]:
    return [(s.start_frame, s.end_frame, s.start_time, s.end_time) for s in shots]


@pytest.fixture(scope="module")
def issue195(shared_data: Path) -> tuple[Path, ShotList]:
    path = shared_data / "pyscenedetect/issue-195-aspect-ratio.mp4"
    return path, detect_shots(path)


def golden_cases(shared_data: Path) -> list[tuple[Path, str, float | None]]:
    cases = []
    for golden in sorted((shared_data / "pyscenedetect/goldens").glob("counter.mp4.*.json")):
        _, _, detector, setting, _ = golden.name.split(".")
        if detector in DETECTOR_NAMES:
            threshold = None if setting == "default" else float(setting.removeprefix("t"))
            cases.append((golden, DETECTOR_NAMES[detector], threshold))
    return cases


def test_counter_matches_pyscenedetect_goldens(shared_data: Path) -> None:
    video = shared_data / "pyscenedetect/counter.mp4"
    cases = golden_cases(shared_data)
    assert {(d, t) for _, d, t in cases} == {
        ("content", None),
        ("content", 30.0),
        ("adaptive", None),
        ("adaptive", 5.0),
    }
    for golden, detector, threshold in cases:
        expected = json.loads(golden.read_text())["cuts"]
        shot_list = detect_shots(video, ShotConfig(detector=detector, threshold=threshold))
        cuts = [shot.start_frame for shot in shot_list.shots[1:]]
        assert cuts == expected, golden.name
        # Shots tile the whole video.
        assert shot_list.shots[0].start_frame == 0 and shot_list.shots[-1].end_frame == 30
        assert shot_list.frame_count == 30 and shot_list.fps == 10.0
    adaptive = detect_shots(video, ShotConfig(detector="adaptive"))
    assert as_tuples(adaptive.shots) == [(0, 20, 0.0, 2.0), (20, 30, 2.0, 3.0)]


def test_no_cut_is_one_shot_and_filtered(shared_data: Path) -> None:
    shot_list = detect_shots(shared_data / "pyscenedetect/counter.mp4")
    assert len(shot_list.shots) == 1
    shot = shot_list.shots[0]
    assert (shot.start_frame, shot.end_frame, shot.duration_s) == (0, 30, 3.0)
    assert not shot.kept and shot.reason == "fewer than 50 frames (30)"
    assert shot_list.kept == []


def test_issue195_equals_pyscenedetect(issue195: tuple[Path, ShotList]) -> None:
    path, shot_list = issue195
    direct = pyscenedetect_scenes(path, ContentDetector())
    assert len(direct) > 3  # a real multi-shot video
    assert as_tuples(shot_list.shots) == direct
    assert shot_list.frame_count == 628 and shot_list.fps == 25.0
    for earlier, later in pairwise(shot_list.shots):
        assert earlier.end_frame == later.start_frame


def test_issue195_shots_decode_to_their_own_pictures(issue195: tuple[Path, ShotList]) -> None:
    """A shot's first frame read back is the detector's cut frame, not the one before it."""
    path, shot_list = issue195
    shot = shot_list.shots[3]
    frames, _ = read_frames(path, shot.start_frame - 1, shot.start_frame + 1, max_size=(128, 72))
    change = np.abs(frames[1].astype(int) - frames[0].astype(int)).mean()
    assert change > 20


def test_filter_reasons_and_json_contract(issue195: tuple[Path, ShotList]) -> None:
    _, shot_list = issue195
    strict = filter_shots(shot_list.shots, ShotConfig(min_duration_s=3.0, min_frames=110))
    verdicts = [(s.frame_count, s.kept, s.reason) for s in strict]
    assert verdicts[0] == (70, False, "shorter than 3.0 s (2.8 s); fewer than 110 frames (70)")
    assert verdicts[1] == (100, False, "fewer than 110 frames (100)")
    assert verdicts[2] == (131, True, None)
    short = Shot(0, 40, 0.0, 1.6)
    assert filter_shots([short], ShotConfig(min_frames=10))[0].reason == (
        "shorter than 2.0 s (1.6 s)"
    )
    blob = json.loads(json.dumps(shot_list.to_json()))
    assert set(blob) == {"video", "fps", "frame_count", "shots"}
    assert set(blob["shots"][0]) == {
        "start_frame",
        "end_frame",
        "start_time",
        "end_time",
        "kept",
        "reason",
    }


def test_variable_frame_rate_shots_match_pyscenedetect(tmp_path: Path) -> None:
    """Irregular timestamps: cut frame numbers are PySceneDetect's, and decode to the cut."""
    rng = np.random.default_rng(0)
    gaps = rng.choice([20, 40, 60, 100], size=60)
    pts = np.concatenate([[0], np.cumsum(gaps)[:-1]]).tolist()
    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "10"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for index, stamp in enumerate(pts):
            shade = (30, 30, 200) if index < 31 else (220, 200, 20)
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), shade, np.uint8), "rgb24")
            frame.pts, frame.time_base = stamp, Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    info = probe(path)
    assert info.average_rate != Fraction(25)  # really variable
    shot_list = detect_shots(path, ShotConfig(detector="content"))
    assert as_tuples(shot_list.shots) == pyscenedetect_scenes(path, ContentDetector())
    assert len(shot_list.shots) == 2
    cut = shot_list.shots[1]
    assert cut.start_time == pytest.approx(pts[31] / 1000)
    frames, _ = read_frames(path, cut.start_frame - 1, cut.start_frame + 1, fps=info.frame_rate)
    assert frames[0, 24, 32, 2] > 150 and frames[1, 24, 32, 2] < 100  # blue, then yellow


def test_adaptive_matches_pyscenedetect_on_issue195(issue195: tuple[Path, ShotList]) -> None:
    path, _ = issue195
    shot_list = detect_shots(path, ShotConfig(detector="adaptive", min_scene_len=20))
    direct = pyscenedetect_scenes(path, AdaptiveDetector(min_scene_len=20))
    assert as_tuples(shot_list.shots) == direct


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="detector"):
        ShotConfig(detector="hash")
    with pytest.raises(ValueError, match="threshold"):
        ShotConfig(threshold=0)


def test_cli_json(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = shared_data / "pyscenedetect/counter.mp4"
    assert main(["shots", str(video), "--json", "--detector", "adaptive"]) == 0
    blob = json.loads(capsys.readouterr().out)
    assert blob["video"] == str(video) and blob["frame_count"] == 30
    assert [(s["start_frame"], s["end_frame"]) for s in blob["shots"]] == [(0, 20), (20, 30)]
    assert blob["shots"][1]["reason"] == "shorter than 2.0 s (1.0 s); fewer than 50 frames (10)"
    assert main(["shots", str(video), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["shots"]) == 1


def test_cli_table_and_errors(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = shared_data / "pyscenedetect/counter.mp4"
    assert main(["shots", str(video), "--detector", "adaptive", "--min-frames", "15"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "2 shots, 1 kept" in table[0]
    assert table[2].split()[:4] == ["0", "0-20", "20", "0.000-2.000"] and table[2].endswith("yes")
    assert "shorter than 2.0 s (1.0 s)" in table[3]
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 4096)
    assert main(["shots", str(bad)]) == 1
    captured = capsys.readouterr()
    assert str(bad) in captured.err and captured.out == ""
    with pytest.raises(VideoError, match="no such file"):
        detect_shots(tmp_path / "missing.mp4")
