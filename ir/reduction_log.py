"""The local store's reduction records as one append-only log, ``.gg/reductions.log``.

Why a log: a record per file cost a temp file plus a rename per record, two or more per
thunk — on a disk store most of the scheduler's wall time. Here a thunk's records (every
``T#tag``, then the bare ``T``) are one ``write`` under ``O_APPEND``.

Format, one record a line::

    REF RESULT verified-inputs CRC      a record: REF (``T`` or ``T#tag``) reduced to RESULT
    REF - CRC                           a tombstone: REF's record was dropped (forgotten)

``CRC`` is the zlib CRC-32 of everything before its separating space, 8 lowercase hex
digits. Every append starts with a newline, so a tail torn by a crash (or a short write
on a full disk) becomes a line of its own that fails its checksum and is ignored, and
never swallows the next writer's first record; empty lines are skipped. A line whose
checksum holds but that lacks the ``verified-inputs`` mark is not trusted (like a record
from before verify-on-use): the ref counts as not reduced. Later lines win.

Guarantees, the same as a file per record had:

* **Concurrent writers.** An ``O_APPEND`` write to a local regular file is one
  uninterrupted append (Linux holds the inode lock for it), so groups of different
  processes never interleave; a reader that catches a write half-done sees complete
  lines only (it stops at the last newline and reads on from there next time), and a
  thunk's bare record is its group's last line, so a partial group is never a hit.
* **Crash safety.** A ``kill -9`` leaves complete lines, all valid, and at most a torn
  tail that is ignored. Nothing is fsynced (record files were not either): after a power
  loss records may be missing — the thunks run again — but no complete line is wrong.
* **Compaction** rewrites the live records into a temp file and renames it over the log,
  holding an exclusive ``flock`` on ``.gg/reductions.lock``. Every appender holds a shared
  ``flock`` on it while it checks that its descriptor is still the log's current inode
  and writes, so no append lands in a log being replaced. Readers notice the new inode
  and read it from the start.
* **Readers** keep an index (ref -> result) and bring it up to date before every lookup:
  one ``stat``, and a read of what was appended since (``pread`` from the last offset);
  so a lookup sees every record written before it started, a peer's included.

Stores from before the log kept ``.gg/reductions/<ref>`` files; they are imported once
(trusted records only, never over a ref the log already has a line for) and the
directory removed.
"""

from __future__ import annotations

import fcntl
import os
import time
import weakref
import zlib
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from .atomic import unlink_quietly
from .cache_log import seal, unseal
from .ids import InvalidId, parse_ref

# Second field of a reduction record: the inputs of the run it records were verified
# against their IDs before and after it (records from before verify-on-use lack it).
VERIFIED_MARK = "verified-inputs"
_MARK = VERIFIED_MARK.encode()
_TOMBSTONE = b"-"
_READ = 1 << 20  # bytes asked per read when catching up with the log
# Compaction is considered once per log object, at its first append, for a log of at
# least this size whose lines are mostly superseded (or dropped).
# How far behind other processes a lookup with ``fresh=False`` may be (see ReductionLog.get).
STALE_SECONDS = 0.05
COMPACT_MIN_BYTES = 1 << 20


def encode_line(ref: str, result: str | None) -> bytes:
    """One log line: a record of ``ref`` -> ``result``, or a tombstone for None."""
    return seal(f"{ref} {result} {VERIFIED_MARK}".encode() if result is not None else f"{ref} -".encode())


