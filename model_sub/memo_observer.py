"""What a model call looks at, recorded for the per-call memo (``memo.py``).

Kept apart from the memo itself because the helpers that report to it (file IDs, the
toolchain, the driver, the scanner) are imported by the memo: this module imports
nothing of the project but ``ir.errors`` (gg-infer imports it at start, to check
``GG_INFER_MEMO`` before the build runs).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ir.errors import ConfigError


def memo_enabled(environ: dict[str, str]) -> bool:
    """``GG_INFER_MEMO`` (on by default); :class:`ConfigError` for a value that is neither."""
    value = environ.get("GG_INFER_MEMO", "on").strip().lower()
    if value in ("on", "1", "yes", "true", ""):
        return True
    if value in ("off", "0", "no", "false"):
        return False
    raise ConfigError(f"GG_INFER_MEMO={environ['GG_INFER_MEMO']!r}: expected on or off")


class Recording:
    """What one model call looked at and wrote (plain data: it is stored as JSON)."""

    __slots__ = ("files", "placeholders", "probes", "which", "programs", "closures", "stats", "thunks",
                 "writes", "conflict")

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.placeholders: dict[str, str | None] = {}
        self.probes: dict[str, bool] = {}  # "kind\0path" -> answer
        self.which: dict[str, str] = {}
        self.programs: dict[str, list] = {}
        self.closures: dict[str, list] = {}
        self.stats: dict[str, list[int]] = {}
        self.thunks: list[str] = []
        self.writes: list[list] = []
        self.conflict = False  # a fact seen with two answers in one call: not recorded

    def fact(self, table: dict, key: str, value: object) -> None:
        if table.setdefault(key, value) != value:
            self.conflict = True


class Observer:
    """The recording of the call that the current thread is modelling, if any.

    A run's requests are modelled on threads of their own, each wholly on one thread, so
    the recording is per thread; the helpers that look at files report to it."""

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def current(self) -> Recording | None:
        return getattr(self._local, "recording", None)

    @contextmanager
    def recording(self) -> Iterator[Recording]:
        record = Recording()
        self._local.recording = record
        try:
            yield record
        finally:
            self._local.recording = None

    def file(self, path: str, ident: str) -> None:
        if (record := self.current) is not None:
            record.fact(record.files, path, ident)

    def placeholder(self, path: str, ref: str | None) -> None:
        if (record := self.current) is not None:
            record.fact(record.placeholders, path, ref)

    def probe(self, kind: str, path: str) -> bool:
        """Ask the file system ``kind`` (see :data:`PROBES`) about ``path``; the answer is a fact."""
        answer = PROBES[kind](path)
        if (record := self.current) is not None:
            record.fact(record.probes, f"{kind}\0{path}", answer)
        return answer

    def which(self, name: str, found: str) -> None:
        if (record := self.current) is not None:
            record.fact(record.which, name, found)

    def program(self, name: str, value: list) -> None:
        if (record := self.current) is not None:
            record.fact(record.programs, name, value)

    def closure(self, path: str, value: list) -> None:
        if (record := self.current) is not None:
            record.fact(record.closures, path, value)

    def stat(self, path: str, key: list[int]) -> None:
        if (record := self.current) is not None:
            record.fact(record.stats, path, key)

    def thunk(self, ident: str) -> None:
        if (record := self.current) is not None:
            record.thunks.append(ident)

    def wrote(self, *write: object) -> None:
        """An output written: ``("place", path, ref, executable)``, ``("depfile", path, text)``,
        or a note for the run's end: ``("debug_dirs", count)``, ``("dated", count)``."""
        if (record := self.current) is not None:
            record.writes.append(list(write))


PROBES: dict[str, Callable[[str], bool]] = {
    "isfile": os.path.isfile,
    "exists": os.path.exists,
    "x_ok": lambda path: os.access(path, os.X_OK),
}

