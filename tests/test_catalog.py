"""Catalog reading and checking: every bad case is reported with file, row and column."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from catalog_factory import (
    DEFAULT_PRODUCTS,
    make_catalog,
    video_bytes,
    write_audio_only,
    write_image,
    write_video,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvtt.builder.catalog import CatalogError, Problem, check_catalog, load_catalog
from pvtt.tools.cli import main

GOOD_BEFORE = {"id": "a1", "category": "Jewelry", "subcategory": "necklace"}
GOOD_AFTER = {"id": "b1", "category": "Toys", "subcategory": "doll"}


def check_one_bad_row(
    root: Path, bad: dict, *, check_media: bool = True, row_kept: bool = False
) -> list[str]:
    """Problems of a catalog whose row 3 is ``bad`` between two good rows, which must survive.

    Row 3 is left out exactly when it has problems, unless ``row_kept`` (its problems
    are bad photos beside good ones: only those are left out).
    """
    row = {"id": "bad", "category": "Home", "subcategory": "mug", **bad}
    make_catalog(root, [GOOD_BEFORE, row, GOOD_AFTER], images_per_product=1)
    catalog, problems = check_catalog(root, check_media=check_media)
    kept = [GOOD_BEFORE["id"], GOOD_AFTER["id"]]
    if not problems or row_kept:
        kept.insert(1, row["id"])
    assert [p.id for p in catalog] == kept
    assert all(p.file == "products.csv" and p.row == 3 for p in problems), problems
    return [str(p) for p in problems]


def faststart_mp4(path: Path) -> Path:
    """An mp4 with its index in front, as web videos are: a cut-off copy still opens."""
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as container:
        with av.open(write_video(path.with_suffix(".src.mp4"))) as source:
            stream = container.add_stream_from_template(source.streams.video[0])
            for packet in source.demux(source.streams.video[0]):
                if packet.size:
                    packet.stream = stream
                    container.mux(packet)
    return path


# --- a good catalog ----------------------------------------------------------------------------


def test_good_catalog_reads_every_row(tmp_path: Path) -> None:
    root = make_catalog(tmp_path / "cat")
    catalog, problems = check_catalog(root)
    assert problems == []
    assert catalog.root == root.resolve()
    assert [p.id for p in catalog] == [p["id"] for p in DEFAULT_PRODUCTS]
    assert [p.row for p in catalog] == [2, 3, 4, 5, 6]
    second = catalog.product("necklace-2")
    assert (second.category, second.subcategory) == ("Jewelry", "necklace")  # canonical
    assert second.video == root.resolve() / "videos" / "necklace-2.mp4"
    assert [i.name for i in second.images] == ["necklace-2-0.png", "necklace-2-1.png"]
    assert all(i.is_absolute() and i.is_file() for p in catalog for i in (p.video, *p.images))
    assert catalog.products[0].prompt == "necklace" and second.prompt is None
    assert second.first_frame_box is None
    assert [catalog.difficulty(catalog.products[0], p).value for p in catalog] == [
        "easy",
        "easy",
        "medium",
        "hard",
        "expert",
    ]
    assert load_catalog(root) == catalog
    with pytest.raises(KeyError, match="no product 'nope'"):
        catalog.product("nope")


def test_load_catalog_raises_with_every_problem(tmp_path: Path) -> None:
    root = make_catalog(
        tmp_path / "cat",
        [
            GOOD_BEFORE,
            {"id": "x", "category": "Home", "subcategory": "mug", "video": "a.mp4"},
            {"id": "y", "category": "Home", "subcategory": "mugg"},
        ],
        images_per_product=1,
    )
    with pytest.raises(CatalogError) as info:
        load_catalog(root)
    assert len(info.value.problems) == 2
    message = str(info.value)
    assert f"catalog {root.resolve()} has 2 problems" in message
    assert "products.csv:3: video: file not found: a.mp4" in message
    assert "products.csv:4: subcategory: unknown subcategory 'mugg'" in message


def test_problem_prints_like_a_compiler() -> None:
    assert str(Problem("products.csv", 7, "video", "file not found: videos/a.mp4")) == (
        "products.csv:7: video: file not found: videos/a.mp4"
    )
    assert str(Problem("products.csv", 7, None, "oops")) == "products.csv:7: oops"
    assert str(Problem("taxonomy.yaml", None, None, "oops")) == "taxonomy.yaml: oops"


# --- files that are missing or unreadable ------------------------------------------------------


def test_missing_video(tmp_path: Path) -> None:
    assert check_one_bad_row(tmp_path / "cat", {"video": "videos/missing.mp4"}) == [
        "products.csv:3: video: file not found: videos/missing.mp4"
    ]


def test_missing_image_among_good_ones(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    write_image(root / "images" / "ok.png")
    assert check_one_bad_row(root, {"images": "images/ok.png; images/gone.jpg"}, row_kept=True) == [
        "products.csv:3: images: file not found: images/gone.jpg"
    ]
    [product] = [p for p in check_catalog(root)[0] if p.id == "bad"]
    assert [i.name for i in product.images] == ["ok.png"]  # the good photo stays


def test_video_that_is_a_folder(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    (root / "videos" / "dir.mp4").mkdir(parents=True)
    assert check_one_bad_row(root, {"video": "videos/dir.mp4"}) == [
        "products.csv:3: video: not a file: videos/dir.mp4"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_video(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    write_video(root / "videos" / "locked.mp4").chmod(0)
    assert check_one_bad_row(root, {"video": "videos/locked.mp4"}) == [
        "products.csv:3: video: cannot read (permission denied): videos/locked.mp4"
    ]


# --- files that are not what they claim --------------------------------------------------------


def test_text_file_named_mp4(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "notes.mp4").write_text("not a video\n")
    assert check_one_bad_row(root, {"video": "videos/notes.mp4"}) == [
        "products.csv:3: video: not a readable video (Invalid data found when processing input): "
        "videos/notes.mp4"
    ]


def test_zero_byte_video(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "empty.mp4").write_bytes(b"")
    [problem] = check_one_bad_row(root, {"video": "videos/empty.mp4"})
    assert problem.startswith("products.csv:3: video: not a readable video (")
    assert problem.endswith("): videos/empty.mp4")


def test_truncated_video_without_index(tmp_path: Path) -> None:
    """PyAV writes the index last, so a cut-off file does not even open."""
    root = tmp_path / "cat"
    (root / "videos").mkdir(parents=True)
    data = video_bytes()
    (root / "videos" / "cut.mp4").write_bytes(data[: len(data) // 2])
    [problem] = check_one_bad_row(root, {"video": "videos/cut.mp4"})
    assert "video: not a readable video" in problem and problem.endswith("videos/cut.mp4")


def test_truncated_faststart_video(tmp_path: Path) -> None:
    """Index first: the first frame still decodes, only the missing packets give it away."""
    root = tmp_path / "cat"
    (root / "videos").mkdir(parents=True)
    whole = faststart_mp4(root / "videos" / "whole.mp4")
    data = whole.read_bytes()
    assert data[4:8] == b"ftyp" and data.index(b"moov") < data.index(b"mdat")
    (root / "videos" / "cut.mp4").write_bytes(data[: int(len(data) * 0.8)])
    [problem] = check_one_bad_row(root, {"video": "videos/cut.mp4"})
    assert problem.startswith("products.csv:3: video: truncated video (")
    assert problem.endswith(" of 16 frames present): videos/cut.mp4")
    assert check_one_bad_row(root, {"video": "videos/whole.mp4"}) == []  # the intact file passes


def test_audio_only_file(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    write_audio_only(root / "videos" / "song.m4a")
    assert check_one_bad_row(root, {"video": "videos/song.m4a"}) == [
        "products.csv:3: video: no video stream (only audio): videos/song.m4a"
    ]


def test_image_that_does_not_decode(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    data = write_image(root / "images" / "whole.png", size=(64, 64)).read_bytes()
    (root / "images" / "cut.png").write_bytes(data[: len(data) * 2 // 3])
    (root / "images" / "text.jpg").write_text("hello")
    assert check_one_bad_row(
        root, {"images": "images/cut.png;images/text.jpg;images/whole.png"}, row_kept=True
    ) == [
        "products.csv:3: images: not a readable image (image file is truncated): images/cut.png",
        "products.csv:3: images: not a readable image (unknown format): images/text.jpg",
    ]


def test_empty_images(tmp_path: Path) -> None:
    expected = ["products.csv:3: images: no images listed (separate several with ';')"]
    assert check_one_bad_row(tmp_path / "a", {"images": ""}) == expected
    assert check_one_bad_row(tmp_path / "b", {"images": " ; ;"}) == expected


def test_image_listed_twice(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    write_image(root / "images" / "x.png")
    assert check_one_bad_row(root, {"images": "images/x.png;./images/x.png"}, row_kept=True) == [
        "products.csv:3: images: listed twice: ./images/x.png"
    ]


# --- ids and categories ------------------------------------------------------------------------


def test_duplicate_id_keeps_the_first(tmp_path: Path) -> None:
    root = make_catalog(
        tmp_path / "cat",
        [GOOD_BEFORE, GOOD_AFTER, {**GOOD_AFTER, "id": "a1"}, {**GOOD_AFTER, "id": "B1"}],
        images_per_product=1,
    )
    catalog, problems = check_catalog(root)
    assert [p.id for p in catalog] == ["a1", "b1"] and catalog.products[0].row == 2
    assert [str(p) for p in problems] == [
        "products.csv:4: id: duplicate id 'a1' (first on row 2)",
        "products.csv:5: id: duplicate id 'B1' (first on row 3 as 'b1')",
    ]


@pytest.mark.parametrize(
    ("product_id", "reason"),
    [
        ("a.b", "may hold only letters, digits"),
        ("a b", "may hold only letters, digits"),
        ("colle\u0301", "may hold only letters, digits"),
        ("a/b", "may hold only letters, digits"),
        ("clip__2", "must not contain '__'"),
        ("_a", "nor start or end with '_'"),
        ("a_", "nor start or end with '_'"),
    ],
)
def test_bad_id(tmp_path: Path, product_id: str, reason: str) -> None:
    [problem] = check_one_bad_row(tmp_path / "cat", {"id": product_id})
    assert problem.startswith(f"products.csv:3: id: {product_id!r} ")
    assert reason in problem


def test_empty_id(tmp_path: Path) -> None:
    assert check_one_bad_row(tmp_path / "cat", {"id": ""}) == ["products.csv:3: id: empty"]


def test_unknown_category_and_subcategory(tmp_path: Path) -> None:
    [problem] = check_one_bad_row(tmp_path / "a", {"category": "Kitchen"})
    assert problem.startswith("products.csv:3: category: unknown category 'Kitchen'")
    assert "Jewelry, Accessories" in problem
    [problem] = check_one_bad_row(tmp_path / "b", {"subcategory": "teapot"})
    assert problem.startswith("products.csv:3: subcategory: unknown subcategory 'teapot' of Home")
    assert "mug, vase" in problem
    assert check_one_bad_row(tmp_path / "c", {"category": "", "subcategory": ""}) == [
        "products.csv:3: category: empty",
        "products.csv:3: subcategory: empty",
    ]


# --- paths that leave the catalog --------------------------------------------------------------


def test_dotdot_path_is_rejected(tmp_path: Path) -> None:
    write_video(tmp_path / "outside.mp4")
    root = tmp_path / "cat"
    assert check_one_bad_row(root, {"video": "../outside.mp4"}) == [
        "products.csv:3: video: path leaves the catalog folder: ../outside.mp4"
    ]
    assert check_one_bad_row(tmp_path / "cat2", {"video": "videos/../../outside.mp4"}) == [
        "products.csv:3: video: path leaves the catalog folder: videos/../../outside.mp4"
    ]


def test_dotdot_that_stays_inside_is_fine(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    write_video(root / "videos" / "v.mp4")
    assert check_one_bad_row(root, {"video": "images/../videos/v.mp4"}) == []
    assert check_catalog(root)[0].products[0].video == root.resolve() / "videos" / "a1.mp4"


def test_absolute_path_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    inside = write_video(root / "videos" / "v.mp4").resolve()
    assert check_one_bad_row(root, {"video": str(inside)}) == [
        f"products.csv:3: video: absolute path, give it relative to the catalog folder: {inside}"
    ]
    [problem] = check_one_bad_row(tmp_path / "win", {"images": "C:\\photos\\a.png"})
    assert "images: absolute path" in problem


def test_symlink_leading_outside_is_rejected(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    write_video(outside / "v.mp4")
    write_image(outside / "p.png")
    root = tmp_path / "cat"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "link.mp4").symlink_to(outside / "v.mp4")
    (root / "shared").symlink_to(outside, target_is_directory=True)
    assert check_one_bad_row(root, {"video": "videos/link.mp4", "images": "shared/p.png"}) == [
        "products.csv:3: video: symlink leads outside the catalog folder: videos/link.mp4 -> "
        f"{(outside / 'v.mp4').resolve()}",
        "products.csv:3: images: symlink leads outside the catalog folder: shared/p.png -> "
        f"{(outside / 'p.png').resolve()}",
    ]


def test_symlink_inside_the_catalog_is_fine(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    write_video(root / "raw" / "v.mp4")
    (root / "videos").mkdir()
    (root / "videos" / "link.mp4").symlink_to(Path("..") / "raw" / "v.mp4")
    (root / "videos" / "dangling.mp4").symlink_to(root / "raw" / "none.mp4")
    assert check_one_bad_row(root, {"video": "videos/link.mp4"}) == []
    assert check_one_bad_row(tmp_path / "cat", {"video": "videos/dangling.mp4"}) == [
        "products.csv:3: video: file not found (broken symlink): videos/dangling.mp4"
    ]


def test_paths_the_filesystem_refuses(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "loop.mp4").symlink_to("loop2.mp4")
    (root / "videos" / "loop2.mp4").symlink_to("loop.mp4")
    [problem] = check_one_bad_row(root, {"video": "videos/loop.mp4"})
    assert problem.startswith("products.csv:3: video: cannot look up videos/loop.mp4: ")
    [problem] = check_one_bad_row(root, {"video": "v" * 300 + ".mp4"})
    assert problem.startswith("products.csv:3: video: cannot look up vvvv")
    assert problem.endswith(": File name too long")
    [problem] = check_one_bad_row(root, {"video": "a\x00b.mp4"})
    assert problem == "products.csv:3: video: path holds a NUL character: 'a\\x00b.mp4'"


# --- first_frame_box ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        ("1,2,3", "want four numbers"),
        ("0,0,10,10,3", "want four numbers"),
        ("a,b,c,d", "want four numbers"),
        ("0,0,nan,10", "want four numbers"),
        ("10,10,5,20", "want 0 <= x0 < x1"),
        ("10,10,20,10", "want 0 <= x0 < x1"),
        ("-1,0,10,10", "want 0 <= x0 < x1"),
        ("0,0,65,48", "reaches outside the 64x48 first frame"),
    ],
)
def test_bad_first_frame_box(tmp_path: Path, box: str, reason: str) -> None:
    [problem] = check_one_bad_row(tmp_path / "cat", {"first_frame_box": box})
    assert problem.startswith("products.csv:3: first_frame_box: ")
    assert reason in problem and repr(box) in problem


def test_first_frame_box_is_in_displayed_pixels(tmp_path: Path) -> None:
    """A phone clip stored 64x48 and shown 48x64: the clip stage maps the box from what is
    shown, so the check measures it there too."""
    root = tmp_path / "cat"
    (root / "videos").mkdir(parents=True)
    with av.open(str(root / "videos" / "turned.mp4"), "w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.set_display_rotation(90)
        for _ in range(4):
            image = np.zeros((48, 64, 3), np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    turned = {"video": "videos/turned.mp4"}
    assert check_one_bad_row(root, {**turned, "first_frame_box": "0,0,48,64"}) == []
    [problem] = check_one_bad_row(root, {**turned, "first_frame_box": "0,0,64,48"})
    assert problem.endswith("reaches outside the 48x64 first frame")


def test_good_first_frame_box(tmp_path: Path) -> None:
    root = make_catalog(
        tmp_path / "cat",
        [
            {**GOOD_BEFORE, "first_frame_box": (0, 0, 64, 48)},
            {**GOOD_AFTER, "first_frame_box": " 1.5, 2 ,30,40 "},
        ],
    )
    catalog, problems = check_catalog(root)
    assert problems == []
    assert [p.first_frame_box for p in catalog] == [(0.0, 0.0, 64.0, 48.0), (1.5, 2.0, 30.0, 40.0)]


# --- the CSV file itself -----------------------------------------------------------------------


def test_missing_products_csv(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    catalog, problems = check_catalog(tmp_path / "cat")
    assert len(catalog) == 0
    assert [str(p) for p in problems] == [f"products.csv: not found in {tmp_path / 'cat'}"]
    _, problems = check_catalog(tmp_path / "nope")
    assert [str(p) for p in problems] == [f"{tmp_path / 'nope'}: catalog folder not found"]


def test_missing_required_column(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    root.mkdir()
    (root / "products.csv").write_text(
        "ID, Category,subcategory,video,prompt,prompt\na,b,c,d,e,f\n"
    )
    catalog, problems = check_catalog(root)
    assert len(catalog) == 0
    assert [str(p) for p in problems] == [
        "products.csv:1: prompt: column appears more than once",
        "products.csv:1: images: missing required column (the header has: id, category, "
        "subcategory, video, prompt, prompt)",
    ]


def test_empty_csv(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    root.mkdir()
    (root / "products.csv").write_text("\n\n")
    assert [str(p) for p in check_catalog(root)[1]] == ["products.csv: empty file: no header row"]


def test_bom_csv_works(tmp_path: Path) -> None:
    root = make_catalog(tmp_path / "cat", encoding="utf-8-sig")
    assert (root / "products.csv").read_bytes().startswith(b"\xef\xbb\xbfid,")
    catalog, problems = check_catalog(root)
    assert problems == [] and len(catalog) == len(DEFAULT_PRODUCTS)


def test_non_utf8_csv_names_the_file_and_line(tmp_path: Path) -> None:
    """Only the rows holding bytes that are not UTF-8 are lost (ASCII reads the same)."""
    root = make_catalog(
        tmp_path / "cat",
        [GOOD_BEFORE, {**GOOD_AFTER, "prompt": "café au lait mug"}, {**GOOD_AFTER, "id": "c1"}],
        encoding="latin-1",
    )
    catalog, problems = check_catalog(root)
    assert [p.id for p in catalog] == ["a1", "c1"]
    assert [str(p) for p in problems] == [
        "products.csv:3: prompt: not UTF-8 text (byte 0xe9); save the file as UTF-8"
    ]
    header = (root / "products.csv").read_bytes().replace(b"id,", "id\xe9,".encode("latin-1"), 1)
    (root / "products.csv").write_bytes(header)
    catalog, problems = check_catalog(root)
    assert len(catalog) == 0
    assert [str(p) for p in problems] == [
        "products.csv:1: not UTF-8 text (byte 0xe9); save the file as UTF-8"
    ]


def test_quoted_fields_with_commas_quotes_and_newlines(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    write_image(root / "images" / "front, left.png")
    make_catalog(
        root,
        [
            {
                **GOOD_BEFORE,
                "prompt": 'silver necklace, "gift" box\nsecond line',
                "images": "images/front, left.png",
                "first_frame_box": "1,2,30,40",
            },
            {**GOOD_AFTER, "video": "missing.mp4"},
        ],
    )
    text = (root / "products.csv").read_text()
    assert '"silver necklace, ""gift"" box\nsecond line"' in text
    catalog, problems = check_catalog(root)
    [product] = catalog.products
    assert product.prompt == 'silver necklace, "gift" box\nsecond line'
    assert product.images[0].name == "front, left.png"
    assert product.first_frame_box == (1.0, 2.0, 30.0, 40.0)
    # Rows are file lines: the two-line prompt pushes the next row to line 4.
    assert [str(p) for p in problems] == ["products.csv:4: video: file not found: missing.mp4"]


def test_blank_lines_are_skipped_and_rows_are_file_lines(tmp_path: Path) -> None:
    root = make_catalog(tmp_path / "cat", [GOOD_BEFORE, GOOD_AFTER], images_per_product=1)
    header, first, second = (root / "products.csv").read_text().splitlines()
    (root / "products.csv").write_text(
        "\n".join(["", header, "", first, ",,,,,,", "   ", second.replace("doll", "dol"), ""])
    )
    catalog, problems = check_catalog(root)
    assert [(p.id, p.row) for p in catalog] == [("a1", 4)]
    assert [(p.row, p.column) for p in problems] == [(7, "subcategory")]


def test_unquoted_comma_gives_too_many_fields(tmp_path: Path) -> None:
    root = make_catalog(tmp_path / "cat", [GOOD_BEFORE], images_per_product=1)
    with (root / "products.csv").open("a") as handle:
        handle.write("c1,Home,mug,videos/a1.mp4,images/a1-0.png,,1,2,3,4\n")
    catalog, problems = check_catalog(root)
    assert [p.id for p in catalog] == ["a1"]
    assert [str(p) for p in problems] == [
        "products.csv:3: row has 10 fields but the header has 7 (quote fields that contain commas)"
    ]


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.lists(st.sampled_from([b"a", b",", b";", b'"', b"\n", b"\r", b" ", b"..", b"/",
                                       b"_", b"\x00", b"\xc3\xa9", b"\xff", b"Home", b"mug"]),
                     max_size=60))  # fmt: skip
def test_any_csv_body_gives_problems_not_a_crash(tmp_path: Path, body: list[bytes]) -> None:
    root = tmp_path / "fuzz"
    root.mkdir(exist_ok=True)
    (root / "products.csv").write_bytes(b"id,category,subcategory,video,images\n" + b"".join(body))
    catalog, problems = check_catalog(root, check_media=False)
    assert len(catalog) == 0  # no row can name a file that exists
    assert all(p.file == "products.csv" and (p.row is None or p.row >= 2) for p in problems)
    assert all(str(p).startswith("products.csv") for p in problems)


# --- media checks on or off, and everything at once --------------------------------------------


def test_no_media_skips_decoding_but_not_confinement(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "notes.mp4").write_text("not a video")
    assert check_one_bad_row(root, {"video": "videos/notes.mp4"}, check_media=False) == []
    write_video(tmp_path / "out.mp4")
    assert check_one_bad_row(tmp_path / "b", {"video": "../out.mp4"}, check_media=False) == [
        "products.csv:3: video: path leaves the catalog folder: ../out.mp4"
    ]
    assert check_one_bad_row(tmp_path / "c", {"video": "gone.mp4"}, check_media=False) == [
        "products.csv:3: video: file not found: gone.mp4"
    ]


def test_every_problem_is_reported_in_one_run(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "bad.mp4").write_bytes(b"\x00" * 100)
    make_catalog(
        root,
        [
            GOOD_BEFORE,
            {"id": "x.1", "category": "Home", "subcategory": "mug"},
            {"id": "x2", "category": "Hom", "subcategory": "mug", "video": "videos/bad.mp4"},
            {"id": "x3", "category": "Home", "subcategory": "mug", "images": ""},
            GOOD_AFTER,
            {**GOOD_BEFORE, "first_frame_box": "9,9,1,1"},
        ],
        images_per_product=1,
    )
    catalog, problems = check_catalog(root)
    assert [p.id for p in catalog] == ["a1", "b1"]
    assert [(p.row, p.column) for p in problems] == [
        (3, "id"),
        (4, "category"),
        (4, "video"),
        (5, "images"),
        (7, "id"),
        (7, "first_frame_box"),
    ]


def test_real_media(tmp_path: Path, shared_data: Path) -> None:
    """Real clips (a web video with its index in front, an anamorphic one) and photos."""
    root = tmp_path / "cat"
    (root / "videos").mkdir(parents=True)
    (root / "images").mkdir()
    shutil.copy(shared_data / "sam2" / "04_coffee.mp4", root / "videos" / "coffee.mp4")
    shutil.copy(shared_data / "pyscenedetect" / "counter.mp4", root / "videos" / "counter.mp4")
    shutil.copy(shared_data / "sam2" / "truck.jpg", root / "images" / "truck.jpg")
    shutil.copy(shared_data / "rembg" / "car-2.out.png", root / "images" / "car.png")
    coffee = (root / "videos" / "coffee.mp4").read_bytes()
    (root / "videos" / "coffee-cut.mp4").write_bytes(coffee[: len(coffee) // 2])
    truck = (root / "images" / "truck.jpg").read_bytes()
    (root / "images" / "truck-cut.jpg").write_bytes(truck[: len(truck) - 5000])
    make_catalog(
        root,
        [
            {**GOOD_BEFORE, "video": "videos/coffee.mp4", "images": ["images/truck.jpg"]},
            {**GOOD_AFTER, "video": "videos/counter.mp4", "images": "images/car.png"},
            {"id": "c1", "category": "Home", "subcategory": "mug", "video": "videos/coffee.mp4",
             "images": "images/truck.jpg", "first_frame_box": "900,300,1281,720"},
            {"id": "c2", "category": "Home", "subcategory": "mug",
             "video": "videos/coffee-cut.mp4", "images": "images/truck-cut.jpg"},
            {"id": "c3", "category": "Home", "subcategory": "mug", "video": "videos/coffee.mp4",
             "images": "images/car.png", "first_frame_box": "900,300,1280,720"},
        ],
    )  # fmt: skip
    catalog, problems = check_catalog(root)
    assert [p.id for p in catalog] == ["a1", "b1", "c3"]
    *found, image_problem = [str(p) for p in problems]
    assert found == [
        "products.csv:4: first_frame_box: '900,300,1281,720' reaches outside the 1280x720 first "
        "frame",
        "products.csv:5: video: truncated video (114 of 287 frames present): videos/coffee-cut.mp4",
    ]
    assert image_problem.startswith(
        "products.csv:5: images: not a readable image (image file is truncated ("
    )
    assert image_problem.endswith(" bytes not processed)): images/truck-cut.jpg")


# --- the command line --------------------------------------------------------------------------


def test_cli_check_good_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_catalog(tmp_path / "cat")
    assert main(["catalog", "check", str(root)]) == 0
    assert capsys.readouterr().out == f"{root.resolve()}: 5 products ok, 0 problems\n"


def test_cli_check_bad_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "cat"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "notes.mp4").write_text("not a video")
    make_catalog(
        root,
        [
            GOOD_BEFORE,
            {**GOOD_AFTER, "video": "videos/notes.mp4"},
            {"id": "c__1", "category": "Home", "subcategory": "mug"},
        ],
        images_per_product=1,
    )
    assert main(["catalog", "check", str(root)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("products.csv:3: video: not a readable video")
    assert lines[1].startswith("products.csv:4: id: 'c__1' must not contain '__'")
    assert lines[2] == f"{root.resolve()}: 1 products ok, 2 problems"

    assert main(["catalog", "check", "--no-media", "--json", str(root)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["catalog"] == str(root.resolve())
    assert [p["id"] for p in report["products"]] == ["a1", "b1"]
    assert report["problems"] == [
        {
            "file": "products.csv",
            "row": 4,
            "column": "id",
            "message": "'c__1' must not contain '__' nor start or end with '_' "
            "('__' joins the parts of pair ids)",
        }
    ]
