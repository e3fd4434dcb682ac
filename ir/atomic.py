"""Atomic file writes: a temp file in the destination's directory, then a rename.

A reader (or a crash, or a second process) therefore sees either the old file or the
complete new one, never a half-written one; that is what keeps the store and the
targets of ``gg-force`` from being poisoned by a kill at the wrong moment.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: gg-infer's start uses this module
if TYPE_CHECKING:
    from typing import BinaryIO


def _temp_in(directory: Path) -> tuple[int, str]:
    import tempfile  # here: gg-infer's start uses this module but writes nothing

    return tempfile.mkstemp(dir=directory, prefix=".tmp-")


def atomic_write(
    path: Path, fill: Callable[[BinaryIO], object], mode: int = 0o644, times_ns: tuple[int, int] | None = None
) -> None:
    """Create ``path`` atomically with the bytes ``fill`` writes to the file object.

    ``times_ns`` (atime, mtime) is set on the file before it appears under its name.
    """
    path = Path(path)
    fd, temp = _temp_in(path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            fill(handle)
        os.chmod(temp, mode)
        if times_ns is not None:
            os.utime(temp, ns=times_ns)
        os.replace(temp, path)
    except BaseException:
        unlink_quietly(temp)
        raise


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    atomic_write(path, lambda handle: handle.write(data), mode)


def unlink_quietly(path: str | os.PathLike[str]) -> None:
    """Remove ``path`` if it is there: for clean-up, where "already gone" is success."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
