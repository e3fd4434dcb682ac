"""A cache kept as one append-only file of checksummed ``KEY VALUE`` lines.

Why: caches that kept an entry per file (the hash cache: one per host file a build
reads) cost a file creation and a rename per entry, and on this project's test machines
(ext4 without a journal, where creating an inode scans past every recently freed one)
that was ~1.5 ms each: most of a cold gg-infer's own CPU. An entry here is one
``write`` under ``O_APPEND``.

Format: one entry a line, ``KEY VALUE CRC`` (``CRC``: zlib CRC-32 of ``KEY VALUE``, 8 hex
digits, as in the reduction log: :func:`seal`/:func:`unseal`); every append starts with
a newline, so a tail torn by a crash is a line of its own that fails its checksum and is
ignored. Later lines win.

It is a *cache*: what it must never do is answer wrongly, and it does not — a line is
used only if its checksum holds, and callers check a value against what it describes
(the hash cache: the file's stat). What it may do is lose an entry, which costs a
recomputation: an append that races a compaction (the compactor renames a new file over
the log, and an appender still holding the old one writes into the old inode). That is
why it needs none of the reduction log's locking (``ir/reduction_log.py``), whose
records must never be lost.

Readers keep an index — short values in memory, a long line (over 512 bytes: a memo
record is ~10 KB, and a big build has thousands) by its place in the file, read and
checked when asked for; :meth:`CacheLog.get` answers from it and, with ``fresh=True``
(the caller's value did not fit), first reads what other processes appended since.
Thread-safe (one lock per object).
"""

from __future__ import annotations

import _thread  # not threading: gg-force's cached path imports this and must stay lean
import os
import weakref
import zlib
from pathlib import Path

from .atomic import atomic_write_bytes

_READ = 1 << 20
_LONG = 512  # lines longer than this are indexed by their place in the file, not kept
COMPACT_MIN_BYTES = 1 << 20  # a log is considered for compaction from this size on


def seal(body: bytes) -> bytes:
    """``body`` as a checked line: ``BODY CRC\\n``."""
    return b"%s %08x\n" % (body, zlib.crc32(body))


def unseal(line: bytes) -> bytes | None:
    """The body of a checked line (without its newline), or None if its checksum fails."""
    body, _, crc = line.rpartition(b" ")
    if len(crc) != 8 or b"%08x" % zlib.crc32(body) != crc:
        return None
    return body


class _Fds:
    """The log's open descriptors, apart from it so a finalizer can close them."""

    __slots__ = ("read", "append")

    def __init__(self) -> None:
        self.read: int | None = None
        self.append: int | None = None

    def close(self) -> None:
        for fd in (self.read, self.append):
            if fd is not None:
                os.close(fd)
        self.read = self.append = None


