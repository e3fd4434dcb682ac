"""Lay a thunk's inputs out in a work directory, changing only what differs from the last layout.

A run directory is reused from one thunk to the next (:mod:`executor.rundirs`), and
consecutive thunks share most of their inputs: every compile of a build links the same
compiler, loader, shared libraries and most of the same ~80 headers in the same ~20
directories. Emptying the work directory after each thunk and laying every input out
again cost a ``mkdir``/``rmdir`` per directory and an ``unlink``/``link`` per input, on
the event loop: a third of ``gg-force``'s own time on a real build (docs/performance.md,
"Local engine"). So the work directory is *reconciled* with the next thunk's layout
instead, just before that thunk runs:

- every entry in the work directory is listed (``getdents``: name, type and inode
  number) and **kept only if it is provably exactly what a fresh layout would put
  there**: an input kept is a regular file whose ``lstat`` is the store blob's as
  verified against its ID for this very thunk (:meth:`ir.store.LocalStore.verify_for_use`:
  the same device and inode, size, mtime, ctime and mode), so its bytes and mode are
  the verified blob's; a link kept is a symbolic link with the very target; a
  directory kept is a real directory (opened ``O_NOFOLLOW``) of mode 0755, owned as the
  work directory is, with no extended attributes (ACLs) beyond the work directory's,
  and it is reconciled in turn;
- everything else is removed, never following a link: outputs and temp files the
  function left, a file it wrote over an input (a new inode), a link it planted where
  a directory was, a directory it made read-only (made writable, through its
  descriptor, and emptied). A removed hard link to a blob is unlinked through
  :meth:`~ir.store.LocalStore.unlink_verified`, which keeps the blob's verified state;
- what is missing is created: directories (mode 0755 whatever the umask), hard links
  (:meth:`~ir.store.LocalStore.link_verified`), private copies for an input whose name
  is also an output (never kept: the function is expected to change it) and links.

A function that rewrote a kept input in place rewrote the blob's inode: the verification
after its run (``execution._check_inputs_intact``) sees the blob's ctime move, hashes it,
drops it and fails that thunk; the blob comes back with a new inode, so the old link is
not kept. A thunk therefore never sees what an earlier one left, as with an emptied
directory, and nothing outside the work directory is touched: every name is resolved
from a directory descriptor opened beneath it with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass, field

from ir.store import LocalStore
from ir.thunk import Thunk

from . import confine

DIR_MODE = 0o755
NAME_MAX = 255  # bytes in one file name (Linux): a longer one is the thunk's fault, not the worker's


class LayoutError(Exception):
    """The thunk's layout itself is impossible (two inputs at one name, a path that
    leaves the work directory): the thunk's fault, one line."""


@dataclass(frozen=True, slots=True)
class Blob:
    """An input: blob ``ident``."""

    ident: str
    copy: bool  # the name is also an output: a private writable copy, never kept


@dataclass(frozen=True, slots=True)
class Link:
    target: str


Tree = dict  # name -> Tree | Blob | Link: one directory of a planned layout


@dataclass
class Plan:
    """A thunk's layout as a tree of directories, and its inputs as ``(name, ID)``
    pairs (what a run directory is chosen by: the most pairs in common)."""

    tree: Tree
    inputs: frozenset[tuple[str, str]]


def plan(thunk: Thunk) -> Plan:
    """The layout of ``thunk``'s named inputs and links; :class:`LayoutError` if impossible."""
    outputs = set(thunk.outputs)
    tree: Tree = {}
    dirs: dict[str, Tree] = {}  # a directory already placed, by its name as written: one split per input
    inputs = []
    for item in (*thunk.values, *thunk.executables):
        if item.name:
            _insert(tree, dirs, item.name, Blob(item.id, item.name in outputs), "input")
            inputs.append((item.name, item.id))
    for link in thunk.links:
        _insert(tree, dirs, link.name, Link(link.target), "link")
    return Plan(tree, frozenset(inputs))


