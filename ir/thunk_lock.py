"""Per-thunk locks in a local ``.gg`` store: two forcers on one store run a thunk once.

Each thunk gets a lock file ``.gg/locks/<THUNK>``; a forcer holds an exclusive
``fcntl.flock`` on it while it runs the thunk. ``flock`` rather than a lease with an
expiry because the kernel releases the lock the moment its holder dies (even after
``kill -9``), so a crashed forcer never delays the other: no expiry to wait out, no
clock to trust. The lock file itself is never deleted (deleting a file someone may be
about to lock would let two holders lock two different inodes); it is empty, so a
``locks/`` directory costs one inode per thunk ever run and may be emptied when no
forcer is running.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCKS = "locks"  # directory of lock files inside the store root
_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC


class ThunkLock:
    """An exclusive, non-blocking lock on one thunk of one local store.

    :meth:`try_acquire` never waits: a forcer that does not get the lock polls for the
    thunk's reduction instead (the holder will write it) and tries again, so it learns
    of the result as soon as it is there and takes over at once if the holder died.
    """

    __slots__ = ("_path", "_fd")

    def __init__(self, store_root: Path | str, thunk_id: str):
        # A plain string, no Path: one lock per dispatched thunk is on the scheduler's hot path.
        self._path = f"{os.fspath(store_root)}/{LOCKS}/{thunk_id}"
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        """The lock file."""
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
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
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
            os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> ThunkLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
