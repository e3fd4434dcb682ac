"""``--trace FILE``: one JSON object per line for every scheduler event.

Each line is written and flushed on its own, so a run killed at any point leaves a
readable trace (at worst a truncated last line, which ``gg trace`` tolerates). Fields:
``t`` (seconds since the run started), ``event``, ``thunk`` (the node's original thunk
ID) and the event's own fields; the schema is in docs/trace.md.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TextIO


class TraceWriter:
    def __init__(self, path: Path | None, started: float | None = None):
        self.started = time.monotonic() if started is None else started
        self._handle: TextIO | None = open(path, "a", buffering=1) if path else None
        if path:  # imported only to write a trace: a finished build's gg-force writes none
            import json

            self._dumps = json.dumps

    @property
    def active(self) -> bool:
        return self._handle is not None

    def write(self, event: str, fields: dict) -> None:
        if self._handle is None:
            return
        record = {"t": round(time.monotonic() - self.started, 6), "event": event, **fields}
        self._handle.write(self._dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
