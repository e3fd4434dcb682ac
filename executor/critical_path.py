"""Critical-path-first dispatch: duration estimates and a slot gate ordered by them.

Why: when more thunks are ready than an engine has slots, the order they start in
decides the wall time. A build's end waits for its longest chain; starting a thunk on
that chain late (behind many short leaves that have slack) stretches the whole build.
List scheduling by *longest remaining path first* is the classic fix; it needs each
thunk's duration, which a build does not know in advance — but the previous build of
the same project does. :class:`DurationEstimates` keeps what earlier runs measured
(``.gg/durations``), and guesses for a thunk never run: the median of the thunks run
by the same function (executable), else the median of all, else one second.

The scheduler computes a node's priority when it is ready to run: its own estimate
plus the costliest chain of (estimated) ancestors above it that are known by then
(:class:`RemainingPath`). :class:`PrioritySlots` grants a free slot to the waiting
job with the highest priority; grants are made from a loop callback, so every job that
became ready in the same turn of the event loop competes, not just the first one.

Estimates are advisory: a wrong one costs only ordering, never correctness, so the
file is written last-writer-wins (two runs on one store may drop each other's new
entries) and an unreadable file is ignored.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import statistics
from collections.abc import Callable, Sized
from pathlib import Path
from typing import Any, TypeVar

from ir.atomic import atomic_write_bytes

T = TypeVar("T")

DURATIONS_FILE = "durations"
DEFAULT_ESTIMATE = 1.0  # seconds, for a thunk when nothing at all has been measured
MAX_ENTRIES = 200_000  # per-thunk records kept in the file (the most recent ones)


class DurationEstimates:
    """Run times by thunk ID (from earlier runs and this one), with medians per function."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self._by_thunk: dict[str, tuple[str, float]] = {}  # node ID -> (function, seconds)
        self._new: dict[str, tuple[str, float]] = {}  # measured in this run (what save() adds)
        self._loaded = path is None
        self._by_function: dict[str, float] | None = None  # medians, computed on first need
        self._overall: float | None = None
        self._changes = 0  # records since the medians were computed

    @classmethod
    def of_store(cls, root: Path) -> DurationEstimates:
        """The estimates kept in the store at ``root`` (read on first use, not here)."""
        return cls(Path(root) / DURATIONS_FILE)

    def _load(self) -> None:
        """Read the file once, lazily: a fully cached run never needs an estimate."""
        self._loaded = True
        assert self.path is not None
        try:
            text = self.path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            return
        for line in text.splitlines():
            fields = line.split()
            if len(fields) != 3:
                continue
            try:
                seconds = float(fields[2])
            except ValueError:
                continue
            if seconds >= 0 and fields[0] not in self._new:
                self._by_thunk[fields[0]] = (fields[1], seconds)

    def record(self, thunk_id: str, function: str, seconds: float) -> None:
        """``thunk_id`` (the node's ID in the graph, stable across runs) ran for ``seconds``."""
        self._new[thunk_id] = self._by_thunk[thunk_id] = (function, seconds)
        self._changes += 1

    def estimate(self, thunk_id: str, function: str) -> float:
        """Seconds ``thunk_id`` is expected to run: measured, else its function's median,
        else the median of everything measured, else :data:`DEFAULT_ESTIMATE`."""
        if not self._loaded:
            self._load()
        known = self._by_thunk.get(thunk_id)
        if known is not None:
            return known[1]
        # Medians are recomputed once the records changed by a quarter, not after every
        # record: a large run asks an estimate per node and records one per run, and
        # recomputing every time made it quadratic (they only order work, so a little
        # staleness costs nothing).
        if self._by_function is None or self._changes >= max(1, len(self._by_thunk) >> 2):
            self._medians()
        assert self._by_function is not None
        guess = self._by_function.get(function)
        if guess is not None:
            return guess
        return DEFAULT_ESTIMATE if self._overall is None else self._overall

    def _medians(self) -> None:
        self._changes = 0
        groups: dict[str, list[float]] = {}
        for function, seconds in self._by_thunk.values():
            groups.setdefault(function, []).append(seconds)
        self._by_function = {function: statistics.median(times) for function, times in groups.items()}
        every = [seconds for _, seconds in self._by_thunk.values()]
        self._overall = statistics.median(every) if every else None

    def save(self) -> None:
        """Merge this run's measurements into the file (atomically; last writer wins)."""
        if self.path is None or not self._new:
            return
        merged = DurationEstimates(self.path)
        merged._load()  # what is there now (another run may have written since we read)
        entries = {**merged._by_thunk, **self._new}
        lines = [f"{ident} {function} {seconds:.6f}\n"
                 for ident, (function, seconds) in list(entries.items())[-MAX_ENTRIES:]]
        atomic_write_bytes(Path(self.path), "".join(lines).encode("ascii"))


