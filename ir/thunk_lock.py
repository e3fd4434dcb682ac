"""Per-thunk locks in a local ``.gg`` store: two forcers on one store run a thunk once.

Every thunk's lock is one byte of one file, ``.gg/locks/thunks``, at an offset taken
from the thunk's digest, locked with an *open file description* lock
(``F_OFD_SETLK``). Like ``flock`` (which this used before, one lock file per thunk),
the kernel releases it the moment its holder dies (even after ``kill -9``), so a
crashed forcer never delays the other: no expiry to wait out, no clock to trust. Unlike
one file per thunk, a lock costs no file creation (an inode per thunk ever run, the
largest cost of a claim on a disk store), and unlike POSIX ``lockf`` locks it belongs
to the open file, not the process, so two locks in one process exclude each other and
closing one never drops another.

Two thunks whose digests share the first 60 bits would share a lock: the second waits
for the first's holder and then runs -- a delay, never a wrong result.
"""

from __future__ import annotations

import fcntl
import os
import struct
import zlib
from pathlib import Path

LOCKS = "locks"  # directory of the lock file inside the store root
TABLE = "thunks"  # the lock file: one byte per thunk (sparse, never written)
_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
_FLOCK = "hhqqi4x"  # struct flock on Linux: type, whence, start, len, pid (0 for OFD locks)


def _offset(thunk_id: str) -> int:
    """The byte that stands for ``thunk_id``: 60 bits of its digest (hex after ``T`` and
    the algorithm letter); any other text hashes to 32 bits."""
    try:
        return int(thunk_id[2:17], 16)
    except ValueError:
        return zlib.crc32(thunk_id.encode())


class ThunkLock:
    """An exclusive, non-blocking lock on one thunk of one local store.

    :meth:`try_acquire` never waits: a forcer that does not get the lock polls for the
    thunk's reduction instead (the holder will write it) and tries again, so it learns
    of the result as soon as it is there and takes over at once if the holder died.
    """

    __slots__ = ("_path", "_offset", "_fd")

    def __init__(self, store_root: Path | str, thunk_id: str):
        # A plain string, no Path: one lock per dispatched thunk is on the scheduler's hot path.
        self._path = f"{os.fspath(store_root)}/{LOCKS}/{TABLE}"
        self._offset = _offset(thunk_id)
        self._fd: int | None = None

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
        try:
            fd = os.open(self._path, _FLAGS, 0o644)
        except FileNotFoundError:  # the first lock in this store: make ``locks/`` once
            os.makedirs(os.path.dirname(self._path), exist_ok=True)
            fd = os.open(self._path, _FLAGS, 0o644)
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, self._offset, 1, 0))
        except (BlockingIOError, PermissionError):  # EAGAIN / EACCES: somebody holds it
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        """Drop the lock (a no-op if not held); call it after the reduction is written,
        so a waiter that then finds the lock free also finds the reduction."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing its open file description releases the lock

    def __enter__(self) -> ThunkLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