class CacheLog:
    """One cache file (see the module docstring). Keys and values are ASCII words
    (values may contain spaces, never a newline)."""

    def __init__(self, path: str, compact_min_bytes: int = COMPACT_MIN_BYTES):
        self.path = path
        self.compact_min_bytes = compact_min_bytes
        self._lock = _thread.allocate_lock()
        # key -> its value, or where its line is in the file read (offset, length) for a
        # long one (a memo record is ~10 KB: a big build's would not all fit in memory)
        self._index: dict[str, str | tuple[int, int]] = {}
        self._lines = 0
        self._read_key: tuple[int, int] | None = None
        self._offset = 0
        self._loaded = False
        self._compaction_considered = False
        self._fds = _Fds()
        weakref.finalize(self, self._fds.close)

    def get(self, key: str, fresh: bool = False) -> str | None:
        """The latest value of ``key`` known here; ``fresh``: read what was appended
        since first (for a value that did not fit: another process may have a newer one)."""
        with self._lock:
            if fresh or not self._loaded:
                self._catch_up()
            entry = self._index.get(key)
            if not isinstance(entry, tuple):
                return entry
            return self._read_value(entry)

    def _read_value(self, where: tuple[int, int]) -> str | None:
        """A long line's value, read and checked now (None if it fails: a miss)."""
        if self._fds.read is None:
            return None
        try:
            body = unseal(os.pread(self._fds.read, where[1], where[0]))
            return body.partition(b" ")[2].decode("ascii") if body is not None else None
        except (OSError, UnicodeDecodeError):
            return None

    def put(self, key: str, value: str) -> None:
        """Append ``key``'s new value (one write; a failure to write is a lost entry)."""
        line = b"\n" + seal(f"{key} {value}".encode("ascii"))
        with self._lock:
            self._index[key] = value
            try:
                if self._fds.append is None:
                    os.makedirs(os.path.dirname(self.path), exist_ok=True)
                    self._fds.append = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                                               0o644)
                    self._consider_compaction()
                os.write(self._fds.append, line)
            except OSError:
                pass  # a cache: the entry is recomputed next time

    def close(self) -> None:
        with self._lock:
            self._fds.close()

    # -- reading ------------------------------------------------------------------

    def _catch_up(self) -> None:
        self._loaded = True
        try:
            st = os.stat(self.path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) != self._read_key:  # new, or replaced by a compaction
            if self._fds.read is not None:
                os.close(self._fds.read)
                self._fds.read = None
            try:
                self._fds.read = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return
            opened = os.fstat(self._fds.read)
            self._read_key = (opened.st_dev, opened.st_ino)
            self._index, self._lines, self._offset = {}, 0, 0
        if self._fds.read is None:
            return
        size = _READ
        while True:
            chunk = os.pread(self._fds.read, size, self._offset)
            end = chunk.rfind(b"\n") + 1
            if not end:
                if len(chunk) < size:  # nothing, or a line still being written
                    return
                size *= 2  # one line longer than a read: read more at once
                continue
            self._apply(chunk[:end], self._offset)
            self._offset += end
            if len(chunk) < size:
                return

    def _apply(self, text: bytes, at: int) -> None:
        """Index the lines of ``text``, which starts at offset ``at`` of the file."""
        start = 0
        for line in text.split(b"\n"):
            offset, start = at + start, start + len(line) + 1
            if not line:
                continue
            if len(line) > _LONG:  # indexed by place, checked when asked for
                key = line.partition(b" ")[0]
                try:
                    self._index[key.decode("ascii")] = (offset, len(line))
                except UnicodeDecodeError:
                    continue
                self._lines += 1
                continue
            body = unseal(line)
            if body is None:
                continue
            key, _, value = body.partition(b" ")
            try:
                self._index[key.decode("ascii")] = value.decode("ascii")
            except UnicodeDecodeError:
                continue
            self._lines += 1

    # -- compaction ---------------------------------------------------------------

    def _consider_compaction(self) -> None:
        """Once per object, at its first append: rewrite a large log that is mostly
        superseded lines (entries of files that changed since)."""
        if self._compaction_considered:
            return
        self._compaction_considered = True
        try:
            if os.stat(self.path).st_size < self.compact_min_bytes:
                return
        except OSError:
            return
        self._catch_up()
        if self._lines < 2 * max(1, len(self._index)):
            return
        live = {key: entry if not isinstance(entry, tuple) else self._read_value(entry)
                for key, entry in self._index.items()}
        try:
            atomic_write_bytes(Path(self.path), b"".join(seal(f"{k} {v}".encode("ascii"))
                                                         for k, v in live.items() if v is not None))
        except OSError:
            return
        if self._fds.append is not None:
            os.close(self._fds.append)
        self._fds.append = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._read_key = None  # the next catch-up reads the new file from the start


class JsonCache:
    """A :class:`CacheLog` of JSON values (``DIRECTORY/entries.log``), for the caches
    that kept a JSON file per key (gg-infer's scans, driver answers, library closures,
    per-call memo). A value that does not parse is a miss."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.log = CacheLog(os.path.join(directory, "entries.log"))

    def get(self, key: str, fresh: bool = False) -> object | None:
        import json

        text = self.log.get(key, fresh)
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return None

    def put(self, key: str, value: object) -> None:
        import json

        self.log.put(key, json.dumps(value, separators=(",", ":")))  # ASCII: non-ASCII is escaped
