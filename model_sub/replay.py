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
the host's: for a file under the root, relative to the call's directory, or absolute
when the call names its files so (CMake): what the compiler would have printed.

Thunks forced *during* the build by forcing gg-infer started itself (early forcing, and
a fallback's placeholder inputs: their ``gg-force`` has no terminal of its own) ran after
the model of their call: what they printed is shown at the end of the run instead
(:func:`forced_during`), from the records appended to the store meanwhile.

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
from ir.reduction_log import appended_since
from ir.store import LocalStore, StoreError

from .paths import ABS_PREFIX, ROOT_PREFIX, PathMap

# A file name where a diagnostic puts one: at the start of a line, or after "from " (an
# include chain's lines). Only these places: a quoted source line may hold anything.
_NAME = re.compile(rb"(?:^|(?<=from ))(" + re.escape(ROOT_PREFIX.encode()) + rb"|" + re.escape(ABS_PREFIX.encode())
                   + rb")/([^\s:,]*)", re.MULTILINE)


def host_names(output: bytes, paths: PathMap, cwd: str, absolute: bool = False) -> bytes:
    """``output`` with the thunk names of files turned back into the host's (see above);
    ``absolute``: files under the root by their absolute paths, as a call that names its
    sources so prints them (CMake; see :func:`names_absolutely`)."""
    def host(match: re.Match[bytes]) -> bytes:
        rest = os.fsdecode(match.group(2))
        if match.group(1) == ABS_PREFIX.encode():
            return os.fsencode("/" + rest)
        full = os.path.join(paths.root, rest)
        return os.fsencode(full if absolute else os.path.relpath(full, cwd))

    return _NAME.sub(host, output)


def names_absolutely(argv: list[str], cwd: str, paths: PathMap) -> bool:
    """Whether a call names a file under the build root by an absolute path (an operand,
    not ``-o``'s): the compiler then prints such names absolute (gcc_model's
    ``_absolute_style`` makes the same distinction for the thunk's prefix maps)."""
    return any(os.path.isabs(word) and paths.under_root(word, cwd) and argv[i - 1] != "-o"
               for i, word in enumerate(argv) if i > 0)


class OutputReplay:
    """Kept output of a run's thunks, for the models (thread-safe: requests are
    answered on several threads, and a store's logs are one thread's at a time)."""

    def __init__(self, store: LocalStore):
        self.store = store
        self._lock = threading.Lock()

    def of(self, thunks: Iterable[str], paths: PathMap, cwd: str, argv: list[str]) -> bytes:
        """What the thunks of the call ``argv`` (run in ``cwd``) printed when they ran (in
        order; each once), as the tool would print it; empty when none printed, or
        none ran yet (the common case: one ``stat`` of the output log per thunk)."""
        with self._lock:
            kept = [(ident, self._kept(ident)) for ident in dict.fromkeys(thunks)]
        if not any(output for _, output in kept):
            return b""
        absolute = names_absolutely(argv, cwd, paths)
        parts = []
        for ident, output in kept:
            if isinstance(output, BaseException):
                parts.append(_lost(ident, output))
            elif output:
                parts.append(host_names(output, paths, cwd, absolute))
        return b"".join(parts)

    def _kept(self, ident: str) -> bytes | BaseException | None:
        try:
            return self.store.kept_output(ident)
        except (StoreError, InvalidId, OSError) as exc:
            return exc


def forced_during(store: LocalStore, mark: tuple[int, int, int] | None, paths: PathMap, cwd: str) -> bytes:
    """What the thunks run since ``mark`` (``ir.store_root.log_mark`` of the store's output
    log at the start of the run) printed: each thunk's once (one append holds all its
    IDs' records), in the order they finished, with host names as from ``cwd``."""
    groups = appended_since(store.output_log.path, mark)
    if groups is None:
        return (b"gg-infer: warning: the store's output records were rewritten during the build; what the thunks "
                b"forced meanwhile printed (warnings) is not shown here (a warm build shows it)\n")
    return b"".join(_shown(store, records[-1][0], paths, cwd) for records in groups if records[-1][1] is not None)


def _shown(store: LocalStore, ident: str, paths: PathMap, cwd: str) -> bytes:
    """Thunk ``ident``'s kept output as the tool would print it in ``cwd``, or the line
    saying it cannot be read (never nothing in its place)."""
    try:
        kept = store.kept_output(ident)
    except (StoreError, InvalidId, OSError) as exc:
        return _lost(ident, exc)
    return host_names(kept, paths, cwd) if kept else b""


def _lost(ident: str, exc: BaseException) -> bytes:
    return (f"gg-infer: warning: the output kept for thunk {ident} cannot be read ({exc}); "
            "what it printed when it ran (warnings) is not shown\n").encode("utf-8", "replace")
