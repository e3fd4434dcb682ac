"""Streaming content hashing and the hash cache.

Files are hashed in fixed-size chunks, so a file of any size costs constant memory.
The hash cache remembers ``(device, inode) -> (size, mtime_ns, ctime_ns, ID)`` so an
unchanged file is not read again. Like git's "racy" rule, an entry is only trusted
when the file's timestamps are older than the moment the entry was written by more
than the file system's timestamp granularity: a file rewritten within the same clock
tick (same size, same mtime) would otherwise keep a stale ID.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .atomic import atomic_write_bytes
from .ids import DEFAULT_ALGORITHM, Kind, make_id, new_hasher
from .thunk import MAGIC

CHUNK = 1 << 20
# Timestamps closer than this to the time an entry was made are not trusted.
RACY_WINDOW_NS = 2_000_000_000


def hash_stream(stream, algorithm: str = DEFAULT_ALGORITHM, sink=None) -> str:
    """ID of everything readable from ``stream``; also copies it to ``sink`` if given."""
    hasher = new_hasher(algorithm)
    size = 0
    head = b""
    while chunk := stream.read(CHUNK):
        if len(head) < len(MAGIC):
            head += chunk[: len(MAGIC)]
        hasher.update(chunk)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
    kind = Kind.THUNK if head.startswith(MAGIC) else Kind.VALUE
    return make_id(kind, hasher.hexdigest(), size, algorithm)


def hash_file(path: Path, algorithm: str = DEFAULT_ALGORITHM) -> str:
    with open(path, "rb") as handle:
        return hash_stream(handle, algorithm)


class HashCache:
    """Remembers file IDs by inode and timestamps; a changed file is always re-hashed."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _entry_path(self, st: os.stat_result) -> Path:
        return self.directory / f"{st.st_dev:x}-{st.st_ino:x}"

    def lookup(self, path: Path, st: os.stat_result | None = None) -> str | None:
        st = st or os.stat(path)
        try:
            fields = self._entry_path(st).read_text().split()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if len(fields) != 5:
            return None
        size, mtime, ctime, written, ident = fields
        if (int(size), int(mtime), int(ctime)) != (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
            return None
        if int(written) - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_WINDOW_NS:
            return None  # racy entry: the file may have changed within one tick
        return ident

    def hash(self, path: Path) -> str:
        """ID of ``path``, from the cache when the file provably has not changed."""
        st = os.stat(path)
        cached = self.lookup(path, st)
        if cached is not None:
            return cached
        ident = hash_file(path)
        self.remember(st, ident)
        return ident

    def remember(self, st: os.stat_result, ident: str) -> None:
        """Record ``ident`` for the file whose stat (taken before hashing) is ``st``."""
        record = f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {time.time_ns()} {ident}\n"
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self._entry_path(st), record.encode())
