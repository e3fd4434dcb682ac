"""The scheduler: force thunk references to values, running each distinct thunk once.

Each thunk in the graph is a *node* whose work is one asyncio task, memoized by thunk
ID, so a subgraph shared by many parents runs once. A node:

1. checks the reductions first — a hit costs no run and loads no dependencies —
   the local ones, then those in the remote store when the run shares results
   (:mod:`executor.remote_results`; every thunk of the graph is looked up in one batch
   before anything is dispatched, and a remote record is a claim whose values are
   verified when used);
2. loads the thunk and forces its thunk inputs (all at once; they are nodes too);
3. rewrites itself with their results — gg's rule: a thunk input becomes a value
   input under the same name and ``@{GGHASH:T[#tag]}`` references follow — and
   stores the rewritten thunk, whose ID is deterministic, so a later run hits the
   cache under either ID;
4. dispatches the rewritten thunk to the first engine that does not refuse it (else
   the fallback engine), retrying infrastructure failures with capped exponential
   back-off and a bounded number of attempts, then falling back; an attempt that runs
   far past the typical duration is speculatively duplicated, first result wins;
5. follows tail calls: an output that is itself a thunk is forced in turn;
6. records reductions for both the original and the rewritten thunk (locally, and in
   the remote store when the run may write there, after the values they name).

Execution failures are final: without ``keep_going`` the first one stops the run (all
other work is cancelled, which kills its processes); with it, every branch that does
not depend on the failure still finishes.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ir.errors import ConfigError, UserError
from ir.ids import InvalidId, parse_id, parse_ref
from ir.retry import backoff_delay
from ir.storage import LeasingStorage, StorageError
from ir.store import CorruptBlob, LocalStore, MissingBlob, StoreError
from ir.thunk import Input, MalformedThunk, Thunk

from .critical_path import DurationEstimates, PrioritySlots, RemainingPath
from .engine import DEFAULT_THUNK_TIMEOUT, Engine, Job
from .execution import ExecutionFailed, ExecutionResult, InfrastructureError, ResourceExhausted
from .gc_pacing import fewer_collections
from .inflight import DEFAULT_LEASE_SECONDS, Claim, InFlight
from .observe import RunObserver
from .remote_results import SharedResults

# Key of a node's result map that stands for its first output (what a bare thunk ID
# means). The empty string can never be an output tag, so it cannot collide with one.
FIRST = ""

DISPATCH_ORDERS = ("critical-path", "fifo")

_REF_IN_TEXT = re.compile(r"@\{GGHASH:([^}#]+)(?:#([^}]+))?\}")


@dataclass(frozen=True)
class ForceConfig:
    keep_going: bool = False
    max_attempts: int = 4  # per engine, for infrastructure failures
    backoff_initial: float = 0.2
    backoff_max: float = 8.0
    # The time limit of a thunk that sets none, on every engine (docs/force.md): a thunk
    # that hangs fails after this long instead of holding the run forever.
    default_timeout: float = DEFAULT_THUNK_TIMEOUT
    speculate: bool = True
    speculate_factor: float = 4.0  # duplicate an attempt running this many times the median
    speculate_min: float = 5.0  # ... but never earlier than this many seconds
    speculate_initial: float = 60.0  # before there are enough finished runs to compare
    speculate_samples: int = 5
    # Seconds a remote lease on a running thunk lasts unless renewed (executor/inflight.py):
    # the longest a crashed peer can delay this run.
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    # The order ready thunks get slots in: "critical-path" (longest estimated remaining
    # path first, executor/critical_path.py) or "fifo" (the order they became ready; for
    # comparison, e.g. bench/bench_critical_path.py).
    dispatch: str = "critical-path"


class NodeFailed(Exception):
    """A node could not be reduced. ``report`` is the full, human-readable story."""

    def __init__(self, thunk_id: str, message: str, report: str | None = None):
        super().__init__(message)
        self.thunk_id = thunk_id
        self.report = report or message


class DependencyFailed(NodeFailed):
    pass


class ForceFailed(UserError):
    """The run did not reduce every target; ``failures`` are the root causes."""

    def __init__(self, failures: list[NodeFailed], results: dict[str, str]):
        self.failures = failures
        self.results = results
        first = failures[0]
        extra = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        super().__init__(f"{first}{extra}")

    def messages(self) -> list[str]:
        """One full report per root cause (what the command line prints)."""
        return [failure.report for failure in self.failures]


def _input_bytes(thunk: Thunk) -> int:
    return sum(parse_id(item.id).size for item in (*thunk.values, *thunk.executables))


def rewrite(thunk: Thunk, results: dict[str, dict[str, str]]) -> Thunk:
    """Replace every thunk input by the value it reduced to (gg's deterministic rule).

    ``results`` maps a dependency's thunk ID to its outputs (tag -> value ID); the
    first output tag is what a bare reference means.
    """

    def value_of(ident: str, tag: str | None) -> str:
        outputs = results[ident]
        return outputs[tag] if tag else outputs[FIRST]

    values = list(thunk.values)
    for item in thunk.thunks:
        ref = item.parsed
        values.append(Input(value_of(ref.id, ref.tag), item.name))

    def substitute(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            ident, tag = match.group(1), match.group(2)
            if ident in results:
                return "@{GGHASH:" + value_of(ident, tag) + "}"
            return match.group(0)

        return _REF_IN_TEXT.sub(one, text)

    return replace(
        thunk,
        values=tuple(values),
        thunks=(),
        args=tuple(substitute(a) for a in thunk.args),
        envars=tuple(substitute(e) for e in thunk.envars),
    ).canonical()


def replace_value(thunk: Thunk, old: str, new: str) -> Thunk:
    """``thunk`` with value input ``old`` (and ``@{GGHASH:old}`` in its arguments and
    environment) replaced by ``new``: what :func:`rewrite` would have made had the
    dependency reduced to ``new``."""
    ref = "@{GGHASH:" + old + "}"
    return replace(
        thunk,
        values=tuple(Input(new, item.name) if item.ref == old else item for item in thunk.values),
        args=tuple(a.replace(ref, "@{GGHASH:" + new + "}") for a in thunk.args),
        envars=tuple(e.replace(ref, "@{GGHASH:" + new + "}") for e in thunk.envars),
    ).canonical()


class Scheduler:
    def __init__(
        self,
        store: LocalStore,
        engines: Sequence[Engine],
        fallback: Engine | None = None,
        config: ForceConfig | None = None,
        observer: RunObserver | None = None,
        shared: SharedResults | None = None,
        estimates: DurationEstimates | None = None,
    ):
        if not engines:
            raise ValueError("at least one engine is needed")
        self.store = store
        self.engines = list(engines)
        self.fallback = fallback
        self.config = config or ForceConfig()
        self.observer = observer or RunObserver()
        # A property of the engines: one that leaves results in remote storage (Lambda:
        # S3) makes a reduction whose value is not local still a cache hit.
        every = [*self.engines, *([fallback] if fallback else [])]
        self.results_may_be_remote = shared is not None or any(e.remote is not None for e in every)
        self.shared = shared
        self._claims: dict[str, str] = {}  # ref -> result, as the remote store's records claim
        self._looked_up: set[str] = set()  # refs asked of the remote store already
        self.remote_hits = 0  # nodes reduced by a remote record
        self.shared_written = 0  # reductions this run wrote to the remote store
        self.share_errors: list[str] = []  # remote lookups or writes that failed (said at the end)
        self._sharing: set[asyncio.Task[None]] = set()  # writes of records, off the critical path
        self._nodes: dict[str, asyncio.Task[dict[str, str]]] = {}
        # Slots are granted critical-path first: by each node's estimated remaining path
        # (executor/critical_path.py), from ``estimates`` (earlier runs; this run's own
        # measurements are added as it goes).
        self._slots = {id(e): PrioritySlots(e.slots) for e in every}
        self.estimates = estimates or DurationEstimates()
        self._paths = RemainingPath(self.estimates)
        if self.config.dispatch not in DISPATCH_ORDERS:
            raise ValueError(f"unknown dispatch order {self.config.dispatch!r}")
        self._fifo = self.config.dispatch == "fifo"
        # Turns: how many nodes may be inside dispatch, waiting for an engine slot. A
        # node gives its turn back once it has a slot; the rest wait here, as one
        # suspended _reduce each, instead of a chain of five coroutines (4 KB a thunk,
        # most of the memory of a 100,000-thunk run). Granted in the same order as slots.
        self._turns = PrioritySlots(max(16, 2 * sum(e.slots for e in every)))
        self._holding_turn: set[str] = set()
        self._durations: list[float] = []
        self._median: tuple[int, float] = (0, 0.0)  # (samples it was computed from, median)
        # Per-thunk trace events cost a dict each: built only when a trace is written.
        self._tracing = self.observer.tracing
        self._failures: list[NodeFailed] = []
        self._stop = asyncio.Event()  # set on the first failure unless keep_going
        # value ID -> (node ID, the thunk ID it ran or hit as, that thunk): to regenerate
        # a value that a cached reduction promises but no store holds any more.
        # Only the output tags are kept, not the thunk: a large graph would keep every
        # thunk of the run alive through this map.
        self._producers: dict[str, tuple[str, str, tuple[str, ...]]] = {}
        # Values found gone from every store: a reduction naming one is no hit (whichever
        # of the original or rewritten ID it is recorded under) until it is made again.
        self._lost: set[str] = set()
        # Values only a remote record vouches for -> (node, output tag): if one turns out
        # gone or forged, the node runs again and may rightly produce another value.
        self._vouched: dict[str, tuple[str, str]] = {}
        self.executed = 0  # attempts that ran to completion
        self.ran_on: dict[str, int] = {}  # engine name -> thunks it ran
        self.config_error: ConfigError | None = None  # set: the run stopped for a setting
        self.lost_engines: dict[str, tuple[int, str]] = {}  # engine abandoned -> (attempts, why)
        self._abandoned: dict[int, str] = {}  # id(engine) -> why it gets no more work
        self._moved: dict[str, tuple[str, str, str]] = {}  # node -> (cause, from engine, reason)
        self._ran_on_fallback: list[str] = []
        leases = shared.storage if shared is not None and shared.writes else None
        self._inflight = InFlight(store, leases if isinstance(leases, LeasingStorage) else None, self.observer,
                                  self._local, self._remote_hit, slots=sum(e.slots for e in every),
                                  period=self.config.lease_seconds, on_error=self.share_errors.append)

    @property
    def peer_reduced(self) -> int:
        """Thunks a concurrent run reduced while this one waited for it."""
        return self._inflight.peer_reduced

    # -- public -------------------------------------------------------------------

    async def force(self, refs: Sequence[str]) -> dict[str, str]:
        """Reduce every ref (``T``, ``T#tag`` or a value ID) to a value ID."""
        with fewer_collections():
            return await self._force(refs)

    async def _force(self, refs: Sequence[str]) -> dict[str, str]:
        parsed = {ref: parse_ref(ref) for ref in refs}
        await self._look_up_graph([p.id for p in parsed.values() if p.is_thunk])
        targets = {ref: self._node(p.id) for ref, p in parsed.items() if p.is_thunk}
        results = {ref: ref for ref, p in parsed.items() if not p.is_thunk}
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            pending: set[asyncio.Future[Any]] = set(targets.values())
            while pending and not self._stop.is_set():
                _, pending = await asyncio.wait({*pending, stop}, return_when=asyncio.FIRST_COMPLETED)
                pending.discard(stop)
        finally:
            stop.cancel()
            await self._cancel_all()
            await self._flush_sharing()  # what finished is shared even if the run failed
        for ref, task in targets.items():
            if task.cancelled() or task.exception() is not None:
                continue
            outputs = task.result()
            tag = parsed[ref].tag
            if tag is not None and tag not in outputs:
                self._failures.append(NodeFailed(parsed[ref].id, f"thunk {parsed[ref].id} has no output {tag!r}"))
                continue
            results[ref] = outputs[tag or FIRST]
        if self.config_error is not None:
            raise self.config_error
        if self._failures or len(results) < len(refs):
            failures = self._failures or [NodeFailed("", "the run stopped before every target was reduced")]
            raise ForceFailed(failures, results)
        return results

    async def _cancel_all(self) -> None:
        pending = [task for task in self._nodes.values() if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for task in self._nodes.values():  # retrieve exceptions so asyncio does not warn
            if not task.cancelled():
                task.exception()

    # -- nodes ----------------------------------------------------------------------

    def _node(self, thunk_id: str) -> asyncio.Task[dict[str, str]]:
        task = self._nodes.get(thunk_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._reduce(thunk_id), name=thunk_id)
            self._nodes[thunk_id] = task
        return task

    def _fail(self, failure: NodeFailed) -> NodeFailed:
        self._failures.append(failure)
        if not self.config.keep_going:
            self._stop.set()
        self.observer.counts.failed += 1
        self.observer.event("failed", thunk=failure.thunk_id, error=str(failure))
        return failure

    # -- remote reductions ------------------------------------------------------------

    @staticmethod
    def _refs(thunk_id: str, thunk: Thunk) -> list[str]:
        return [thunk_id, *(f"{thunk_id}#{tag}" for tag in thunk.outputs)]

    async def _look_up_graph(self, roots: Sequence[str]) -> None:
        """Ask the remote store, in one batch, for every thunk of the graph below
        ``roots`` that has no local reduction (a local hit needs nothing below it)."""
        if self.shared is None:
            return
        refs: list[str] = []
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            thunk_id = stack.pop()
            if thunk_id in seen:
                continue
            seen.add(thunk_id)
            try:
                thunk = self.store.load_thunk(thunk_id)
            except (StoreError, MalformedThunk, InvalidId):
                continue  # its node reports it
            if self._local(thunk_id, thunk) is not None:
                continue
            refs += self._refs(thunk_id, thunk)
            stack += [item.id for item in thunk.thunks]
        await self._look_up(refs)

    async def _look_up(self, refs: Sequence[str]) -> None:
        """One batch lookup of ``refs`` not asked yet. A tail call's thunk named by a
        record is fetched too (verified), since it is loaded next; a lookup that fails
        is said at the end and the run goes on without those records (slower, not wrong)."""
        refs = [ref for ref in refs if ref not in self._looked_up]
        if self.shared is None or not refs:
            return
        self._looked_up.update(refs)
        try:
            found = await self.shared.storage.get_reductions(refs)
        except ConfigError:
            raise
        except StorageError as exc:
            self.share_errors.append(f"looking up reductions: {exc}")
            return
        await self._take_claims(found)

    async def _take_claims(self, found: dict[str, str]) -> None:
        """Keep records fetched from the remote store (fetching the tail-call thunks they name)."""
        assert self.shared is not None
        tail_thunks = {r.partition("#")[0] for r in found.values() if r[0] == "T"}
        for ident in sorted(tail_thunks):
            if self.store.has(ident):
                continue
            try:
                await self.shared.storage.download(self.store, ident)
            except StoreError:
                found = {ref: r for ref, r in found.items() if r.partition("#")[0] != ident}
        self._claims.update(found)

    async def _remote_hit(self, found: Mapping[str, str], run_id: str, thunk: Thunk) -> dict[str, str] | None:
        """A peer's records of ``run_id`` just fetched: its outputs if usable."""
        await self._take_claims(dict(found))
        return self._claimed(run_id, thunk)

    async def _share(self, thunk_ids: Sequence[str], thunk: Thunk, outputs: dict[str, str], claim: Claim) -> None:
        """Write the reductions of a thunk this run executed to the remote store, after
        the blobs they name are there (a reader never finds a record before its value);
        then release the claim's lease."""
        try:
            await self._share_records(thunk_ids, thunk, outputs)
        finally:
            await self._inflight.done(claim)

    async def _share_records(self, thunk_ids: Sequence[str], thunk: Thunk, outputs: dict[str, str]) -> None:
        if self.shared is None or not self.shared.writes:
            return
        storage = self.shared.storage
        try:
            for ident in sorted({result.partition("#")[0] for result in outputs.values()}):
                await storage.upload(self.store, ident)
            for thunk_id in thunk_ids:
                for tag in thunk.outputs:
                    await storage.put_reduction(f"{thunk_id}#{tag}", outputs[tag])
                await storage.put_reduction(thunk_id, outputs[FIRST])  # the bare ID last, as locally
                self.shared_written += 1
        except ConfigError as exc:
            self._fatal(thunk_ids[0], exc)
        except StoreError as exc:
            self.share_errors.append(f"sharing the reduction of {thunk_ids[0]}: {exc}")

    def _local(self, thunk_id: str, thunk: Thunk) -> dict[str, str] | None:
        # The bare ID's record is written last: without it there is no hit, and a cold
        # build asks only this one file per node.
        first = self.store.get_reduction(thunk_id)
        if first is None:
            return None
        outputs: dict[str, str | None] = {FIRST: first}
        for tag in thunk.outputs:
            outputs[tag] = self.store.get_reduction(f"{thunk_id}#{tag}")
        return self._usable(outputs)

    def _claimed(self, thunk_id: str, thunk: Thunk) -> dict[str, str] | None:
        """The remote store's records of ``thunk_id``, if usable (checked after the local
        ones). Not copied into the
        local store: a claim stays a claim (``--no-remote-results`` later ignores it)."""
        if not self._claims:
            return None
        return self._usable({ref.partition("#")[2]: self._claims.get(ref) for ref in self._refs(thunk_id, thunk)})

    def _usable(self, outputs: dict[str, str | None]) -> dict[str, str] | None:
        """``outputs`` if every record is there and usable.

        A record whose result is gone is no hit (gg looped on such records): a thunk
        result must be in the local store (it is loaded next), and so must a value
        unless a remote store may hold it (``results_may_be_remote``).
        """
        usable: dict[str, str] = {}
        for tag, result in outputs.items():
            if result is None or result in self._lost:
                return None
            ident = result.partition("#")[0]
            if (ident[0] == "T" or not self.results_may_be_remote) and not self.store.has(ident):
                return None
            usable[tag] = result
        return usable

    async def _reduce(self, thunk_id: str) -> dict[str, str]:
        """Force one node; returns tag -> value ID (plus ``FIRST``)."""
        counts = self.observer.counts
        counts.discovered += 1
        try:
            thunk = self.store.load_thunk(thunk_id)
        except (StoreError, MalformedThunk, InvalidId) as exc:
            raise self._fail(NodeFailed(thunk_id, str(exc))) from None
        deps = sorted({item.id for item in thunk.thunks})
        if self._tracing:
            self.observer.event("queued", thunk=thunk_id, deps=deps)
        else:
            self.observer.tick()

        if self.shared is not None and self._local(thunk_id, thunk) is None:
            await self._look_up(self._refs(thunk_id, thunk))  # a no-op unless off the graph (a tail call)
        cached = self._local(thunk_id, thunk)
        remote = cached is None and (cached := self._claimed(thunk_id, thunk)) is not None
        if cached is not None:
            self._remember_producer(thunk_id, thunk_id, thunk, cached, remote)
            counts.cached += 1
            self.remote_hits += remote
            self.observer.event("cached", thunk=thunk_id, result=cached[FIRST], **({"remote": True} if remote else {}))
            return await self._follow_tail_calls(thunk_id, cached, (thunk_id,))

        if deps:
            self._paths.below(thunk_id, thunk.function_hash, deps)
            outcomes = await asyncio.gather(*(self._node(dep) for dep in deps), return_exceptions=True)
            dep_results: dict[str, dict[str, str]] = {}
            for dep, outcome in zip(deps, outcomes, strict=True):
                if isinstance(outcome, asyncio.CancelledError):
                    raise outcome
                if isinstance(outcome, BaseException):
                    counts.failed += 1
                    raise DependencyFailed(thunk_id, f"dependency {dep} failed") from None
                dep_results[dep] = outcome
            try:
                runnable = rewrite(thunk, dep_results)
            except KeyError as exc:
                raise self._fail(NodeFailed(thunk_id, f"a dependency has no output {exc}")) from None
            run_id = self.store.put_thunk(runnable)
            if self.shared is not None and self._local(run_id, runnable) is None:
                await self._look_up(self._refs(run_id, runnable))  # the rewritten ID: one request
            cached = self._local(run_id, runnable)
            remote = cached is None and (cached := self._claimed(run_id, runnable)) is not None
        else:
            runnable, run_id = thunk, thunk_id

        if cached is None:
            # Claimed (or reduced meanwhile by a concurrent run): executor/inflight.py. The
            # claim comes first, so a node waiting on another process holds no dispatch turn.
            try:
                claim = await self._inflight.claim(thunk_id, run_id, runnable, self._thunk_priority(thunk_id, runnable))
            except ConfigError as exc:
                raise self._fatal(thunk_id, exc) from None
            if claim.outputs is not None:
                self._remember_producer(thunk_id, run_id, runnable, claim.outputs)
                return await self._follow_tail_calls(thunk_id, claim.outputs, (thunk_id, run_id))
            try:
                await self._take_turn(thunk_id, runnable)
                try:
                    result, run_id, runnable = await self._dispatch_regenerating(thunk_id, run_id, runnable)
                finally:
                    self._end_turn(thunk_id)
                outputs = {o.tag: o.id for o in result.outputs}
                cached = {FIRST: outputs[runnable.outputs[0]], **outputs}
                self._lost.difference_update(cached.values())
                self._remember_producer(thunk_id, run_id, runnable, cached)
                for ident in {run_id, thunk_id}:
                    self._record(ident, runnable, cached)
            except BaseException:
                self._inflight.abandon(claim)
                raise
            self._inflight.recorded(claim)
            if self.shared is not None and self.shared.writes:  # in the background: not on the critical path
                task = asyncio.get_running_loop().create_task(
                    self._share(sorted({run_id, thunk_id}), runnable, cached, claim))
                self._sharing.add(task)
        else:
            self._remember_producer(thunk_id, run_id, runnable, cached, remote)
            counts.cached += 1
            self.remote_hits += remote
            self.observer.event("cached", thunk=thunk_id, ran=run_id, result=cached[FIRST],
                                **({"remote": True} if remote else {}))
            if not remote:
                self._record(thunk_id, runnable, cached)
        return await self._follow_tail_calls(thunk_id, cached, (thunk_id, run_id))

    def _record(self, thunk_id: str, thunk: Thunk, outputs: dict[str, str]) -> None:
        # One append; the bare ID last: its presence is what _local() checks first.
        self.store.put_reductions([*((f"{thunk_id}#{tag}", outputs[tag]) for tag in thunk.outputs),
                                   (thunk_id, outputs[FIRST])])

    async def _follow_tail_calls(
        self, thunk_id: str, outputs: dict[str, str], chain: tuple[str, ...]
    ) -> dict[str, str]:
        """Replace every output that is a thunk by the value it reduces to (any depth)."""
        final = {}
        for tag, result in outputs.items():
            ref = parse_ref(result)
            if not ref.is_thunk:
                final[tag] = result
                continue
            if ref.id in chain:
                raise self._fail(NodeFailed(thunk_id, f"tail-call cycle: {ref.id} returns itself"))
            self.observer.event("tailcall", thunk=thunk_id, next=result)
            self._paths.continues(thunk_id, ref.id)
            try:
                reduced = await self._node(ref.id)
            except NodeFailed:
                raise DependencyFailed(thunk_id, f"tail call {result} failed") from None
            if ref.tag is not None and ref.tag not in reduced:
                raise self._fail(NodeFailed(thunk_id, f"tail call {result}: no such output"))
            final[tag] = reduced[ref.tag or FIRST]
        return final

    # -- lost values ----------------------------------------------------------------

    def _remember_producer(self, node_id: str, run_id: str, thunk: Thunk, outputs: dict[str, str],
                           vouched: bool = False) -> None:
        for tag, result in outputs.items():
            self._producers[result] = (node_id, run_id, thunk.outputs)
            if vouched:
                self._vouched[result] = (node_id, tag)

    async def _dispatch_regenerating(self, node_id: str, run_id: str,
                                     thunk: Thunk) -> tuple[ExecutionResult, str, Thunk]:
        """Dispatch; if an input is gone from every store, rebuild it once and retry.
        Returns the result and the thunk that ran (and its ID).

        A cached reduction can outlive its result (a bucket emptied, a blob removed as
        corrupt). gg retried such thunks forever; here the producer's reductions are
        dropped, the producer runs again (outputs are content-addressed, so it makes the
        same value), and this thunk is dispatched once more. If only a remote record
        vouched for the input, the rerun may make another value (the record was forged):
        the thunk is rewritten with it, so it runs -- and is recorded -- as what it is.
        """
        try:
            return await self._dispatch(node_id, run_id, thunk), run_id, thunk
        except (MissingBlob, CorruptBlob) as missing:  # corrupt in the remote store: as good as gone
            self._end_turn(node_id)  # the producer needs one; this node waits for it holding none
            replacement = await self._regenerate(missing.ident)
            if replacement is None:
                raise self._fail(NodeFailed(node_id, f"thunk {run_id}: {missing}")) from None
            if replacement != missing.ident:
                thunk = replace_value(thunk, missing.ident, replacement)
                run_id = self.store.put_thunk(thunk)
        try:
            return await self._dispatch(node_id, run_id, thunk), run_id, thunk
        except (MissingBlob, CorruptBlob) as missing:
            raise self._fail(NodeFailed(node_id, f"thunk {run_id}: {missing}")) from None

    async def rebuild(self, value_id: str) -> str | None:
        """Rebuild ``value_id`` (a target's value gone from every store) by running the
        thunk that produced it in this run again: the value it made (another one if only a
        remote record vouched for ``value_id``), None if that is not possible."""
        try:
            return await self._regenerate(value_id)
        except NodeFailed:
            return None
        finally:
            await self._flush_sharing()

    async def _flush_sharing(self) -> None:
        """Wait for the records being written (their failures are in share_errors)."""
        while pending := [task for task in self._sharing if not task.done()]:
            await asyncio.gather(*pending, return_exceptions=True)
        await self._inflight.close()  # leases given up are released too

    async def _regenerate(self, ident: str) -> str | None:
        """Run the producer of lost ``ident`` again: the value it makes in its place
        (``ident`` itself, unless a remote record that vouched for it was wrong), None if
        there is no producer or it failed."""
        producer = self._producers.pop(ident, None)
        if producer is None:
            return None
        node_id, run_id, tags = producer
        self._lost.add(ident)
        self.observer.event("regenerate", thunk=node_id, missing=ident)
        for thunk_id in {node_id, run_id}:
            for tag in tags:
                self.store.forget_reduction(f"{thunk_id}#{tag}")
            self.store.forget_reduction(thunk_id)
        self._nodes.pop(node_id, None)
        try:
            outputs = await self._node(node_id)
        except NodeFailed:
            return None
        if ident in self._producers:  # the run re-registers what it produced
            return ident
        if ident in self._vouched:  # a claim, not a fact: the record was wrong
            vouched_by, tag = self._vouched.pop(ident)
            self.observer.event("rejected", thunk=vouched_by, claimed=ident, result=outputs.get(tag))
            return outputs.get(tag)
        raise self._fail(NodeFailed(node_id, f"ran again to rebuild lost {ident} but produced "
                                    "different output (is it deterministic?)"))

    # -- dispatch -------------------------------------------------------------------

    def _choose_engine(self, job: Job) -> tuple[Engine, list[str]]:
        reasons: list[str] = []
        for engine in self.engines:
            reason = self._abandoned.get(id(engine)) or engine.refuses(job)
            if reason is None:
                return engine, reasons
            reasons.append(f"{engine.name}: {reason}")
        if self.fallback is not None and self.fallback.refuses(job) is None:
            return self.fallback, reasons
        raise NodeFailed(job.thunk_id, "no engine can run it: " + "; ".join(reasons))

    def _job(self, run_id: str, thunk: Thunk, attempt: int = 1) -> Job:
        """Every job carries its time limit: the thunk's own, else the run's default."""
        timeout = thunk.timeout_ms / 1000 if thunk.timeout_ms else self.config.default_timeout
        return Job(run_id, thunk, attempt, timeout)

    def _move(self, node_id: str, cause: str, engine: Engine, reason: str, output: str = "") -> None:
        self._moved[node_id] = (cause, engine.name, reason)
        assert self.fallback is not None
        extra = {"output": output[-1000:]} if output.strip() else {}
        self.observer.event("fallback", thunk=node_id, **{"from": engine.name}, to=self.fallback.name,
                            reason=reason, **extra)

    def _abandon(self, engine: Engine, attempts: int, reason: str) -> None:
        """Stop sending work to ``engine`` for the rest of the run: one thunk failed on it
        for infrastructure reasons ``attempts`` times in a row (with back-off), which says
        the engine, not the thunk, is the problem; every other thunk would pay the same."""
        if id(engine) in self._abandoned:
            return
        self._abandoned[id(engine)] = f"unavailable after {attempts} attempts ({reason})"
        self.lost_engines[engine.name] = (attempts, reason)
        self.observer.event("abandoned", engine=engine.name, attempts=attempts, reason=reason,
                            to=self.fallback.name if self.fallback else None)

    async def _dispatch(self, node_id: str, run_id: str, thunk: Thunk) -> ExecutionResult:
        job = self._job(run_id, thunk)
        try:
            engine, reasons = self._choose_engine(job)
        except NodeFailed as failure:
            raise self._fail(NodeFailed(node_id, str(failure))) from None
        if reasons:
            cause = "unavailable" if any(id(e) in self._abandoned for e in self.engines) else "refused"
            self._moved[node_id] = (cause, self.engines[0].name, "; ".join(reasons))
            self.observer.event("fallback", thunk=node_id, to=engine.name, reason="; ".join(reasons))
        attempt = 0
        while True:
            attempt += 1
            job = self._job(run_id, thunk, attempt)
            try:
                result = await self._attempt(node_id, engine, job)
            except ConfigError as exc:
                raise self._fatal(node_id, exc) from None
            except ExecutionFailed as exc:
                raise self._fail(NodeFailed(node_id, str(exc), exc.describe())) from None
            except (MissingBlob, CorruptBlob):
                raise  # _dispatch_regenerating decides
            except StoreError as exc:
                raise self._fail(NodeFailed(node_id, f"thunk {run_id}: {exc}")) from None
            except InfrastructureError as exc:
                fallback = self.fallback
                usable = fallback is not None and engine is not fallback and fallback.refuses(job) is None
                move_to = fallback if usable else None
                tail = exc.output_tail if isinstance(exc, ResourceExhausted) else ""
                if isinstance(exc, ResourceExhausted) and move_to is not None:
                    # The same kind of worker would run out again: straight to the fallback.
                    self._move(node_id, "resources", engine, str(exc), tail)
                    engine, attempt = move_to, 0
                    continue
                abandoned = self._abandoned.get(id(engine))
                if attempt < self.config.max_attempts and abandoned is None:
                    delay = backoff_delay(attempt, self.config.backoff_initial, self.config.backoff_max)
                    self.observer.event("retried", thunk=node_id, engine=engine.name, attempt=attempt,
                                        error=str(exc), delay=round(delay, 3))
                    await asyncio.sleep(delay)
                    continue
                if abandoned is None and engine is not fallback and not isinstance(exc, ResourceExhausted):
                    self._abandon(engine, attempt, str(exc))
                if move_to is not None:
                    self._move(node_id, "unavailable", engine, str(exc))
                    engine, attempt = move_to, 0
                    continue
                if abandoned is not None:  # another node already reported the lost engine
                    raise DependencyFailed(node_id, f"{engine.name} {abandoned}") from None
                message = f"thunk {run_id}: gave up after {attempt} attempts on {engine.name}: {exc}"
                report = message + ("\n  output (tail of stdout and stderr):\n" + "\n".join(
                    "    " + line for line in tail.rstrip().splitlines()[-20:]) if tail.strip() else "")
                raise self._fail(NodeFailed(node_id, message, report)) from None
            return result

    def _fatal(self, node_id: str, error: ConfigError) -> NodeFailed:
        """A setting is wrong: the whole run stops (even with keep_going) with its line."""
        if self.config_error is None:
            self.config_error = error
        self._stop.set()
        failure = NodeFailed(node_id, str(error))
        self.observer.event("failed", thunk=node_id, error=str(error))
        return failure

    def fallback_summary(self) -> list[str]:
        """One line per reason work ran on the fallback engine instead (empty if none):
        a result by a slower path is said out loud."""
        if self.fallback is None:
            return []
        where = "locally" if self.fallback.name == "local" else f"on {self.fallback.name}"
        total = self.executed
        by_cause: dict[str, list[tuple[str, str]]] = {}
        for node_id in self._ran_on_fallback:
            cause, engine, reason = self._moved.get(node_id, ("unavailable", "", ""))
            by_cause.setdefault(cause, []).append((engine, reason))
        lines = []
        for name, (attempts, reason) in self.lost_engines.items():
            count = len(by_cause.pop("unavailable", []))
            lines.append(f"{name.capitalize()} unavailable after {attempts} attempts ({reason}); "
                         f"{count} of {total} thunks ran {where}")
        if moved := by_cause.pop("refused", []):
            lines.append(f"{len(moved)} of {total} thunks ran {where}: {moved[0][1]}"
                         + (" (and others)" if len(moved) > 1 else ""))
        if moved := by_cause.pop("resources", []):
            lines.append(f"{len(moved)} of {total} thunks ran {where} after running out of resources on "
                         f"{moved[0][0]}: {moved[0][1]}")
        for moved in by_cause.values():  # moved for a reason no longer current
            lines.append(f"{len(moved)} of {total} thunks ran {where}: {moved[0][1]}")
        return lines

    def _speculation_delay(self) -> float | None:
        config = self.config
        if not config.speculate:
            return None
        count = len(self._durations)
        if count < config.speculate_samples:
            return config.speculate_initial
        # The median is recomputed when the samples have grown by an eighth, not on
        # every attempt: sorting them all per thunk made a large build quadratic.
        computed, median = self._median
        if count >= computed + max(1, computed >> 3):
            median = statistics.median(self._durations)
            self._median = (count, median)
        return max(config.speculate_min, config.speculate_factor * median)

    def _thunk_priority(self, node_id: str, thunk: Thunk) -> float:
        return 0.0 if self._fifo else self._paths.priority(node_id, thunk.function_hash)

    def _priority(self, node_id: str, job: Job) -> float:
        return self._thunk_priority(node_id, job.thunk)

    async def _take_turn(self, node_id: str, thunk: Thunk) -> None:
        await self._turns.acquire(self._thunk_priority(node_id, thunk))
        self._holding_turn.add(node_id)

    def _end_turn(self, node_id: str) -> None:
        """Give ``node_id``'s turn back (it has a slot now, or left dispatch); idempotent."""
        if node_id in self._holding_turn:
            self._holding_turn.discard(node_id)
            self._turns.release()

    async def _run_once(
        self, node_id: str, engine: Engine, job: Job, holding: bool = False
    ) -> tuple[ExecutionResult, float]:
        """Run with a slot (critical path first): waited for here, or already held by
        the caller (``holding``, who then releases it). Returns the result and the time
        it ran (not queued)."""
        counts = self.observer.counts
        slots = self._slots[id(engine)]
        if not holding:
            await slots.acquire(self._priority(node_id, job))
            self._end_turn(node_id)
        try:
            counts.running += 1
            if self._tracing:
                self.observer.event("started", thunk=node_id, ran=job.thunk_id, engine=engine.name,
                                    attempt=job.attempt)
            started = time.monotonic()
            try:
                return await engine.run(job), time.monotonic() - started
            finally:
                counts.running -= 1
        finally:
            if not holding:
                slots.release()

    async def _attempt(self, node_id: str, engine: Engine, job: Job) -> ExecutionResult:
        """One attempt, duplicated once if it straggles; the first success wins.

        The straggler clock starts when the attempt gets a slot, not when it is queued:
        waiting for a slot is not straggling. Without speculation the attempt runs in
        this task. With it, this task waits for the slot itself (a thunk waiting for a
        slot costs no task of its own), then runs the attempt as a task, the clock as
        a timer, and sleeps on one future that either of them wakes.
        """
        delay = self._speculation_delay()
        if delay is None:
            result, duration = await self._run_once(node_id, engine, job)
            self._finished(node_id, engine, job, result, duration)
            return result
        slots = self._slots[id(engine)]
        await slots.acquire(self._priority(node_id, job))
        self._end_turn(node_id)
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()
        straggling = False

        def wake_up(_: object = None) -> None:
            if not wake.done():
                wake.set_result(None)

        def straggle() -> None:
            nonlocal straggling
            straggling = True
            wake_up()

        attempts: list[asyncio.Task[tuple[ExecutionResult, float]]] = []
        timer: asyncio.TimerHandle | None = None
        speculated = False
        error: BaseException | None = None
        try:
            primary = loop.create_task(self._run_once(node_id, engine, job, holding=True))
            primary.add_done_callback(wake_up)
            attempts.append(primary)
            timer = loop.call_later(delay, straggle)
            while True:
                await wake
                wake = loop.create_future()
                for task in [task for task in attempts if task.done()]:
                    attempts.remove(task)
                    exception = task.exception()
                    if exception is None:
                        result, duration = task.result()
                        self._finished(node_id, engine, job, result, duration)
                        return result
                    # An execution failure is final even if a duplicate is still running.
                    if isinstance(exception, ExecutionFailed) or error is None:
                        error = exception
                    if isinstance(error, ExecutionFailed):
                        raise error
                if not attempts:
                    assert error is not None
                    raise error
                if straggling and not speculated:
                    speculated = True
                    self.observer.event("speculated", thunk=node_id, engine=engine.name)
                    duplicate = loop.create_task(self._run_once(node_id, engine, job))
                    duplicate.add_done_callback(wake_up)
                    attempts.append(duplicate)
        finally:
            if timer is not None:
                timer.cancel()
            for task in attempts:
                task.cancel()
            if attempts:
                await asyncio.gather(*attempts, return_exceptions=True)
            slots.release()  # the primary's slot: it has ended (or never started) by now

    def _finished(self, node_id: str, engine: Engine, job: Job, result: ExecutionResult, duration: float) -> None:
        self._durations.append(duration)
        self.estimates.record(node_id, job.thunk.function_hash, duration)
        self.executed += 1
        self.ran_on[engine.name] = self.ran_on.get(engine.name, 0) + 1
        if engine is self.fallback and engine not in self.engines:
            self._ran_on_fallback.append(node_id)
        self.observer.counts.done += 1
        if not self._tracing:
            self.observer.tick()
            return
        self.observer.event(
            "finished", thunk=node_id, ran=job.thunk_id, engine=engine.name, attempt=job.attempt,
            duration=round(duration, 6), outputs=[o.id for o in result.outputs],
            bytes_out=sum(parse_id(o.id).size for o in result.outputs), bytes_in=_input_bytes(job.thunk),
        )
