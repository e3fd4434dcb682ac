"""Streaming content hashing and the hash cache.

Files are hashed in fixed-size chunks, so a file of any size costs constant memory.
The hash cache remembers ``(device, inode) -> (size, mtime_ns, ctime_ns, ID)`` so an
unchanged file is not read again.

The "racy" rule (as in git's index): an entry is only trusted when the file's newest
timestamp is older, by more than the file system's timestamp granularity, than the
moment the file was *stat'ed before it was read*. Otherwise a write that lands in the
same clock tick as the stat (on a file system with coarse timestamps) leaves size,
mtime and ctime unchanged, and the cache would keep the ID of the old content. The
reference time must be taken before reading, not after hashing: a write during a
long hash would otherwise be covered by a late "written" stamp. A write that forces
mtime back (``touch -d``/``os.utime``) still moves ctime, which is compared too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from .cache_log import CacheLog
from .ids import DEFAULT_ALGORITHM, MAGIC, kind_of, make_id, new_hasher

CHUNK = 1 << 20
# Timestamps closer than this to the time an entry was made are not trusted.
RACY_WINDOW_NS = 2_000_000_000


def hash_stream(stream, algorithm: str = DEFAULT_ALGORITHM, sink=None) -> str:
    """ID of everything readable from ``stream``; also copies it to ``sink`` if given.

    Reads into one reused buffer (``readinto``) when the stream supports it: a fresh
    1 MiB ``bytes`` per chunk costs an allocation and page faults each time, which
    made hashing a large file several times slower than the read itself.
    """
    hasher = new_hasher(algorithm)
    size = 0
    head = b""
    for chunk in _chunks(stream):
        if len(head) < len(MAGIC):
            head += bytes(chunk[: len(MAGIC) - len(head)])
        hasher.update(chunk)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
    return make_id(kind_of(head), hasher.hexdigest(), size, algorithm)


def _chunks(stream) -> Iterator[memoryview | bytes]:
    readinto = getattr(stream, "readinto", None)
    if readinto is None:
        while chunk := stream.read(CHUNK):
            yield chunk
        return
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while count := readinto(buffer):
        yield view[:count]


def hash_file(path: Path, algorithm: str = DEFAULT_ALGORITHM) -> str:
    with open(path, "rb", buffering=0) as handle:
        return hash_stream(handle, algorithm)


class HashCache:
    """Remembers file IDs by inode and timestamps; a changed file is always re-hashed.

    The entries are lines of one :class:`~ir.cache_log.CacheLog`, ``DIRECTORY/entries.log``
    (an entry used to be a file of its own in ``DIRECTORY``: a file creation and a rename
    per host file a build read; such files of older stores are ignored, as misses)."""

    def __init__(self, directory: Path, racy_window_ns: int = RACY_WINDOW_NS):
        self.directory = Path(directory)
        self.racy_window_ns = racy_window_ns
        self._log = CacheLog(str(self.directory / "entries.log"))

    def lookup(self, path: Path, st: os.stat_result | None = None) -> str | None:
        """The cached ID of ``path`` if the entry provably describes its current content."""
        st = st or os.stat(path)
        key = f"{st.st_dev:x}-{st.st_ino:x}"
        ident = self._check(self._log.get(key), st)
        if ident is None:  # not known here, or out of date: another process may know better
            ident = self._check(self._log.get(key, fresh=True), st)
        return ident

    def _check(self, entry: str | None, st: os.stat_result) -> str | None:
        if entry is None:
            return None
        fields = entry.split()
        if len(fields) != 5:
            return None
        try:
            size, mtime, ctime, observed = (int(field) for field in fields[:4])
        except ValueError:
            return None
        if (size, mtime, ctime) != (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
            return None
        if observed - max(mtime, ctime) < self.racy_window_ns:
            return None  # racy entry: the file may have changed within one tick
        return fields[4]

    def stat(self, path: Path) -> tuple[os.stat_result, int]:
        """``os.stat(path)`` and a clock reading taken no later than it (for :meth:`remember`)."""
        observed = time.time_ns()
        return os.stat(path), observed

    def hash(self, path: Path) -> str:
        """ID of ``path``, from the cache when the file provably has not changed."""
        st, observed = self.stat(path)
        cached = self.lookup(path, st)
        if cached is not None:
            return cached
        ident = hash_file(path)
        self.remember(st, ident, observed)
        return ident

    def remember(self, st: os.stat_result, ident: str, observed_ns: int | None = None) -> None:
        """Record ``ident`` for the file whose stat (taken before hashing) is ``st``.

        ``observed_ns`` is a clock reading taken before that stat (see :meth:`stat`);
        without one, the entry is stamped so that it is never trusted — the safe
        default for a caller that cannot say when it looked at the file.
        """
        if observed_ns is None:
            observed_ns = max(st.st_mtime_ns, st.st_ctime_ns)
        self._log.put(f"{st.st_dev:x}-{st.st_ino:x}",
                      f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {observed_ns} {ident}")