class RemainingPath:
    """Each node's estimated remaining path: its own estimate plus the longest chain of
    known ancestors above it (up to the targets). Ancestors are registered as the graph
    is discovered, top-down, so a node ready to run knows every parent that led to it;
    a parent found later (a shared subgraph) raises it for later dispatches only."""

    def __init__(self, estimates: DurationEstimates):
        self.estimates = estimates
        self._above: dict[str, float] = {}  # node -> longest estimated chain above it
        self._own: dict[str, float] = {}

    def own(self, node_id: str, function: str) -> float:
        seconds = self._own.get(node_id)
        if seconds is None:
            seconds = self._own[node_id] = self.estimates.estimate(node_id, function)
        return seconds

    def priority(self, node_id: str, function: str) -> float:
        return self.own(node_id, function) + self._above.get(node_id, 0.0)

    def below(self, parent: str, function: str, children: list[str]) -> None:
        """``children`` wait for ``parent`` (its inputs, or its tail call)."""
        chain = self.priority(parent, function)
        above = self._above
        for child in children:
            if above.get(child, -1.0) < chain:
                above[child] = chain

    def continues(self, caller: str, callee: str) -> None:
        """``callee`` is ``caller``'s tail call: the chain above the caller is its chain."""
        chain = self._above.get(caller, 0.0)
        if self._above.get(callee, -1.0) < chain:
            self._above[callee] = chain


class PrioritySlots:
    """``slots`` concurrent holders; waiting acquirers get a freed slot highest priority
    first (ties: first come, first served). Like ``asyncio.Semaphore``, but ordered.

    A waiter is a future (:meth:`acquire`) or a callback and its argument
    (:meth:`call_when_free`, called holding the slot): the scheduler queues ready nodes as
    callbacks, so a node waiting for a slot costs no task -- and, as ``(callback, node)``
    in the heap's entry rather than a ``partial``, no objects beyond the entry (a queue of
    thousands is walked by every garbage collection while it waits)."""

    def __init__(self, slots: int):
        self._free = slots
        # (-priority, sequence, callback, its argument); for an acquirer: (..., None, future)
        self._waiting: list[tuple[float, int, Callable[[Any], None] | None, Any]] = []
        self._sequence = itertools.count()
        self._grant_scheduled = False

    async def acquire(self, priority: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (-priority, next(self._sequence), None, future))
        self._schedule_grant()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # granted, then cancelled: pass it on
                self.release()
            raise

    @property
    def queue(self) -> Sized:
        """The waiters (only for ``len()``; the same object for this instance's life)."""
        return self._waiting

    @property
    def waiting(self) -> int:
        """Acquirers and callbacks waiting for a slot (cancelled ones until popped)."""
        return len(self._waiting)

    def try_acquire(self) -> bool:
        """Take a free slot now if nobody waits for one (no priority to respect)."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return True
        return False

    def call_when_free(self, priority: float, callback: Callable[[T], None], arg: T) -> None:
        """Call ``callback(arg)`` holding a slot, once one is free (highest priority first)."""
        heapq.heappush(self._waiting, (-priority, next(self._sequence), callback, arg))
        self._schedule_grant()

    def release(self) -> None:
        self._free += 1
        self._schedule_grant()

    def take_next(self, callback: Callable[[T], None]) -> T | None:
        """If a slot is free and the highest-priority waiter is ``callback``'s, take the
        slot and that waiter out of the queue and return its argument (the caller runs it
        now, in place of the grant that would call it on a later turn of the loop); None
        otherwise. The order is the grant's: the best waiter of those queued now."""
        waiting = self._waiting
        while self._free > 0 and waiting:
            _, _, queued, arg = waiting[0]
            if queued is None and arg.done():  # an acquirer cancelled while waiting
                heapq.heappop(waiting)
                continue
            if queued != callback:
                return None
            heapq.heappop(waiting)
            self._free -= 1
            return arg
        return None

    def _schedule_grant(self) -> None:
        if not self._grant_scheduled and self._free > 0 and self._waiting:
            self._grant_scheduled = True
            asyncio.get_running_loop().call_soon(self._grant)

    def _grant(self) -> None:
        self._grant_scheduled = False
        waiting = self._waiting
        while self._free > 0 and waiting:
            _, _, callback, arg = heapq.heappop(waiting)
            if callback is None:
                if arg.done():  # its acquirer was cancelled while waiting
                    continue
                self._free -= 1
                arg.set_result(None)
            else:
                self._free -= 1
                callback(arg)
