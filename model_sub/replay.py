"""A modelled call replays what its thunks printed when they last ran: ccache's hit.

Why: gg-infer models a compile instead of running it, so on a warm build (``make
clean``, store kept) the compiler's warnings would be gone; ccache and sccache print a
hit's stderr again. gg-force keeps the output of every thunk that succeeded and printed
something (``LocalStore.keep_output``); a model call (or its memo replay) looks up the
thunks it wrote and puts their kept output on its own stderr, which the shim writes
where make ran the tool. A cold build's model finds nothing kept yet: there gg-force
shows the output as the thunk runs.

A record whose blob is missing or corrupt is never taken for "no warnings": the
thunk's reduction is dropped, so the next gg-force runs it again and shows its output,
and the call says so in one line.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from ir.ids import InvalidId
from ir.store import LocalStore, StoreError


class OutputReplay:
    """Kept output of a run's thunks, for the models (thread-safe: requests are
    answered on several threads, and a store's logs are one thread's at a time)."""

    def __init__(self, store: LocalStore):
        self.store = store
        self._lock = threading.Lock()

    def of(self, thunks: Iterable[str]) -> bytes:
        """What the thunks printed when they ran (in order; each once), as the tool
        would print it; empty when none printed, or none ran yet."""
        parts: list[bytes] = []
        with self._lock:
            for ident in dict.fromkeys(thunks):
                try:
                    kept = self.store.kept_output(ident)
                except (StoreError, InvalidId, OSError) as exc:
                    parts.append(self._lost(ident, exc))
                    continue
                if kept:
                    parts.append(kept)
        return b"".join(parts)

    def _lost(self, ident: str, exc: BaseException) -> bytes:
        try:
            self.store.forget_reduction(ident)
        except (StoreError, InvalidId, OSError):
            pass
        return (f"gg-infer: the output kept for thunk {ident} cannot be read ({exc}); "
                "it runs again at the next gg-force, which shows it\n").encode("utf-8", "replace")
