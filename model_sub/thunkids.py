"""Recorded thunk IDs: content key of a thunk's fields -> its ID, across gg-infer runs.

Validating and serializing a compile thunk with ~80 inputs costs ~1.5 ms, and an
unchanged build makes the same thunks on every run, so the model records each ID under
a hash of the thunk's fields (see ``ModelContext.put``). The records live in one
append-only file, ``.gg/infer/thunk-ids`` (``KEY ID`` per line): creating a file costs
0.2-1 ms on this kind of file system, a line appended with ``O_APPEND`` much less,
and small appends from concurrent runs do not interleave. A torn or foreign line is
ignored. A record is only a hint: the caller uses it only while the blob is stored,
and a wrong or stale record can never name a different thunk, because the key is a
hash of everything the thunk contains.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ir.atomic import atomic_write_bytes

# Rewrite the file without duplicates once it has this many more lines than keys.
_COMPACT_SLACK = 4096
# Forget everything past this many distinct keys (old builds' thunks).
_MAX_KEYS = 500_000


class ThunkRecords:
    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._ids: dict[str, str] | None = None
        self._lines = 0
        self._fd: int | None = None

    def _load(self) -> dict[str, str]:
        if self._ids is None:
            ids: dict[str, str] = {}
            lines = 0
            try:
                text = self.path.read_text(encoding="ascii", errors="replace")
            except FileNotFoundError:
                text = ""
            for line in text.splitlines():
                lines += 1
                key, _, ident = line.partition(" ")
                if len(key) == 32 and ident and " " not in ident:
                    ids[key] = ident
            self._ids, self._lines = ids, lines
        return self._ids

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._load().get(key)

    def add(self, key: str, ident: str) -> None:
        with self._lock:
            ids = self._load()
            if ids.get(key) == ident:
                return
            ids[key] = ident
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(self._fd, f"{key} {ident}\n".encode("ascii"))
            self._lines += 1

    def close(self) -> None:
        """Close the file; compact it if it holds many duplicate or too many lines."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._ids is None:
                return
            if len(self._ids) > _MAX_KEYS:
                atomic_write_bytes(self.path, b"")
            elif self._lines > len(self._ids) + _COMPACT_SLACK:
                atomic_write_bytes(self.path, "".join(f"{k} {v}\n" for k, v in self._ids.items()).encode("ascii"))
