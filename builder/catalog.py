"""Reading and checking a catalog folder (``products.csv``, its media, an optional taxonomy).

A catalog is typed by hand or exported from a spreadsheet, so it is checked the
way a compiler checks a file: every problem is collected with its file, row
and column, so one run tells the user everything to fix. Bad rows are left
out and the rest stays usable, because a build skips bad input rather than
stopping; a bad photo leaves out only itself (its row's video and other
photos are still good), and a row that is not UTF-8 only that row. Media
checks stay cheap (decode one video frame and walk the packets, decode each
image): they catch the files that would crash a stage hours into a build,
not subtle corruption deep inside a clip.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath, PureWindowsPath

import av
from PIL import Image

from pvtt.schemas.keys import SEPARATOR, image_token
from pvtt.schemas.shards import FILE_NAME_MAX, MAX_KEY_LENGTH
from pvtt.schemas.taxonomy import Difficulty, Taxonomy, TaxonomyError, UnknownCategoryError

CSV_NAME = "products.csv"
TAXONOMY_NAME = "taxonomy.yaml"
REQUIRED_COLUMNS = ("id", "category", "subcategory", "video", "images")
OPTIONAL_COLUMNS = ("prompt", "first_frame_box")

# Ids become WebDataset keys and are joined with "__" into pair ids, so they may
# not hold dots or "__", nor start or end with "_" (which would make the join ambiguous).
_ID_CHARS = re.compile(r"[A-Za-z0-9_-]+")

MAX_ID_LENGTH = 100
"""The longest product id. A pair id ``{source id}_s000__{target id}__{photo}`` names tar
members and exported files, so it may not pass MAX_KEY_LENGTH (240); with ids of at most
100 characters, photo names of 26 characters always fit, and longer ones are checked
against the catalog's longest other id (:func:`_fit_pair_ids`)."""
_CLIP_PART = len("_s000__")
_KEY_SPARE = 5
"""Characters kept for a photo's ``-N`` (two photos of one name) and shots past 999."""

_Report = Callable[[str | None, str], None]  # (column, message) -> records a Problem


@dataclass(frozen=True)
class Product:
    """One usable catalog row (without its bad photos, if any); paths are absolute."""

    id: str
    category: str
    subcategory: str
    video: Path
    images: tuple[Path, ...]
    prompt: str | None
    first_frame_box: tuple[float, float, float, float] | None
    row: int


