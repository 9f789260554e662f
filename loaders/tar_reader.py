"""Reading samples out of pvtt tar shards by byte range, with member names checked.

A shard index gives each sample's ``[offset, end)`` in the tar, so a reader seeks
straight to the samples it wants. Member names are validated (the key must be the
sample's, the field a plain name): a shard is data, never a path to write to. The
index entry and every header are checked against each other too (a sample starts
with its json, no member runs past the sample's end, no field repeats), so a corrupt
or hostile shard or index raises :class:`ShardFormatError` and never makes the reader
loop, seek backwards or allocate what the sample cannot hold.

A member whose name does not fit USTAR's 100 bytes (a long pair id) comes after a
PAX extended header; the sample's byte range starts at that header, and the reader
takes the member's name (and size) from it. Nothing else of PAX is honoured: a
sparse file or a header that is not ``length key=value`` records is refused.

Local shards are read with a plain file, seeking past unrequested members. On an
object store (``fs`` given, an fsspec filesystem) a sample costs one ranged GET of
``[offset, end)`` and its members are parsed from those bytes in memory: a request
costs far more than the bytes of a sample's other members.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

_FIELD = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")
BLOCK = tarfile.BLOCKSIZE
JSON_PROBE = 64 << 10
"""Bytes fetched to read a sample's json (header + member) in one request."""
PAX_MAX = 8 << 10
"""The largest PAX extended header read (a long member name needs a few hundred bytes)."""
_PAX_RECORD = re.compile(rb"([1-9][0-9]{0,5}) ")


class ShardFormatError(ValueError):
    """A shard whose bytes do not match its index or the sample format."""


class RangeBuffer:
    """Bytes ``[base, base + len(data))`` of a shard, read with the shard's own offsets."""

    def __init__(self, data: bytes | np.ndarray, base: int) -> None:
        self._view = memoryview(data)
        self._base = base
        self._pos = 0

    def seek(self, offset: int) -> None:
        self._pos = offset - self._base

    def read(self, size: int) -> bytes:
        if self._pos < 0:
            return b""
        out = bytes(self._view[self._pos : self._pos + size])
        self._pos += len(out)
        return out


def entry_range(entry: Any, shard: Path | str) -> tuple[str, int, int]:
    """The key and ``[offset, end)`` of a shard index entry, checked: an index is data too."""
    try:
        key, offset, end = entry["key"], entry["offset"], entry["end"]
    except (KeyError, TypeError, IndexError):
        raise ShardFormatError(f"{shard}: index entry without key, offset and end") from None
    if not isinstance(key, str) or not key:
        raise ShardFormatError(f"{shard}: index entry key {key!r} is not a sample key")
    for value in (offset, end):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ShardFormatError(f"{shard}: sample {key!r}: byte offset {value!r} is not an int")
    if not 0 <= offset <= end:
        raise ShardFormatError(f"{shard}: sample {key!r}: bad byte range {offset}-{end}")
    return key, offset, end


def _read_member(
    fh: BinaryIO | RangeBuffer, shard: Path | str, offset: int, end: int
) -> tuple[tarfile.TarInfo, int]:
    """The member at ``offset`` (after its PAX header, if any) and where its data starts."""
    info, data_start = _read_header(fh, shard, offset, end)
    if info.type != tarfile.XHDTYPE:
        return info, data_start
    if info.size > PAX_MAX:
        raise ShardFormatError(
            f"{shard}: PAX header at byte {offset} claims {info.size} bytes (at most {PAX_MAX})"
        )
    fh.seek(data_start)
    raw = fh.read(info.size)
    if len(raw) != info.size:
        raise ShardFormatError(f"{shard}: PAX header at byte {offset} is truncated")
    records = _pax_records(raw, shard, offset)
    header_at = data_start + _padded(info.size)
    info, data_start = _read_header(fh, shard, header_at, end)
    if "path" in records:
        info.name = records["path"]
    if "size" in records:
        if not records["size"].isascii() or not records["size"].isdigit():
            raise ShardFormatError(f"{shard}: PAX size {records['size']!r} at byte {offset}")
        info.size = int(records["size"])
        _check_size(info, shard, header_at, data_start, end)
    return info, data_start


