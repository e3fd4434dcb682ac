"""``renameat2(..., RENAME_EXCHANGE)``: swap two names in one atomic step.

Why gg-force wants it: replacing a placeholder with ``rename(temp, target)`` frees the
placeholder's inode and needs a new one for every target. On ext4 without a journal
(this project's VMs) a new inode is expensive after many deletions: the allocator skips
every inode freed in the last minutes, reading its inode-table block each time
(``recently_deleted`` in the kernel's ``ialloc.c``), so 10,000 replacements cost ~0.3 ms
each in the kernel alone. An exchange leaves the placeholder's inode under the temp
name instead, where it can be checked (was it really the placeholder?) and reused for
the next target: no inode is allocated or freed per target. See
:mod:`executor.target_writer`.

Python's ``os`` has no ``renameat2``; glibc has had the wrapper since 2.28. Without
it, or on a file system that refuses the flag (``EINVAL``), the caller uses a plain
rename.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

RENAME_EXCHANGE = 2  # linux/fs.h

# (dir_fd, name, dir_fd, name) -> None; raises OSError
Exchange = Callable[[int, str, int, str], None]

# errnos that mean "this system or file system cannot exchange", not "this call failed"
UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP})


def load_exchange() -> Exchange | None:
    """The exchange call, or None where the C library has no ``renameat2``.

    ``ctypes`` is imported here, not at module import: only a run that writes a
    placeholder pays for it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError, ImportError):
        return None
    renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    renameat2.restype = ctypes.c_int
    get_errno = ctypes.get_errno

    def exchange(old_dir: int, old: str, new_dir: int, new: str) -> None:
        if renameat2(old_dir, os.fsencode(old), new_dir, os.fsencode(new), RENAME_EXCHANGE) != 0:
            code = get_errno()
            raise OSError(code, os.strerror(code), new)

    return exchange
