"""Resolve paths beneath a directory without following symbolic links.

A thunk's function runs as the same user as the executor and may leave anything in its
work directory, including symbolic links to directories elsewhere (``d -> /home/x``),
before the executor collects ``d/secret.txt`` as an output. Every path the executor
creates, moves or removes in a work directory is therefore resolved one component at a
time from a directory file descriptor with ``O_NOFOLLOW``: a symbolic link (or
anything but a directory) in a parent position stops the walk, so no operation can
land outside the directory. (``openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)`` does the
same in one call, but Python does not expose it; the walk is portable and costs one
``open`` per component.)
"""

from __future__ import annotations

import errno
import os
import stat

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Escape(Exception):
    """A path would leave the directory (through a link, or a non-directory parent)."""


def open_dir(root_fd: int, name: str) -> int:
    """Open directory ``name`` (one component) beneath ``root_fd``, never through a link."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=root_fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        try:
            st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
        except OSError:
            raise exc from None
        if stat.S_ISLNK(st.st_mode):
            raise Escape(f"{name!r} is a symbolic link") from None
        raise Escape(f"{name!r} is not a directory") from None


def plain_parts(path: str) -> list[str]:
    """The components of relative ``path``; ``.`` and empty ones are dropped, as a path
    lookup would (``a/./b``, ``a//b``); ``..`` and absolute paths are refused."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if path.startswith("/") or not parts or ".." in parts:
        raise Escape(f"{path!r} is not a plain relative path")
    return parts


def open_parent(root_fd: int, path: str, create: bool = False) -> tuple[int, str]:
    """The directory that holds relative ``path``, opened beneath ``root_fd``, and the last name.

    With ``create``, missing parent directories are made (mode 0755). The caller closes
    the returned descriptor. Raises :class:`Escape` naming the offending component,
    :class:`FileNotFoundError` for a missing parent when not creating.
    """
    parts = plain_parts(path)
    fd = os.dup(root_fd)
    try:
        for index, part in enumerate(parts[:-1]):
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                child = open_dir(fd, part)
            except Escape as exc:
                where = "/".join(parts[: index + 1])
                raise Escape(f"{where!r} is {str(exc).split(' is ', 1)[1]}") from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd, parts[-1]
