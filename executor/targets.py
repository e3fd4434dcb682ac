"""Targets of ``gg-force``: what the user named, and writing the results back.

A target is a placeholder file (the usual case after ``gg-infer``), a thunk
reference (``T`` or ``T#tag``) or a value ID. A file that is already real is reported
and left alone — unless it embeds placeholder text (made from placeholders by a tool
that read them as data): that is an error, never "already real". A result replaces
its placeholder atomically, copied out of the store
(the store's blob stays read-only and shared), with mode 0755 if the output was
executable and 0644 otherwise, less the umask — and only if the file is still the
same placeholder, so a concurrent build step that wrote the real file is not undone
(how: :mod:`executor.target_writer`).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ir.archives import is_thin_archive, thin_members
from ir.errors import UserError
from ir.ids import InvalidId, parse_ref
from ir.placeholder import Placeholder, find_embedded_placeholder, parse_placeholder, read_placeholder
from ir.placeholder_format import MAX_PLACEHOLDER_SIZE
from ir.store import LocalStore

if TYPE_CHECKING:  # types only: gg-force's cached fast path never opens a remote store
    from ir.storage import RemoteStorage

    from .target_writer import TargetWriter


class TargetError(UserError):
    """A target that is neither a placeholder, an ID nor a real file (one line, exit 1)."""


@dataclass(frozen=True)
class Seen:
    """The placeholder file as it was parsed: which inode, its bytes and times. Writing
    the result replaces exactly this file or nothing (:mod:`executor.target_writer`)."""

    dev: int
    ino: int
    size: int
    atime_ns: int
    mtime_ns: int
    data: bytes


@dataclass(frozen=True)
class Target:
    text: str  # as the user gave it
    ref: str | None  # None: a real file, nothing to force
    path: Path | None = None  # the placeholder to replace
    seen: Seen | None = None  # None: the writer reads the placeholder again (a symbolic link)


_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def read_seen(path: str) -> tuple[Placeholder, Seen] | None:
    """The placeholder at ``path`` and how it was seen, read with one ``open``; None
    if ``path`` is not a regular file that is a placeholder (a symbolic link is not
    followed: None, and callers use :func:`read_placeholder`)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_PLACEHOLDER_SIZE:
            return None
        data = os.read(fd, MAX_PLACEHOLDER_SIZE + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    placeholder = parse_placeholder(data)
    if placeholder is None:
        return None
    return placeholder, Seen(st.st_dev, st.st_ino, len(data), st.st_atime_ns, st.st_mtime_ns, data)


def _stat_or_none(path: Path) -> os.stat_result | None:
    """``path``'s stat, or None where ``Path.exists`` says False. One ``stat`` where
    ``exists`` + ``is_dir`` were two: a finished build's gg-force does this per target."""
    try:
        return path.stat()
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
            return None
        raise
    except ValueError:  # a NUL in the name: not a file, maybe not an ID either (said below)
        return None


def parse_target(text: str) -> Target:
    found = read_seen(text)
    if found is not None:  # the usual case: one open, one read
        return Target(text, found[0].ref, Path(text), found[1])
    path = Path(text)
    st = _stat_or_none(path)
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise TargetError(f"{text} is a directory, not a placeholder")
        placeholder = read_placeholder(path)
        if placeholder is None:
            embedded = find_embedded_placeholder(path)
            if embedded is not None:
                raise TargetError(
                    f"{text} is a real file made from placeholders (it contains the placeholder for {embedded}): "
                    "a tool read placeholders as data; re-run that step (e.g. 'make clean', then gg-infer again)")
        return Target(text, placeholder.ref if placeholder else None, path)
    try:
        parse_ref(text)
    except InvalidId:
        raise TargetError(f"{text}: no such file, and not a thunk or value ID") from None
    return Target(text, text)


def thin_archive_placeholders(target: Target) -> list[Target]:
    """For a real thin archive, its members that are still placeholders, as targets.

    A thin archive holds only its members' paths; a reader opens those files, so it
    is usable only once they are real. Forcing it means forcing them."""
    if target.ref is not None or target.path is None or not is_thin_archive(str(target.path)):
        return []
    try:
        members = thin_members(str(target.path))
    except (OSError, ValueError) as exc:
        raise TargetError(f"{target.text}: unreadable thin archive: {exc}") from None
    out = []
    for member in members:
        found = read_seen(member)
        if found is not None:
            out.append(Target(member, found[0].ref, Path(member), found[1]))
        elif (placeholder := read_placeholder(Path(member))) is not None:  # a symbolic link to one
            out.append(Target(member, placeholder.ref, Path(member)))
    return out


async def materialize(store: LocalStore, writer: TargetWriter, target: Target, value_id: str,
                      remote: RemoteStorage | None) -> bool:
    """Bring the result into the local store and write it over the target's placeholder.

    Returns False when there was no placeholder to replace (an ID target, or a file
    that stopped being this placeholder meanwhile); the result is local either way.
    """
    if not store.has(value_id):
        if remote is None:
            raise TargetError(f"{target.text}: result {value_id} is not in the local store")
        await remote.download(store, value_id)
    return writer.write(target, value_id)
