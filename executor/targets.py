"""Targets of ``gg-force``: what the user named, and writing the results back.

A target is a placeholder file (the usual case after ``gg-infer``), a thunk
reference (``T`` or ``T#tag``) or a value ID. A file that is already real is reported
and left alone — unless it embeds placeholder text (made from placeholders by a tool
that read them as data): that is an error, never "already real". A result replaces
its placeholder atomically, copied out of the store
(the store's blob stays read-only and shared), with mode 0755 if the output was
executable and 0644 otherwise, less the umask — and only if the file is still the
same placeholder, so a concurrent build step that wrote the real file is not undone.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ir.archives import is_thin_archive, thin_members
from ir.atomic import atomic_write
from ir.errors import UserError
from ir.hashing import hash_stream
from ir.ids import InvalidId, parse_ref
from ir.placeholder import find_embedded_placeholder, read_placeholder
from ir.store import CorruptBlob, LocalStore

if TYPE_CHECKING:  # a type only: gg-force's cached fast path never opens a remote store
    from ir.storage import RemoteStorage


class TargetError(UserError):
    """A target that is neither a placeholder, an ID nor a real file (one line, exit 1)."""


@dataclass(frozen=True)
class Target:
    text: str  # as the user gave it
    ref: str | None  # None: a real file, nothing to force
    path: Path | None = None  # the placeholder to replace


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
        placeholder = read_placeholder(Path(member))
        if placeholder is not None:
            out.append(Target(member, placeholder.ref, Path(member)))
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


async def materialize(store: LocalStore, target: Target, value_id: str, remote: RemoteStorage | None) -> bool:
    """Bring the result into the local store and write it over the target's placeholder.

    Returns False when there was no placeholder to replace (an ID target, or a file
    that stopped being this placeholder meanwhile); the result is local either way.
    """
    if not store.has(value_id):
        if remote is None:
            raise TargetError(f"{target.text}: result {value_id} is not in the local store")
        await remote.download(store, value_id)
    return write_target(store, target, value_id)


def write_target(store: LocalStore, target: Target, value_id: str) -> bool:
    """Write local value ``value_id`` over the target's placeholder (see :func:`materialize`).

    The copy is hashed as it is made: a corrupt blob never becomes a user's file
    (:class:`CorruptBlob`, and the blob is dropped so the next run rebuilds it).
    """
    if target.path is None:
        return False
    current = read_placeholder(target.path)
    if current is None or current.ref != target.ref:
        return False
    placeholder_stat = os.stat(target.path)
    blob = store.blob_path(value_id)
    executable = os.access(blob, os.X_OK)
    mode = (0o755 if executable else 0o644) & ~_umask()
    # The real file keeps the placeholder's timestamps: make compared them when it
    # wrote the placeholders, and forcing an object after the archive that contains
    # it must not make the archive look out of date.
    atomic_write(target.path, lambda handle: _copy_verified(store, value_id, handle), mode,
                 times_ns=(placeholder_stat.st_atime_ns, placeholder_stat.st_mtime_ns))
    return True


def _copy_verified(store: LocalStore, value_id: str, sink) -> None:
    """Copy a blob while re-hashing it: a corrupt blob never becomes a user's file.

    The corrupt blob is dropped, so its reduction no longer counts as a hit and the
    next run rebuilds it.
    """
    with open(store.blob_path(value_id), "rb") as source:
        actual = hash_stream(source, sink=sink)
    if actual != value_id:
        store.remove_corrupt(value_id)
        raise CorruptBlob(value_id, actual, f"{store.blobs} (removed; run again to rebuild it)")
