"""Content IDs: what every blob, thunk and reduction is called.

An ID reads ``<kind><algorithm><digest>_<size>``:

* kind ``V`` (a value: any bytes) or ``T`` (a thunk file),
* one lowercase letter naming the hash algorithm (``x`` = XXH3-128), so a future
  algorithm can be added without breaking existing stores,
* the digest in lowercase hex (32 characters for XXH3-128),
* ``_`` and the size in bytes in lowercase hex, with no upper bound (gg's
  ``%08x`` field capped objects at 4 GiB).

Lowercase hex plus ``_`` keeps an ID safe as a file name on case-insensitive file
systems, as an S3 key and inside gg's ``@{GGHASH:...}`` references. A reference to a
named output of a thunk is ``<thunk ID>#<tag>``; the bare thunk ID means its first
output.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import lru_cache
from typing import NamedTuple, NoReturn

import xxhash

# A file that starts with these bytes is a thunk (kind T); anything else is a value.
# Defined here, not in ir.thunk, so hashing does not have to import protobuf.
MAGIC = b"##GGTHUNK##"


class Kind(StrEnum):
    VALUE = "V"
    THUNK = "T"


# Algorithm letter -> (digest length in hex characters, hasher factory).
ALGORITHMS = {"x": (32, xxhash.xxh3_128)}
# Algorithm letter -> hex digest of a whole bytes object in one call (no hasher object:
# a scheduler hashes every thunk it loads and every small record it writes).
_ONE_SHOT = {"x": xxhash.xxh3_128_hexdigest}
DEFAULT_ALGORITHM = "x"

_ID_RE = re.compile(r"([VT])([a-z])([0-9a-f]+)_(0|[1-9a-f][0-9a-f]*)")
_HEX = frozenset("0123456789abcdef")
_TAG_RE = re.compile(r"[A-Za-z0-9_.+\-/]+")


class InvalidId(ValueError):
    """A string that should have been a content ID (or reference) is not one."""


class ObjectId(NamedTuple):
    """A parsed content ID. ``str(oid)`` gives back the canonical text.

    Named tuples, this and :class:`Ref`, not frozen dataclasses: immutable, ordered
    and hashable the same way, and several times cheaper to make (a fresh gg-force on
    a finished build parses two IDs per target)."""

    kind: Kind
    algorithm: str
    digest: str
    size: int

    def __str__(self) -> str:
        return f"{self.kind.value}{self.algorithm}{self.digest}_{self.size:x}"

    @property
    def is_thunk(self) -> bool:
        return self.kind is Kind.THUNK


_KINDS = {"V": Kind.VALUE, "T": Kind.THUNK}
# Parsed IDs are interned: a scheduler sees every ID of a graph many times (loading,
# validating, rewriting, recording), and parsing one costs a regex, an enum lookup and a
# dataclass. Bounded, so a long-lived process (a warm Lambda worker) does not grow.
_PARSED_CACHE = 1 << 17


def parse_id(text: str) -> ObjectId:
    """Parse and validate an ID; raise :class:`InvalidId` saying what is wrong.

    The message names the first problem found, because IDs are typed and pasted by
    people, and "malformed" alone does not tell them which character to fix.
    """
    if not isinstance(text, str):
        raise InvalidId(f"ID must be a string, not {type(text).__name__}")
    return _parse_id(text)


@lru_cache(maxsize=_PARSED_CACHE)
def _parse_id(text: str) -> ObjectId:
    match = _ID_RE.fullmatch(text)  # fullmatch: "$" would accept a trailing newline
    if not match:
        _explain_malformed(text)
    kind, algorithm, digest, size = match.groups()
    if algorithm not in ALGORITHMS:
        raise InvalidId(f"ID {text!r} names unknown hash algorithm {algorithm!r}")
    expected = ALGORITHMS[algorithm][0]
    if len(digest) != expected:
        raise InvalidId(f"ID {text!r} has a {len(digest)}-character digest, expected {expected}")
    return ObjectId(_KINDS[kind], algorithm, digest, int(size, 16))


def _explain_malformed(text: str) -> NoReturn:
    """Raise :class:`InvalidId` naming why ``text`` does not match the ID grammar."""
    if not text:
        raise InvalidId("empty ID")
    if text[0] not in "VT":
        raise InvalidId(f"malformed ID {text!r}: must start with V (value) or T (thunk)")
    if len(text) < 2 or not ("a" <= text[1] <= "z"):
        raise InvalidId(f"malformed ID {text!r}: second character must name the hash algorithm")
    body, sep, size = text[2:].partition("_")
    if not sep:
        raise InvalidId(f"malformed ID {text!r}: no '_' before the size")
    if not body or not all(c in _HEX for c in body):
        raise InvalidId(f"malformed ID {text!r}: digest must be lowercase hex")
    if not size or not all(c in _HEX for c in size):
        raise InvalidId(f"malformed ID {text!r}: size must be lowercase hex")
    raise InvalidId(f"malformed ID {text!r}: size has leading zeros")


def make_id(kind: Kind, digest: str, size: int, algorithm: str = DEFAULT_ALGORITHM) -> str:
    # str(ObjectId(...)) without building one. A Kind is a str ("V"/"T"): concatenating
    # it skips the enum's slow ``.value`` property.
    return kind + algorithm + digest + "_" + format(size, "x")


def new_hasher(algorithm: str = DEFAULT_ALGORITHM):
    """A fresh incremental hasher for ``algorithm`` (``update``/``hexdigest``)."""
    return ALGORITHMS[algorithm][1]()


class Ref(NamedTuple):
    """A reference to an object: an ID, optionally ``#tag`` (a thunk's named output)."""

    id: str
    tag: str | None = None

    def __str__(self) -> str:
        return self.id if self.tag is None else f"{self.id}#{self.tag}"

    @property
    def is_thunk(self) -> bool:
        return self.id[0] == "T"  # Kind.THUNK.value, without an enum property lookup per call


