"""A corpus of bad and awkward catalog inputs: a build must survive every one of them.

``python -m pvtt.tools.badinputs DIR`` writes ``DIR/catalog`` (a ``products.csv``
mixing every case with a few good products), ``DIR/outside`` (what the paths and
symlinks that leave the catalog point at), ``DIR/build.toml`` (a config that keeps the
build to seconds) and ``DIR/cases.json``: each case, the file it is about, and what
pvtt must do with it. Two outcomes are allowed:

* ``reject``: the build finishes and its report lists the case at the given stage, with
  a reason or item naming the file (or the ``products.csv`` line); nothing else is lost.
* ``accept``: the file is normalised and built: rotation applied, any size, frame rate
  or pixel format in, upright 8-bit RGB clips within the clip size out.

Media are the demo's drawings, small and short (the 8K video has two frames), so the
corpus is written in about a second. Pairs stay within a category (``same_category``),
and the categories are laid out so that every accepted clip gets a pair (a clip without
one is never cut) while the pair count stays small.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

from pvtt.builder.demo import PRODUCTS, SIZE, render_photo, render_shot

FPS = 12
FRAMES = 24
VIDEO_SIZE = SIZE
"""The demo's 384x216: at half that, its drawings are too small to track."""
BUILD_CONFIG = """\
[shots]
min_frames = 2
min_duration_s = 0.1
[clip]
max_width = 256
max_height = 144
[pairs]
strategy = "all"
same_category = true
"""
CLIP_BOX = (256, 144)
"""The clip size BUILD_CONFIG allows (a portrait clip fits it turned)."""
COLUMNS = ("id", "category", "subcategory", "video", "images", "prompt", "first_frame_box")
DEMO = {p.id: p for p in PRODUCTS}
JEWELRY = ("Jewelry", "necklace")
ACCESSORIES = ("Accessories", "keychain")
HOME = ("Home", "mug")
TOYS = ("Toys", "stuffed animal")
LONELY = ("Bags", "tote")
"""For rows that pass the catalog check and fail later: no other product shares it."""


@dataclass(frozen=True)
class Case:
    """One input and what a build must do with it."""

    name: str
    kind: str
    """``video``, ``image`` or ``row`` (the case is the CSV row or file itself)."""
    expect: str
    """``reject`` or ``accept``."""
    product: str
    """The row's product id (for a duplicate id, the id it repeats)."""
    file: str
    """The file the case is about, relative to the catalog (``products.csv`` for rows)."""
    doc: str
    names: str = ""
    """A reject: what its report item or reason contains (the file, or ``products.csv:LINE``)."""
    stage: str = ""
    """A reject: the report stage that lists it (``catalog`` when the catalog check drops it)."""
    display: tuple[int, int] | None = None
    """An accepted video or photo: its upright size, whose shape the built one keeps."""