def _read_header(
    fh: BinaryIO | RangeBuffer, shard: Path | str, offset: int, end: int
) -> tuple[tarfile.TarInfo, int]:
    """The header block at ``offset`` and where its data starts; its data must end by ``end``."""
    fh.seek(offset)
    buf = fh.read(BLOCK)
    if len(buf) < BLOCK:
        raise ShardFormatError(f"{shard}: truncated tar header at byte {offset}")
    try:
        info = tarfile.TarInfo.frombuf(buf, tarfile.ENCODING, "surrogateescape")
    except tarfile.TarError as exc:
        raise ShardFormatError(f"{shard}: bad tar header at byte {offset}: {exc}") from None
    data_start = offset + BLOCK
    _check_size(info, shard, offset, data_start, end)
    return info, data_start


def _check_size(
    info: tarfile.TarInfo, shard: Path | str, offset: int, data_start: int, end: int
) -> None:
    # base-256 sizes can be negative; either kind would loop or over-read
    if not 0 <= info.size <= end - data_start:
        raise ShardFormatError(
            f"{shard}: member {info.name!r} at byte {offset} claims {info.size} bytes, "
            f"past the sample's end at byte {end}"
        )


def _pax_records(raw: bytes, shard: Path | str, offset: int) -> dict[str, str]:
    """The ``length key=value\\n`` records of a PAX extended header, checked strictly."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(raw):
        m = _PAX_RECORD.match(raw, pos)
        stop = pos + int(m.group(1)) if m else 0
        if m is None or stop > len(raw) or stop <= m.end() or raw[stop - 1] != 0x0A:
            raise ShardFormatError(f"{shard}: bad PAX record at byte {offset} (+{pos})")
        key, sep, value = raw[m.end() : stop - 1].partition(b"=")
        try:
            name, text = key.decode("utf-8"), value.decode("utf-8")
        except UnicodeDecodeError:
            raise ShardFormatError(f"{shard}: PAX record at byte {offset} is not UTF-8") from None
        if not sep or not name:
            raise ShardFormatError(f"{shard}: bad PAX record at byte {offset} (+{pos})")
        if name.startswith("GNU.sparse"):
            raise ShardFormatError(f"{shard}: sparse member at byte {offset}")
        records[name] = text
        pos = stop
    return records


def _padded(size: int) -> int:
    return ((size + BLOCK - 1) // BLOCK) * BLOCK


def split_member_name(name: str, key: str, shard: Path | str) -> str:
    """The field of a member ``{key}.{field}``; refuses anything else."""
    if not name.startswith(key + ".") or "/" in name or "\\" in name:
        raise ShardFormatError(f"{shard}: member {name!r} does not belong to sample {key!r}")
    field = name[len(key) + 1 :]
    if not _FIELD.match(field):
        raise ShardFormatError(f"{shard}: member {name!r} has an invalid field name")
    return field


def member_spans(
    fh: BinaryIO | RangeBuffer, shard: Path | str, entry: dict[str, Any]
) -> Iterator[tuple[str, int, int]]:
    """``(field, offset of its data, size)`` of each member of one sample, reading only the
    headers: a caller that reads the sample's bytes into a buffer of its own finds each
    member there.

    The first member is the sample's json, as every pvtt shard writes it.
    """
    key, offset, end = entry_range(entry, shard)
    if offset == end:
        raise ShardFormatError(f"{shard}: sample {key!r} is empty")
    seen: set[str] = set()
    while offset < end:
        info, data_start = _read_member(fh, shard, offset, end)
        if not info.isreg():
            raise ShardFormatError(f"{shard}: member {info.name!r} is not a regular file")
        field = split_member_name(info.name, key, shard)
        if not seen and field != "json":
            raise ShardFormatError(f"{shard}: sample {key!r} does not start with its json")
        if field in seen:
            raise ShardFormatError(f"{shard}: sample {key!r} has two {field!r} members")
        seen.add(field)
        yield field, data_start, info.size
        offset = data_start + _padded(info.size)
    if offset != end:
        raise ShardFormatError(f"{shard}: sample {key!r} does not end where its index says")


def iter_members(
    fh: BinaryIO | RangeBuffer,
    shard: Path | str,
    entry: dict[str, Any],
    want: set[str] | None = None,
) -> Iterator[tuple[str, bytes | None]]:
    """``(field, bytes)`` of each member of one sample; bytes None when not in ``want``.

    The first member is the sample's json, as every pvtt shard writes it.
    """
    for field, data_start, size in member_spans(fh, shard, entry):
        data: bytes | None = None
        if want is None or field in want:
            fh.seek(data_start)
            data = fh.read(size)
            if len(data) != size:
                raise ShardFormatError(f"{shard}: member {entry['key']}.{field} is truncated")
        yield field, data


def read_sample(
    path: Path | str, entry: dict[str, Any], fields: set[str] | None = None, *, fs: Any = None
) -> dict[str, bytes]:
    """The members of one sample (all, or only ``fields``), read by byte range.

    ``path`` is a local file, or with ``fs`` (an fsspec filesystem) a path on it.
    """
    if fs is not None:
        _, offset, end = entry_range(entry, path)
        buf = RangeBuffer(fs.cat_file(str(path), start=offset, end=end), offset)
        return {f: d for f, d in iter_members(buf, path, entry, fields) if d is not None}
    with open(path, "rb") as fh:
        _random_access(fh)
        return {f: d for f, d in iter_members(fh, path, entry, fields) if d is not None}


def _random_access(fh: BinaryIO) -> None:
    """Tell the kernel not to read ahead: samples are read by range, often out of order.

    With an 8 MB readahead window, reading one selected sample pulled ~4x its bytes
    from disk (measured by tools/bench/loader.py).
    """
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        except OSError:
            pass


def read_sample_json(path: Path | str, entry: dict[str, Any], *, fs: Any = None) -> dict[str, Any]:
    """The ``{key}.json`` of one sample: the pair's scalar columns.

    One read of up to :data:`JSON_PROBE` bytes covers the header and the json of
    any ordinary sample (one GET on an object store); a larger json costs a second.
    """
    if fs is not None:
        return _json_member(path, entry, lambda a, b: fs.cat_file(str(path), start=a, end=b))
    with open(path, "rb") as fh:

        def get(start: int, stop: int) -> bytes:
            fh.seek(start)
            return fh.read(stop - start)

        return _json_member(path, entry, get)


def _json_member(
    path: Path | str, entry: dict[str, Any], get: Callable[[int, int], bytes]
) -> dict[str, Any]:
    key, offset, end = entry_range(entry, path)
    buf = RangeBuffer(get(offset, min(end, offset + JSON_PROBE)), offset)
    info, data_start = _read_member(buf, path, offset, end)
    if not info.isreg() or split_member_name(info.name, key, path) != "json":
        raise ShardFormatError(f"{path}: sample {key!r} does not start with its json")
    buf.seek(data_start)
    raw = buf.read(info.size)
    if len(raw) < info.size:
        raw = get(data_start, data_start + info.size)
    if len(raw) != info.size:
        raise ShardFormatError(f"{path}: the json of sample {key!r} is truncated")
    return parse_sample_json(raw, path, key)


def parse_sample_json(raw: bytes, shard: Path | str, key: str) -> dict[str, Any]:
    """A sample's ``json`` member: an object, or :class:`ShardFormatError` naming the sample."""
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ShardFormatError(f"{shard}: sample {key!r} has bad json: {exc}") from None
    if not isinstance(meta, dict):
        raise ShardFormatError(f"{shard}: the json of sample {key!r} is not an object")
    return meta
