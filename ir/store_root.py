"""Where the local store is: ``$GG_DIR``, else the nearest ``.gg`` above a directory.

Separate from :mod:`ir.store` because finding the directory needs only ``os`` and
``pathlib``, while the store itself pulls in ID parsing and hashing: ``gg-infer``
locates the store on every start but opens it only when the first tool call arrives.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

GG_DIR_NAME = ".gg"
# The store's kept-output records (ir.store): named here, where gg-infer's start can
# look at the file without loading the store's code.
OUTPUT_LOG = "outputs.log"


def log_mark(path: str) -> tuple[int, int, int] | None:
    """``(device, inode, size)`` of an append-only log now, or None if there is none:
    what was appended after it can be read later (``ir.reduction_log.appended_since``)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size


def locate_root(start: Path | None = None, environ: Mapping[str, str] | None = None,
                create: bool = False) -> tuple[Path | None, str]:
    """``(store directory, "")``, or ``(None, why not)`` if there is none.

    ``$GG_DIR`` if set, else the nearest ``.gg`` above ``start`` (default: cwd). With
    ``create``, a missing store is to be made (``$GG_DIR``, else ``start/.gg``) instead.
    Nothing is created here.
    """
    environ = os.environ if environ is None else environ
    # resolve(): "x/.." must walk up from x's parent, not from x.
    start = Path(start or os.getcwd()).resolve()
    if environ.get("GG_DIR"):
        root = Path(environ["GG_DIR"]).absolute()
        if root.is_dir() or create:
            return root, ""
        return None, f"GG_DIR={root} does not exist (run 'gg init' there)"
    for directory in (start, *start.parents):
        if (directory / GG_DIR_NAME).is_dir():
            return directory / GG_DIR_NAME, ""
    if create:
        return start / GG_DIR_NAME, ""
    return None, f"no {GG_DIR_NAME} directory in {start} or above (run 'gg init' or set GG_DIR)"
