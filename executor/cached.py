"""gg-force's fast path for a build that is already done: every target resolved through
the local store's reduction records, without loading a thunk.

Why: after a no-op build (``make`` that changed nothing, then ``gg-force`` on every
target), the scheduler path costs far more than the answer: it imports asyncio, the
engines and protobuf, opens the engines, parses every target thunk and runs a task per
node — seconds for 10,000 targets. The answer needs only, per target: its reference, its
reduction records (all of them read at once from the log, ``LocalStore.reduction_records``)
and the value's presence in the store.

Sound because every record it follows is a claim the scheduler trusts too: a record is
only written after a verified run (``LocalStore.reduction_records`` leaves out any
other), a thunk's bare record is written after its tagged ones (a ``T#tag`` target
also needs the bare ``T`` record, so the thunk's records were complete), and the value
must be in the local store, where writing the target hashes it again on the way out
(``TargetWriter.write`` in :mod:`executor.target_writer`). (The scheduler, which loads the thunk, additionally wants
the record of every output before it counts a hit; a bare record without them only
arises from a run killed while dropping records, and its value is checked here all
the same.) Any
target that does not resolve this way (no record, a value not local, a cycle, an ID
that does not parse) makes the caller take the scheduler path for the whole run, and
nothing has been done by then: no file written, no trace line, no engine opened.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator

from ir.ids import InvalidId, parse_ref
from ir.store import LocalStore, StoreError


class CachedResults:
    """What the local records say: a value per reference, whether each value's blob is
    executable (the mode its targets get; read with the check that the blob is there),
    and the steps the scheduler would have traced for the same run."""

    __slots__ = ("values", "executable", "steps", "nodes")

    def __init__(self) -> None:
        self.values: dict[str, str] = {}  # ref -> value ID
        self.executable: dict[str, bool] = {}  # value ID -> its blob's owner execute bit
        # (thunk, its record, a tail call's next ref or None): kept as tuples, turned into
        # trace events only by :meth:`events` (a run without --trace never builds them)
        self.steps: list[tuple[str, str, str | None]] = []
        self.nodes = 0  # distinct thunks reached (what the progress display counts)

    def events(self) -> Iterator[tuple[str, dict[str, str]]]:
        """The trace events of the run: ``cached`` per thunk, ``tailcall`` per tail call."""
        for thunk, first, tail in self.steps:
            if first:
                yield "cached", {"thunk": thunk, "result": first}
            if tail is not None:
                yield "tailcall", {"thunk": thunk, "next": tail}


def resolve_cached(store: LocalStore, refs: Iterable[str]) -> CachedResults | None:
    """Every ref (``T``, ``T#tag`` or a value ID) resolved to a value in the local store
    by the local reduction records alone, or None if one of them is not."""
    found = CachedResults()
    seen: set[str] = set()
    blob_dir = f"{store.blobs}/"
    try:
        records = store.reduction_records()
        for ref in refs:
            if ref[:1] == "T":
                value = _resolve(records, ref, found, seen)  # checked to parse on the way
                if value is None:
                    return None
            else:
                value = ref
                parse_ref(value)  # a value ID (a file name in the store only if it parses)
            executable = found.executable.get(value)
            if executable is None:
                try:
                    mode = os.stat(blob_dir + value).st_mode
                except (FileNotFoundError, NotADirectoryError):
                    return None
                if not stat.S_ISREG(mode):
                    return None
                executable = found.executable[value] = bool(mode & stat.S_IXUSR)
            found.values[ref] = value
    except (StoreError, InvalidId, OSError):  # unreadable or malformed: the scheduler path says what is wrong
        return None
    return found


def _resolve(records: dict[str, str], ref: str, found: CachedResults, seen: set[str]) -> str | None:
    """Follow thunk reference ``ref``'s records (tail calls included) to a value ID."""
    chain: set[str] = set()
    while ref[:1] == "T":
        if ref in chain:
            return None  # a tail-call cycle: the scheduler path reports it
        chain.add(ref)
        thunk_id, _, tag = ref.partition("#")
        first = records.get(thunk_id)  # written last of the thunk's records
        if first is None:
            return None
        result = records.get(ref) if tag else first
        if result is None:
            return None
        parse_ref(result)  # as written in the log: checked here (InvalidId: the scheduler path)
        new = thunk_id not in seen
        if new:
            seen.add(thunk_id)
            found.nodes += 1
        tail = result if result[:1] == "T" else None
        if new or tail is not None:
            found.steps.append((thunk_id, first if new else "", tail))
        ref = result
    return ref
