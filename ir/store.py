"""The local store, ``.gg/``: blobs, reductions and the hash cache.

Layout::

    .gg/blobs/<ID>              content, read-only (0444, or 0555 if executable)
    .gg/reductions/<THUNK>      ID the thunk's first output reduced to (a value or a thunk)
    .gg/reductions/<THUNK>#tag  the same for a named output ('/' in a tag written as %2F)
    .gg/hash_cache/             see ir.hashing.HashCache
    .gg/tmp/                    temp files, renamed into place when complete

Every write is a temp file in the store plus a rename (a hard link for blobs, so the
first complete copy wins and its mode is never replaced by a racing writer's), so two
processes writing the same store, or a process killed mid-write, never leave a partial
blob or reduction. A reduction's result is an ID or, for a tail call that hands a named
output on, ``THUNK'#tag``.
Blobs are named by the hash of their content and checked on the way in; a blob can be
re-verified against its ID on the way out.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .atomic import atomic_write_bytes
from .hashing import HashCache, hash_file, hash_stream
from .ids import MAGIC, InvalidId, Kind, id_of_bytes, parse_id, parse_ref
from .thunk import Thunk, parse_thunk

GG_DIR_NAME = ".gg"
VALUE_MODE = 0o444
EXECUTABLE_MODE = 0o555


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


class LocalStore:
    """A ``.gg`` directory. Cheap to construct; creates nothing until :meth:`init`."""

    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        self.blobs = self.root / "blobs"
        self.reductions = self.root / "reductions"
        self.tmp = self.root / "tmp"
        self.hash_cache = HashCache(self.root / "hash_cache")

    # -- locating -------------------------------------------------------------------

    @classmethod
    def init(cls, root: Path) -> LocalStore:
        store = cls(root)
        for directory in (store.root, store.blobs, store.reductions, store.tmp, store.hash_cache.directory):
            directory.mkdir(parents=True, exist_ok=True)
        return store

    @classmethod
    def locate(
        cls, start: Path | None = None, environ: Mapping[str, str] | None = None, create: bool = False
    ) -> LocalStore:
        """``$GG_DIR`` if set, else the nearest ``.gg`` above ``start`` (default: cwd).

        With ``create``, a missing store is made in ``start`` instead of failing.
        """
        environ = os.environ if environ is None else environ
        # resolve(): "x/.." must walk up from x's parent, not from x.
        start = Path(start or os.getcwd()).resolve()
        if environ.get("GG_DIR"):
            root = Path(environ["GG_DIR"]).absolute()
            if root.is_dir() or create:
                return cls.init(root)
            raise StoreNotFound(f"GG_DIR={root} does not exist (run 'gg init' there)")
        for directory in (start, *start.parents):
            if (directory / GG_DIR_NAME).is_dir():
                return cls.init(directory / GG_DIR_NAME)
        if create:
            return cls.init(start / GG_DIR_NAME)
        raise StoreNotFound(f"no {GG_DIR_NAME} directory in {start} or above (run 'gg init' or set GG_DIR)")

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # -- blobs ----------------------------------------------------------------------

    def blob_path(self, ident: str) -> Path:
        parse_id(ident)
        return self.blobs / ident

    def has(self, ident: str) -> bool:
        try:
            return self.blob_path(ident).exists()
        except InvalidId:
            return False

    def _install(self, temp: str, ident: str, executable: bool) -> str:
        """Move a complete temp file into place as blob ``ident`` (first writer wins).

        ``os.link`` fails if the blob exists, so a racing writer never replaces a blob
        (and a non-executable copy never replaces an executable one); the loser only
        adds the execute bit if it needs it.
        """
        os.chmod(temp, EXECUTABLE_MODE if executable else VALUE_MODE)
        target = self.blobs / ident
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
            return tempfile.mkstemp(dir=self.tmp, prefix="in-")
        except FileNotFoundError:  # a store made lazily (a function's GG_DIR)
            self.tmp.mkdir(parents=True, exist_ok=True)
            self.blobs.mkdir(parents=True, exist_ok=True)
            return tempfile.mkstemp(dir=self.tmp, prefix="in-")

    def put_bytes(self, data: bytes, executable: bool = False) -> str:
        ident = id_of_bytes(data, Kind.THUNK if data.startswith(MAGIC) else Kind.VALUE)
        if self.has(ident):
            if executable:
                self.mark_executable(ident)
            return ident
        fd, temp = self._temp()
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            return self._install(temp, ident, executable)
        except BaseException:
            _unlink_quietly(temp)
            raise

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
            _unlink_quietly(temp)
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
                shutil.copyfile(path, temp)
                os.unlink(path)
            return self._install(temp, ident, executable)
        except BaseException:
            _unlink_quietly(temp)
            raise

    def put_thunk(self, thunk: Thunk) -> str:
        return self.put_bytes(thunk.serialize())

    def mark_executable(self, ident: str) -> None:
        path = self.blobs / ident
        if not os.stat(path).st_mode & stat.S_IXUSR:
            os.chmod(path, EXECUTABLE_MODE)

    def read_bytes(self, ident: str, verify: bool = False) -> bytes:
        try:
            data = self.blob_path(ident).read_bytes()
        except FileNotFoundError:
            raise MissingBlob(ident, str(self.blobs)) from None
        if verify:
            actual = id_of_bytes(data, Kind(ident[0]), parse_id(ident).algorithm)
            if actual != ident:
                raise CorruptBlob(ident, actual, str(self.blobs))
        return data

    def load_thunk(self, ident: str) -> Thunk:
        if not parse_id(ident).is_thunk:
            raise StoreError(f"{ident} is a value, not a thunk")
        return parse_thunk(self.read_bytes(ident), where=f"thunk {ident}", expected_id=ident)

    def verify(self, ident: str) -> bool:
        """True if blob ``ident`` exists and its content hashes to ``ident``."""
        try:
            return hash_file(self.blob_path(ident)) == ident
        except FileNotFoundError:
            return False

    def remove_corrupt(self, ident: str) -> None:
        """Drop a blob that failed verification, so it is fetched or rebuilt again."""
        _unlink_quietly(str(self.blobs / ident))

    # -- reductions -----------------------------------------------------------------

    def _reduction_path(self, ref: str) -> Path:
        parsed = parse_ref(ref)
        if not parsed.is_thunk:
            raise InvalidId(f"only thunks reduce; {ref} is a value")
        name = parsed.id if parsed.tag is None else f"{parsed.id}#{parsed.tag.replace('/', '%2F')}"
        return self.reductions / name

    def get_reduction(self, ref: str) -> str | None:
        """What ``ref`` (``THUNK`` or ``THUNK#tag``) was reduced to, one step; or None."""
        try:
            result = self._reduction_path(ref).read_text().strip()
        except FileNotFoundError:
            return None
        try:
            parse_ref(result)
        except InvalidId:
            return None  # unreadable record: treat as unknown, it will be redone
        return result

    def put_reduction(self, ref: str, result: str) -> None:
        """Record that ``ref`` reduced to ``result`` (a value, a thunk, or ``THUNK#tag``)."""
        parse_ref(result)
        atomic_write_bytes(self._reduction_path(ref), (result + "\n").encode())

    def forget_reduction(self, ref: str) -> None:
        """Drop the record for ``ref`` (its result was lost), so it is reduced again."""
        try:
            self._reduction_path(ref).unlink()
        except FileNotFoundError:
            pass

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


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