def _insert(tree: Tree, dirs: dict[str, Tree], name: str, entry: Blob | Link, what: str) -> None:
    head, slash, leaf = name.rpartition("/")
    if leaf in ("", ".", ".."):
        node = None
    else:
        node = dirs.get(head) if slash else tree
    if node is None:
        try:
            parts = confine.plain_parts(name)
        except confine.Escape as exc:
            raise LayoutError(f"cannot lay out {what} {name!r}: {exc}") from None
        for part in parts[:-1]:
            _check_length(part, name, what)
        node = tree
        for index, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = "/".join(parts[: index + 1])
                raise LayoutError(f"cannot lay out {what} {name!r}: {where!r} is not a directory")
            node = child
        leaf = parts[-1]
        if head and leaf == name.rpartition("/")[2]:
            dirs[head] = node
    _check_length(leaf, name, what)
    if leaf in node:
        if what == "link":
            raise LayoutError(f"link {name!r} collides with an input")
        raise LayoutError(f"two inputs are both laid out at {name!r}")
    node[leaf] = entry


def _check_length(part: str, name: str, what: str) -> None:
    if len(part) > NAME_MAX // 4 and len(part.encode(errors="surrogateescape")) > NAME_MAX:
        raise LayoutError(f"cannot lay out {what} {name!r}: a component is longer than {NAME_MAX} bytes")


@dataclass
class Counts:
    """What one reconciliation did (for tests and the bench)."""

    kept: int = 0
    created: int = 0
    removed: int = 0


@dataclass
class WorkLayout:
    """The layout state of one work directory (one per run directory).

    ``dev``, ``owner`` and ``xattrs`` are the work directory's own, taken when it was
    made: a kept directory must match them. ``linked`` maps the inode of every blob
    laid out by the last reconciliation to its ID, so removing such a link keeps the
    blob's verified state; it is only that hint — keeping an entry never relies on it.
    """

    work_fd: int
    dev: int
    owner: tuple[int, int]
    xattrs: frozenset[str]
    inputs: frozenset[tuple[str, str]] = frozenset()
    linked: dict[int, str] = field(default_factory=dict)
    used: bool = False  # reconciled before (else the directory is empty, as made)

    @classmethod
    def of(cls, work_fd: int) -> WorkLayout:
        st = os.fstat(work_fd)
        return cls(work_fd, st.st_dev, (st.st_uid, st.st_gid), xattr_names(work_fd))

    def apply(self, want: Plan, store: LocalStore, checked: dict[str, os.stat_result]) -> Counts:
        """Make the work directory exactly ``want`` (see the module docstring).

        ``checked`` is each input's stat as :meth:`LocalStore.verify_for_use` returned it
        for this thunk, just before. Raises ``CorruptBlob`` (from linking an input),
        :class:`confine.Escape` or :class:`OSError`; the directory is then in between,
        and the caller removes it.
        """
        run = _Reconcile(self, store, checked)
        self.used = True
        self.inputs = frozenset()  # until it is through
        run.sync(self.work_fd, want.tree)
        self.linked = run.linked
        self.inputs = want.inputs
        return run.counts

    def clear(self, store: LocalStore) -> Counts:
        """Empty the work directory (blob links unlinked keeping their verified state)."""
        return self.apply(Plan({}, frozenset()), store, {})


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


def xattr_names(fd: int) -> frozenset[str]:
    """The names of the extended attributes of the open directory ``fd`` (ACLs are some)."""
    try:
        return frozenset(os.listxattr(fd))
    except OSError:  # a file system without extended attributes
        return frozenset()