@dataclass(frozen=True)
class Catalog:
    """The usable products of a catalog folder and the taxonomy that classifies them."""

    root: Path
    products: tuple[Product, ...]
    taxonomy: Taxonomy

    def __len__(self) -> int:
        return len(self.products)

    def __iter__(self) -> Iterator[Product]:
        return iter(self.products)

    def product(self, product_id: str) -> Product:
        for product in self.products:
            if product.id == product_id:
                return product
        raise KeyError(f"no product {product_id!r} in catalog {self.root}")

    def difficulty(self, source: Product, target: Product) -> Difficulty:
        return self.taxonomy.difficulty(
            source.category, source.subcategory, target.category, target.subcategory
        )


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a catalog; prints as ``products.csv:7: video: file not found: ...``."""

    file: str
    row: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file}:{self.row}"
        what = self.message if self.column is None else f"{self.column}: {self.message}"
        return f"{where}: {what}"


class CatalogError(ValueError):
    """A catalog with problems; ``problems`` holds every one of them."""

    def __init__(self, root: Path, problems: list[Problem]) -> None:
        self.root = root
        self.problems = list(problems)
        count = f"{len(problems)} problem" + ("" if len(problems) == 1 else "s")
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"catalog {root} has {count}:\n{lines}")


def load_catalog(root: str | Path, *, check_media: bool = True) -> Catalog:
    """The catalog at ``root``; raises CatalogError listing every problem if there is any."""
    catalog, problems = check_catalog(root, check_media=check_media)
    if problems:
        raise CatalogError(catalog.root, problems)
    return catalog


def check_catalog(root: str | Path, *, check_media: bool = True) -> tuple[Catalog, list[Problem]]:
    """Every problem of the catalog at ``root``, and a catalog of the usable rows.

    A row is usable when its id, categories, video and box are good and at least one
    of its photos is; its bad photos are left out (each is a problem).

    ``check_media=False`` still checks that each file exists, is readable and
    lies inside the catalog folder, but does not decode it.
    """
    root = Path(root).resolve()
    problems: list[Problem] = []
    if not root.is_dir():
        what = "catalog folder not found" if not root.exists() else "catalog is not a folder"
        problems.append(Problem(str(root), None, None, what))
        return Catalog(root, (), Taxonomy.default()), problems

    taxonomy = _load_taxonomy(root, problems)
    rows = _read_rows(root, problems)
    if rows is None:
        return Catalog(root, (), taxonomy or Taxonomy.default()), problems

    checker = _RowChecker(root, taxonomy, check_media, problems)
    products = [p for p in (checker.check(line, cells) for line, cells in rows) if p is not None]
    products = _fit_pair_ids(products, problems)
    if taxonomy is None:
        # Without a usable taxonomy no row can be classified; rows were still
        # checked so that one run reports everything.
        products = []
    return Catalog(root, tuple(products), taxonomy or Taxonomy.default()), problems


def _fit_pair_ids(products: list[Product], problems: list[Problem]) -> list[Product]:
    """The products without the photos whose pair ids would be too long (each a problem).

    A photo is a target of clips of every other product, so its pair ids are longest
    with the longest other id as the source; a row left with no photo is left out.
    """
    by_length = sorted(products, key=lambda p: len(p.id), reverse=True)[:2]
    kept: list[Product] = []
    for product in products:
        others = [p for p in by_length if p is not product]
        if not others:
            kept.append(product)
            continue
        source = others[0]
        photos = []
        for path in product.images:
            key = f"{product.id}{SEPARATOR}{image_token(path.stem)}"
            length = len(source.id) + _CLIP_PART + len(key) + _KEY_SPARE
            if length <= MAX_KEY_LENGTH:
                photos.append(path)
                continue
            message = (
                f"file name too long: with {source.id!r} (row {source.row}) as the source, "
                f"pair ids of {key!r} would be {length} characters, at most {MAX_KEY_LENGTH} "
                f"(they name files): shorten the name of {path.name}"
            )
            problems.append(Problem(CSV_NAME, product.row, "images", message))
        if photos:
            kept.append(replace(product, images=tuple(photos)))
    return kept


def _load_taxonomy(root: Path, problems: list[Problem]) -> Taxonomy | None:
    path = root / TAXONOMY_NAME
    if not path.exists():
        return Taxonomy.default()
    try:
        return Taxonomy.from_yaml(path)
    except TaxonomyError as exc:
        problems.extend(Problem(TAXONOMY_NAME, None, None, p) for p in exc.problems)
        return None


def _read_rows(root: Path, problems: list[Problem]) -> list[tuple[int, dict[str, str]]] | None:
    """``(line, {column: stripped value})`` for each non-blank data row, or None if unreadable."""
    path = root / CSV_NAME
    if not path.is_file():
        problems.append(Problem(CSV_NAME, None, None, f"not found in {root}"))
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.append(Problem(CSV_NAME, None, None, f"cannot read: {exc.strerror or exc}"))
        return None
    # Bytes that are not UTF-8 become lone surrogates, so only the rows holding them are lost.
    text = data.decode("utf-8-sig", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    header_line = 0
    rows: list[tuple[int, dict[str, str]]] = []
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(Problem(CSV_NAME, line, None, f"cannot parse CSV from here on: {exc}"))
            break
        if not any(cell.strip() for cell in cells):
            continue  # blank line, or a spreadsheet's row of empty cells
        undecodable = _undecodable(cells)
        if header is None:
            if undecodable is not None:
                problems.append(Problem(CSV_NAME, line, None, _not_utf8(undecodable[1])))
                return None
            header, header_line = [cell.strip().lower() for cell in cells], line
            if not _header_ok(header, header_line, problems):
                return None
            continue
        if undecodable is not None:
            index, byte = undecodable
            column = header[index] if index < len(header) and header[index] else None
            problems.append(Problem(CSV_NAME, line, column, _not_utf8(byte)))
            continue
        extra = [cell for cell in cells[len(header) :] if cell.strip()]
        if extra:
            problems.append(
                Problem(
                    CSV_NAME,
                    line,
                    None,
                    f"row has {len(cells)} fields but the header has {len(header)} "
                    "(quote fields that contain commas)",
                )
            )
            continue
        values = {
            name: cells[i].strip() if i < len(cells) else ""
            for i, name in enumerate(header)
            if name
        }
        rows.append((line, values))
    if header is None:
        problems.append(Problem(CSV_NAME, None, None, "empty file: no header row"))
        return None
    return rows


def _undecodable(cells: list[str]) -> tuple[int, int] | None:
    """(cell index, byte) of the first byte in ``cells`` that was not UTF-8, if any."""
    for index, cell in enumerate(cells):
        for char in cell:
            if "\udc80" <= char <= "\udcff":  # how surrogateescape keeps a bad byte
                return index, ord(char) - 0xDC00
    return None


def _not_utf8(byte: int) -> str:
    return f"not UTF-8 text (byte 0x{byte:02x}); save the file as UTF-8"


def _header_ok(header: list[str], line: int, problems: list[Problem]) -> bool:
    before = len(problems)
    seen: set[str] = set()
    for name in header:
        if name and name in seen:
            problems.append(Problem(CSV_NAME, line, name, "column appears more than once"))
        seen.add(name)
    for name in REQUIRED_COLUMNS:
        if name not in seen:
            problems.append(
                Problem(
                    CSV_NAME,
                    line,
                    name,
                    f"missing required column (the header has: {', '.join(n for n in header if n)})",
                )
            )
    return len(problems) == before


class _RowChecker:
    """Checks rows one by one, remembering ids across rows to catch duplicates."""

    def __init__(
        self, root: Path, taxonomy: Taxonomy | None, check_media: bool, problems: list[Problem]
    ) -> None:
        self.root = root
        self.taxonomy = taxonomy
        self.check_media = check_media
        self.problems = problems
        self.first_id: dict[str, tuple[int, str]] = {}  # casefolded id -> (line, id)

    def check(self, line: int, values: dict[str, str]) -> Product | None:
        problem = self._reporter(line)
        before = len(self.problems)

        product_id = self._check_id(values["id"], line, problem)
        names = self._check_category(values["category"], values["subcategory"], problem)

        video = self._check_path(values["video"], "video", problem)
        frame_size = None
        if video is not None and self.check_media:
            try:
                frame_size = _probe_video(video)
            except _MediaProblem as exc:
                problem("video", f"{exc}: {values['video']}")

        row_problems = len(self.problems) - before
        images = self._check_images(values["images"], problem)  # bad photos: left out alone
        before = len(self.problems)
        box = self._check_box(values.get("first_frame_box", ""), frame_size, problem)
        row_problems += len(self.problems) - before

        if row_problems or None in (product_id, names, video, images):
            return None
        return Product(
            id=product_id,
            category=names[0],
            subcategory=names[1],
            video=video,
            images=images,
            prompt=values.get("prompt") or None,
            first_frame_box=box,
            row=line,
        )

    def _reporter(self, line: int) -> _Report:
        def report(column: str | None, message: str) -> None:
            self.problems.append(Problem(CSV_NAME, line, column, message))

        return report

    def _check_id(self, product_id: str, line: int, problem: _Report) -> str | None:
        if not product_id:
            problem("id", "empty")
            return None
        # Ids name cache and export files too, so "A1" and "a1" would collide on
        # case-insensitive file systems.
        first_line, first_id = self.first_id.setdefault(product_id.casefold(), (line, product_id))
        if first_line != line:
            spelled = "" if first_id == product_id else f" as {first_id!r}"
            problem("id", f"duplicate id {product_id!r} (first on row {first_line}{spelled})")
            return None
        if not _ID_CHARS.fullmatch(product_id):
            problem(
                "id",
                f"{product_id!r} may hold only letters, digits, '_' and '-' "
                "(ids become WebDataset keys)",
            )
            return None
        if "__" in product_id or product_id.startswith("_") or product_id.endswith("_"):
            problem(
                "id",
                f"{product_id!r} must not contain '__' nor start or end with '_' "
                "('__' joins the parts of pair ids)",
            )
            return None
        if len(product_id) > MAX_ID_LENGTH:
            problem(
                "id",
                f"{product_id!r} is {len(product_id)} characters, at most {MAX_ID_LENGTH} "
                f"(a pair id joins two ids and a photo name; it names files of at most "
                f"{FILE_NAME_MAX} bytes)",
            )
            return None
        return product_id

    def _check_category(
        self, category: str, subcategory: str, problem: _Report
    ) -> tuple[str, str] | None:
        if not category:
            problem("category", "empty")
        if not subcategory:
            problem("subcategory", "empty")
        if not category or not subcategory or self.taxonomy is None:
            return None
        try:
            return self.taxonomy.resolve(category, subcategory)
        except UnknownCategoryError as exc:
            problem("category" if exc.subcategory is None else "subcategory", str(exc))
            return None

    def _check_images(self, field: str, problem: _Report) -> tuple[Path, ...] | None:
        """The good photos of ``field``, or None when none is good (each bad one reported)."""
        entries = [entry.strip() for entry in field.split(";") if entry.strip()]
        if not entries:
            problem("images", "no images listed (separate several with ';')")
            return None
        paths: list[Path] = []
        for entry in entries:
            path = self._check_path(entry, "images", problem)
            if path is None:
                continue
            if path in paths:
                problem("images", f"listed twice: {entry}")
                continue
            if self.check_media:
                try:
                    _probe_image(path)
                except _MediaProblem as exc:
                    problem("images", f"{exc}: {entry}")
                    continue
            paths.append(path)
        return tuple(paths) or None

    def _check_path(self, text: str, column: str, problem: _Report) -> Path | None:
        """The file ``text`` names inside the catalog, or None after reporting why not."""
        if not text:
            problem(column, "empty")
            return None
        if PurePosixPath(text).is_absolute() or PureWindowsPath(text).drive:
            problem(column, f"absolute path, give it relative to the catalog folder: {text}")
            return None
        normalized = os.path.normpath(text)
        if normalized == os.pardir or normalized.startswith(os.pardir + os.sep):
            problem(column, f"path leaves the catalog folder: {text}")
            return None
        if "\x00" in text:
            problem(column, f"path holds a NUL character: {text!r}")
            return None
        path = self.root / normalized
        try:
            reason = self._locate_problem(path, text)
        except (OSError, RuntimeError) as exc:  # name too long, symlink loop (3.11: RuntimeError)
            reason = f"cannot look up {text}: {getattr(exc, 'strerror', None) or exc}"
        if reason is not None:
            problem(column, reason)
            return None
        return path

    def _locate_problem(self, path: Path, text: str) -> str | None:
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            return f"symlink leads outside the catalog folder: {text} -> {resolved}"
        if not path.exists():
            broken = " (broken symlink)" if path.is_symlink() else ""
            return f"file not found{broken}: {text}"
        if not path.is_file():
            return f"not a file: {text}"
        if not os.access(path, os.R_OK):
            return f"cannot read (permission denied): {text}"
        return None

    def _check_box(
        self, field: str, frame_size: tuple[int, int] | None, problem: _Report
    ) -> tuple[float, float, float, float] | None:
        if not field:
            return None
        parts = [part.strip() for part in field.split(",")]
        try:
            numbers = [float(part) for part in parts]
        except ValueError:
            numbers = []
        if len(numbers) != 4 or not all(math.isfinite(n) for n in numbers):
            problem("first_frame_box", f"want four numbers x0,y0,x1,y1 in pixels, got {field!r}")
            return None
        x0, y0, x1, y1 = numbers
        if x0 < 0 or y0 < 0 or x1 <= x0 or y1 <= y0:
            problem(
                "first_frame_box",
                f"want 0 <= x0 < x1 and 0 <= y0 < y1, got {field!r}",
            )
            return None
        if frame_size is not None and (x1 > frame_size[0] or y1 > frame_size[1]):
            problem(
                "first_frame_box",
                f"{field!r} reaches outside the {frame_size[0]}x{frame_size[1]} first frame",
            )
            return None
        return x0, y0, x1, y1


class _MediaProblem(Exception):
    """Why a media file cannot be used; the message names the problem, the caller the file."""


def _probe_video(path: Path) -> tuple[int, int]:
    """Width and height of the first frame of the first video stream, as displayed.

    Displayed means rotation and pixel aspect applied, as
    :attr:`pvtt.builder.video.VideoInfo.display_size` has it: the clip stage maps
    ``first_frame_box`` from that size, so the box is checked against it too.

    Only the first frame is decoded, but every packet of the stream is
    demuxed (no decoding: ~6-30 ms for a 1-4 MB clip): a web video keeps its
    index at the front, so a cut-off download still opens and decodes its
    first frame, and only the missing packets give it away.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                kinds = sorted({stream.type for stream in container.streams})
                found = f"only {', '.join(kinds)}" if kinds else "no streams at all"
                raise _MediaProblem(f"no video stream ({found})")
            stream = container.streams.video[0]
            frame = None
            packets = 0
            corrupt = False
            for packet in container.demux(stream):
                if frame is None:
                    decoded = packet.decode()  # the last, empty packet flushes the decoder
                    frame = decoded[0] if decoded else None
                if packet.size:
                    packets += 1
                    corrupt = corrupt or packet.is_corrupt
            declared = stream.frames
            sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    except av.FFmpegError as exc:
        raise _MediaProblem(f"not a readable video ({exc.strerror})") from exc
    except (OSError, ValueError) as exc:
        raise _MediaProblem(f"not a readable video ({exc})") from exc
    if frame is None:
        raise _MediaProblem("video stream has no decodable frame")
    if packets < declared:
        raise _MediaProblem(f"truncated video ({packets} of {declared} frames present)")
    if corrupt:
        raise _MediaProblem("truncated or corrupt video (a frame's data is cut short)")
    width = max(1, round(frame.width * sar)) if sar else frame.width
    turned = round(frame.rotation / 90) % 2 == 1
    return (frame.height, width) if turned else (width, frame.height)


def _probe_image(path: Path) -> None:
    """Decode the whole image: ``verify()`` alone misses truncated files."""
    try:
        with Image.open(path) as image:
            image.load()
    except Image.DecompressionBombError as exc:
        raise _MediaProblem(f"image too large to decode safely ({exc})") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        reason = "unknown format" if isinstance(exc, Image.UnidentifiedImageError) else str(exc)
        raise _MediaProblem(f"not a readable image ({reason})") from exc
