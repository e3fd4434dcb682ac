"""Placeholder files: what a build sees where a real output will be.

Two forms, as in gg. The shebang form makes the placeholder executable: running it
runs ``gg-force-and-run``, which forces the thunk and then execs the real program.
Objects, archives, shared libraries and assembly (``.o .a .so .s``) get a linker-script
form instead, because a linker that meets one during dependency discovery
(``ld --verbose``) accepts a linker script with a comment but not a shebang line.
The placeholder is written with the mode the real file should end up with, so the
build (and ``gg-force`` later) can keep it.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import NamedTuple

from .atomic import atomic_write_bytes
from .ids import InvalidId, parse_ref
from .placeholder_format import LINKER_PREFIX, LINKER_SUFFIX, MAX_PLACEHOLDER_SIZE, SHEBANG_PREFIX

LINKER_EXTENSIONS = (".o", ".a", ".so", ".s")

_SO_VERSIONED = re.compile(r"\.so(\.\d+)*$")
_SHEBANG_RE = re.compile(re.escape(SHEBANG_PREFIX) + rb"([^\n]+)\n")
_LINKER_RE = re.compile(re.escape(LINKER_PREFIX) + rb"([^\n]+)\n" + re.escape(LINKER_SUFFIX.rstrip()) + rb"\n?")


class Placeholder(NamedTuple):  # not a dataclass: see ir.ids.ObjectId
    ref: str  # "ID" or "THUNK_ID#tag"
    linker_form: bool


def wants_linker_form(path: Path) -> bool:
    name = Path(path).name
    return name.endswith(LINKER_EXTENSIONS) or bool(_SO_VERSIONED.search(name))


def render(ref: str, linker_form: bool) -> bytes:
    parse_ref(ref)
    if linker_form:
        return LINKER_PREFIX + ref.encode() + b"\n" + LINKER_SUFFIX
    return SHEBANG_PREFIX + ref.encode() + b"\n"


def write_placeholder(path: Path, ref: str, mode: int | None = None, linker_form: bool | None = None) -> None:
    """Write a placeholder for ``ref`` at ``path`` atomically.

    ``linker_form`` defaults by file name; ``mode`` defaults to 0755 for the shebang
    form (it must be runnable) and 0644 for the linker-script form.
    """
    path = Path(path)
    if linker_form is None:
        linker_form = wants_linker_form(path)
    if mode is None:
        mode = 0o644 if linker_form else 0o755
    atomic_write_bytes(path, render(ref, linker_form), mode)


def parse_placeholder(data: bytes) -> Placeholder | None:
    """The placeholder in ``data``, or None if these bytes are not one.

    Accepts exactly the two forms (the linker form with or without a newline after
    ``*/``, as gg wrote it without one), so a real script that merely starts with the
    same shebang is never mistaken for a placeholder.
    """
    ref = placeholder_ref(data)
    if ref is None:
        return None
    return Placeholder(ref, not data.startswith(SHEBANG_PREFIX))


def placeholder_ref(data: bytes) -> str | None:
    """The reference of the placeholder in ``data`` (either form), or None: what
    :func:`parse_placeholder` checks, without building a :class:`Placeholder` (gg-force
    parses one per target)."""
    if len(data) > MAX_PLACEHOLDER_SIZE:
        return None
    match = _SHEBANG_RE.fullmatch(data) or _LINKER_RE.fullmatch(data)
    if match is None:
        return None
    try:
        ref = match.group(1).decode("ascii")
        parse_ref(ref)
    except (UnicodeDecodeError, InvalidId):
        return None
    return ref


def read_placeholder(path: str | os.PathLike[str]) -> Placeholder | None:
    """The placeholder at ``path``, or None if it is a real file (or missing)."""
    try:
        st = os.stat(path)
        if st.st_size > MAX_PLACEHOLDER_SIZE or not stat.S_ISREG(st.st_mode):
            return None
        with open(path, "rb") as handle:
            return parse_placeholder(handle.read(MAX_PLACEHOLDER_SIZE + 1))
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        return None


# A placeholder embedded anywhere in a file (an archive member, a copy with a header):
# the prefix, a reference, and the end of its line.
_EMBEDDED_RE = re.compile(b"(?:" + re.escape(SHEBANG_PREFIX) + b"|" + re.escape(LINKER_PREFIX) + rb")([^\n]{1,200})\n")
# Bytes of a real file searched for embedded placeholders (the search is a memchr-fast
# regex over a memory map; beyond this, the file is not read).
EMBEDDED_SCAN_LIMIT = 1 << 30


def find_embedded_placeholder(path: Path) -> str | None:
    """The reference of a placeholder embedded in the real file ``path``, or None.

    A real file that contains placeholder text was made from placeholders by a tool
    that read them as data (``ar`` archiving placeholder objects, ``cat``...); it is
    not a correct result, and must never be reported as "already real"."""
    import mmap

    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                return None
            with mmap.mmap(handle.fileno(), min(size, EMBEDDED_SCAN_LIMIT), access=mmap.ACCESS_READ) as data:
                for match in _EMBEDDED_RE.finditer(data):
                    try:
                        ref = match.group(1).decode("ascii")
                        parse_ref(ref)
                    except (UnicodeDecodeError, InvalidId):
                        continue
                    return ref
    except (OSError, ValueError):
        return None
    return None
