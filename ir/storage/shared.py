"""One transfer per blob, however many callers ask for it at once.

Many thunks of a build need the same inputs (the compiler, system headers), and they
are dispatched together: without sharing, each would upload or download the same blob.
A storage backend keeps one :class:`SharedTransfers` per direction; the first caller for
a key starts the transfer, later ones wait for the same task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable


def _retrieve(future: asyncio.Future) -> None:
    """Mark a shared operation's exception as seen: its waiters may all have been
    cancelled (the run stopped), and asyncio would print a traceback for it."""
    if not future.cancelled():
        future.exception()


class SharedTransfers:
    """Concurrent calls for one key share one task.

    A waiter that is cancelled does not cancel the transfer the others wait for
    (``asyncio.shield``), and the task's exception is always retrieved, so a failed
    transfer nobody waits for any more never becomes a "Task exception was never
    retrieved" traceback."""

    def __init__(self) -> None:
        self._pending: dict[Hashable, asyncio.Future[None]] = {}

    async def run(self, key: Hashable, start: Callable[[], Awaitable[None]]) -> None:
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(start())
            self._pending[key] = pending
            pending.add_done_callback(lambda _f: self._pending.pop(key, None))
            pending.add_done_callback(_retrieve)
        await asyncio.shield(pending)
