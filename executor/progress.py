"""What a person watching ``gg-force`` sees.

On a terminal: a live tqdm bar whose postfix carries running/queued/cached/failed
counts (tqdm supplies rate and ETA). Not on a terminal: a plain line at most every
few seconds, so logs stay readable. ``--quiet``: nothing but errors.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Counts:
    """How many nodes are where. A plain class (not a dataclass, whose import is a good
    part of a fresh gg-force's start on a finished build)."""

    __slots__ = ("discovered", "cached", "running", "done", "failed", "waiting", "peer")

    def __init__(self, discovered: int = 0, cached: int = 0, running: int = 0, done: int = 0, failed: int = 0,
                 waiting: int = 0, peer: int = 0):
        self.discovered = discovered
        self.cached = cached
        self.running = running
        self.done = done
        self.failed = failed
        self.waiting = waiting  # on a concurrent run that is running the same thunk (executor/inflight.py)
        self.peer = peer  # reduced by a concurrent run while this one waited

    def __repr__(self) -> str:
        return "Counts(" + ", ".join(f"{name}={getattr(self, name)}" for name in self.__slots__) + ")"

    @property
    def settled(self) -> int:
        return self.cached + self.done + self.failed + self.peer

    @property
    def queued(self) -> int:
        return max(0, self.discovered - self.settled - self.running - self.waiting)


class ProgressDisplay:
    """Renders :class:`Counts`; call :meth:`update` often, it rate-limits itself."""

    def __init__(self, mode: str = "auto", stream: TextIO | None = None, interval: float = 2.0):
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "lines"
        self.mode = mode
        self.interval = interval
        self.started = time.monotonic()
        self._last_line = 0.0
        self._running_seen = 0
        self._bar = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=0, unit="thunk", file=self.stream, dynamic_ncols=True, leave=True)

    def update(self, counts: Counts, force: bool = False) -> None:
        now = time.monotonic()
        if self._bar is not None and (force or now - self._last_line >= 0.1):
            self._last_line = now
            self._bar.total = counts.discovered
            self._bar.n = counts.settled
            self._bar.set_postfix_str(
                f"run {counts.running} queue {counts.queued} hit {counts.cached} fail {counts.failed}"
                + (f" peer {counts.waiting} waiting/{counts.peer} done" if counts.waiting or counts.peer else ""),
                refresh=False,
            )
            self._bar.refresh()
        elif self.mode == "lines":
            # A line falls due as often right after a thunk finished as at any other
            # time, and then one slot is free for an instant (its next thunk starts on
            # the next update): waiting for that start keeps "N running" true, unless
            # nothing starts for another interval (the last thunks of a run).
            falling = counts.running < self._running_seen
            self._running_seen = counts.running
            since = now - self._last_line
            if force or (since >= self.interval and not falling) or since >= 2 * self.interval:
                self._last_line = now
                print(f"gg-force: {self._summary(counts)}", file=self.stream, flush=True)

    def write_above(self, text: str) -> None:
        """Write ``text`` (whole lines) in one write, above the bar if there is one."""
        if self._bar is not None:
            self._bar.clear()
        self.stream.write(text)
        self.stream.flush()
        if self._bar is not None:
            self._bar.refresh()

    def _summary(self, counts: Counts) -> str:
        elapsed = time.monotonic() - self.started
        remaining = counts.discovered - counts.settled
        # The graph is discovered as it is forced, so this is an estimate from the rate so far.
        eta = f", ETA {remaining * elapsed / counts.settled:.0f}s" if counts.settled and remaining else ""
        peer = f", {counts.peer} by a concurrent run" if counts.peer else ""
        waiting = f", {counts.waiting} waiting on a concurrent run" if counts.waiting else ""
        return (
            f"{counts.settled}/{counts.discovered} done ({counts.done} run, {counts.cached} cached{peer}, "
            f"{counts.failed} failed), {counts.running} running, {counts.queued} queued{waiting}, "
            f"{elapsed:.1f}s{eta}"
        )

    def close(self, counts: Counts) -> None:
        if self._bar is not None:
            self.update(counts, force=True)
            self._bar.close()
            self._bar = None
        elif self.mode == "lines":
            self.update(counts, force=True)
