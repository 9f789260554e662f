"""``pvtt preview``: mp4, gif and png previews decode back with five panels per row."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from records_factory import FRAMES, SIZE, make_samples

from pvtt.builder.writer import DatasetWriter
from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.store import open_dataset
from pvtt.tools import preview
from pvtt.tools.cli import main

HEIGHT = 54  # the records factory's clips are 96 x 54, so panels are 96 wide
WIDTH = SIZE[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("preview") / "out"
    with DatasetWriter(out, max_samples=10, include_masks=True) as writer:
        for sample in make_samples(shared_data, 24):
            writer.write(sample)
    return out


@pytest.fixture(scope="module")
def tar_only(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("preview-tar") / "out"
    with DatasetWriter(out, formats=("tar",), max_samples=10) as writer:
        for sample in make_samples(shared_data, 4):
            writer.write(sample)
    return out


def _first_pair(out: Path) -> str:
    rows = select_pairs(open_dataset(out), PairFilter.make(passed=None), limit=1)
    return rows.column("pair_id")[0].as_py()


def _mp4_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _panel_means(image: np.ndarray, top: int, bottom: int) -> list[float]:
    """Mean brightness of each of the five panels between rows ``top`` and ``bottom``."""
    return [float(image[top:bottom, i * WIDTH : (i + 1) * WIDTH].mean()) for i in range(5)]


def test_mp4_has_five_panels_caption_and_every_frame(built: Path, tmp_path: Path) -> None:
    pid = _first_pair(built)
    target = tmp_path / "p.mp4"
    assert main(["preview", str(built), pid, "-o", str(target), "--height", str(HEIGHT)]) == 0
    frames = _mp4_frames(target)
    assert len(frames) == FRAMES
    assert frames.shape[2] == 5 * WIDTH
    assert frames.shape[1] > HEIGHT + 30  # the caption strip sits under the panels
    # the synthesized clip is the source at half brightness; the background equals the source
    src, _, bg, synth, _ = _panel_means(frames[0], 16, HEIGHT)
    assert synth == pytest.approx(src / 2, rel=0.15)
    assert bg == pytest.approx(src, rel=0.05)


def test_default_output_is_pair_id_mp4_in_cwd(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = _first_pair(built)
    monkeypatch.chdir(tmp_path)
    assert main(["preview", str(built), pid, "--height", str(HEIGHT)]) == 0
    assert (tmp_path / f"{pid}.mp4").stat().st_size > 0


def test_gif_decodes_with_five_panels(built: Path, tmp_path: Path) -> None:
    target = tmp_path / "p.gif"
    pid = _first_pair(built)
    fps = (
        select_pairs(
            open_dataset(built),
            PairFilter.make(passed=None, where=f"pair_id = '{pid}'"),
            columns=["fps"],
        )
        .column("fps")[0]
        .as_py()
    )
    step = math.ceil(fps / 10)  # a gif shows at most 10 frames/s
    assert main(["preview", str(built), pid, "-o", str(target), "--height", str(HEIGHT)]) == 0
    with Image.open(target) as gif:
        assert gif.size[0] == 5 * WIDTH
        assert gif.n_frames == len(range(0, FRAMES, step))
        assert gif.info["duration"] == pytest.approx(1000 * step / fps, abs=10)
        first = np.asarray(gif.convert("RGB"))
    assert first[:HEIGHT].mean() > 20


def test_png_contact_sheet_rows_are_frames(built: Path, tmp_path: Path) -> None:
    target = tmp_path / "sheet.png"
    assert (
        main(
            [
                "preview",
                str(built),
                _first_pair(built),
                "-o",
                str(target),
                "--height",
                str(HEIGHT),
                "--frames",
                "3",
            ]
        )
        == 0
    )
    sheet = np.asarray(Image.open(target).convert("RGB"))
    assert sheet.shape[1] == 5 * WIDTH
    caption = preview.caption_strip(5 * WIDTH, ["", "", ""]).shape[0]
    assert sheet.shape[0] == 3 * HEIGHT + caption  # three frame rows, one caption
    # the mask panel is tinted red inside the factory's mask box (rows 10:30, cols 20:50)
    mask_panel = sheet[12:28, WIDTH + 24 : WIDTH + 46].astype(int)
    source_panel = sheet[12:28, 24:46].astype(int)
    assert (mask_panel[..., 0] - mask_panel[..., 2]).mean() > (
        source_panel[..., 0] - source_panel[..., 2]
    ).mean() + 30


def test_bad_pair_id_is_a_clear_error(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["preview", str(built), "no-such-pair", "-o", str(tmp_path / "x.mp4")]) == 1
    err = capsys.readouterr().err
    assert "no-such-pair" in err and "no pair" in err
    assert not (tmp_path / "x.mp4").exists()


def test_filtered_grid_of_four_expert_pairs(built: Path, tmp_path: Path) -> None:
    expert = select_pairs(open_dataset(built), PairFilter.make(difficulty="expert"))
    assert expert.num_rows >= 4, "the fixture must hold four passed expert pairs"
    target = tmp_path / "grid.png"
    args = [
        "preview",
        str(built),
        "--difficulty",
        "expert",
        "--n",
        "4",
        "-o",
        str(target),
        "--height",
        str(HEIGHT),
        "--frames",
        "2",
    ]
    assert main(args) == 0
    grid = np.asarray(Image.open(target).convert("RGB"))
    single = tmp_path / "one.png"
    pid = expert.column("pair_id")[0].as_py()
    assert (
        main(
            [
                "preview",
                str(built),
                pid,
                "-o",
                str(single),
                "--height",
                str(HEIGHT),
                "--frames",
                "2",
            ]
        )
        == 0
    )
    cell = np.asarray(Image.open(single).convert("RGB"))
    assert grid.shape[1] == 5 * WIDTH
    assert grid.shape[0] == 4 * cell.shape[0] + 3 * 4  # four cells, 4 px gaps
    assert np.array_equal(grid[: cell.shape[0]], cell)


def test_tar_only_marks_missing_background_and_masks(tar_only: Path, tmp_path: Path) -> None:
    target = tmp_path / "tar.png"
    assert (
        main(
            [
                "preview",
                str(tar_only),
                _first_pair(tar_only),
                "-o",
                str(target),
                "--height",
                str(HEIGHT),
                "--frames",
                "1",
            ]
        )
        == 0
    )
    sheet = np.asarray(Image.open(target).convert("RGB"))
    src, masks, bg, synth, cut = _panel_means(sheet, 16, HEIGHT)
    na = preview.unavailable(1, HEIGHT, WIDTH)[0, 16:].mean()
    assert masks == pytest.approx(na, abs=1) and bg == pytest.approx(na, abs=1)
    assert abs(src - na) > 5 and abs(synth - na) > 5 and cut != pytest.approx(na, abs=1)


def test_unknown_extension_and_filters_with_pair_id_fail(built: Path, tmp_path: Path) -> None:
    assert main(["preview", str(built), "x", "-o", str(tmp_path / "x.avi")]) == 1
    assert main(["preview", str(built), "x", "--difficulty", "easy"]) == 1


def test_grid_holds_last_frame_and_pads_to_largest() -> None:
    a = np.full((3, 4, 6, 3), 10, np.uint8)
    b = np.full((1, 2, 6, 3), 200, np.uint8)
    out = preview.grid([a, b], gap=2)
    assert out.shape == (3, 10, 6, 3)
    assert (out[2, 6:, :, :] != 0).any() and (out[2, 7:9] == 200).all()