class _Corpus:
    """Writes media and ``products.csv`` rows, and records a case for each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.catalog = root / "catalog"
        self.outside = root / "outside"
        for folder in (self.catalog / "videos", self.catalog / "images", self.outside):
            folder.mkdir(parents=True, exist_ok=True)
        self.csv = b"\xef\xbb\xbf" + _csv_line(COLUMNS).encode()  # a byte order mark first
        self.line = 2
        self.cases: list[Case] = []
        self.rng = np.random.default_rng(0)

    def frames(
        self, drawing: str, count: int = FRAMES, size: tuple[int, int] = VIDEO_SIZE
    ) -> tuple[np.ndarray, str]:
        """A shot of the demo product ``drawing`` at ``size``, and its first-frame box there."""
        shot, box = render_shot(DEMO[drawing], self.rng, count)
        frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in shot])
        sx, sy = size[0] / SIZE[0], size[1] / SIZE[1]
        x0, y0, x1, y1 = box
        scaled = (x0 * sx, y0 * sy, min(x1 * sx, size[0]), min(y1 * sy, size[1]))
        return frames, ",".join(f"{v:.1f}" for v in scaled)

    def video(
        self,
        name: str,
        drawing: str,
        *,
        turn: bool = False,
        count: int = FRAMES,
        size: tuple[int, int] = VIDEO_SIZE,
        **options: object,
    ) -> tuple[str, str]:
        """A shot written to ``videos/name``; its path and first-frame box (as shown).

        ``turn`` stores the frames a quarter turn clockwise with a display rotation of 90
        degrees that turns them back, as phones store portrait clips.
        """
        frames, box = self.frames(drawing, count, size)
        if turn:
            frames, options = np.rot90(frames, -1, axes=(1, 2)), {**options, "rotation": 90}
        write_video(self.catalog / "videos" / name, frames, **options)
        return f"videos/{name}", box

    def photo(self, drawing: str, name: str, writer: PhotoWriter | None = None) -> str:
        """A 256 x 192 photo of the demo product ``drawing``, saved by ``writer``."""
        rgb = render_photo(DEMO[drawing], self.rng)[32:224]
        (writer or _save(lambda im: im))(rgb, self.catalog / "images" / name)
        return f"images/{name}"

    def row(self, pid: str, category: tuple[str, str], video: str, images: Sequence[str], *,
            box: str = "", prompt: str = "", encoding: str = "utf-8") -> int:  # fmt: skip
        """Append a row to products.csv; returns its line."""
        text = _csv_line([pid, *category, video, ";".join(images), prompt, box])
        line, self.line = self.line, self.line + text.count("\n")
        self.csv += text.encode(encoding)
        return line

    def product(self, pid: str, category: tuple[str, str], drawing: str, **video: object) -> str:
        """A row with its own video and one photo, both of ``drawing``; returns the video."""
        path, box = self.video(f"{pid}.mp4", drawing, **video)
        self.row(pid, category, path, [self.photo(drawing, f"{pid}.png")], box=box)
        return path

    def accept(self, name: str, kind: str, product: str, file: str, doc: str,
               display: tuple[int, int] | None = None) -> None:  # fmt: skip
        self.cases.append(Case(name, kind, "accept", product, file, doc, display=display))

    def reject(self, name: str, kind: str, product: str, file: str, doc: str, *,
               stage: str = "catalog", names: str | None = None) -> None:  # fmt: skip
        self.cases.append(Case(name, kind, "reject", product, file, doc, names or file, stage))


def _csv_line(cells: Sequence[str]) -> str:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow(cells)
    return text.getvalue()


def write_video(
    path: Path,
    frames: np.ndarray,
    *,
    fps: int = FPS,
    rotation: int | None = None,
    pts_ms: Sequence[int] | None = None,
    faststart: bool = False,
) -> None:
    """H.264 in MP4; ``pts_ms`` gives each frame its own time (variable frame rate)."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "23"})
        stream.height, stream.width = frames.shape[1:3]
        odd = stream.height % 2 or stream.width % 2
        stream.pix_fmt = "yuv444p" if odd else "yuv420p"  # 4:2:0 cannot hold an odd side
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[index], Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def write_audio_only(path: Path) -> None:
    """Half a second of a tone in AAC: an mp4 without a video stream."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000, layout="mono")
        tone = 0.2 * np.sin(2 * np.pi * 440 * np.arange(8000, dtype=np.float32) / 16000)
        frame = av.AudioFrame.from_ndarray(tone[None, :], format="fltp", layout="mono")
        frame.sample_rate = 16000
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


# --- photos: one writer per mode a camera, an editor or a shop produces -------------------

PhotoWriter = Callable[[np.ndarray, Path], None]
"""Saves an RGB photo to a path, in some mode and format."""


def _save(mode_of: Callable[[Image.Image], Image.Image], **save: object) -> PhotoWriter:
    return lambda rgb, path: mode_of(Image.fromarray(rgb)).save(path, **save)


def _alpha(image: Image.Image) -> Image.Image:
    """The photo's light background made transparent (a cut-out as shops upload them)."""
    rgb = np.asarray(image.convert("RGB"))
    alpha = np.where(rgb.min(axis=2) > 200, 0, 255).astype(np.uint8)
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


def _gray16(rgb: np.ndarray, path: Path) -> None:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    Image.fromarray(gray).save(path)  # mode I;16


def _rgb48(rgb: np.ndarray, path: Path) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)


