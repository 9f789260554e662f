"""The schema version every table, shard and manifest carries.

Readers accept any dataset whose major version they know; a newer major version
means columns may have changed meaning, so reading it is refused with a message
that tells the user what to upgrade.
"""

from __future__ import annotations

SCHEMA_VERSION = 1
SCHEMA_VERSION_KEY = "pvtt.schema_version"


class SchemaVersionError(RuntimeError):
    """A dataset was written by a newer pvtt than the one reading it."""


def check_schema_version(found: int | str | bytes | None, where: str) -> int:
    """Return ``found`` as an int, or raise when this pvtt cannot read it."""
    if found is None:
        raise SchemaVersionError(f"{where}: no pvtt schema version recorded; not a pvtt dataset?")
    if isinstance(found, bytes):
        found = found.decode("utf-8", "replace")
    try:
        version = int(str(found).split(".")[0])
    except ValueError:
        raise SchemaVersionError(f"{where}: unreadable schema version {found!r}") from None
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{where}: written with pvtt schema version {version}, but this pvtt reads "
            f"versions up to {SCHEMA_VERSION}; upgrade pvtt (pip install -U pvtt) to read it"
        )
    if version < 1:
        raise SchemaVersionError(f"{where}: invalid schema version {version}")
    return version
