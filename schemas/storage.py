"""Object-store options: one user-facing dict for s3fs and for Lance.

Shared by the builder (publishing a build to ``s3://``) and the loaders (reading
one). An ``s3://`` prefix is used by two clients: fsspec/s3fs
for the manifest, shard indexes and tar byte ranges, and Lance's own object
store for the tables. They name their options differently, so one user-facing
dict is mapped onto both here and a dataset is configured once:

=====================  ==================================  ===========================
storage option         s3fs                                Lance
=====================  ==================================  ===========================
``endpoint_url``       ``client_kwargs["endpoint_url"]``   ``aws_endpoint``
``access_key_id``      ``key``                             ``aws_access_key_id``
``secret_access_key``  ``secret``                          ``aws_secret_access_key``
``session_token``      ``token``                           ``aws_session_token``
``region``             ``client_kwargs["region_name"]``    ``aws_region``
``anon``               ``anon``                            ``aws_skip_signature``
``allow_http``         (follows the endpoint's scheme)     ``allow_http``
=====================  ==================================  ===========================

The Lance spellings (``aws_endpoint``, ``aws_access_key_id``, ...) and s3fs's
``key``/``secret``/``token`` are accepted as aliases. ``allow_http`` defaults to
true when the endpoint is ``http://`` (Lance refuses plain HTTP otherwise).
Options not given come from the standard AWS environment variables:
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, ``AWS_REGION`` or
``AWS_DEFAULT_REGION``, and ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
``AWS_SESSION_TOKEN`` (credentials come as a group from one source, never mixed).
With neither, both clients fall back to their own credential chains (profiles,
instance roles).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

_ALIASES = {
    "endpoint_url": ("endpoint_url", "aws_endpoint", "aws_endpoint_url"),
    "access_key_id": ("access_key_id", "aws_access_key_id", "key"),
    "secret_access_key": ("secret_access_key", "aws_secret_access_key", "secret"),
    "session_token": ("session_token", "aws_session_token", "token"),
    "region": ("region", "aws_region"),
    "anon": ("anon", "aws_skip_signature"),
    "allow_http": ("allow_http",),
}
_KEYS = {alias: name for name, aliases in _ALIASES.items() for alias in aliases}
_CREDENTIALS = ("access_key_id", "secret_access_key", "session_token")
_ENV = {
    "endpoint_url": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "access_key_id": ("AWS_ACCESS_KEY_ID",),
    "secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
    "session_token": ("AWS_SESSION_TOKEN",),
}


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"storage option {name} must be true or false, got {value!r}")


@dataclass(frozen=True)
class S3Options:
    """One S3 configuration, resolved from storage options and the environment."""

    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    region: str | None = None
    anon: bool = False
    allow_http: bool | None = None

    @classmethod
    def resolve(
        cls, options: Mapping[str, Any] | None, environ: Mapping[str, str] = os.environ
    ) -> S3Options:
        given: dict[str, Any] = {}
        for key, value in (options or {}).items():
            name = _KEYS.get(str(key).lower())
            if name is None:
                raise ValueError(
                    f"unknown storage option {key!r}; known: {', '.join(sorted(_KEYS))}"
                )
            if name in given:
                raise ValueError(f"storage option {name} given twice (as {key!r})")
            given[name] = value
        env_names = [n for n in _ENV if n not in _CREDENTIALS or not set(_CREDENTIALS) & set(given)]
        for name in env_names:
            if name not in given:
                value = next((environ[v] for v in _ENV[name] if environ.get(v)), None)
                if value is not None:
                    given[name] = value
        for name in ("anon", "allow_http"):
            if name in given:
                given[name] = _flag(name, given[name])
        for name, value in given.items():
            if name not in ("anon", "allow_http"):
                given[name] = str(value)
        if bool(given.get("access_key_id")) != bool(given.get("secret_access_key")):
            raise ValueError("storage options need both access_key_id and secret_access_key")
        return cls(**given)

    @property
    def http(self) -> bool:
        if self.allow_http is not None:
            return self.allow_http
        return bool(self.endpoint_url and self.endpoint_url.lower().startswith("http://"))

    def fsspec_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``s3fs.S3FileSystem``."""
        kwargs: dict[str, Any] = {}
        client: dict[str, Any] = {}
        if self.endpoint_url:
            client["endpoint_url"] = self.endpoint_url
        if self.region:
            client["region_name"] = self.region
        if client:
            kwargs["client_kwargs"] = client
        for name, key in (
            ("access_key_id", "key"),
            ("secret_access_key", "secret"),
            ("session_token", "token"),
        ):
            if getattr(self, name):
                kwargs[key] = getattr(self, name)
        if self.anon:
            kwargs["anon"] = True
        return kwargs

    def lance_options(self) -> dict[str, str]:
        """Lance's ``storage_options`` (object_store keys, string values)."""
        out: dict[str, str] = {}
        for name, key in (
            ("endpoint_url", "aws_endpoint"),
            ("access_key_id", "aws_access_key_id"),
            ("secret_access_key", "aws_secret_access_key"),
            ("session_token", "aws_session_token"),
            ("region", "aws_region"),
        ):
            if getattr(self, name):
                out[key] = getattr(self, name)
        if self.anon:
            out["aws_skip_signature"] = "true"
        if self.http:
            out["allow_http"] = "true"
        return out

    def __repr__(self) -> str:  # never print secrets
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in _CREDENTIALS:
            if shown[name]:
                shown[name] = "***"
        return f"S3Options({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def scheme_of(location: str) -> str | None:
    head, sep, _ = location.partition("://")
    return head.lower() if sep and head.isalnum() else None


def s3_filesystem(kwargs: dict[str, Any]) -> Any:
    try:
        import fsspec

        return fsspec.filesystem("s3", **kwargs)
    except ImportError:
        raise ImportError(
            "s3:// datasets need fsspec and s3fs: pip install 'pvtt[s3]'"
        ) from None
