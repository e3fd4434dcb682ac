"""Writing results over placeholders: atomic, verified, and without a new inode per target.

Each target is written as before in what it guarantees: the value's bytes are hashed
as they are copied out of the store (a corrupt blob never becomes a user's file), the
copy gets the placeholder's timestamps and the output's mode, it appears under the
target's name in one atomic step (a killed run leaves the placeholder or the whole
value, never part of it), and a file that is no longer the placeholder gg-force parsed
is never overwritten. The store's blob is copied, never linked.

How, and why. A plain ``rename(temp, target)`` needs a fresh inode per target and
frees the placeholder's; on ext4 without a journal a fresh inode after many deletions
costs ~0.3 ms (see :mod:`executor.rename_exchange`), 7x a plain ``cp`` of 10,000 small
values. So, per directory, one *spare* file ``.tmp-gg-<pid>-<n>`` is written with the
value and **exchanged** with the target (``RENAME_EXCHANGE``). The spare's name then
holds what was at the target, and:

* if that is not the very placeholder parsed (same inode, same bytes) — the user or a
  build step replaced or rewrote it meanwhile — the two are exchanged back: the user's
  file is never lost (a plain rename would have destroyed a file written between the
  check and the rename);
* if it is, that inode becomes the next spare, written over in place, when nobody else
  can see it: it has no other name (``st_nlink`` 1), no process has it open (a write
  lease is granted only then: a reader of the placeholder keeps reading placeholder
  bytes, never another target's), and its owner, group and extended attributes are
  those of a file created here (so a target never inherits another file's ACL or
  capabilities). Otherwise it is deleted, as a rename would have, and a fresh spare
  made for the next target.

Where the exchange is not available (no ``renameat2``, a file system that refuses it)
or the target is a symbolic link, the classic temp-file-and-rename is used. An
interrupted run leaves every target either the placeholder or the complete value:
:meth:`TargetWriter.close` settles an exchange it was in the middle of (exchanging
back if need be) and removes the spares.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
from typing import NamedTuple

from ir.atomic import atomic_write
from ir.ids import MAGIC, id_of_blob, kind_of, make_id, new_hasher, parse_id
from ir.placeholder import read_placeholder
from ir.store import CorruptBlob, LocalStore, MissingBlob

from .rename_exchange import UNSUPPORTED, Exchange, load_exchange
from .targets import Seen, Target

CHUNK = 1 << 20
_NOT_LOADED = object()
_NOATIME = getattr(os, "O_NOATIME", 0)


# Plain classes with slots, not dataclasses: made per target, and importing dataclasses
# is a good part of a fresh gg-force's start on a finished build.
class _Spare:
    """The file a directory's next target is written into before the exchange."""

    __slots__ = ("name", "fd", "ino", "mode", "size")

    def __init__(self, name: str, fd: int, ino: int, mode: int, size: int):
        self.name = name
        self.fd = fd  # open read-write on the spare's inode
        self.ino = ino
        self.mode = mode  # its permission bits now
        self.size = size  # its length now


class _Directory:
    """Per target directory: an open descriptor, what a file created here looks like
    (the owner, group and extended attributes a reused inode must have), the spare."""

    __slots__ = ("fd", "owner", "xattrs", "spare", "exchange_works")

    def __init__(self, fd: int):
        self.fd = fd
        self.owner: tuple[int, int] | None = None  # (uid, gid) of a file created here
        self.xattrs: dict[str, bytes] | None = None
        self.spare: _Spare | None = None
        self.exchange_works = True


class _Pending(NamedTuple):
    """An exchange under way: enough to settle it after an interruption."""

    directory: _Directory
    spare: _Spare
    name: str  # the target's name in the directory
    seen: Seen