def _exif_rotated(rgb: np.ndarray, path: Path) -> None:
    """Stored a quarter turn anticlockwise; EXIF orientation 6 turns it back clockwise."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(rgb, 1)).save(path, quality=92, exif=exif)


PHOTO_MODES: dict[str, tuple[PhotoWriter, str]] = {
    "cmyk.jpg": (_save(lambda im: im.convert("CMYK"), quality=92), "CMYK JPEG (print workflow)"),
    "gray16.png": (_gray16, "16-bit grayscale PNG (I;16)"),
    "rgb48.png": (_rgb48, "16 bits per channel RGB PNG"),
    "gray.png": (_save(lambda im: im.convert("L")), "8-bit grayscale"),
    "bilevel.png": (_save(lambda im: im.convert("1", dither=Image.Dither.NONE)), "1-bit"),
    "palette.png": (_save(lambda im: im.quantize(64)), "palette (P) PNG"),
    "palette-alpha.png": (_save(lambda im: _alpha(im).quantize(64)), "palette with transparency"),
    "alpha.png": (_save(_alpha), "RGBA, transparent background"),
    "gray-alpha.png": (_save(lambda im: _alpha(im).convert("LA")), "grayscale + alpha (LA)"),
    "exif-rotated.jpg": (_exif_rotated, "JPEG stored sideways, EXIF orientation 6"),
    "odd-size.png": (_save(lambda im: im.resize((201, 151))), "201x151: odd sides"),
}


# --- the corpus ---------------------------------------------------------------------------


def write_corpus(root: str | Path) -> list[Case]:
    """Write the corpus into ``root`` (see the module docstring); returns its cases."""
    c = _Corpus(Path(root))
    for pid, category in (("neck-gold", JEWELRY), ("key-fob", ACCESSORIES), ("mug-blue", HOME)):
        video = c.product(pid, category, pid)
        c.accept(f"good-{pid}", "row", pid, video, "a good product: clip, photo and pairs built")
    _accepted_videos(c)
    _accepted_rows(c)
    _accepted_photos(c)
    _bad_videos(c)
    _bad_photos(c)
    _bad_rows(c)
    (c.catalog / "products.csv").write_bytes(c.csv)
    (c.root / "build.toml").write_text(BUILD_CONFIG)
    (c.root / "cases.json").write_text(json.dumps([asdict(k) for k in c.cases], indent=1) + "\n")
    return c.cases


def read_cases(root: str | Path) -> list[Case]:
    """The cases :func:`write_corpus` recorded in ``root/cases.json``."""
    cases = json.loads((Path(root) / "cases.json").read_text())
    return [Case(**{**c, "display": c["display"] and tuple(c["display"])}) for c in cases]


def _accepted_videos(c: _Corpus) -> None:
    gaps = np.cumsum([0] + [75 + 8 * (i % 3) for i in range(FRAMES - 1)]).tolist()
    for name, pid, category, drawing, video, display, doc in (
        ("video-8k", "neck-8k", JEWELRY, "neck-silver", {"count": 2, "size": (7680, 4320)},
         (7680, 4320), "7680x4320, two frames: decoded and scaled into the clip size"),
        ("video-odd-size", "key-odd", ACCESSORIES, "ring-ruby", {"size": (201, 113)},
         (201, 113), "201x113 (so 4:4:4): odd sides made even"),
        ("video-rotated", "bear-rotated", TOYS, "bear-brown", {"turn": True}, VIDEO_SIZE,
         "stored 216x384 with a display rotation of 90 degrees: built upright, 384x216"),
        ("video-vfr", "bear-vfr", TOYS, "ring-ruby", {"pts_ms": gaps}, VIDEO_SIZE,
         "frames 75, 83 and 91 ms apart: resampled to a constant rate"),
    ):  # fmt: skip
        path = c.product(pid, category, drawing, **video)
        c.accept(name, "video", pid, path, doc, display)


def _accepted_rows(c: _Corpus) -> None:
    video, box = c.video("quoted.mp4", "neck-silver")
    c.row(
        "quoted-row",
        ("Jewelry", "bracelet"),
        video,
        [c.photo("neck-silver", "front, left.png")],
        box=box,
        prompt='silver "chain", front\nsecond line',
    )
    c.accept(
        "row-quoted-fields",
        "row",
        "quoted-row",
        "images/front, left.png",
        "quoted fields: a comma in a file name, quotes and a line break in the prompt",
    )
    c.accept("csv-bom", "row", "neck-gold", "products.csv",
             "products.csv starts with a UTF-8 byte order mark")  # fmt: skip


def _accepted_photos(c: _Corpus) -> None:
    """Every photo mode as a photo of one product (strategy all: each one is a target)."""
    images = []
    for name, (writer, doc) in PHOTO_MODES.items():
        images.append(c.photo("mug-blue", name, writer))
        display = (201, 151) if name == "odd-size.png" else (256, 192)
        c.accept(f"photo-{name.split('.')[0]}", "image", "mug-photos", images[-1], doc, display)
    video, box = c.video("mug-photos.mp4", "mug-blue")
    c.row("mug-photos", HOME, video, images, box=box)


def _bad_videos(c: _Corpus) -> None:
    """Each bad video in a row of its own (with a good photo)."""
    good, _ = c.frames("mug-blue")

    def cut(keep: float, **options: object) -> Callable[[Path], None]:
        def write(path: Path) -> None:
            write_video(path, good, **options)
            path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])

        return write

    bad: list[tuple[str, bytes | Callable[[Path], None], str, str]] = [
        ("truncated.mp4", cut(0.5), "catalog", "cut in half, its index at the end: does not open"),
        ("truncated-faststart.mp4", cut(0.7, faststart=True), "catalog",
         "cut at 70 %, its index in front: opens, but frames are missing"),
        ("zero-byte.mp4", b"", "catalog", "an empty file"),
        ("text.mp4", b"this is not a video\n" * 20, "catalog", "a text file named .mp4"),
        ("audio-only.mp4", write_audio_only, "catalog", "AAC audio, no video stream"),
        ("one-frame.mp4", lambda p: write_video(p, good[:1]), "shots",
         "a single frame: no shot long enough"),
        ("photo.mp4", lambda p: Image.fromarray(good[0]).save(p, format="PNG"), "shots",
         "a PNG named .mp4: a still image, not a video"),
    ]  # fmt: skip
    for index, (name, content, stage, doc) in enumerate(bad):
        path = c.catalog / "videos" / name
        if callable(content):
            content(path)
        else:
            path.write_bytes(content)
        c.row(f"bad-video-{index}", LONELY, f"videos/{name}", ["images/mug-blue.png"])
        c.reject(f"video-{path.stem}", "video", f"bad-video-{index}", f"videos/{name}", doc,
                 stage=stage)  # fmt: skip


def _bad_photos(c: _Corpus) -> None:
    """Bad photos beside a good one in one row: only they are left out, the product stays."""
    whole = (c.catalog / "images" / "mug-blue.png").read_bytes()
    bad = {
        "truncated.png": (whole[: len(whole) // 2], "cut in half"),
        "zero-byte.jpg": (b"", "an empty file"),
        "text.jpg": (b"not an image\n", "a text file named .jpg"),
    }
    for name, (data, _) in bad.items():
        (c.catalog / "images" / name).write_bytes(data)
    outside = c.outside / "photo.png"
    Image.fromarray(render_photo(DEMO["key-fob"], c.rng)).save(outside)
    link = c.catalog / "images" / "link-out.png"
    link.symlink_to(os.path.relpath(outside, link.parent))
    video, box = c.video("key-photos.mp4", "key-fob")
    images = [
        c.photo("key-fob", "key-photos.png"),
        *(f"images/{n}" for n in bad),
        "images/link-out.png",
    ]
    c.row("key-photos", ACCESSORIES, video, images, box=box)
    docs = {**{name: doc for name, (_, doc) in bad.items()},
            "link-out.png": "a symlink to a photo outside the catalog"}  # fmt: skip
    for name, doc in docs.items():
        c.reject(f"photo-{Path(name).stem}", "image", "key-photos", f"images/{name}", doc)


def _bad_rows(c: _Corpus) -> None:
    outside = (c.outside / "video.mp4").resolve()
    write_video(outside, c.frames("mug-blue")[0])
    link = c.catalog / "videos" / "link-out.mp4"
    link.symlink_to(os.path.relpath(outside, link.parent))
    photo = ["images/mug-blue.png"]
    for name, pid, video, doc in (
        ("row-path-leaves", "path-leaves", "../outside/video.mp4",
         "a path that leaves the catalog with .."),
        ("row-path-absolute", "path-absolute", str(outside), "an absolute path (to a good video)"),
        ("row-symlink-out", "symlink-out", "videos/link-out.mp4",
         "a symlink to a video outside the catalog"),
        ("row-missing-video", "missing", "videos/missing.mp4", "a video that does not exist"),
    ):  # fmt: skip
        c.row(pid, LONELY, video, photo)
        c.reject(name, "row", pid, "products.csv", doc, names=video)
    for name, pid, category, prompt, encoding, doc in (
        ("row-duplicate-id", "mug-blue", ("Home", "vase"), "", "utf-8",
         "an id used before (the first row with it is kept)"),
        ("row-unknown-category", "unknown-category", ("Kitchen", "teapot"), "", "utf-8",
         "a category the taxonomy does not know"),
        ("row-not-utf8", "not-utf8", HOME, "café au lait", "latin-1",
         "a row saved as Latin-1 (byte 0xe9) in a UTF-8 file"),
    ):  # fmt: skip
        line = c.row(pid, category, "videos/mug-blue.mp4", photo, prompt=prompt, encoding=encoding)
        c.reject(name, "row", pid, "products.csv", doc, names=f"products.csv:{line}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pvtt.tools.badinputs",
        description="Write a catalog of bad and awkward inputs, with the outcome each must "
        "have in DIR/cases.json (see the module docstring).",
    )
    parser.add_argument("dir", type=Path, metavar="DIR", help="folder to write (created)")
    args = parser.parse_args(argv)
    cases = write_corpus(args.dir)
    rejects = sum(c.expect == "reject" for c in cases)
    print(f"{len(cases)} cases ({rejects} to reject, {len(cases) - rejects} to accept) in "
          f"{args.dir / 'catalog'}; what each must do: {args.dir / 'cases.json'}")  # fmt: skip
    print(f"build it: pvtt build {args.dir / 'catalog'} OUT --config {args.dir / 'build.toml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
