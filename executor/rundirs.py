"""Run directories for the execution core, reused from one thunk to the next.

Each thunk runs in a run directory ``run-XXXX`` under the scratch directory, holding
``w`` (the work directory: inputs laid out, the function's cwd) and ``gg`` (the
function's ``GG_DIR``). The directory is locked (``flock`` on the directory itself)
for as long as this process uses it, so :func:`executor.execution.sweep_stale_runs`
removes only those of a process that died.

Creating and removing three directories per thunk was a large part of a trivial
thunk's cost (``mkdir``/``rmdir`` touch the file system's journal). An engine keeps a
:class:`RunDirs` instead: after a thunk, its run directory is kept for the next one
*only if it is exactly as made* — the run directory holds nothing but ``w`` and ``gg``
(and the process-group record), both still the very directories made for it (same
inodes, mode 0700) — and ``gg`` is then emptied, removing whatever the function left
there without following a link. Anything else, or any error, and the run directory is
removed and a fresh one is made for the next thunk, as before. ``w`` keeps its layout:
the next thunk's inputs are reconciled with it (:mod:`executor.layout`: what is provably
the very input the next thunk needs is kept, everything else removed), so a thunk never
sees what an earlier one left, and a compile after a compile links only what differs.

:meth:`RunDirs.take` hands out the free run directory whose last layout is the closest
to the next one (the fewest inputs to remove and to link); while the pool has fewer than
``limit`` run directories and removing the stale inputs of the closest would cost more
than a fresh directory saves, it makes a new one instead (so a build that alternates
compiles and assembler runs keeps a layout of each kind).

The pool also keeps two descriptors open between runs: ``/dev/null`` (the function's
stdin) and the cgroup's ``memory.events`` (read before and after a run to tell an
out-of-memory kill from any other ``SIGKILL``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ir.store import LocalStore

from . import confine
from .layout import WorkLayout, xattr_names

_FRESH_COST = 3  # a fresh run directory costs about three more operations (mkdir w, gg, the run directory)
_EXPECTED = frozenset(("w", "gg", ".group"))  # .group: the record where xattrs are missing
_OOM_EVENTS = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")


@dataclass
class RunDir:
    """One run directory, locked: ``fd`` is the run directory, ``work_fd`` its ``w``."""

    path: str
    fd: int
    work: str
    work_fd: int
    gg: str
    inodes: tuple[int, int]  # of w and gg, as made
    layout: WorkLayout  # what ``w`` holds (executor.layout)


def remove_tree(path: str) -> None:
    """Remove a directory tree even where the function left read-only subdirectories
    (``shutil.rmtree`` never follows a link in it)."""

    def make_writable_and_retry(function, target, _excinfo):
        for path in (os.path.dirname(target), target):  # never chmod through a link
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
        function(target)

    shutil.rmtree(path, onerror=make_writable_and_retry)


def _destroy(run: RunDir) -> None:
    try:
        remove_tree(run.path)
    finally:
        os.close(run.work_fd)
        os.close(run.fd)


def _destroy_quietly(run: RunDir) -> None:
    with contextlib.suppress(OSError):
        _destroy(run)


def _destroy_all(free: list[RunDir], descriptors: list[int]) -> None:
    # Each pooled run directory still holds a layout (~100 links, ~20 directories for a
    # compile); removing them is journal-bound, so several are removed at once.
    runs = [free.pop() for _ in range(len(free))]
    if len(runs) > 1:
        with ThreadPoolExecutor(len(runs)) as pool:
            list(pool.map(_destroy_quietly, runs))
    else:
        for run in runs:
            _destroy_quietly(run)
    while descriptors:
        with contextlib.suppress(OSError):
            os.close(descriptors.pop())


def _is_own_dir(st: os.stat_result, inode: int) -> bool:
    return st.st_ino == inode and stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700


def _empty(dir_fd: int, names: list[str], path: str) -> None:
    """Remove ``names`` from directory ``dir_fd`` (at ``path``), never through a link."""
    for name in names:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            remove_tree(os.path.join(path, name))
        else:
            os.unlink(name, dir_fd=dir_fd)


class RunDirs:
    """Run directories under ``scratch`` for one engine (or one call, ``reuse=False``).

    :meth:`take` one per running thunk, :meth:`give_back` it afterwards, :meth:`close`
    when the engine closes (directories still pooled then are removed; so are they if
    the pool is garbage-collected or the interpreter exits without a close).
    """

    def __init__(self, scratch: Path | str, reuse: bool = True, limit: int = 2):
        self.scratch = str(scratch)
        self.reuse = reuse
        self.limit = limit
        self._count = 0  # run directories made and not yet removed
        self._free: list[RunDir] = []
        self._descriptors: list[int] = []  # closed with the pool
        self._devnull = -1
        self._oom_fd: int | None = None
        self._made_scratch = False
        self._closed = False
        self._finalizer = weakref.finalize(self, _destroy_all, self._free, self._descriptors)

    def take(self, inputs: frozenset[tuple[str, str]] = frozenset()) -> RunDir:
        """A run directory for a thunk with ``inputs`` (``(name, ID)`` pairs, see
        :class:`executor.layout.Plan`): the free one closest to them, or a new one."""
        if self._free:
            best, best_cost, best_stale, best_shared = len(self._free) - 1, -1, 0, 0
            for index in range(len(self._free) - 1, -1, -1):  # the most recent first on a tie
                laid = self._free[index].layout.inputs
                shared = len(laid & inputs)
                stale = len(laid) - shared
                cost = stale + len(inputs) - shared  # links to remove and to make
                if best_cost < 0 or cost < best_cost:
                    best, best_cost, best_stale, best_shared = index, cost, stale, shared
            # Reuse unless removing what is stale costs more than a fresh layout saves.
            if best_stale <= best_shared + _FRESH_COST or self._count >= self.limit:
                return self._free.pop(best)
        return self.make()

    def make(self) -> RunDir:
        """A new run directory (taken: give it back or discard it)."""
        if not self._made_scratch:
            os.makedirs(self.scratch, exist_ok=True)
            self._made_scratch = True
        path = tempfile.mkdtemp(dir=self.scratch, prefix="run-")
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            # A sweeper can only take the lock in the instant between mkdtemp and here;
            # the run then fails to lay out its inputs: an infrastructure error, retried.
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.mkdir("w", 0o700, dir_fd=fd)
            # GG_DIR gets its blobs/ and tmp/ only if the function stores something.
            os.mkdir("gg", 0o700, dir_fd=fd)
            work_fd = confine.open_dir(fd, "w")
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                remove_tree(path)
            raise
        gg = os.stat("gg", dir_fd=fd, follow_symlinks=False)
        layout = WorkLayout.of(work_fd)
        self._count += 1
        return RunDir(path, fd, os.path.join(path, "w"), work_fd, os.path.join(path, "gg"),
                      (os.fstat(work_fd).st_ino, gg.st_ino), layout)

    def give_back(self, run: RunDir) -> None:
        """Keep ``run`` for the next thunk if it is still as made (``gg`` emptied);
        otherwise remove it."""
        if self.reuse and not self._closed and self._reset(run):
            self._free.append(run)
        else:
            self.discard(run)

    def discard(self, run: RunDir) -> None:
        """Remove ``run`` (taken, not given back): its layout cannot be trusted."""
        self._count -= 1
        _destroy(run)

    @staticmethod
    def _reset(run: RunDir) -> bool:
        # Listed by path (an open, not a dup and a rewind of the descriptor); every
        # removal goes through the descriptors, so a directory swapped in under the
        # path only makes a name missing there: an error, and the run directory goes.
        try:
            if not _EXPECTED.issuperset(os.listdir(run.path)):
                return False
            w = os.stat("w", dir_fd=run.fd, follow_symlinks=False)
            gg = os.stat("gg", dir_fd=run.fd, follow_symlinks=False)
            if not (_is_own_dir(w, run.inodes[0]) and _is_own_dir(gg, run.inodes[1])):
                return False
            # Owner and extended attributes (a default ACL decides the modes of what
            # the next function creates) as made, too.
            if {(w.st_uid, w.st_gid), (gg.st_uid, gg.st_gid)} != {run.layout.owner}:
                return False
            gg_fd = confine.open_dir(run.fd, "gg")
            try:
                if os.fstat(gg_fd).st_ino != run.inodes[1] or xattr_names(gg_fd) != run.layout.xattrs \
                        or xattr_names(run.work_fd) != run.layout.xattrs:
                    return False
                left = os.listdir(gg_fd)
                if left:
                    _empty(gg_fd, left, run.gg)
            finally:
                os.close(gg_fd)
            return True
        except (OSError, confine.Escape):
            return False

    def clear_free(self, store: LocalStore) -> None:
        """Empty the work directories of the free run directories (a run directory that
        cannot be emptied is removed): their kept inputs are hard links that would keep
        blobs evicted from ``store`` on the disk (a Lambda worker's cache trim)."""
        for run in list(self._free):
            try:
                run.layout.clear(store)
            except (OSError, confine.Escape):
                self._free.remove(run)
                self.discard(run)

    def devnull(self) -> int:
        """``/dev/null``, opened once: the stdin of every function."""
        if self._devnull < 0:
            self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            self._descriptors.append(self._devnull)
        return self._devnull

    def oom_kills(self) -> int:
        """The cgroup's count of out-of-memory kills (cgroup v2, else v1), 0 where unknown."""
        if self._oom_fd is None:
            self._oom_fd = -1
            for path in _OOM_EVENTS:
                with contextlib.suppress(OSError):
                    self._oom_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    self._descriptors.append(self._oom_fd)
                    break
        if self._oom_fd < 0:
            return 0
        try:
            text = os.pread(self._oom_fd, 4096, 0)
        except OSError:
            return 0
        for line in text.splitlines():
            if line.startswith(b"oom_kill "):
                with contextlib.suppress(ValueError):
                    return int(line.split()[1])
        return 0

    def close(self) -> None:
        """Remove the pooled run directories; later :meth:`give_back` removes too."""
        self._closed = True
        self._finalizer()
