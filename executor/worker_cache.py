"""A remote worker's size-capped blob cache (``/tmp`` on Lambda), kept across requests.

Lambda's ``/tmp`` is small (512 MiB by default) and shared by every invocation a warm
sandbox serves; gg filled it and failed (#25). Before a batch runs, the cache makes
room for the inputs it still has to fetch, evicting least-recently-used blobs and
never a blob the current batch needs. After the batch, it trims back to the cap.

The use time is kept in memory (:class:`Recency`), falling back to a blob's mtime
(when it arrived): touching the file with ``utime`` would move its ctime, and an
unchanged ctime is what lets verify-on-use trust a blob without hashing it again.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable

from ir.store import LocalStore

MIB = 1 << 20


class Recency:
    """When each blob was last needed by a batch (ns since the epoch), for one worker."""

    def __init__(self) -> None:
        self._used: dict[str, int] = {}

    def touch(self, idents: Iterable[str]) -> None:
        """Mark blobs as just used (call before any thunk of the batch starts running)."""
        now = time.time_ns()
        for ident in idents:
            self._used[ident] = now

    def last_use(self, ident: str, mtime_ns: int) -> int:
        return max(self._used.get(ident, 0), mtime_ns)


def usage(store: LocalStore) -> int:
    """Bytes of blobs in the cache (one scan)."""
    return sum(size for _mtime, _name, size in _entries(store, None))


def _entries(store: LocalStore, recency: Recency | None) -> list[tuple[int, str, int]]:
    entries = []
    with os.scandir(store.blobs) as scan:
        for entry in scan:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            used = recency.last_use(entry.name, st.st_mtime_ns) if recency else st.st_mtime_ns
            entries.append((used, entry.name, st.st_size))
    return entries


def trim(store: LocalStore, cap_bytes: int, protect: frozenset[str] = frozenset(), reserve: int = 0,
         recency: Recency | None = None) -> int:
    """Evict LRU blobs until blobs + ``reserve`` fit in ``cap_bytes``; return bytes freed.

    The cap is soft: protected blobs are never evicted, even if they alone exceed it.
    """
    entries = _entries(store, recency)
    before = sum(size for _mtime, _name, size in entries)
    return before - _evict(store, entries, before, cap_bytes - reserve, protect)


def trim_to(store: LocalStore, cap_bytes: int, protect: frozenset[str] = frozenset(), reserve: int = 0,
            recency: Recency | None = None) -> int:
    """:func:`trim`, returning the bytes of blobs left in the cache instead."""
    entries = _entries(store, recency)
    return _evict(store, entries, sum(size for _mtime, _name, size in entries), cap_bytes - reserve, protect)


def _evict(store: LocalStore, entries: list[tuple[int, str, int]], total: int, budget: int,
           protect: frozenset[str]) -> int:
    if total <= budget:
        return total
    for _mtime, name, size in sorted(entries):
        if name in protect:
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(store.blobs / name)
            store.verified.forget(name)
            total -= size
        if total <= budget:
            break
    return total