def decode_line(line: bytes) -> tuple[str, str | None] | None:
    """``(ref, result)`` of one line without its newline (result None: a tombstone or a
    record not to be trusted), or None for a line to ignore (torn, garbage, empty)."""
    body = unseal(line)
    if body is None:
        return None
    fields = body.split(b" ")
    try:
        ref = fields[0].decode("ascii")
        if len(fields) == 3 and fields[2] == _MARK:
            return ref, fields[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    return ref, None


class _Descriptors:
    """The open descriptors of a :class:`ReductionLog` (apart from it, so a finalizer
    can close them without keeping the log alive)."""

    __slots__ = ("read", "append", "lock")

    def __init__(self) -> None:
        self.read: int | None = None
        self.append: int | None = None
        self.lock: int | None = None

    def close(self) -> None:
        for fd in (self.read, self.append, self.lock):
            if fd is not None:
                os.close(fd)
        self.read = self.append = self.lock = None


class ReductionLog:
    """The reduction records of one local store (see the module docstring).

    One thread at a time per object (the scheduler's event loop); processes, and other
    objects on the same log, may write concurrently.

    ``path`` is the log, ``lock_path`` the file whose ``flock`` orders appends against
    compaction, ``tmp_dir`` where a compaction writes the new log, ``legacy_dir`` the
    record directory of older stores (imported once if it exists; None for a log that
    never had one, such as the store's kept-output records).
    """

    def __init__(self, path: str, lock_path: str, tmp_dir: str, legacy_dir: str | None):
        self.path = path
        self.lock_path = lock_path
        self.tmp_dir = tmp_dir
        self.legacy_dir = legacy_dir
        self._index: dict[str, str | None] = {}
        self._lines = 0  # valid lines applied to the index since it was (re)loaded
        self._read_key: tuple[int, int] | None = None  # (dev, inode) of the file read
        self._offset = 0  # the index covers the log up to here (a line boundary)
        self._seen_size = -1  # the log's size at the last catch-up
        self._append_key: tuple[int, int] | None = None
        # Descriptors of the log (read, append) and the lock file, kept open for the
        # hot path; closed when this object goes (a test or a long-lived process may
        # make many store objects) or by close().
        self._fds = _Descriptors()
        weakref.finalize(self, self._fds.close)
        self._migrated = legacy_dir is None
        self._refreshed_at = -1.0  # time.monotonic() of the last refresh (-1: never)
        self._compaction_considered = False
        self._temp_serial = 0
        # Records appended with ``defer=True`` and not written yet (indexed already).
        self._pending: list[tuple[str, str | None]] = []

    # -- reading ---------------------------------------------------------------------

    def get(self, ref: str, fresh: bool = True) -> str | None:
        """The trusted result recorded last for ``ref`` (as written; callers check it), or None.

        ``fresh=False``: the index may be up to :data:`STALE_SECONDS` behind other
        processes' appends (no ``stat`` per lookup). For a caller that checks again
        freshly before acting on a miss -- the scheduler's discovery, whose claim
        re-reads the record under the thunk's lock -- a stale miss costs nothing."""
        if fresh or time.monotonic() - self._refreshed_at > STALE_SECONDS:
            self.refresh()
        return self._index.get(ref)

    def records(self) -> dict[str, str]:
        """Every trusted live record, now: ``{ref: result}`` (a copy)."""
        self.refresh()
        return {ref: result for ref, result in self._index.items() if result is not None}

    def refresh(self) -> None:
        """Bring the index up to the log's current end (complete lines only)."""
        self._refreshed_at = time.monotonic()
        if not self._migrated:
            self._migrate()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._read_key is not None or self._index:
                self._reset(None, None)
            return
        key = (st.st_dev, st.st_ino)
        if key == self._read_key and st.st_size == self._seen_size:
            return
        if key != self._read_key or st.st_size < self._seen_size:  # replaced (compacted), or truncated
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                self._reset(None, None)
                return
            opened = os.fstat(fd)
            self._reset(fd, (opened.st_dev, opened.st_ino))
        self._catch_up()

    def _reset(self, fd: int | None, key: tuple[int, int] | None) -> None:
        if self._fds.read is not None:
            os.close(self._fds.read)
        self._fds.read, self._read_key = fd, key
        self._index = dict(self._pending)  # this object's queued records stay visible to it
        self._lines = 0
        self._offset = 0
        self._seen_size = -1

    def _catch_up(self) -> None:
        assert self._fds.read is not None
        chunks = []
        offset = self._offset
        while chunk := os.pread(self._fds.read, _READ, offset):
            chunks.append(chunk)
            offset += len(chunk)
        self._seen_size = offset
        data = b"".join(chunks)
        end = data.rfind(b"\n")
        if end < 0:
            return
        self._apply(data[:end].split(b"\n"))
        self._offset += end + 1

    def _apply(self, lines: list[bytes]) -> None:
        """Index ``lines`` in order (what :func:`decode_line` does line by line, inlined:
        a fresh gg-force on a finished build reads the whole log, two lines per thunk)."""
        index = self._index
        applied = 0
        crc32 = zlib.crc32
        for line in lines:
            body, _, crc = line.rpartition(b" ")
            if len(crc) != 8 or b"%08x" % crc32(body) != crc:
                continue  # empty, torn or garbage
            ref, _, rest = body.partition(b" ")
            result, _, mark = rest.partition(b" ")
            try:
                if mark == _MARK:  # ref result mark: a trusted record (b" " in result: mark is longer)
                    index[ref.decode("ascii")] = result.decode("ascii")
                else:
                    index[ref.decode("ascii")] = None
            except UnicodeDecodeError:
                continue
            applied += 1
        self._lines += applied
        if self._pending:  # this object's records not written yet come after all of these
            index.update(self._pending)

    # -- writing ---------------------------------------------------------------------

    def append(self, records: Sequence[tuple[str, str | None]], defer: bool = False) -> None:
        """Append ``records`` (ref, result or None for a tombstone) with one ``write``.

        The caller has checked every ref and result. Order matters to readers: a thunk's
        bare record goes last.

        ``defer=True`` only queues them (this object's lookups see them at once) until
        :meth:`flush` or the next append without it, which writes everything queued first,
        in order, with one ``write``: a scheduler that records many thunks per turn of its
        event loop pays one append for all of them. Until then other processes do not see
        them and a crash loses them (those thunks run again), so a caller flushes before
        it lets anyone rely on them -- before it releases the thunks' locks.
        """
        if defer:
            self._pending.extend(records)
            self._index.update(records)
            return
        if self._pending:
            records = [*self._pending, *records]
            self._pending = []
        if not records:
            return
        if not self._migrated:
            self._migrate()
        data = b"\n" + b"".join([encode_line(ref, result) for ref, result in records])
        lock = self._lock()
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            fd = self._current_append_fd()
            view = memoryview(data)
            while view:  # a short write only on a full disk; the rest then follows as garbage lines
                view = view[os.write(fd, view):]
            end = os.lseek(fd, 0, os.SEEK_CUR)  # O_APPEND: the end of what was just written
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
        if self._read_key == self._append_key and self._offset == self._seen_size == end - len(data):
            # Nothing else was appended since the index's end: index these records
            # directly instead of reading them back (the next lookup would, per thunk).
            self._index.update(records)
            self._lines += len(records)
            self._offset = self._seen_size = end
        else:
            # Others appended too: ours are indexed now all the same (a lookup that may
            # be stale, ``fresh=False``, must still see this process's own writes); the
            # catch-up re-reads the file in order, so a later line of a peer still wins.
            self._index.update(records)
        if not self._compaction_considered:
            self._compaction_considered = True
            self._compact_if_worthwhile()

    def flush(self) -> None:
        """Write the records queued by ``append(..., defer=True)`` (one ``write``)."""
        if self._pending:
            self.append(())

    @property
    def unwritten(self) -> int:
        """Records queued by ``append(..., defer=True)`` and not written yet."""
        return len(self._pending)

    def _lock(self) -> int:
        if self._fds.lock is None:
            self._fds.lock = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return self._fds.lock

    def _current_append_fd(self) -> int:
        """The append descriptor of the log's current inode (under a shared or exclusive lock)."""
        try:
            st = os.stat(self.path)
            current: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            current = None
        if self._fds.append is None or current != self._append_key:
            if self._fds.append is not None:
                os.close(self._fds.append)
                self._fds.append = None
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            opened = os.fstat(fd)
            self._fds.append, self._append_key = fd, (opened.st_dev, opened.st_ino)
        return self._fds.append

    # -- compaction ------------------------------------------------------------------

    def _compact_if_worthwhile(self) -> None:
        """Compact a log of at least :data:`COMPACT_MIN_BYTES` whose lines are mostly
        superseded. A compaction that fails (a full disk, say) is skipped: the records
        were appended, and the log stays valid, only longer."""
        try:
            if os.stat(self.path).st_size < COMPACT_MIN_BYTES:
                return
            self.refresh()
            live = sum(1 for result in self._index.values() if result is not None)
            if 2 * live < self._lines:
                self.compact()
        except OSError:
            return

    def compact(self) -> None:
        """Rewrite the log with only its live trusted records (exclusive lock held).

        A complete temp file renamed over the log: a crash leaves the old log or the new
        one (and perhaps a stray temp file in ``tmp_dir``), never a mix.
        """
        self.flush()  # queued records are part of the log to compact
        if not self._migrated:
            self._migrate()  # before the lock: it takes (and drops) the same lock
        lock = self._lock()
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            self._reset(None, None)
            self.refresh()  # the whole log, read while no one can append
            if self._fds.read is None:
                return
            data = b"".join(encode_line(ref, result) for ref, result in self._index.items() if result is not None)
            os.makedirs(self.tmp_dir, exist_ok=True)
            temp = self._fresh_temp()
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                finally:
                    os.close(fd)
                os.replace(temp, self.path)
            except BaseException:
                unlink_quietly(temp)
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    def _fresh_temp(self) -> str:
        while True:
            self._temp_serial += 1
            temp = os.path.join(self.tmp_dir, f".reductions-{os.getpid()}-{self._temp_serial}")
            if not os.path.lexists(temp):
                return temp

    # -- older stores ----------------------------------------------------------------

    def _migrate(self) -> None:
        """Import ``legacy_dir``'s record files once (exclusive lock), then remove it."""
        self._migrated = True
        legacy_dir = self.legacy_dir
        if legacy_dir is None or not os.path.isdir(legacy_dir):
            return
        lock = self._lock()
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not os.path.isdir(legacy_dir):  # another process imported it meanwhile
                return
            self.refresh()
            found = [(ref, result) for ref, result in legacy_records(legacy_dir)
                     if ref not in self._index]  # the log's record or tombstone is newer
            if found:
                data = b"\n" + b"".join(encode_line(ref, result) for ref, result in found)
                fd = self._current_append_fd()
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            import shutil  # here: only an older store's first run removes its directory

            shutil.rmtree(legacy_dir, ignore_errors=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    def close(self) -> None:
        """Write what is queued, then close the log's descriptors (they are also closed
        with the process)."""
        try:
            self.flush()
        finally:
            self._fds.close()
        self._read_key = self._append_key = None
        self._seen_size = -1


def appended_since(path: str, mark: tuple[int, int, int] | None) -> list[list[tuple[str, str | None]]] | None:
    """The appends made to the log at ``path`` since ``mark`` (``ir.store_root.log_mark``
    taken earlier; None: there was no log), each a list of its records in order, oldest
    append first; None if the log was replaced since (compacted: what is new cannot be
    told). Every append starts with a newline, so an empty line separates two; a torn or
    garbage line is left out, as a reader leaves it out."""
    try:
        with open(path, "rb") as handle:
            st = os.fstat(handle.fileno())
            if mark is not None and ((st.st_dev, st.st_ino) != mark[:2] or st.st_size < mark[2]):
                return None
            handle.seek(0 if mark is None else mark[2])
            data = handle.read()
    except FileNotFoundError:
        return [] if mark is None else None
    groups: list[list[tuple[str, str | None]]] = []
    current: list[tuple[str, str | None]] = []
    for line in data[:data.rfind(b"\n") + 1].split(b"\n"):
        if not line:
            if current:
                groups.append(current)
                current = []
            continue
        record = decode_line(line)
        if record is not None:
            current.append(record)
    if current:
        groups.append(current)
    return groups


class LogCheck(NamedTuple):
    """What a log holds line by line: for tests and diagnostics (``check_log``)."""

    valid: int  # complete lines that decode (records, tombstones, untrusted records)
    invalid: int  # complete non-empty lines that do not (torn by a crash, or garbage)
    tail: int  # bytes after the last newline (a write in progress or torn by a crash)


def check_log(path: str) -> LogCheck:
    """Classify every line of the log at ``path`` (absent: empty)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return LogCheck(0, 0, 0)
    *lines, tail = data.split(b"\n")
    decoded = [decode_line(line) is not None for line in lines if line]
    return LogCheck(sum(decoded), len(decoded) - sum(decoded), len(tail))


def legacy_records(directory: str) -> Iterator[tuple[str, str]]:
    """The trusted records of an older store's ``reductions/`` directory: a file
    ``THUNK[#tag]`` ('/' in a tag as %2F) holding ``RESULT verified-inputs``."""
    with os.scandir(directory) as entries:
        names = [entry.name for entry in entries if not entry.name.startswith(".")]
    for name in sorted(names, key=lambda name: ("#" not in name, name)):  # a thunk's bare record last
        ref = name.replace("%2F", "/")
        try:
            if not parse_ref(ref).is_thunk:
                continue
            with open(os.path.join(directory, name), "rb") as handle:
                fields = handle.read(4096).split()
        except (InvalidId, OSError):
            continue
        if len(fields) != 2 or fields[1] != _MARK:
            continue
        try:
            result = fields[0].decode("ascii")
            parse_ref(result)
        except (UnicodeDecodeError, InvalidId):
            continue
        yield ref, result
