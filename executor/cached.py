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

from collections.abc import Iterable
from dataclasses import dataclass, field

from ir.ids import InvalidId, parse_ref
from ir.store import LocalStore, StoreError


@dataclass
class CachedResults:
    """What the local records say: a value per reference, and the trace events the
    scheduler would have written for the same run (``cached`` and ``tailcall``)."""

    values: dict[str, str] = field(default_factory=dict)  # ref -> value ID
    events: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    nodes: int = 0  # distinct thunks reached (what the progress display counts)


def resolve_cached(store: LocalStore, refs: Iterable[str]) -> CachedResults | None:
    """Every ref (``T``, ``T#tag`` or a value ID) resolved to a value in the local store
    by the local reduction records alone, or None if one of them is not."""
    found = CachedResults()
    seen: set[str] = set()
    try:
        records = store.reduction_records()
        for ref in refs:
            value = _resolve(store, records, ref, found, seen)
            if value is None:
                return None
            found.values[ref] = value
    except (StoreError, InvalidId):  # unreadable or malformed: the scheduler path says what is wrong
        return None
    return found


def _resolve(store: LocalStore, records: dict[str, str], ref: str, found: CachedResults,
             seen: set[str]) -> str | None:
    """Follow ``ref``'s records (tail calls included) to a value that is in the store."""
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
        if thunk_id not in seen:
            seen.add(thunk_id)
            found.nodes += 1
            found.events.append(("cached", {"thunk": thunk_id, "result": first}))
        if result[:1] == "T":
            found.events.append(("tailcall", {"thunk": thunk_id, "next": result}))
        ref = result
    return ref if store.has(ref) else None
