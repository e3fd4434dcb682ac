"""Targets of ``gg-force``: what the user named, and writing the results back.

A target is a placeholder file (the usual case after ``gg-infer``), a thunk
reference (``T`` or ``T#tag``) or a value ID. A file that is already real is reported
and left alone — unless it embeds placeholder text (made from placeholders by a tool
that read them as data): that is an error, never "already real". A symbolic link to a
placeholder stands for the file it names, which is written; the link stays, as a plain
build leaves it. A result replaces
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
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ir.archives import is_thin_archive, thin_members
from ir.errors import UserError
from ir.ids import InvalidId, parse_ref
from ir.placeholder import find_embedded_placeholder, placeholder_ref, read_placeholder
from ir.placeholder_format import MAX_PLACEHOLDER_SIZE
from ir.store import LocalStore

if TYPE_CHECKING:  # types only: gg-force's cached fast path never opens a remote store
    from ir.storage import RemoteStorage

    from .target_writer import TargetWriter


class TargetError(UserError):
    """A target that is neither a placeholder, an ID nor a real file (one line, exit 1)."""


class Seen(NamedTuple):
    """The placeholder file as it was parsed: which inode, its bytes and times. Writing
    the result replaces exactly this file or nothing (:mod:`executor.target_writer`).

    A named tuple, not a dataclass: a finished build's gg-force makes one per target,
    and a frozen dataclass's ``__init__`` cost more than the parse itself."""

    dev: int
    ino: int
    size: int
    atime_ns: int
    mtime_ns: int
    data: bytes


class Target(NamedTuple):
    """A target as the user gave it (``text``) and what it refers to (``ref``; None: a
    real file, nothing to force). ``is_file``: ``text`` names a file to replace;
    ``seen``: the placeholder as parsed (None: the writer reads it again, e.g. through
    a symbolic link)."""

    text: str
    ref: str | None
    is_file: bool = False
    seen: Seen | None = None

    @property
    def path(self) -> Path | None:
        """The placeholder to replace, as a ``Path`` (made on demand: the cached fast
        path never needs one)."""
        return Path(self.text) if self.is_file else None


_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# Reading a placeholder need not mark its inode accessed (an inode write per target on
# a file system mounted relatime, the default: gg-infer just wrote it). Only the file's
# owner may ask; for others the open is retried without it.
_NOATIME = getattr(os, "O_NOATIME", 0)


def read_seen(path: str) -> tuple[str, Seen] | None:
    """The reference of the placeholder at ``path`` and how it was seen, read with one
    ``open``; None if ``path`` is not a regular file that is a placeholder (a symbolic
    link is not followed: None, and callers use :func:`read_placeholder`)."""
    found = _read_seen(path)
    return found if isinstance(found, tuple) else None


def _read_seen(path: str) -> tuple[str, Seen] | int | None:
    """:func:`read_seen`, or the ``errno`` of an ``open`` that failed (ENOENT: no such
    file, which spares an ID target a second look)."""
    try:
        fd = os.open(path, _OPEN_FLAGS | _NOATIME)
    except PermissionError:
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            return exc.errno
    except OSError as exc:
        return exc.errno
    except ValueError:  # a NUL in the name
        return None
    try:
        st = os.fstat(fd)
        if st.st_size > MAX_PLACEHOLDER_SIZE or not stat.S_ISREG(st.st_mode):
            return None
        data = os.read(fd, MAX_PLACEHOLDER_SIZE + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    ref = placeholder_ref(data)
    if ref is None:
        return None
    return ref, Seen(st.st_dev, st.st_ino, len(data), st.st_atime_ns, st.st_mtime_ns, data)


def _stat_or_none(path: Path) -> os.stat_result | None:
    """``path``'s stat, or None where ``Path.exists`` says False. One ``stat`` where
    ``exists`` + ``is_dir`` were two."""
    try:
        return path.stat()
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
            return None
        raise
    except ValueError:  # a NUL in the name: not a file, maybe not an ID either (said below)
        return None


def parse_target(text: str) -> Target:
    found = _read_seen(text)
    if isinstance(found, tuple):  # the usual case: one open, one read
        return Target(text, found[0], True, found[1])
    if found in (errno.ENOENT, errno.ENOTDIR):  # no such file: a thunk or value ID, or nothing
        return _id_target(text)
    if found == errno.ELOOP and (linked := _through_link(text)) is not None:
        return linked
    path = Path(text)
    st = _stat_or_none(path)
    if st is None:
        return _id_target(text)
    if stat.S_ISDIR(st.st_mode):
        raise TargetError(f"{text} is a directory, not a placeholder")
    placeholder = read_placeholder(path)
    if placeholder is None:
        embedded = find_embedded_placeholder(path)
        if embedded is not None:
            raise TargetError(
                f"{text} is a real file made from placeholders (it contains the placeholder for {embedded}): "
                "a tool read placeholders as data; re-run that step (e.g. 'make clean', then gg-infer again)")
    return Target(text, placeholder.ref if placeholder else None, True)


def _through_link(text: str) -> Target | None:
    """For a symbolic link to a placeholder (``libfoo.so -> libfoo.so.1.2``), the file it
    names as the target: the result goes there and the link stays, as in a plain build.
    (Replacing the link left the library itself a placeholder and the link a copy:
    zstd's and expat's ``.so`` links.) None if ``text`` is no link to a placeholder."""
    if not os.path.islink(text):
        return None
    real = os.path.realpath(text)
    if real.startswith(os.getcwd() + "/"):
        real = os.path.relpath(real)
    resolved = read_seen(real)
    return Target(real, resolved[0], True, resolved[1]) if resolved is not None else None


def _id_target(text: str) -> Target:
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
            out.append(Target(member, found[0], True, found[1]))
        elif (linked := _through_link(member)) is not None:
            out.append(linked)
        elif (placeholder := read_placeholder(Path(member))) is not None:
            out.append(Target(member, placeholder.ref, True))
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
