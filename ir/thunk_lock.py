"""Per-thunk locks in a local ``.gg`` store: two forcers on one store run a thunk once.

A forcer holds an exclusive lock on a thunk while it runs it: an open-file-description
byte-range lock (``F_OFD_SETLK``, Linux) on one byte of the shared file
``.gg/thunk-locks``, at an offset hashed from the thunk ID. Why this kind of lock:

* the kernel releases it the moment its holder dies (even after ``kill -9``), so a
  crashed forcer never delays the other: no expiry to wait out, no clock to trust;
* it belongs to the open file description, not the process (unlike POSIX ``fcntl``
  locks), so two lock objects in one process exclude each other too, and closing one
  descriptor releases only its own lock;
* one file for every thunk: a lock costs an ``open`` of an existing file, a ``fcntl``
  and a ``close`` — no file creation per thunk (a lock file per thunk in ``.gg/locks/``,
  the previous design, was 40% of a cold null-engine build's time on ext4), and the
  file is never deleted, so two holders can never lock two different inodes.

Two thunks whose IDs hash to the same offset (62 bits) would merely take turns: the
second waits as for a peer running it, then takes over. Never a wrong result.

A forcer locks every thunk through one :class:`LockFile` -- one open file description
of the lock file for the whole run, each lock a byte of it set and cleared with one
``fcntl`` each -- instead of an ``open``, ``fcntl`` and ``close`` per thunk. Locks of one
open file description do not exclude each other, so the :class:`LockFile` keeps the
bytes it holds and refuses a second lock on one of them itself: two locks of one
process still exclude each other.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import struct
import weakref
from pathlib import Path

LOCK_FILE = "thunk-locks"  # the file in the store root whose bytes are the thunks' locks
_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
_FLOCK = "=hh4xqqi4x"  # struct flock on 64-bit Linux: type, whence, start, len, pid (0 for OFD locks)
_SPAN = 1 << 62  # offsets hashed into [0, 2**62): far from off_t's limit


def lock_offset(thunk_id: str) -> int:
    """The byte of :data:`LOCK_FILE` that stands for ``thunk_id`` (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(thunk_id.encode(), digest_size=8).digest(), "big") % _SPAN


class LockFile:
    """The lock file of one store opened once, for many locks of one process (see the
    module docstring). Not thread-safe: one event loop uses it."""

    __slots__ = ("_path", "_fd", "_held", "_box", "__weakref__")

    def __init__(self, store_root: Path | str):
        self._path = f"{os.fspath(store_root)}/{LOCK_FILE}"
        self._fd: int | None = None
        self._held: set[int] = set()
        # The descriptor again, for a finalizer that closes it if close() is never called
        # (it must not keep this object alive, nor close a number reused since).
        self._box: list[int] = []
        weakref.finalize(self, _close_all, self._box)

    def try_lock(self, offset: int) -> bool:
        """Lock byte ``offset`` if no one (this process included) holds it."""
        if offset in self._held:
            return False
        fd = self._fd
        if fd is None:
            fd = self._fd = os.open(self._path, _FLAGS, 0o644)
            self._box.append(fd)
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0))
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        self._held.add(offset)
        return True

    def unlock(self, offset: int) -> None:
        """Release byte ``offset`` (held by this object)."""
        self._held.discard(offset)
        if self._fd is not None:
            fcntl.fcntl(self._fd, fcntl.F_OFD_SETLK, struct.pack(_FLOCK, fcntl.F_UNLCK, os.SEEK_SET, offset, 1, 0))

    def close(self) -> None:
        """Release every lock (closing the description does) and the descriptor."""
        self._fd = None
        self._held.clear()
        _close_all(self._box)


def _close_all(box: list[int]) -> None:
    while box:
        os.close(box.pop())


class ThunkLock:
    """An exclusive, non-blocking lock on one thunk of one local store.

    :meth:`try_acquire` never waits: a forcer that does not get the lock polls for the
    thunk's reduction instead (the holder will write it) and tries again, so it learns
    of the result as soon as it is there and takes over at once if the holder died.
    """

    __slots__ = ("_path", "_offset", "_fd", "_file")

    def __init__(self, store_root: Path | str, thunk_id: str, file: LockFile | None = None):
        """``file``: lock through that shared :class:`LockFile` (a forcer's many locks);
        without one, this lock opens the lock file itself."""
        # A plain string, no Path: one lock per dispatched thunk is on the scheduler's hot path.
        self._path = f"{os.fspath(store_root)}/{LOCK_FILE}"
        self._offset = lock_offset(thunk_id)
        self._fd: int | None = None
        self._file = file

    @property
    def path(self) -> Path:
        """The lock file (shared by every thunk of the store)."""
        return Path(self._path)

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; True if this object now holds it."""
        if self._fd is not None:
            return True
        if self._file is not None:
            if not self._file.try_lock(self._offset):
                return False
            self._fd = -1  # held through the shared file
            return True
        fd = os.open(self._path, _FLAGS, 0o644)  # a creation only for a store's first lock
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, self._offset, 1, 0))
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        """Drop the lock (a no-op if not held); call it after the reduction is written,
        so a waiter that then finds the lock free also finds the reduction."""
        fd, self._fd = self._fd, None
        if fd == -1:
            assert self._file is not None
            self._file.unlock(self._offset)
        elif fd is not None:
            os.close(fd)  # closing the open file description releases its OFD lock

    def __enter__(self) -> ThunkLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
