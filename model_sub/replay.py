"""A modelled call replays what its thunks printed when they last ran: ccache's hit.

Why: gg-infer models a compile instead of running it, so on a warm build (``make
clean``, store kept) the compiler's warnings would be gone; ccache and sccache print a
hit's stderr again. gg-force keeps the output of every thunk that succeeded and printed
something (``LocalStore.keep_output``); a model call (or its memo replay) looks up the
thunks it wrote and puts their kept output on its own stderr, which the shim writes
where make ran the tool. A cold build's model finds nothing kept yet: there gg-force
shows the output as the thunk runs.

The compiler ran on thunk names (``r/main.c`` for a file under the build root, ``a/usr/
include/stdio.h`` for one outside it, see paths.py); where a diagnostic names a file (at
the start of a line, or after ``from`` in an include chain) the name is turned back into
the host's, relative to the call's directory for a file under the root: what the
compiler would have printed for a make build that names its files relatively.

A record whose blob is missing or corrupt (a corrupt one is dropped) is never taken for
"no warnings": the call says so in one line, on every build while the record stays. The
thunk is not run again for it: its result is good, and the reductions of everything
built from it would keep gg-force from running it anyway (ccache would recompile; a
thunk's output is only shown, never part of the result).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable

from ir.ids import InvalidId
from ir.store import LocalStore, StoreError

from .paths import ABS_PREFIX, ROOT_PREFIX, PathMap

# A file name where a diagnostic puts one: at the start of a line, or after "from " (an
# include chain's lines). Only these places: a quoted source line may hold anything.
_NAME = re.compile(rb"(?:^|(?<=from ))(" + re.escape(ROOT_PREFIX.encode()) + rb"|" + re.escape(ABS_PREFIX.encode())
                   + rb")/([^\s:,]*)", re.MULTILINE)


def host_names(output: bytes, paths: PathMap, cwd: str) -> bytes:
    """``output`` with the thunk names of files turned back into the host's (see above)."""
    def host(match: re.Match[bytes]) -> bytes:
        rest = os.fsdecode(match.group(2))
        if match.group(1) == ABS_PREFIX.encode():
            return os.fsencode("/" + rest)
        return os.fsencode(os.path.relpath(os.path.join(paths.root, rest), cwd))

    return _NAME.sub(host, output)


class OutputReplay:
    """Kept output of a run's thunks, for the models (thread-safe: requests are
    answered on several threads, and a store's logs are one thread's at a time)."""

    def __init__(self, store: LocalStore):
        self.store = store
        self._lock = threading.Lock()

    def of(self, thunks: Iterable[str], paths: PathMap, cwd: str) -> bytes:
        """What the thunks printed when they ran (in order; each once), as the tool
        would print it in ``cwd``; empty when none printed, or none ran yet."""
        parts: list[bytes] = []
        with self._lock:
            for ident in dict.fromkeys(thunks):
                try:
                    kept = self.store.kept_output(ident)
                except (StoreError, InvalidId, OSError) as exc:
                    parts.append(self._lost(ident, exc))
                    continue
                if kept:
                    parts.append(host_names(kept, paths, cwd))
        return b"".join(parts)

    @staticmethod
    def _lost(ident: str, exc: BaseException) -> bytes:
        return (f"gg-infer: warning: the output kept for thunk {ident} cannot be read ({exc}); "
                "what it printed when it ran (warnings) is not shown\n").encode("utf-8", "replace")