def parse_ref(text: str) -> Ref:
    """Parse ``ID`` or ``THUNK_ID#tag``; a tag on a value ID is an error."""
    if not isinstance(text, str):
        raise InvalidId(f"ID must be a string, not {type(text).__name__}")
    return _parse_ref(text)


@lru_cache(maxsize=_PARSED_CACHE)
def _parse_ref(text: str) -> Ref:
    ident, sep, tag = text.partition("#")
    oid = parse_id(ident)
    if not sep:
        return Ref(ident)
    if not oid.is_thunk:
        raise InvalidId(f"reference {text!r} puts an output tag on a value ID")
    validate_tag(tag)
    return Ref(ident, tag)


@lru_cache(maxsize=4096)  # a build has few distinct tags ("out", "x.o"), each checked per thunk
def validate_tag(tag: str) -> str:
    """Output tags name files in the work directory: plain, relative, no '..'."""
    if not tag or not _TAG_RE.fullmatch(tag):
        raise InvalidId(f"invalid output tag {tag!r}")
    if tag.startswith("/") or any(part in ("", ".", "..") for part in tag.split("/")):
        raise InvalidId(f"output tag {tag!r} must be a plain relative path")
    return tag


def kind_of(head: bytes) -> Kind:
    """The kind of a blob from its first bytes (at least ``len(MAGIC)`` of them, or all):
    a thunk file starts with the magic, anything else is a value."""
    return Kind.THUNK if head.startswith(MAGIC) else Kind.VALUE


def id_of_blob(data: bytes, algorithm: str = DEFAULT_ALGORITHM) -> str:
    """The ID of ``data`` as a blob: its kind comes from its content."""
    return id_of_bytes(data, kind_of(data), algorithm)


def id_of_bytes(data: bytes, kind: Kind, algorithm: str = DEFAULT_ALGORITHM) -> str:
    return make_id(kind, _ONE_SHOT[algorithm](data), len(data), algorithm)
