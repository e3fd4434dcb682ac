"""Reading the member table of a thin ``ar`` archive.

A thin archive (``ar --thin``/``T``) stores only the *paths* of its members, relative
to the archive's directory (or absolute); the linker opens those files. So a link
that reads a thin archive reads its members too: they are inputs of the link thunk,
and placeholders among them must be forced before a real tool reads the archive.
"""

from __future__ import annotations

import os

THIN_MAGIC = b"!<thin>\n"
_HEADER = 60


def is_thin_archive(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(THIN_MAGIC)) == THIN_MAGIC
    except OSError:
        return False


def thin_members(path: str) -> list[str]:
    """Host paths (normalized, absolute) of the members of the thin archive ``path``."""
    return [resolved for _, resolved in thin_member_names(path)]


def thin_member_names(path: str) -> list[tuple[str, str]]:
    """(stored name, absolute host path) of each member of the thin archive ``path``.

    Raises ValueError for a malformed archive. Nested thin archives are listed as
    themselves (the caller may recurse).
    """
    with open(path, "rb") as handle:
        data = handle.read()
    if not data.startswith(THIN_MAGIC):
        raise ValueError(f"{path} is not a thin archive")
    base = os.path.dirname(os.path.abspath(path))
    pos = len(THIN_MAGIC)
    names = b""
    members: list[tuple[str, str]] = []
    while pos + _HEADER <= len(data):
        header = data[pos:pos + _HEADER]
        if header[58:60] != b"`\n":
            raise ValueError(f"{path}: bad member header at offset {pos}")
        name = header[:16].rstrip(b" ")
        size = int(header[48:58].strip() or b"0")
        pos += _HEADER
        if name in (b"/", b"/SYM64/"):  # symbol table: its data is in the archive
            pos += size + (size & 1)
            continue
        if name == b"//":  # long-name table: data in the archive
            names = data[pos:pos + size]
            pos += size + (size & 1)
            continue
        if name.startswith(b"/") and name[1:].isdigit():
            start = int(name[1:])
            end = names.index(b"/\n", start)
            member = names[start:end]
        else:
            member = name[:-1] if name.endswith(b"/") else name
        # a thin archive holds no member data: the next header follows at once
        text = member.decode("utf-8", "surrogateescape")
        members.append((text, os.path.normpath(os.path.join(base, text))))
    return members
