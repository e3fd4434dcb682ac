"""``GG_STORAGE_URI``: the one string that says where remote blobs live.

    s3://BUCKET[/PREFIX][?region=R&endpoint=URL&concurrency=N&connect_timeout=S
                          &read_timeout=S&deadline=S&attempts=N]
    file:///ABSOLUTE/DIRECTORY[?concurrency=N]

The scheme picks the backend (``ir.storage.open_storage``); each built-in backend's
part is parsed once into an explicit, immutable config (:class:`S3Config`,
:class:`FileConfig`). The URI itself travels in the remote worker's request, so that
switching from moto on 127.0.0.1 to real AWS, or to a shared directory, is
configuration only. ``endpoint`` is
for S3-compatible servers (moto, MinIO); without it the AWS endpoint of ``region`` is
used. Credentials are never part of the URI: they come from the standard AWS chain
(environment, profile, the Lambda role).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from ..errors import ConfigError

MIB = 1 << 20
# S3's bucket naming rules (the subset that matters: length, characters, no IP form).
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class StorageUriError(ConfigError, ValueError):
    """A GG_STORAGE_URI that cannot be used; the message is one line."""


@dataclass(frozen=True)
class S3Config:
    bucket: str
    prefix: str = ""
    region: str = "us-east-1"
    endpoint: str | None = None
    # Requests in flight at once, over all operations of one store.
    concurrency: int = 32
    # Every single HTTP request: time to connect, and time between bytes read.
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    # One whole operation (all its retries and parts) must finish within this.
    deadline: float = 600.0
    # Attempts per request on throttling, 5xx and connection errors (1 = no retry).
    attempts: int = 5
    backoff_base: float = 0.05
    backoff_cap: float = 2.0
    # Objects larger than this go up in parts of part_size (S3 needs parts >= 5 MiB).
    multipart_threshold: int = 16 * MIB
    part_size: int = 8 * MIB

    def __post_init__(self) -> None:
        if len(self.bucket) < 3:
            raise StorageUriError(f"GG_STORAGE_URI: bucket name {self.bucket!r} is too short "
                                  "(S3 needs 3 or more characters)")
        if not _BUCKET_NAME.match(self.bucket) or ".." in self.bucket:
            raise StorageUriError(f"GG_STORAGE_URI: {self.bucket!r} is not a valid S3 bucket name "
                                  "(3-63 characters: lower-case letters, digits, '.' and '-')")
        if self.concurrency < 1 or self.attempts < 1:
            raise StorageUriError("GG_STORAGE_URI: concurrency and attempts must be at least 1")
        for name in ("connect_timeout", "read_timeout", "deadline"):
            value = getattr(self, name)
            if not value > 0 or value != value or value == float("inf"):
                raise StorageUriError(f"GG_STORAGE_URI option {name}={value:g} must be a positive number of seconds")
        if self.backoff_base < 0 or self.backoff_cap < 0:
            raise StorageUriError("GG_STORAGE_URI: backoff_base and backoff_cap must not be negative")
        if self.part_size < 5 * MIB or self.multipart_threshold < self.part_size:
            raise StorageUriError("GG_STORAGE_URI: part_size must be >= 5 MiB and multipart_threshold >= part_size")
        if self.endpoint is not None and not re.match(r"^https?://[^/\s]+", self.endpoint):
            raise StorageUriError(f"GG_STORAGE_URI option endpoint={self.endpoint!r} is not an http(s) URL")

    def key(self, ident: str) -> str:
        return f"{self.prefix}/{ident}" if self.prefix else ident

    def where(self, ident: str) -> str:
        return f"s3://{self.bucket}/{self.key(ident)}"

    @property
    def uri(self) -> str:
        """The URI back, with every option that differs from the default."""
        defaults = S3Config(bucket="xxx")
        query = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("bucket", "prefix") and getattr(self, f.name) != getattr(defaults, f.name)
        }
        path = f"/{self.prefix}" if self.prefix else ""
        return f"s3://{self.bucket}{path}" + (f"?{urlencode(query, safe=':/')}" if query else "")


_NUMERIC = {
    f.name: f.type for f in fields(S3Config) if f.name not in ("bucket", "prefix", "region", "endpoint")
}


def scheme_of(uri: str) -> str:
    """The URI's scheme, lower case; a URI without one is a :class:`StorageUriError`."""
    scheme = urlsplit(uri.strip()).scheme.lower()
    if not scheme:
        raise StorageUriError(f"GG_STORAGE_URI {uri!r} has no scheme (e.g. s3://BUCKET/PREFIX or file:///DIR)")
    return scheme


def parse_s3_uri(uri: str) -> S3Config:
    """Parse an s3:// GG_STORAGE_URI; raise :class:`StorageUriError` saying what is wrong."""
    parts = urlsplit(uri.strip())
    if parts.scheme != "s3":
        raise StorageUriError(f"GG_STORAGE_URI {uri!r} is not an s3:// URI")
    if not parts.netloc:
        raise StorageUriError(f"GG_STORAGE_URI {uri!r} names no bucket")
    options: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in ("region", "endpoint"):
            options[name] = value or None if name == "endpoint" else value
        elif name in _NUMERIC:
            try:
                options[name] = (int if _NUMERIC[name] in (int, "int") else float)(value)
            except ValueError:
                raise StorageUriError(f"GG_STORAGE_URI option {name}={value!r} is not a number") from None
        else:
            raise StorageUriError(f"GG_STORAGE_URI has unknown option {name!r}")
    return S3Config(bucket=parts.netloc, prefix=parts.path.strip("/"), **options)


@dataclass(frozen=True)
class FileConfig:
    """A shared directory (local, or NFS and the like) that holds one file per blob."""

    root: str  # absolute, normalised
    # Blocking file operations in flight at once (each runs in a worker thread).
    concurrency: int = 16

    def __post_init__(self) -> None:
        if not PurePosixPath(self.root).is_absolute():
            raise StorageUriError(f"GG_STORAGE_URI: file storage needs an absolute directory, not {self.root!r}")
        if self.concurrency < 1:
            raise StorageUriError("GG_STORAGE_URI: concurrency must be at least 1")

    def where(self, ident: str) -> str:
        return f"{self.uri_path}/{ident}"

    @property
    def uri_path(self) -> str:
        return "file://" + quote(self.root.rstrip("/") or "/")

    @property
    def uri(self) -> str:
        default = FileConfig(root="/").concurrency
        return self.uri_path + (f"?concurrency={self.concurrency}" if self.concurrency != default else "")


def parse_file_uri(uri: str) -> FileConfig:
    """Parse a file:///DIR GG_STORAGE_URI (``file://localhost/DIR`` too)."""
    parts = urlsplit(uri.strip())
    if parts.scheme != "file":
        raise StorageUriError(f"GG_STORAGE_URI {uri!r} is not a file:// URI")
    if parts.netloc not in ("", "localhost"):
        raise StorageUriError(f"GG_STORAGE_URI {uri!r}: a file:// URI names no host (file:///DIR); "
                              "mount a shared directory and name its path")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise StorageUriError(f"GG_STORAGE_URI {uri!r}: file storage needs an absolute directory (file:///DIR)")
    options: dict[str, int] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name != "concurrency":
            raise StorageUriError(f"GG_STORAGE_URI has unknown option {name!r}")
        try:
            options[name] = int(value)
        except ValueError:
            raise StorageUriError(f"GG_STORAGE_URI option {name}={value!r} is not a number") from None
    root = str(PurePosixPath(path))  # drops a trailing slash and '//' runs
    return FileConfig(root=root, **options)
