"""File IDs for one gg-infer run: the store's hash cache plus an in-memory layer.

Every compile call checks the content of its source and of every header it read (often
80 files, most of them the same system headers in every call). Going to the on-disk
hash cache for each costs a file read and a blob ``stat`` per header, and, for files
written within the hash cache's racy window (a fresh checkout, a generated header), a
re-hash *and* an atomic rewrite of the cache entry on every call — an entry that can
never be trusted, because it was made while the file was still racy.

This layer keeps, per path, the full ``stat`` identity (device, inode, size, mtime,
ctime) and the ID, so a repeat check is one ``stat`` and a dict lookup. It follows the
same racy rule as :class:`ir.hashing.HashCache`: an ID is remembered (in memory or on
disk) only if the file's newest timestamp is older than the racy window at the moment
it was stat'ed before reading; a racy file is simply hashed again (cheap for a header)
and nothing is written. Blobs known to be in the store are remembered too: a gg-infer
run only adds blobs.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

from ir.hashing import hash_file
from ir.store import LocalStore

from .memo_observer import Observer

StatKey = tuple[int, int, int, int, int]
_SMALL = 1 << 20  # files up to this size are stored from one read into memory


def stat_key(st: os.stat_result) -> StatKey:
    """What identifies one version of a file for caching purposes."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class FileIds:
    """Content IDs of host files, each stored in the store once (thread-safe)."""

    def __init__(self, store: LocalStore, observer: Observer | None = None):
        self.store = store
        self.observer = observer or Observer()  # the call being recorded for the memo learns each ID
        self._lock = threading.Lock()
        self._memo: dict[str, tuple[StatKey, str]] = {}
        self._present: set[str] = set()
        self._executable: set[str] = set()

    def snapshot(self) -> dict[str, tuple[StatKey, str]]:
        """The remembered IDs (trusted entries only, each keyed by its full stat identity),
        for the next run (the warm model server seeds its workers with them)."""
        with self._lock:
            return dict(self._memo)

    def seed(self, memo: dict[str, tuple[StatKey, str]]) -> None:
        """Start from another run's :meth:`snapshot`: each entry is used only while the
        file's stat identity is the same, the rule the on-disk hash cache follows. (Blobs
        seen in the store are not carried over: a ``gg gc`` between runs may remove them.)"""
        with self._lock:
            self._memo.update(memo)

    def has_blob(self, ident: str) -> bool:
        """Whether blob ``ident`` is in the store (remembered once seen)."""
        return self._has(ident)

    def _has(self, ident: str) -> bool:
        if ident in self._present:
            return True
        if self.store.has(ident):
            with self._lock:
                self._present.add(ident)
            return True
        return False

    def stored(self, path: str, executable: bool = False) -> str:
        """ID of the file at ``path``, copying it into the store if the blob is new."""
        ident = self._stored(path, executable)
        self.observer.file(path, ident)
        return ident

    def _stored(self, path: str, executable: bool) -> str:
        observed = time.time_ns()
        st = os.stat(path)
        key = stat_key(st)
        hit = self._memo.get(path)
        if hit is not None and hit[0] == key and (not executable or self._executable_blob(hit[1])):
            return hit[1]
        trusted = observed - max(st.st_mtime_ns, st.st_ctime_ns) >= self.store.hash_cache.racy_window_ns
        ident = self.store.hash_cache.lookup(Path(path), st)
        if ident is None and not trusted:
            # racy: hash it (a small read) but write nothing — an entry made now could
            # never be trusted, and rewriting one costs a rename each time
            ident = hash_file(Path(path))
        if ident is not None and executable:
            self._executable_blob(ident)
        if ident is None or (executable and ident not in self._executable) or not self._has(ident):
            # unknown, new, or to be made executable: the store copies the file, hashing
            # what it copies, and remembers the ID. Should the file have changed since
            # our stat, the memo entry below is keyed by the old stat and never matches.
            ident = self._put(path, st, observed, trusted, executable)
            with self._lock:
                self._present.add(ident)
                if executable:
                    self._executable.add(ident)
        if trusted:
            with self._lock:
                self._memo[path] = (key, ident)
        return ident

    def _executable_blob(self, ident: str) -> bool:
        """Whether blob ``ident`` is in the store as an executable (remembered once seen).

        Each run stores the toolchain's programs and libraries as executables; for those
        already stored so, one ``stat`` of the blob replaces storing them again (which
        rewrote each one's hash-cache entry, a rename of ~5 ms, on every warm run)."""
        if ident in self._executable:
            return True
        try:
            if not os.stat(self.store.blob_path(ident)).st_mode & stat.S_IXUSR:
                return False
        except (OSError, ValueError):
            return False
        with self._lock:
            self._executable.add(ident)
            self._present.add(ident)
        return True

    def _put(self, path: str, st: os.stat_result, observed: int, trusted: bool, executable: bool) -> str:
        """Store the file. A small one is read once and stored from memory, and its
        hash-cache entry is written only if it can ever be trusted (``put_file`` always
        writes one: a file creation, wasted on a racy file)."""
        if st.st_size > _SMALL:
            return self.store.put_file(Path(path), executable=executable)
        with open(path, "rb") as handle:
            data = handle.read(_SMALL + 1)
        if len(data) > _SMALL:  # grew since the stat
            return self.store.put_file(Path(path), executable=executable)
        ident = self.store.put_bytes(data, executable=executable)
        if trusted and len(data) == st.st_size:
            self.store.hash_cache.remember(st, ident, observed)
        return ident

    def unchanged(self, path: str, ident: str) -> bool:
        """True if ``path`` still has content ``ident`` (and that blob is stored)."""
        try:
            hit = self._memo.get(path)
            if hit is not None and hit[1] == ident and stat_key(os.stat(path)) == hit[0]:
                self.observer.file(path, ident)
                return True  # what stored() answers for a remembered file: one stat, no more
            return self.stored(path) == ident
        except OSError:
            return False

    def all_unchanged(self, files: dict[str, str]) -> bool:
        """:meth:`unchanged` for every ``path: ident``, False at the first that is not.

        A memo hit checks ~80 files a compile: the remembered ones are compared here by
        one ``stat`` each, without a method call and a key tuple per file."""
        memo = self._memo
        for path, ident in files.items():
            hit = memo.get(path)
            if hit is not None and hit[1] == ident:
                try:
                    st = os.stat(path)
                except OSError:
                    return False
                if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) == hit[0]:
                    continue
            if not self.unchanged(path, ident):
                return False
        return True