class _Reconcile:
    """One reconciliation of a work directory with a planned tree."""

    def __init__(self, state: WorkLayout, store: LocalStore, checked: dict[str, os.stat_result]):
        self.state = state
        self.store = store
        self.checked = checked
        self.linked: dict[int, str] = {}
        self.counts = Counts()

    def sync(self, dir_fd: int, want: Tree) -> None:
        with os.scandir(dir_fd) as listing:
            entries = list(listing)
        present = set()
        for entry in entries:
            wanted = want.get(entry.name)
            if wanted is not None and self._keeps(dir_fd, entry, wanted):
                present.add(entry.name)
            else:
                self._remove(dir_fd, entry)
        for name, wanted in want.items():
            if name not in present:
                self._create(dir_fd, name, wanted)

    def _keeps(self, dir_fd: int, entry: os.DirEntry, wanted: Tree | Blob | Link) -> bool:
        if isinstance(wanted, Blob):
            blob = self.checked.get(wanted.ident)
            if wanted.copy or blob is None or entry.inode() != blob.st_ino:
                return False
            # The listing's inode number only says which entries may be the blob; the
            # entry's own lstat proves it: the blob's device and inode, and nothing
            # changed since the blob was verified for this thunk (size, mtime, ctime,
            # mode), the check link_verified makes before it links.
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or not (
                    _identity(st) == _identity(blob) or self.store.verified.trusts(wanted.ident, st)):
                return False
            self.linked[blob.st_ino] = wanted.ident
            self.counts.kept += 1
            return True
        if isinstance(wanted, Link):
            if entry.is_symlink() and os.readlink(entry.name, dir_fd=dir_fd) == wanted.target:
                self.counts.kept += 1
                return True
            return False
        if not entry.is_dir(follow_symlinks=False):
            return False
        try:
            fd = confine.open_dir(dir_fd, entry.name)
        except (confine.Escape, OSError):
            return False  # replaced meanwhile, or made unreadable: removed
        try:
            st = os.fstat(fd)
            if (stat.S_IMODE(st.st_mode) != DIR_MODE or st.st_dev != self.state.dev
                    or (st.st_uid, st.st_gid) != self.state.owner or xattr_names(fd) != self.state.xattrs):
                return False
            self.sync(fd, wanted)
            return True
        finally:
            os.close(fd)

    def _remove(self, dir_fd: int, entry: os.DirEntry) -> None:
        self.counts.removed += 1
        if entry.is_dir(follow_symlinks=False):
            self._remove_dir(dir_fd, entry.name)
            return
        ident = self.state.linked.get(entry.inode())
        if ident is not None and entry.is_file(follow_symlinks=False):
            self.store.unlink_verified(ident, dir_fd, entry.name)
        else:
            os.unlink(entry.name, dir_fd=dir_fd)

    def _remove_dir(self, dir_fd: int, name: str) -> None:
        try:
            fd = confine.open_dir(dir_fd, name)
        except PermissionError:  # made unreadable by the function: ours to chmod back
            _chmod_dir(dir_fd, name, 0o700)
            fd = confine.open_dir(dir_fd, name)
        try:
            if stat.S_IMODE(os.fstat(fd).st_mode) & 0o700 != 0o700:
                os.fchmod(fd, 0o700)  # a read-only directory the function left
            with os.scandir(fd) as listing:
                entries = list(listing)
            for entry in entries:
                self._remove(fd, entry)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dir_fd)

    def _create(self, dir_fd: int, name: str, wanted: Tree | Blob | Link) -> None:
        self.counts.created += 1
        if isinstance(wanted, Link):
            os.symlink(wanted.target, name, dir_fd=dir_fd)
        elif isinstance(wanted, Blob):
            self._place(dir_fd, name, wanted)
        else:
            os.mkdir(name, DIR_MODE, dir_fd=dir_fd)
            fd = confine.open_dir(dir_fd, name)
            try:
                os.fchmod(fd, DIR_MODE)  # whatever the umask: a kept directory is checked against it
                for child, inner in wanted.items():
                    self._create(fd, child, inner)
            finally:
                os.close(fd)

    def _place(self, dir_fd: int, name: str, blob: Blob) -> None:
        if blob.copy:
            copy_blob(self.store, blob.ident, dir_fd, name, writable=True)
            return
        try:
            st = self.store.link_verified(blob.ident, dir_fd, name, self.checked.get(blob.ident))
        except FileExistsError:
            raise
        except OSError:  # another file system: a read-only copy
            copy_blob(self.store, blob.ident, dir_fd, name, writable=False)
            return
        self.linked[st.st_ino] = blob.ident


def _chmod_dir(dir_fd: int, name: str, mode: int) -> None:
    """``chmod`` directory ``name`` without following a link (through an ``O_PATH`` descriptor)."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)


def copy_blob(store: LocalStore, ident: str, dir_fd: int, name: str, writable: bool) -> None:
    """A private copy of a blob (a name that is also an output, or no hard links here)."""
    source_fd = os.open(store.blob_path(ident), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        mode = os.fstat(source_fd).st_mode & 0o555
        mode = mode | stat.S_IWUSR if writable else mode
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as sink, os.fdopen(source_fd, "rb", closefd=False) as source:
            shutil.copyfileobj(source, sink, 1 << 20)
            os.fchmod(sink.fileno(), mode)
    finally:
        os.close(source_fd)
