"""A shared directory as remote storage (scheme ``file``): e.g. an NFS mount used as a
team cache, or a plain directory where tests need no S3.

``file:///DIR`` holds one file per blob, ``DIR/<ID>`` (the same layout as S3's
``PREFIX/<ID>`` keys), and one file per reduction record, ``DIR/reductions/<THUNK[#tag]>``
(written like a blob: temp file, fsync, rename). The rules are S3's:

* **Atomic writes**: a blob is written to a temp file in ``DIR`` itself, flushed to
  disk (``fsync``), then renamed over its name; a reader on any client sees the whole
  object or none (rename within one directory is atomic on local file systems and on
  NFS). A crash leaves at most a ``.tmp-*`` file, never a short blob.
* **Verify**: the local blob is hashed while it is copied up, and the object is hashed
  while it is copied down; a mismatch is discarded, read once more, then reported as
  :class:`~ir.store.CorruptBlob` naming the file. A corrupt object is replaced by the
  next upload that is told to overwrite (a producer) or after :meth:`forget`.
* **The execute bit** is the object's own mode (0555 for programs, 0444 otherwise).
* **No cache of beliefs** beyond this process: a file system check is cheap, so
  :meth:`has` always looks (only :meth:`remember` and :meth:`forget` are kept).
* Blocking calls run in worker threads, at most ``concurrency`` at once, so a slow NFS
  server does not stall the event loop.

Configuration problems (no such directory, not a directory, not writable) are
:class:`~ir.storage.StorageConfigError` lines naming ``GG_STORAGE_URI``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import io
import os
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

from ..atomic import atomic_write_bytes, unlink_quietly
from ..hashing import hash_stream
from ..ids import Kind, id_of_bytes, parse_id
from ..store import CorruptBlob, LocalStore, MissingBlob, decode_reduction, encode_reduction, reduction_name
from .lease import LEASES, Lease, decode_lease, encode_lease
from .protocol import StorageConfigError, StorageContext, StorageError
from .shared import SharedTransfers
from .traffic import Traffic
from .uri import FileConfig, parse_file_uri

OBJECT_MODE = 0o444
EXECUTABLE_OBJECT_MODE = 0o555
PROBE_DATA = b"gg storage probe\n"  # the same blob the S3 probe writes
REDUCTIONS = "reductions"  # the directory of reduction records, next to the blobs
T = TypeVar("T")
_SETTING_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR}


class FileStorageError(StorageError):
    """A file operation on the shared directory failed for good (an I/O error)."""


class FileStorageConfigError(FileStorageError, StorageConfigError):
    """The directory is missing, not a directory, or not readable/writable by us."""


def open_file(uri: str, context: StorageContext) -> FileStorage:
    """The ``file`` entry of the storage registry."""
    return FileStorage(parse_file_uri(uri))


class FileStorage:
    """:class:`ir.storage.RemoteStorage` on a directory. Create, use from one loop, close."""

    def __init__(self, config: FileConfig):
        self.config = config
        self.root = Path(config.root)
        self._slots = asyncio.Semaphore(config.concurrency)
        self._suspect: set[str] = set()  # reported missing or corrupt: the next upload writes
        self._executable: set[str] = set()  # a remote worker said it stored a program
        self._uploading = SharedTransfers()
        self._downloading = SharedTransfers()
        self.traffic = Traffic()  # bytes written to and read from the directory

    def __repr__(self) -> str:
        return f"FileStorage({self.config.uri!r})"

    @property
    def uri(self) -> str:
        return self.config.uri

    # -- errors -----------------------------------------------------------------------

    def _error(self, what: str, path: Path | str, exc: OSError) -> FileStorageError:
        """One line; a permission or missing-directory problem is a setting to fix."""
        reason = exc.strerror or type(exc).__name__
        if exc.errno in _SETTING_ERRNOS or not self.root.is_dir():
            return self._config_error(reason)
        return FileStorageError(f"file storage: {what} {path} failed: {reason}")

    def _config_error(self, reason: str | None = None) -> FileStorageConfigError:
        setting = f"GG_STORAGE_URI={self.config.uri}"
        if not self.root.exists():
            return FileStorageConfigError(f"file storage directory {self.root} does not exist ({setting})")
        if not self.root.is_dir():
            return FileStorageConfigError(f"file storage {self.root} is not a directory ({setting})")
        return FileStorageConfigError(f"file storage directory {self.root}: {reason or 'not usable'} "
                                      f"(check its permissions, or {setting})")

    async def _run(self, call: Callable[..., T], *args: object) -> T:
        async with self._slots:
            return await asyncio.to_thread(call, *args)

    # -- set-up -----------------------------------------------------------------------

    async def connect(self) -> None:
        """Nothing to open: each operation opens its file."""

    async def close(self) -> None:
        """Nothing held between operations."""

    async def probe(self) -> None:
        """Write the probe blob (atomically, as an upload does) and read it back."""
        ident = id_of_bytes(PROBE_DATA, Kind.VALUE)

        def check() -> None:
            if not self.root.is_dir():
                raise self._config_error()
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise self._config_error("not writable by this user")
            self._write(ident, lambda sink: hash_stream(io.BytesIO(PROBE_DATA), sink=sink), False)
            self.traffic.sent(len(PROBE_DATA))
            with open(self.root / ident, "rb") as source:
                read_back = source.read()
                self.traffic.received(len(read_back))
                if read_back != PROBE_DATA:
                    raise FileStorageError(f"file storage: {self.config.where(ident)} does not read back "
                                           "what was just written")

        try:
            await self._run(check)
        except OSError as exc:
            raise self._error("writing the probe blob", self.root / ident, exc) from None

    # -- beliefs ----------------------------------------------------------------------

    async def has(self, ident: str) -> bool:
        parse_id(ident)
        try:
            return await self._run(os.path.isfile, self.root / ident)
        except OSError as exc:
            raise self._error("checking", self.root / ident, exc) from None

    def forget(self, ident: str) -> None:
        self._suspect.add(ident)

    def forget_all(self) -> None:
        """Nothing is believed beyond what :meth:`forget` marked; kept as is."""

    def remember(self, ident: str, executable: bool = False) -> None:
        if executable:
            self._executable.add(ident)
        self._suspect.discard(ident)

    # -- upload -----------------------------------------------------------------------

    async def upload(self, store: LocalStore, ident: str, overwrite: bool = False) -> None:
        parse_id(ident)
        await self._uploading.run(ident, lambda: self._run(self._upload, store, ident, overwrite))

    def _upload(self, store: LocalStore, ident: str, overwrite: bool) -> None:
        target = self.root / ident
        source_path = store.blob_path(ident)
        trust = not overwrite and ident not in self._suspect
        try:
            source = open(source_path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            if trust and target.is_file():  # not here, but the storage has it: fine
                return
            raise MissingBlob(ident, f"{store.blobs} (needed to upload it to {self.config.where(ident)})") from None
        with source:
            executable = bool(os.fstat(source.fileno()).st_mode & stat.S_IXUSR)
            try:
                if trust:
                    with contextlib.suppress(FileNotFoundError):
                        present = os.stat(target)
                        if stat.S_ISREG(present.st_mode) and (present.st_mode & stat.S_IXUSR or not executable):
                            return
                actual = self._write(ident, lambda sink: hash_stream(source, parse_id(ident).algorithm, sink),
                                     executable)
            except OSError as exc:
                raise self._error("writing", target, exc) from None
        if actual != ident:
            raise CorruptBlob(ident, actual, str(store.blobs))
        self.traffic.sent(parse_id(ident).size)
        self._suspect.discard(ident)

    def _write(self, ident: str, fill: Callable[[BinaryIO], str], executable: bool) -> str:
        """Write ``ROOT/ident`` atomically with what ``fill(sink)`` writes; ``fill``
        returns the ID of what it wrote, which is returned. If that is not ``ident`` (a
        corrupt local blob) nothing is renamed into place."""
        fd, temp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as sink:
                result = fill(sink)
                sink.flush()
                os.fsync(sink.fileno())
            if result != ident:
                unlink_quietly(temp)
                return result
            os.chmod(temp, EXECUTABLE_OBJECT_MODE if executable else OBJECT_MODE)
            os.replace(temp, self.root / ident)
        except BaseException:
            unlink_quietly(temp)
            raise
        self._sync_directory()
        return result

    def _sync_directory(self) -> None:
        """Make the rename durable too (best effort: some file systems refuse)."""
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    # -- reductions -------------------------------------------------------------------

    async def put_reduction(self, ref: str, result: str) -> None:
        data = encode_reduction(result)
        directory = self.root / REDUCTIONS
        path = directory / reduction_name(ref)

        def write() -> None:
            directory.mkdir(exist_ok=True)
            atomic_write_bytes(path, data)
            self.traffic.sent(len(data))

        try:
            await self._run(write)
        except OSError as exc:
            raise self._error("writing", path, exc) from None

    async def get_reductions(self, refs: Collection[str]) -> dict[str, str]:
        """One directory read, then one read per record that exists (in one thread)."""
        directory = self.root / REDUCTIONS
        names = {reduction_name(ref): ref for ref in refs}

        def read() -> dict[str, str]:
            if not self.root.is_dir():
                raise self._config_error()  # not "no records": a setting to fix
            try:
                present = set(os.listdir(directory))
            except FileNotFoundError:
                return {}
            found = {}
            for name in present.intersection(names):
                try:
                    raw = (directory / name).read_bytes()
                except FileNotFoundError:
                    continue
                self.traffic.received(len(raw))
                result = decode_reduction(raw)
                if result is not None:
                    found[names[name]] = result
            return found

        try:
            return await self._run(read)
        except OSError as exc:
            raise self._error("reading", directory, exc) from None

    # -- leases (see ir/storage/lease.py) --------------------------------------------

    def _lease_path(self, thunk_id: str) -> Path:
        parse_id(thunk_id)  # a valid ID is a safe file name
        return self.root / LEASES / thunk_id

    def _read_lease_file(self, thunk_id: str, path: Path) -> tuple[Lease | None, bytes | None]:
        """(the lease, its raw bytes); (None, None) if there is no lease file."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None, None
        self.traffic.received(len(data))
        return decode_lease(thunk_id, data, data.decode(errors="replace")), data

    def _try_lease(self, thunk_id: str, owner: str, ttl: float) -> Lease | None:
        path = self._lease_path(thunk_id)
        path.parent.mkdir(exist_ok=True)
        for _ in range(3):
            now = time.time()
            data = encode_lease(owner, now, now + ttl)
            # Written aside then hard-linked: link() fails if the name exists (the
            # O_CREAT|O_EXCL test) and a reader never sees a half-written lease.
            aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
            atomic_write_bytes(aside, data)
            self.traffic.sent(len(data))
            try:
                os.link(aside, path)
            except FileExistsError:
                pass
            else:
                return Lease(thunk_id, owner, now, now + ttl, data.decode())
            finally:
                unlink_quietly(aside)
            current, raw = self._read_lease_file(thunk_id, path)
            if raw is None:
                continue  # released meanwhile: try again
            if current is not None and not current.expired(now):
                return None
            if not self._evict(path, raw):
                return None  # another peer took it over first
        return None

    @contextlib.contextmanager
    def _lease_guard(self, directory: Path) -> Iterator[None]:
        """Serialise the read-check-replace steps (takeover, renew, release) of all
        forcers on this directory: a ``flock`` on ``leases/.lock``, which the kernel
        drops if its holder dies, held only for one small file operation."""
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _evict(self, path: Path, raw: bytes) -> bool:
        """Remove the expired lease ``raw`` if it is still the lease (checked and removed
        under the guard, so of many peers that saw it expire exactly one removes it)."""
        with self._lease_guard(path.parent):
            try:
                now_there = path.read_bytes()
            except FileNotFoundError:
                return True  # released: the name is free to race for again
            self.traffic.received(len(now_there))
            if now_there != raw:
                return False  # replaced or renewed meanwhile
            stale = path.with_name(f".{path.name}.stale.{uuid.uuid4().hex}")
            os.rename(path, stale)
            unlink_quietly(stale)
            return True

    async def try_lease(self, thunk_id: str, owner: str, ttl: float) -> Lease | None:
        try:
            return await self._run(self._try_lease, thunk_id, owner, ttl)
        except OSError as exc:
            raise self._error("taking a lease in", self.root / LEASES, exc) from None

    async def read_lease(self, thunk_id: str) -> Lease | None:
        path = self._lease_path(thunk_id)
        try:
            current, raw = await self._run(self._read_lease_file, thunk_id, path)
        except OSError as exc:
            raise self._error("reading", path, exc) from None
        return current

    async def renew(self, lease: Lease, ttl: float) -> Lease | None:
        path = self._lease_path(lease.thunk_id)

        def renew() -> Lease | None:
            with self._lease_guard(path.parent):
                current, raw = self._read_lease_file(lease.thunk_id, path)
                now = time.time()
                if current is None or current.token != lease.token or current.expired(now):
                    return None  # lost (expired: a peer may be taking it over right now)
                data = encode_lease(lease.owner, lease.start, now + ttl)
                atomic_write_bytes(path, data)
                self.traffic.sent(len(data))
                return Lease(lease.thunk_id, lease.owner, lease.start, now + ttl, data.decode())

        try:
            return await self._run(renew)
        except OSError as exc:
            raise self._error("renewing", path, exc) from None

    async def release(self, lease: Lease) -> None:
        path = self._lease_path(lease.thunk_id)

        def release() -> None:
            with self._lease_guard(path.parent):
                current, raw = self._read_lease_file(lease.thunk_id, path)
                if current is not None and current.token == lease.token:
                    unlink_quietly(path)

        try:
            await self._run(release)
        except OSError as exc:
            raise self._error("releasing", path, exc) from None

    # -- download ---------------------------------------------------------------------

    async def download(self, store: LocalStore, ident: str) -> None:
        parse_id(ident)
        if store.has(ident):
            return
        key = (str(store.root), ident)
        await self._downloading.run(key, lambda: self._run(self._download, store, ident))

    def _download(self, store: LocalStore, ident: str) -> None:
        where = self.config.where(ident)
        actual = ""
        for _attempt in range(2):  # a bad read (or a corrupt object) is discarded and read once more
            temp, actual, executable = self._fetch(store, ident, where)
            try:
                if actual == ident:
                    store.adopt(temp, executable or ident in self._executable)
                    self._suspect.discard(ident)
                    return
            finally:
                unlink_quietly(temp)
        self._suspect.add(ident)
        raise CorruptBlob(ident, actual, where)

    def _fetch(self, store: LocalStore, ident: str, where: str) -> tuple[Path, str, bool]:
        """Copy the object into a temp file in the store: (temp, actual ID, executable)."""
        parsed = parse_id(ident)
        store.tmp.mkdir(parents=True, exist_ok=True)
        try:
            source = open(self.root / ident, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise MissingBlob(ident, where) from None
        except OSError as exc:
            raise self._error("reading", self.root / ident, exc) from None
        fd, temp = tempfile.mkstemp(dir=store.tmp, prefix="file-")
        try:
            with source, os.fdopen(fd, "wb") as sink:
                info = os.fstat(source.fileno())
                if not stat.S_ISREG(info.st_mode) or info.st_size != parsed.size:
                    # Not even the right size: do not copy (or fill the disk with) garbage.
                    return Path(temp), f"(a {info.st_size}-byte object, not {parsed.size})", False
                actual = hash_stream(source, parsed.algorithm, sink)
                self.traffic.received(info.st_size)
        except OSError as exc:
            unlink_quietly(temp)
            raise self._error("reading", self.root / ident, exc) from None
        except BaseException:
            unlink_quietly(temp)
            raise
        return Path(temp), actual, bool(info.st_mode & stat.S_IXUSR)
