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
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import struct
from pathlib import Path

LOCK_FILE = "thunk-locks"  # the file in the store root whose bytes are the thunks' locks
_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
_FLOCK = "=hh4xqqi4x"  # struct flock on 64-bit Linux: type, whence, start, len, pid (0 for OFD locks)
_SPAN = 1 << 62  # offsets hashed into [0, 2**62): far from off_t's limit


def lock_offset(thunk_id: str) -> int:
    """The byte of :data:`LOCK_FILE` that stands for ``thunk_id`` (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(thunk_id.encode(), digest_size=8).digest(), "big") % _SPAN


class ThunkLock:
    """An exclusive, non-blocking lock on one thunk of one local store.

    :meth:`try_acquire` never waits: a forcer that does not get the lock polls for the
    thunk's reduction instead (the holder will write it) and tries again, so it learns
    of the result as soon as it is there and takes over at once if the holder died.
    """

    __slots__ = ("_path", "_offset", "_fd")

    def __init__(self, store_root: Path | str, thunk_id: str):
        # A plain string, no Path: one lock per dispatched thunk is on the scheduler's hot path.
        self._path = f"{os.fspath(store_root)}/{LOCK_FILE}"
        self._offset = lock_offset(thunk_id)
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
        if fd is not None:
            os.close(fd)  # closing the open file description releases its OFD lock

    def __enter__(self) -> ThunkLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