class TargetWriter:
    """Writes values over placeholders for one run; :meth:`close` (or ``with``) at the end."""

    def __init__(self, store: LocalStore):
        self.store = store
        self._blob_dir = f"{store.blobs}/"
        mask = os.umask(0)
        os.umask(mask)
        self._umask = mask
        self._exchange: Exchange | None | object = _NOT_LOADED
        self._directories: dict[str, _Directory] = {}
        self._pending: _Pending | None = None
        self._names = 0
        self._buffer: bytearray | None = None  # for values of CHUNK bytes and more
        self.reused = 0  # spares that were a replaced placeholder (for tests and benches)

    def __enter__(self) -> TargetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one entry point ----------------------------------------------------------

    def write(self, target: Target, value_id: str, executable: bool | None = None) -> bool:
        """Write local value ``value_id`` over the target's placeholder.

        ``executable``: whether the blob has its execute bit, if the caller has just
        looked (the cached fast path does, checking that the blob is there); None: the
        writer looks. False when there was nothing to replace: an ID target, or a file
        that is no longer the placeholder parsed (left as it is). Raises
        :class:`CorruptBlob` (the blob is dropped, so the next run rebuilds it) or
        :class:`MissingBlob`.
        """
        if not target.is_file or target.ref is None:
            return False
        seen = target.seen
        if seen is None:
            return self._write_by_rename(target, value_id)
        head, name = os.path.split(target.text)
        directory = self._directory(head or ".")
        exchange = self._exchange_call()
        if exchange is None or not directory.exchange_works:
            return self._write_by_rename(target, value_id)
        spare = directory.spare or self._fresh_spare(directory)
        directory.spare = None  # until settled: an interruption must not reuse it blindly
        try:
            mode = self._copy(value_id, spare, executable)
            if spare.mode != mode:
                os.fchmod(spare.fd, mode)
                spare.mode = mode
            # The real file keeps the placeholder's timestamps: make compared them when it
            # wrote the placeholders, and forcing an object after the archive that contains
            # it must not make the archive look out of date.
            os.utime(spare.fd, ns=(seen.atime_ns, seen.mtime_ns))
            if not _still(seen, name, directory.fd):
                directory.spare = spare
                return False
            self._pending = _Pending(directory, spare, name, seen)
            exchange(directory.fd, spare.name, directory.fd, name)
        except OSError as exc:
            if self._pending is None:  # before the exchange: the spare is intact
                self._discard(directory, spare)
                raise
            self._pending = None  # the exchange itself failed: nothing moved
            if exc.errno in UNSUPPORTED:
                directory.exchange_works = False
                directory.spare = spare
                return self._write_by_rename(target, value_id)
            directory.spare = spare
            if exc.errno == errno.ENOENT:  # the target is gone: no placeholder to replace
                return False
            raise
        except BaseException:
            if self._pending is not None:  # interrupted around the exchange: settle it by the inodes
                self._settle()  # (it cannot know whether the exchange happened)
            else:
                directory.spare = spare
            raise
        return self._settle(exchanged=True)

    def close(self) -> None:
        """Settle an interrupted exchange, then remove every spare."""
        if self._pending is not None:
            self._settle()
        for directory in self._directories.values():
            if directory.spare is not None:
                self._discard(directory, directory.spare)
                directory.spare = None
            os.close(directory.fd)
        self._directories.clear()

    # -- the exchange path ------------------------------------------------------------

    def _exchange_call(self) -> Exchange | None:
        if self._exchange is _NOT_LOADED:
            self._exchange = load_exchange()
        return self._exchange  # type: ignore[return-value]

    def _directory(self, path: str) -> _Directory:
        directory = self._directories.get(path)
        if directory is None:
            # O_PATH: a directory the user may write but not list still works.
            fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            directory = self._directories[path] = _Directory(fd)
        return directory

    def _fresh_spare(self, directory: _Directory) -> _Spare:
        pid = os.getpid()
        while True:
            self._names += 1
            name = f".tmp-gg-{pid}-{self._names}"
            try:
                fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=directory.fd)
                break
            except FileExistsError:
                continue
        st = os.fstat(fd)
        if directory.owner is None:
            directory.owner = (st.st_uid, st.st_gid)
            directory.xattrs = _xattrs(fd)
        return _Spare(name, fd, st.st_ino, stat.S_IMODE(st.st_mode), 0)

    def _copy(self, value_id: str, spare: _Spare, executable: bool | None = None) -> int:
        """Copy the blob into the spare from offset 0, hashing it; the mode the target
        gets (from ``executable`` if known, else the blob's execute bit). The spare is
        cut to the value's length."""
        parsed = parse_id(value_id)
        try:
            fd = os.open(self._blob_dir + value_id, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise MissingBlob(value_id, str(self.store.blobs)) from None
        try:
            if executable is None:
                executable = bool(os.fstat(fd).st_mode & stat.S_IXUSR)
            if parsed.size < CHUNK:
                # One read: a short read of a regular file is its end (and what is
                # written is what hashes to the ID, whatever the file holds beyond).
                data = os.read(fd, parsed.size + 1)
                actual = id_of_blob(data, parsed.algorithm)
                size = len(data)
                if actual == value_id:
                    _write_all(spare.fd, memoryview(data))
            else:
                actual, size = self._copy_large(fd, spare.fd, parsed.size, parsed.algorithm)
        finally:
            os.close(fd)
        if actual != value_id:
            self.store.remove_corrupt(value_id)
            raise CorruptBlob(value_id, actual, f"{self.store.blobs} (removed; run again to rebuild it)")
        if spare.size > size:
            os.ftruncate(spare.fd, size)
        spare.size = size
        return (0o755 if executable else 0o644) & ~self._umask

    def _copy_large(self, source: int, sink: int, expected: int, algorithm: str) -> tuple[str, int]:
        """Stream ``source`` into ``sink`` from offset 0 through one reused buffer,
        hashing it: (the ID of what was read, its size)."""
        hasher = new_hasher(algorithm)
        if self._buffer is None:
            self._buffer = bytearray(CHUNK)
        buffer, view = self._buffer, memoryview(self._buffer)
        head = b""
        size = 0
        while count := os.readv(source, (buffer,)):
            piece = view[:count]
            if len(head) < len(MAGIC):
                head += bytes(piece[: len(MAGIC) - len(head)])
            hasher.update(piece)
            _write_all(sink, piece, size)
            size += count
            if size > expected:
                break  # longer than its ID says: corrupt, no need to read on
        return make_id(kind_of(head), hasher.hexdigest(), size, algorithm), size

    def _settle(self, exchanged: bool = False) -> bool:
        """Finish the exchange in :attr:`_pending`: True if the target now holds the
        value, False if what was displaced was not the placeholder (exchanged back).
        ``exchanged``: the exchange is known to have happened (else the inodes say)."""
        pending = self._pending
        assert pending is not None
        directory, spare, name, seen = pending.directory, pending.spare, pending.name, pending.seen
        if not exchanged and not _is_inode(name, directory.fd, spare.ino):
            # Never exchanged (interrupted before), or already exchanged back.
            self._pending = None
            self._discard(directory, spare)
            return False
        displaced = self._open_displaced(directory, spare, seen)
        if displaced is None:
            # Not the placeholder: the user's file goes back where it was.
            self._exchange_call()(directory.fd, spare.name, directory.fd, name)  # type: ignore[misc]
            self._pending = None
            self._discard(directory, spare)
            return False
        self._pending = None
        os.close(spare.fd)
        fd, st, writable = displaced
        if writable and self._reusable(directory, fd, st):
            directory.spare = _Spare(spare.name, fd, st.st_ino, stat.S_IMODE(st.st_mode), st.st_size)
            self.reused += 1
        else:
            os.close(fd)
            _unlink_at(directory.fd, spare.name)
        return True

    def _open_displaced(self, directory: _Directory, spare: _Spare,
                        seen: Seen) -> tuple[int, os.stat_result, bool] | None:
        """What the exchange put under the spare's name, open (and whether for writing),
        if it is the placeholder parsed (same inode, same bytes); None if it is anything
        else."""
        try:
            st = os.stat(spare.name, dir_fd=directory.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino, st.st_size) != (seen.dev, seen.ino, seen.size):
            return None
        flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        writable = True
        try:
            # O_NOATIME: reading it back must not cost an inode write (only the owner
            # may ask, and only the owner's placeholder can be reused anyway).
            fd = os.open(spare.name, os.O_RDWR | _NOATIME | flags, dir_fd=directory.fd)
        except PermissionError:  # a read-only placeholder, or another owner's: check it, never reuse it
            writable = False
            try:
                fd = os.open(spare.name, os.O_RDONLY | flags, dir_fd=directory.fd)
            except OSError:
                return None  # unreadable now: not provably the placeholder, so it goes back
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            same = st.st_ino == seen.ino and os.pread(fd, len(seen.data) + 1, 0) == seen.data
        except BaseException:
            os.close(fd)
            raise
        if not same:
            os.close(fd)
            return None
        return fd, st, writable

    def _reusable(self, directory: _Directory, fd: int, st: os.stat_result) -> bool:
        """May the displaced placeholder's inode be written over as the next spare?
        Only if nobody else can see it and it looks like a file created here."""
        if st.st_nlink != 1 or (st.st_uid, st.st_gid) != directory.owner:
            return False
        if _xattrs(fd) != directory.xattrs:
            return False
        return _nobody_else_has_open(fd)

    def _discard(self, directory: _Directory, spare: _Spare) -> None:
        os.close(spare.fd)
        _unlink_at(directory.fd, spare.name)

    # -- the classic path -------------------------------------------------------------

    def _write_by_rename(self, target: Target, value_id: str) -> bool:
        """A temp file renamed over the target (where the exchange is unavailable)."""
        path = target.path
        assert path is not None
        current = read_placeholder(path)
        if current is None or current.ref != target.ref:
            return False
        placeholder_stat = os.stat(path)
        atomic_write(path, lambda handle: self._copy(value_id, _Spare("", handle.fileno(), 0, 0, 0)),
                     self._mode_of(value_id), times_ns=(placeholder_stat.st_atime_ns, placeholder_stat.st_mtime_ns))
        return True

    def _mode_of(self, value_id: str) -> int:
        try:
            executable = bool(os.stat(self._blob_dir + value_id).st_mode & stat.S_IXUSR)
        except FileNotFoundError:
            raise MissingBlob(value_id, str(self.store.blobs)) from None
        return (0o755 if executable else 0o644) & ~self._umask


def _is_inode(name: str, dir_fd: int, ino: int) -> bool:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_ino == ino
    except FileNotFoundError:
        return False


def _still(seen: Seen, name: str, dir_fd: int) -> bool:
    """Is ``name`` still the file parsed, by its stat? (The content is checked after
    the exchange; this spares the exchange-and-back when it has plainly changed.)"""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == (seen.dev, seen.ino, seen.size, seen.mtime_ns)


def _write_all(fd: int, data: memoryview, offset: int = 0) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written


def _xattrs(fd: int) -> dict[str, bytes]:
    """A file's extended attributes (empty where the file system has none)."""
    try:
        names = os.listxattr(fd)
    except OSError:
        return {}
    return {name: os.getxattr(fd, name) for name in names}


def _nobody_else_has_open(fd: int) -> bool:
    """True if no other open file description refers to ``fd``'s inode.

    The kernel grants a write lease only then (and refuses it to a file being executed
    or mapped). The lease is released at once; should someone open the file in between,
    the break notice is SIGURG, which is ignored by default, not SIGIO, which kills."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EBUSY, errno.EACCES, errno.EPERM, errno.EINVAL, errno.ENOLCK):
            raise
        return False
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return True


def _unlink_at(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
