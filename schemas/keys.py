"""Identifiers of clips, product images and pairs.

Keys become WebDataset sample keys, where the first ``.`` of a member name
separates the key from the field, so no key may contain a ``.``; ``__`` is the
separator inside a pair id, so no part may contain it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
SEPARATOR = "__"


class InvalidKeyError(ValueError):
    """An identifier that cannot be used as a key."""


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a valid part of a key, else raise with the reason."""
    if not value:
        raise InvalidKeyError(f"{what} is empty")
    if not ID_PATTERN.match(value):
        raise InvalidKeyError(f"{what} {value!r} may hold only letters, digits, '_' and '-'")
    if SEPARATOR in value or value.startswith("_") or value.endswith("_"):
        raise InvalidKeyError(f"{what} {value!r} may not contain '__' or start or end with '_'")
    return value


def image_token(stem: str) -> str:
    """A key-safe token for an image file's stem (``"front view.v2"`` -> ``"front-view-v2"``)."""
    token = re.sub(r"[^A-Za-z0-9-]+", "-", stem).strip("-")
    return token or "image"


def clip_id(source_id: str, shot_index: int) -> str:
    return f"{check_id(source_id, 'source id')}_s{shot_index:03d}"


def image_id(product_id: str, token: str) -> str:
    return f"{check_id(product_id, 'product id')}{SEPARATOR}{check_id(token, 'image token')}"


def pair_id(clip: str, target_id: str, token: str) -> str:
    """``{clip_id}__{target_id}__{image}`` (the contract's pair id)."""
    return SEPARATOR.join(
        (check_id(clip, "clip id"), check_id(target_id, "target id"), check_id(token, "image token"))
    )


def split_pair_id(value: str) -> tuple[str, str, str]:
    parts = value.split(SEPARATOR)
    if len(parts) != 3 or not all(ID_PATTERN.match(p) for p in parts):
        raise InvalidKeyError(f"pair id {value!r} is not '{{clip_id}}__{{target_id}}__{{image}}'")
    return parts[0], parts[1], parts[2]


PAIR_ROW_IDS = ("pair_id", "clip_id", "source_id", "target_id")
"""The ids of a ``pairs`` row that readers turn into file names and keys."""


def check_pair_row_ids(row: Mapping[str, Any]) -> None:
    """Check the ids of a ``pairs`` row read from a dataset, before any is used.

    A dataset is input like any other: ``pvtt export-pairs`` names files after these
    ids, so an id such as ``../../evil`` from a tampered table or shard would write
    outside the export folder. Each id must be a valid key part, and the pair id must
    be ``{clip_id}__{target_id}__{image}`` of this row's own ids.
    """
    for name in PAIR_ROW_IDS[1:]:
        value = row.get(name)
        if not isinstance(value, str):
            raise InvalidKeyError(f"{name} {value!r} is not a string")
        check_id(value, name)
    pid = row.get("pair_id")
    if not isinstance(pid, str):
        raise InvalidKeyError(f"pair_id {pid!r} is not a string")
    clip, target, image = split_pair_id(pid)
    check_id(image, "pair_id's image token")
    if (clip, target) != (row["clip_id"], row["target_id"]):
        raise InvalidKeyError(
            f"pair_id {pid!r} does not start with clip_id {row['clip_id']!r} and "
            f"target_id {row['target_id']!r}"
        )
