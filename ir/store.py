"""The local store, ``.gg/``: blobs, reductions and the hash cache.

Layout::

    .gg/blobs/<ID>              content, read-only (0444, or 0555 if executable)
    .gg/reductions.log          reduction records, appended: ``REF RESULT verified-inputs CRC``
                                per line, ``REF`` being ``THUNK`` (its first output) or
                                ``THUNK#tag`` (see ir.reduction_log)
    .gg/reductions.lock         orders appends against the log's compaction (flock)
    .gg/outputs.log             kept output records, ``THUNK OUTPUT_BLOB verified-inputs CRC``:
                                what a successful run of THUNK printed (a blob), for
                                thunks that printed anything only (same format and
                                guarantees as the reduction log; ``outputs.lock`` its lock)
    .gg/thunk-locks             one byte per running thunk, locked by its forcer (ir.thunk_lock)
    .gg/hash_cache/             see ir.hashing.HashCache
    .gg/tmp/                    temp files, renamed into place when complete

Every blob write is a temp file in the store plus a hard link (so the first complete
copy wins and its mode is never replaced by a racing writer's), and every reduction
write one checksummed append, so two processes writing the same store, or a process
killed mid-write, never leave a partial blob or a reduction that is read. A
reduction's result is an ID or, for a tail call that hands a named output on,
``THUNK'#tag``.
Blobs are named by the hash of their content and checked on the way in; a blob can be
re-verified against its ID on the way out, and is before every use
(:meth:`LocalStore.verify_for_use`): a blob is a file any process of the same user
can rewrite, so its name is a claim, not a proof.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import time
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import unlink_quietly
from .hashing import RACY_WINDOW_NS, HashCache, hash_file, hash_stream
from .ids import InvalidId, Kind, id_of_blob, id_of_bytes, parse_id, parse_ref, validate_tag
from .reduction_log import VERIFIED_MARK, ReductionLog
from .store_root import OUTPUT_LOG, locate_root

if TYPE_CHECKING:  # imported where used: the thunk format pulls in protobuf, which gg-infer's start does not need
    from .thunk import Thunk

# The record directory of stores from before the reduction log (imported once).
LEGACY_REDUCTIONS = "reductions"
VALUE_MODE = 0o444
EXECUTABLE_MODE = 0o555


def reduction_name(ref: str) -> str:
    """The object name of the reduction record of ``ref`` in a remote store's
    ``reductions/`` namespace: ``THUNK`` or ``THUNK#tag`` with '/' in the tag written as
    %2F (older local stores used the same names for their record files)."""
    parsed = parse_ref(ref)
    if not parsed.is_thunk:
        raise InvalidId(f"only thunks reduce; {ref} is a value")
    return parsed.id if parsed.tag is None else f"{parsed.id}#{parsed.tag.replace('/', '%2F')}"


def encode_reduction(result: str) -> bytes:
    """A reduction record: ``RESULT verified-inputs`` (one line). ``result`` is checked."""
    parse_ref(result)
    return f"{result} {VERIFIED_MARK}\n".encode()


def decode_reduction(data: bytes) -> str | None:
    """The result a record names, or None for a record that is not to be trusted
    (no :data:`VERIFIED_MARK`, unreadable, not an ID): such a thunk is reduced again."""
    try:
        fields = data.decode("ascii").split()
    except UnicodeDecodeError:
        return None
    if len(fields) != 2 or fields[1] != VERIFIED_MARK:
        return None
    try:
        parse_ref(fields[0])
    except InvalidId:
        return None
    return fields[0]


@lru_cache(maxsize=1 << 17)  # a record's result is checked when written and when read
def _check_ref(ref: str) -> bool:
    """Check ``ID`` or ``THUNK#tag`` like ``parse_ref`` (InvalidId); True for a thunk's.

    Not ``parse_ref`` itself: a record's ref is a fresh string per thunk (``T#tag``),
    which would miss its cache and fill it; the ID and the tag alone are cache hits.
    """
    ident, sep, tag = ref.partition("#")
    is_thunk = parse_id(ident).is_thunk
    if sep:
        if not is_thunk:
            raise InvalidId(f"reference {ref!r} puts an output tag on a value ID")
        validate_tag(tag)
    return is_thunk


def _check_thunk_ref(ref: str) -> None:
    # The ID and the tag apart: each is a cache hit (a thunk's ``T#tag`` refs are fresh
    # strings, but its bare ID and its tags were checked before).
    ident, sep, tag = ref.partition("#")
    if not _check_ref(ident):
        if sep:
            raise InvalidId(f"reference {ref!r} puts an output tag on a value ID")
        raise InvalidId(f"only thunks reduce; {ref} is a value")
    if sep:
        validate_tag(tag)


class StoreError(Exception):
    """Base for store problems; the message is one line meant for the user."""


class StoreNotFound(StoreError):
    pass


class MissingBlob(StoreError):
    def __init__(self, ident: str, where: str = ""):
        super().__init__(f"blob {ident} is not in {where or 'the store'}")
        self.ident = ident


class CorruptBlob(StoreError):
    def __init__(self, ident: str, actual: str, where: str):
        super().__init__(f"blob {ident} in {where} is corrupt: its content hashes to {actual}")
        self.ident = ident
        self.actual = actual
        self.where = where


class NotRegularFile(StoreError):
    """A file to be adopted is a link or a special file (the message is a predicate)."""


class DroppedCorruptBlob(MissingBlob):
    """A blob failed verification on use and was removed: it is missing now.

    A :class:`MissingBlob`, so the scheduler treats it like any lost value: it is
    fetched again or rebuilt by its producer; a source has no producer, and the
    message says how to store it again.
    """

    def __init__(self, ident: str, message: str):
        StoreError.__init__(self, message)
        self.ident = ident


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


class VerifiedBlobs:
    """Blobs verified against their IDs, remembered by what ``lstat`` said at the time.

    Why in memory, and why ctime: a thunk runs as the same user as the executor, so it
    can ``chmod`` a blob writable, rewrite it and set its mtime back. It cannot set the
    ctime, and it cannot reach this process's memory — an on-disk record it could
    rewrite too. So an entry is trusted only while ``(dev, inode, size, mtime, ctime,
    mode)`` are all unchanged; anything else is hashed again.

    An entry is not kept while the blob's *mtime* is within
    :data:`ir.hashing.RACY_WINDOW_NS` of the verification (a write in the same
    timestamp tick as the stat would leave size and mtime unchanged; see
    ``ir/hashing.py``). A recent *ctime* alone does not count: the executor's own hard
    links move it all the time (a header linked into every compile would never leave
    the window), and a write after the stat still moves the mtime; evading both takes
    a write plus a ``utime`` back within the very tick of the stat, by a process racing
    the executor (see docs/trust.md).

    The executor's own hard links and unlinks also move a blob's ctime;
    :meth:`after_own_change` carries the entry across them, comparing the stat taken
    just before the operation with the one just after.
    """

    def __init__(self, racy_window_ns: int = RACY_WINDOW_NS):
        self.racy_window_ns = racy_window_ns
        self._entries: dict[str, tuple[int, int, int, int, int, int]] = {}

    def trusts(self, ident: str, st: os.stat_result) -> bool:
        return self._entries.get(ident) == _stat_key(st)

    def remember(self, ident: str, st: os.stat_result, observed_ns: int) -> None:
        """``st`` was taken (no earlier than ``observed_ns``) before hashing the content to ``ident``."""
        if observed_ns - st.st_mtime_ns >= self.racy_window_ns:
            self._entries[ident] = _stat_key(st)
        else:
            self._entries.pop(ident, None)

    def after_own_change(self, ident: str, before: os.stat_result, after: os.stat_result) -> None:
        """Carry a trusted entry over a link/unlink made between ``before`` and ``after``.

        Only the link count and ctime may differ; anything else drops the entry.
        """
        if not self.trusts(ident, before):
            return
        b, a = _stat_key(before), _stat_key(after)
        if (b[:4], b[5]) == (a[:4], a[5]):
            self._entries[ident] = a
        else:
            self._entries.pop(ident, None)

    def forget(self, ident: str) -> None:
        self._entries.pop(ident, None)


class LocalStore:
    """A ``.gg`` directory. Cheap to construct; creates nothing until :meth:`init`.

    ``verified`` remembers which blobs were verified on use; it lives as long as this
    object (a ``gg-force`` run, or a warm Lambda worker).
    """

    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        self.blobs = self.root / "blobs"
        self.reduction_log = ReductionLog(f"{self.root}/reductions.log", f"{self.root}/reductions.lock",
                                          f"{self.root}/tmp", f"{self.root}/{LEGACY_REDUCTIONS}")
        # Kept output (a successful run's warnings): a log of its own, so a build whose
        # thunks print nothing has none, and a reader of reductions never reads these.
        self.output_log = ReductionLog(f"{self.root}/{OUTPUT_LOG}", f"{self.root}/outputs.lock",
                                       f"{self.root}/tmp", None)
        self.tmp = self.root / "tmp"
        self.hash_cache = HashCache(self.root / "hash_cache")
        self.verified = VerifiedBlobs()
        # The same directories as plain strings with a trailing '/': the hot paths (has,
        # read) build file names by concatenation, not Path objects.
        self._blob_dir = f"{self.blobs}/"
        self._temp_names = itertools.count()
        self._tmp_dir = str(self.tmp)
        self._anonymous_temps = hasattr(os, "O_TMPFILE")  # until the file system says otherwise

    # -- locating -------------------------------------------------------------------

    @classmethod
    def init(cls, root: Path) -> LocalStore:
        store = cls(root)
        for directory in (store.root, store.blobs, store.tmp, store.hash_cache.directory):
            directory.mkdir(parents=True, exist_ok=True)
        return store

    @classmethod
    def locate(
        cls, start: Path | None = None, environ: Mapping[str, str] | None = None, create: bool = False
    ) -> LocalStore:
        """``$GG_DIR`` if set, else the nearest ``.gg`` above ``start`` (default: cwd).

        With ``create``, a missing store is made in ``start`` instead of failing.
        """
        root, problem = locate_root(start, environ, create)
        if root is None:
            raise StoreNotFound(problem)
        return cls.init(root)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # -- blobs ----------------------------------------------------------------------

    def blob_path(self, ident: str) -> Path:
        parse_id(ident)
        return self.blobs / ident

    def has(self, ident: str) -> bool:
        try:
            parse_id(ident)
        except InvalidId:
            return False
        return os.path.exists(self._blob_dir + ident)

    def _install(self, temp: str, ident: str, executable: bool) -> str:
        """Move a complete temp file into place as blob ``ident`` (first writer wins).

        ``os.link`` fails if the blob exists, so a racing writer never replaces a blob
        (and a non-executable copy never replaces an executable one); the loser only
        adds the execute bit if it needs it.
        """
        os.chmod(temp, EXECUTABLE_MODE if executable else VALUE_MODE)
        target = self._blob_dir + ident
        try:
            os.link(temp, target)
        except FileExistsError:
            if executable:
                self.mark_executable(ident)
        except OSError:  # a file system without hard links: rename (same content anyway)
            os.replace(temp, target)
            return ident
        os.unlink(temp)
        return ident

    def _temp(self) -> tuple[int, str]:
        try:
            return self._fresh(f"{self.tmp}/in-")
        except FileNotFoundError:  # a store made lazily (a function's GG_DIR)
            self.tmp.mkdir(parents=True, exist_ok=True)
            self.blobs.mkdir(parents=True, exist_ok=True)
            return self._fresh(f"{self.tmp}/in-")

    def put_bytes(self, data: bytes, executable: bool = False) -> str:
        ident = id_of_blob(data)
        if self.has(ident):
            if executable:
                self.mark_executable(ident)
            return ident
        if self._anonymous_temps and self._put_anonymous(data, ident, executable):
            return ident
        fd, temp = self._temp()
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            return self._install(temp, ident, executable)
        except BaseException:
            unlink_quietly(temp)
            raise

    def _put_anonymous(self, data: bytes, ident: str, executable: bool) -> bool:
        """Store ``data`` as blob ``ident`` through a nameless temp file (``O_TMPFILE``)
        linked into place once complete; False where the file system cannot (then the
        caller uses a named temp, and so does every later write of this store).

        Why: a named temp costs a directory entry made and removed per blob, and a
        ``chmod`` by name: a 1 KiB ``put_bytes`` takes 0.6–0.9x the time this way
        (interleaved in one store, on ext4 and in /dev/shm; bench numbers in
        docs/performance.md, "S3 store"). Atomic as
        before: the blob appears complete under its name or not at all (``linkat``
        fails if it exists, so the first complete copy wins), and a killed process
        leaves nothing behind, not even a temp file.
        """
        try:
            fd = os.open(self._tmp_dir, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:  # a store made lazily (a function's GG_DIR)
            self.tmp.mkdir(parents=True, exist_ok=True)
            self.blobs.mkdir(parents=True, exist_ok=True)
            return self._put_anonymous(data, ident, executable)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOTSUP):
                self._anonymous_temps = False
                return False
            raise
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, EXECUTABLE_MODE if executable else VALUE_MODE)
            try:
                # An absolute source: the kernel ignores src_dir_fd, which is only there
                # so that Python calls linkat (with AT_SYMLINK_FOLLOW) rather than link.
                os.link(f"/proc/self/fd/{fd}", self._blob_dir + ident, src_dir_fd=fd)
            except FileExistsError:
                if executable:
                    self.mark_executable(ident)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP,
                                 errno.EOPNOTSUPP):
                    if os.path.isdir(self.blobs):  # no /proc, or no hard links here: named temps
                        self._anonymous_temps = False
                        return False
                raise
        finally:
            os.close(fd)
        return True

    def put_file(self, path: Path, executable: bool | None = None) -> str:
        """Store a copy of ``path`` (streamed, hashed while copied); return its ID.

        ``executable`` defaults to the file's own execute bit.
        """
        path = Path(path)
        st, observed = self.hash_cache.stat(path)
        if executable is None:
            executable = bool(st.st_mode & stat.S_IXUSR)
        known = self.hash_cache.lookup(path, st)
        if known is not None and self.has(known):
            if executable:
                self.mark_executable(known)
            return known
        fd, temp = self._temp()
        try:
            with os.fdopen(fd, "wb") as sink, open(path, "rb", buffering=0) as source:
                ident = hash_stream(source, sink=sink)
            self.hash_cache.remember(st, ident, observed)
            return self._install(temp, ident, executable)
        except BaseException:
            unlink_quietly(temp)
            raise

    def adopt(self, path: Path, executable: bool = False) -> str:
        """Hash ``path`` and move it (not copy) into the store. ``path`` is consumed.

        For outputs of an execution, which live in a scratch directory on the same file
        system; falls back to a copy across file systems.
        """
        ident = hash_file(path)
        if self.has(ident):
            os.unlink(path)
            if executable:
                self.mark_executable(ident)
            return ident
        fd, temp = self._temp()
        os.close(fd)
        try:
            try:
                os.replace(path, temp)
            except OSError:
                import shutil  # here: gg-force's cached path never copies a file in

                shutil.copyfile(path, temp)
                os.unlink(path)
            return self._install(temp, ident, executable)
        except BaseException:
            unlink_quietly(temp)
            raise

    def adopt_hashed(self, path: Path, ident: str, executable: bool = False) -> str:
        """Move ``path``, a private temp file in :attr:`tmp` whose bytes the caller hashed
        to ``ident`` while writing them (a verified download), into the store.

        :meth:`adopt` hashes again, which reads every byte a second time; the writer's
        own hash is as good, since nobody else writes a ``mkstemp`` file. ``path`` is
        consumed.
        """
        if self.has(ident):
            os.unlink(path)
            if executable:
                self.mark_executable(ident)
            return ident
        try:
            return self._install(str(path), ident, executable)
        except BaseException:
            unlink_quietly(path)
            raise

    def adopt_at(self, dir_fd: int, name: str) -> tuple[str, bool]:
        """Adopt ``name`` in directory ``dir_fd`` (a work directory): ``(ID, executable)``.

        Never follows a symbolic link: the file is opened with ``O_NOFOLLOW`` and hashed
        from that descriptor, made read-only through it, then its directory entry is
        hard-linked into the store (``linkat``, which does not follow a link either) and
        the new blob checked to be that very inode, unchanged — if it is not, it is
        removed again. No temp file: a file creation per output was most of a trivial
        thunk's collection cost. A file with several links (an input passed through, or a
        hard link to a file elsewhere) is copied, never moved. Raises
        :class:`NotRegularFile` for a link or a special file and
        :class:`FileNotFoundError` if there is no such file.
        """
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            raise NotRegularFile("is a symbolic link")
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile("is not a regular file")
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "rb", buffering=0, closefd=False) as source:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise NotRegularFile("is not a regular file")
                executable = bool(st.st_mode & stat.S_IXUSR)
                ident = hash_stream(source)
                if self.has(ident):
                    if executable:
                        self.mark_executable(ident)
                    if st.st_nlink == 1:
                        os.unlink(name, dir_fd=dir_fd)
                    return ident, executable
                if st.st_nlink == 1 and self._link_in(fd, st, dir_fd, name, ident, executable):
                    return ident, executable
                # A shared inode or another file system: copy, hashing again.
                temp_fd, temp = self._temp()
                try:
                    source.seek(0)
                    with os.fdopen(temp_fd, "wb") as sink:
                        copied = hash_stream(source, sink=sink)
                    if copied != ident:
                        raise NotRegularFile("changed while it was collected")
                    return self._install(temp, ident, executable), executable
                except BaseException:
                    unlink_quietly(temp)
                    raise
        finally:
            os.close(fd)

    def _link_in(self, fd: int, st: os.stat_result, dir_fd: int, name: str, ident: str, executable: bool) -> bool:
        """Make ``name`` (open as ``fd``, hashed to ``ident`` after ``st``) blob ``ident``
        by a hard link; False where hard links do not work (then the caller copies)."""
        os.fchmod(fd, EXECUTABLE_MODE if executable else VALUE_MODE)  # read-only before it is a blob
        target = os.path.join(self.blobs, ident)
        try:
            os.link(name, target, src_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:  # a racing writer stored it first: theirs wins
            if executable:
                self.mark_executable(ident)
            os.unlink(name, dir_fd=dir_fd)
            return True
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
                return False
            raise
        after = os.lstat(target)
        if (after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns) != (st.st_dev, st.st_ino, st.st_size,
                                                                              st.st_mtime_ns):
            unlink_quietly(target)  # the name was swapped or the file written since it was hashed
            raise NotRegularFile("changed while it was collected")
        os.unlink(name, dir_fd=dir_fd)
        return True

    def put_thunk(self, thunk: Thunk) -> str:
        return self.put_bytes(thunk.serialize())

    def mark_executable(self, ident: str) -> None:
        path = self.blobs / ident
        if not os.stat(path).st_mode & stat.S_IXUSR:
            os.chmod(path, EXECUTABLE_MODE)

    def read_bytes(self, ident: str, verify: bool = False) -> bytes:
        parse_id(ident)
        try:
            with open(self._blob_dir + ident, "rb", buffering=0) as handle:
                data = handle.read()
        except FileNotFoundError:
            raise MissingBlob(ident, str(self.blobs)) from None
        if verify:
            actual = id_of_bytes(data, Kind(ident[0]), parse_id(ident).algorithm)
            if actual != ident:
                raise CorruptBlob(ident, actual, str(self.blobs))
        return data

    def load_thunk(self, ident: str) -> Thunk:
        oid = parse_id(ident)
        if not oid.is_thunk:
            raise StoreError(f"{ident} is a value, not a thunk")
        from .thunk import parse_thunk

        # os.open/os.read sized by the ID, no file object: a scheduler loads every node.
        # Reading stops at the size the ID gives (one read, normally); a shorter or longer
        # file is read to its end and then fails the ID check.
        try:
            fd = os.open(self._blob_dir + ident, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise MissingBlob(ident, str(self.blobs)) from None
        try:
            data = os.read(fd, oid.size + 1)
            while len(data) != oid.size and (chunk := os.read(fd, max(oid.size + 1 - len(data), 1 << 16))):
                data += chunk
        finally:
            os.close(fd)
        return parse_thunk(data, where=f"thunk {ident}", expected_id=ident)

    def verify(self, ident: str) -> bool:
        """True if blob ``ident`` exists and its content hashes to ``ident``."""
        try:
            return hash_file(self.blob_path(ident)) == ident
        except FileNotFoundError:
            return False

    def remove_corrupt(self, ident: str) -> None:
        """Drop a blob that failed verification, so it is fetched or rebuilt again."""
        self.verified.forget(ident)
        unlink_quietly(str(self.blobs / ident))

    def verify_for_use(self, ident: str) -> os.stat_result:
        """Check blob ``ident`` against its ID before something uses it; return its stat.

        Cheap when :attr:`verified` vouches for the blob's current stat (one ``lstat``);
        otherwise the content is hashed. A blob that is writable (someone ``chmod``-ed
        it) is made read-only again first, so it cannot change after the hash. A blob
        that does not hash to its ID, or is not a regular file, is removed and
        :class:`CorruptBlob` raised; an absent one raises :class:`MissingBlob`.
        """
        path = self._blob_name(ident)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise MissingBlob(ident, str(self.blobs)) from None
        if self.verified.trusts(ident, st) and not st.st_mode & 0o222:
            return st
        observed = time.time_ns()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise MissingBlob(ident, str(self.blobs)) from None
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENXIO):
                raise
            self.remove_corrupt(ident)
            raise CorruptBlob(ident, "a symbolic link or special file", str(self.blobs)) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self.remove_corrupt(ident)
                raise CorruptBlob(ident, "a special file", str(self.blobs))
            if st.st_mode & 0o222:
                os.fchmod(fd, st.st_mode & ~0o222 & 0o7777)
                st = os.fstat(fd)
            with os.fdopen(fd, "rb", buffering=0, closefd=False) as handle:
                actual = hash_stream(handle, parse_id(ident).algorithm)
        finally:
            os.close(fd)
        if actual != ident:
            self.remove_corrupt(ident)
            raise CorruptBlob(ident, actual, str(self.blobs))
        self.verified.remember(ident, st, observed)
        return st

    def link_verified(self, ident: str, dir_fd: int, name: str,
                      checked: os.stat_result | None = None) -> os.stat_result:
        """Hard-link blob ``ident`` (verified now) as ``name`` in the directory ``dir_fd``.

        ``checked`` is what :meth:`verify_for_use` returned for this blob moments ago,
        before the function started: if the blob's stat is still exactly that, it is not
        hashed again (the caller verifies it once more after the run). The link moves
        the blob's ctime; the entry in :attr:`verified` is carried over it by comparing
        the stat just before with the one just after. Returns the blob's stat from just
        before the link (its inode is the link's).
        """
        path = self._blob_name(ident)
        if checked is None or _stat_key(before := os.lstat(path)) != _stat_key(checked):
            before = self.verify_for_use(ident)
        os.link(path, name, dst_dir_fd=dir_fd, follow_symlinks=False)
        self._carry(ident, before)
        return before

    def unlink_verified(self, ident: str, dir_fd: int, name: str) -> None:
        """Remove a hard link made by :meth:`link_verified`, keeping the verified entry."""
        try:
            before = os.lstat(self._blob_name(ident))
        except FileNotFoundError:
            before = None
        os.unlink(name, dir_fd=dir_fd)
        if before is not None:
            self._carry(ident, before)

    def _carry(self, ident: str, before: os.stat_result) -> None:
        try:
            after = os.lstat(self._blob_dir + ident)  # checked by the caller
        except FileNotFoundError:
            self.verified.forget(ident)
            return
        self.verified.after_own_change(ident, before, after)

    def _blob_name(self, ident: str) -> str:
        """The path of blob ``ident`` as a string (``ident`` checked): the per-input hot
        paths (verify, link, unlink) run ~100 times per compile thunk, and a ``Path``
        join cost more than the ``lstat`` it was for."""
        parse_id(ident)
        return self._blob_dir + ident

    # -- reductions -----------------------------------------------------------------

    def get_reduction(self, ref: str, fresh: bool = True) -> str | None:
        """What ``ref`` (``THUNK`` or ``THUNK#tag``) was reduced to, one step; or None.

        Sees every record written before the call, by any process (the log is caught up
        first: one ``stat``, and a read of what was appended since); with ``fresh=False``
        other processes' records may be seen up to 50 ms late (``ReductionLog.get``: for
        callers that re-check a miss freshly before acting on it). A record without
        :data:`VERIFIED_MARK` was written before inputs were verified on use; it may have
        been computed from a corrupt blob, so it is not trusted (the thunk runs again, once).
        """
        _check_thunk_ref(ref)
        result = self.reduction_log.get(ref, fresh)
        if result is None:
            return None
        try:
            _check_ref(result)
        except InvalidId:
            return None
        return result

    def put_reductions(self, records: Sequence[tuple[str, str]], defer: bool = False) -> None:
        """Record that each ``ref`` reduced to its ``result`` (a value, a thunk, or
        ``THUNK#tag``), all in one append: a thunk's records go together, the bare ID
        last (a reader that finds the bare record finds the tagged ones).

        Every caller records what an execution with verified inputs produced (or what
        such a record says), hence the mark. Raises :class:`InvalidId` (and writes
        nothing) if a ref is not a thunk's or a result does not parse.

        ``defer=True`` queues them for one append with later ones (this store object sees
        them at once; other processes after :meth:`flush_reductions` or the next append
        without it): see ``ReductionLog.append``.
        """
        for ref, result in records:
            _check_thunk_ref(ref)
            _check_ref(result)
        self.reduction_log.append(records, defer)

    def flush_reductions(self) -> None:
        """Write the records queued by ``put_reductions(..., defer=True)``."""
        self.reduction_log.flush()

    def put_reduction(self, ref: str, result: str) -> None:
        """:meth:`put_reductions` of one record."""
        self.put_reductions(((ref, result),))

    def forget_reduction(self, ref: str) -> None:
        """Drop the record for ``ref`` (its result was lost), so it is reduced again
        (and its kept output with it: the next run keeps its own, or none)."""
        _check_thunk_ref(ref)
        if "#" not in ref and self.output_log.get(ref) is not None:
            self.output_log.append(((ref, None),))
        self.reduction_log.append(((ref, None),))

    # -- kept output ----------------------------------------------------------------

    def keep_output(self, thunk_ids: Sequence[str], output: bytes) -> str:
        """Keep ``output``, what a successful run of the thunk(s) ``thunk_ids`` printed,
        as a blob plus one record per ID (one append); returns the blob's ID.

        Written before the thunk's reductions (the caller's order), so a reader that finds
        the reduction finds the output record, as with a thunk's tagged records; a crash
        in between leaves a record for a thunk that runs again and writes it again. Only
        thunks that printed something get one: a silent thunk costs nothing here.
        """
        for ref in thunk_ids:
            if "#" in ref:
                raise InvalidId(f"output is kept for a thunk, not for an output tag ({ref})")
            _check_thunk_ref(ref)
        ident = self.put_bytes(output)
        self.output_log.append([(ref, ident) for ref in thunk_ids])
        return ident

    def kept_output(self, thunk_id: str) -> bytes | None:
        """What the run of ``thunk_id`` recorded in this store printed, or None when it
        printed nothing (or ran before output was kept: an older store has no records).

        The blob is verified: a corrupt one is dropped and :class:`CorruptBlob` raised, a
        missing one raises :class:`MissingBlob` -- the caller says so; kept output is
        never silently taken for "no warnings".
        """
        _check_thunk_ref(thunk_id)
        ident = self.output_log.get(thunk_id)
        if ident is None:
            return None
        try:
            return self.read_bytes(ident, verify=True)
        except CorruptBlob:
            self.remove_corrupt(ident)
            raise

    def reduction_records(self) -> dict[str, str]:
        """Every trusted reduction record now in the store: ``{ref: result}`` (a copy;
        results as written, unchecked). One read of the log, then no further I/O: for
        a whole-store view such as gg-force's cached fast path, and for tests."""
        return self.reduction_log.records()

    def _fresh(self, prefix: str, mode: int = 0o600) -> tuple[int, str]:
        """A new, exclusively created temp file ``prefix<pid>-<n>``: unique without
        ``mkstemp``'s random names (a name left by a killed process that had this pid
        is skipped)."""
        pid = os.getpid()
        while True:
            temp = f"{prefix}{pid}-{next(self._temp_names)}"
            try:
                return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode), temp
            except FileExistsError:
                continue

    def resolve(self, ref: str) -> str | None:
        """Follow reductions (tail calls included) from ``ref`` to a value ID, or None."""
        seen = set()
        while parse_ref(ref).is_thunk:
            if ref in seen:
                raise StoreError(f"reduction cycle through {ref}")
            seen.add(ref)
            result = self.get_reduction(ref)
            if result is None:
                return None
            ref = result
        return ref
