"""The scheduler: force thunk references to values, running each distinct thunk once.

Each thunk in the graph is a *node*, memoized by thunk ID, so a subgraph shared by many
parents runs once. A node is a small record, not a task: the graph is discovered
top-down in batches, a node counts its dependencies not yet reduced, and the last one
to finish makes it *ready*; a ready node waits in one priority queue (critical path
first) and runs in a task only once it gets a slot (a task that finishes a node goes
on with the best one waiting). Waiting costs no coroutine, and a reduced node leaves
the graph for its outputs, so a 100,000-thunk graph is at most 100,000 records and a few
tasks per engine slot. A node:

1. checks the reductions first — a hit costs no run and loads no dependencies —
   the local ones, then those in the remote store when the run shares results
   (:mod:`executor.remote_results`; every thunk of the graph is looked up in one batch
   before anything is dispatched, and a remote record is a claim whose values are
   verified when used);
2. loads the thunk and forces its thunk inputs (they are nodes too);
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
import collections
import functools
import re
import statistics
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ir.errors import ConfigError, UserError
from ir.ids import InvalidId, Ref, parse_id, parse_ref
from ir.retry import backoff_delay
from ir.storage import LeasingStorage, StorageError
from ir.store import CorruptBlob, LocalStore, MissingBlob, StoreError
from ir.thunk import Input, MalformedThunk, Thunk

from .critical_path import DurationEstimates, PrioritySlots, RemainingPath
from .engine import DEFAULT_THUNK_TIMEOUT, Engine, Job
from .execution import ExecutionFailed, ExecutionResult, InfrastructureError, ResourceExhausted, describe_output
from .gc_pacing import fewer_collections
from .inflight import DEFAULT_LEASE_SECONDS, Claim, InFlight
from .observe import RunObserver
from .remote_results import SharedResults

# Key of a node's result map that stands for its first output (what a bare thunk ID
# means). The empty string can never be an output tag, so it cannot collide with one.
FIRST = ""

DISPATCH_ORDERS = ("critical-path", "fifo")

# Nodes visited per turn of the event loop while a graph is discovered: large enough
# to cost little, small enough that ready nodes start while a big graph is still read.
DISCOVERY_BATCH = 512

# Records are written in batches (one append each, :meth:`Scheduler._write_records`): when
# this many are queued, else this many seconds after the first was. A thunk's lock is
# held until its records are written, so the delay is what a concurrent forcer waiting
# for one of them may wait longer (it polls anyway); this run's own slots are free at once.
RECORD_BATCH = 1024

# Ready nodes one task runs in a row (:meth:`Scheduler._execute`): a task that finishes a
# node goes on with the best one waiting instead of ending and leaving it to a grant (two
# turns of the event loop and a new task per run). Bounded, so an engine that answers at
# once (a cache, a peer's record) still lets the loop turn: discovery, timers, the rest.
RUNS_PER_TASK = 16
RECORD_DELAY = 0.01

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
    # Ready nodes that may wait for a slot before discovery pauses (each holds its thunk
    # in memory), or 4 per slot if that is more; it resumes when half have started.
    ready_queue: int = 4096


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
        ident, _, tag = item.ref.partition("#")  # checked when the thunk was loaded
        values.append(Input(value_of(ident, tag), item.name))

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


class _Node:
    """One thunk of the graph, as the scheduler tracks it (a record, not a task).

    ``pending`` counts dependencies not reduced yet; ``deps`` are their IDs; ``parents``
    are the nodes waiting for this one; ``waiters`` are futures handed out by
    :meth:`Scheduler._node`. ``thunk`` is kept only until the node settles (the rewritten
    one once ``run_id`` is set). A node reduced leaves the graph for its outputs
    (``Scheduler._reduced``): a finished graph holds IDs and outputs, not records -- the
    records alive are those discovered and not yet reduced, which is also what the garbage
    collector walks (a record per node ever seen made its collections a tenth of a run).
    """

    __slots__ = ("id", "thunk", "run_id", "deps", "pending", "parents", "waiters", "outputs", "error", "priority")

    def __init__(self, thunk_id: str):
        self.id = thunk_id
        self.thunk: Thunk | None = None
        self.run_id = thunk_id
        self.deps: tuple[str, ...] = ()
        self.pending = 0
        self.parents: _Node | list[_Node] | None = None  # one parent (the usual) is not a list
        self.waiters: list[asyncio.Future[dict[str, str]]] | None = None
        self.outputs: dict[str, str] | None = None
        self.error: BaseException | None = None
        self.priority = 0.0  # its place in the ready queue (executor/critical_path.py)


class _Watch:
    """An attempt watched for straggling (speculation): when it passes ``deadline`` a
    duplicate runs; ``outcome`` is what the duplicate brought if it ended first."""

    __slots__ = ("node_id", "engine", "job", "task", "deadline", "duplicate", "outcome", "finished")

    def __init__(self, node_id: str, engine: Engine, job: Job, task: asyncio.Task[Any], deadline: float):
        self.node_id = node_id
        self.engine = engine
        self.job = job
        self.task = task
        self.deadline = deadline
        self.duplicate: asyncio.Task[tuple[ExecutionResult, float]] | None = None
        self.outcome: tuple[ExecutionResult, float] | BaseException | None = None
        self.finished = False


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
        self._nodes: dict[str, _Node] = {}  # discovered, not reduced (failed ones stay)
        self._reduced: dict[str, dict[str, str]] = {}  # node ID -> its outputs
        self._undiscovered: list[_Node] = []  # new nodes to visit (depth first)
        self._discovering = False  # a _discover_some call is scheduled
        self._paused = False  # discovery waits for the ready queue to drain (ForceConfig.ready_queue)
        self._settled: collections.deque[_Node] = collections.deque()  # nodes whose news is being passed on
        self._waking = False
        # The nodes running (or following tail calls), by spawn number.
        self._active: dict[int, asyncio.Task[None]] = {}
        self._spawned = 0
        # Slots are granted critical-path first: by each node's estimated remaining path
        # (executor/critical_path.py), from ``estimates`` (earlier runs; this run's own
        # measurements are added as it goes).
        self._slots = {id(e): PrioritySlots(e.slots) for e in every}
        self.estimates = estimates or DurationEstimates()
        self._paths = RemainingPath(self.estimates)
        if self.config.dispatch not in DISPATCH_ORDERS:
            raise ValueError(f"unknown dispatch order {self.config.dispatch!r}")
        self._fifo = self.config.dispatch == "fifo"
        self._durations: list[float] = []
        # Records queued for one append per batch (RECORD_BATCH), and the claims whose
        # locks wait for it.
        self._unwritten = 0  # records queued (LocalStore.put_reductions(defer=True))
        self._write_soon = False  # a _write_records call is scheduled for this loop turn
        self._write_timer: asyncio.TimerHandle | None = None  # ... or for RECORD_DELAY later
        self._unreleased: list[Claim] = []
        self._record_failed = False
        self._watching: set[_Watch] = set()  # attempts that may straggle (speculation)
        self._straggler_timer: asyncio.TimerHandle | None = None
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
        self._ready_high = max(self.config.ready_queue, 4 * sum(e.slots for e in every))
        self._inflight = InFlight(store, leases if isinstance(leases, LeasingStorage) else None, self.observer,
                                  self._local, self._remote_hit, slots=sum(e.slots for e in every),
                                  period=self.config.lease_seconds, on_error=self.share_errors.append)
        self._queue = self._inflight.ready_queue  # for len(): checked per node discovered and settled

    @property
    def peer_reduced(self) -> int:
        """Thunks a concurrent run reduced while this one waited for it."""
        return self._inflight.peer_reduced

    # -- public -------------------------------------------------------------------

    async def force(self, refs: Sequence[str],
                    arriving: asyncio.Queue[list[str] | None] | None = None) -> dict[str, str]:
        """Reduce every ref (``T``, ``T#tag`` or a value ID) to a value ID.

        ``arriving``: more refs, in batches, while the run goes on (``None`` ends them);
        the run ends when every ref given or arrived is reduced and no more can come.
        (gg-infer's early forcing: the build names its outputs one by one.)"""
        with fewer_collections():
            return await self._force(refs, arriving)

    async def _force(self, refs: Sequence[str],
                     arriving: asyncio.Queue[list[str] | None] | None = None) -> dict[str, str]:
        parsed: dict[str, Ref] = {}
        targets: dict[str, asyncio.Future[dict[str, str]]] = {}
        results: dict[str, str] = {}

        async def add(batch: Sequence[str]) -> set[asyncio.Future[Any]]:
            new = {ref: parse_ref(ref) for ref in batch if ref not in parsed}
            parsed.update(new)
            await self._look_up_graph([p.id for p in new.values() if p.is_thunk])
            added = {ref: self._node(p.id) for ref, p in new.items() if p.is_thunk}
            targets.update(added)
            results.update((ref, ref) for ref, p in new.items() if not p.is_thunk)
            return set(added.values())

        pending: set[asyncio.Future[Any]] = await add(refs)
        stop = asyncio.ensure_future(self._stop.wait())
        more: asyncio.Future[list[str] | None] | None = None
        if arriving is not None:
            more = asyncio.ensure_future(arriving.get())
        try:
            while (pending or more is not None) and not self._stop.is_set():
                done, _ = await asyncio.wait({*pending, stop, *([more] if more else [])},
                                             return_when=asyncio.FIRST_COMPLETED)
                pending -= done
                if more is not None and more in done:
                    batch = more.result()
                    more = None if batch is None or arriving is None else asyncio.ensure_future(arriving.get())
                    pending |= await add(batch or [])
        finally:
            stop.cancel()
            if more is not None:
                more.cancel()
            if self._straggler_timer is not None:
                self._straggler_timer.cancel()
                self._straggler_timer = None
            await self._cancel_all()
            self._write_records()  # what finished is recorded even if the run failed
            await self._flush_sharing()  # ... and shared
        for ref, future in targets.items():
            if not future.done() or future.cancelled() or future.exception() is not None:
                continue
            outputs = future.result()
            tag = parsed[ref].tag
            if tag is not None and tag not in outputs:
                self._failures.append(NodeFailed(parsed[ref].id, f"thunk {parsed[ref].id} has no output {tag!r}"))
                continue
            results[ref] = outputs[tag or FIRST]
        if self.config_error is not None:
            raise self.config_error
        if self._failures or len(results) < len(parsed):
            failures = self._failures or [NodeFailed("", "the run stopped before every target was reduced")]
            raise ForceFailed(failures, results)
        return results

    async def _cancel_all(self) -> None:
        pending = [task for task in self._active.values() if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for node in self._nodes.values():  # nobody is left to wake them
            for waiter in node.waiters or ():
                waiter.cancel()
            node.waiters = None

    # -- nodes ----------------------------------------------------------------------
    #
    # A node is a record (_Node), not a task: the graph is discovered top-down in
    # batches, a node with dependencies counts the ones not reduced yet, and the last of
    # them to finish makes it ready. A ready node waits in the claim slots' priority
    # queue (executor/inflight.py, critical path first) as a callback; only when it gets
    # a slot does it run in a task (_execute, which then runs the next best ready node
    # while a slot is free, up to RUNS_PER_TASK). So a 100,000-thunk graph is at most
    # 100,000 small records (a reduced one leaves for its outputs, _reduced) and a few
    # tasks per engine slot, not 100,000 suspended coroutines.

    def _node(self, thunk_id: str) -> asyncio.Future[dict[str, str]]:
        """A future of ``thunk_id``'s outputs (tag -> value ID, plus ``FIRST``); the node
        is discovered if it is new."""
        future: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        reduced = self._reduced.get(thunk_id)
        if reduced is not None:
            future.set_result(reduced)
            return future
        node = self._nodes.get(thunk_id)
        if node is None:
            node = self._new_node(thunk_id)
        if node.outputs is not None:
            future.set_result(node.outputs)
        elif node.error is not None:
            future.set_exception(node.error)
        elif node.waiters is None:
            node.waiters = [future]
        else:
            node.waiters.append(future)
        return future

    def _new_node(self, thunk_id: str) -> _Node:
        node = self._nodes[thunk_id] = _Node(thunk_id)
        self._undiscovered.append(node)
        if not self._paused:
            self._schedule_discovery()
        return node

    def _schedule_discovery(self) -> None:
        """Have :meth:`_discover_some` run on the next loop turn (once)."""
        if not self._discovering:
            self._discovering = True
            asyncio.get_running_loop().call_soon(self._discover_some)

    def _discover_some(self) -> None:
        """Visit up to DISCOVERY_BATCH nodes, then let the loop run (ready nodes start
        while a large graph is still being discovered); pause while the ready queue is
        full (:meth:`_maybe_resume` goes on)."""
        undiscovered, queue, high = self._undiscovered, self._queue, self._ready_high
        for _ in range(DISCOVERY_BATCH):
            if not undiscovered or len(queue) >= high:
                break
            node = undiscovered.pop()
            try:
                self._visit(node)
            except Exception as exc:  # noqa: BLE001 -- a bug must fail its node loudly, not stop discovery
                self._settle_error(node, self._internal(node.id, exc))
        self._discovering = False
        if undiscovered and not self._stop.is_set():
            if len(queue) >= high:
                self._paused = True  # _maybe_resume goes on
            else:
                self._schedule_discovery()

    def _visit(self, node: _Node) -> None:
        """Load a node's thunk and check its reductions: a hit costs no run and loads
        no dependencies; else its dependencies become nodes too."""
        if node.outputs is not None or node.error is not None:
            return  # settled meanwhile (a dependency failed)
        counts = self.observer.counts
        counts.discovered += 1
        thunk_id = node.id
        try:
            thunk = self.store.load_thunk(thunk_id)
        except (StoreError, MalformedThunk, InvalidId) as exc:
            self._settle_error(node, self._fail(NodeFailed(thunk_id, str(exc))))
            return
        if self._tracing:
            self.observer.event("queued", thunk=thunk_id, deps=sorted({item.id for item in thunk.thunks}))
        else:
            self.observer.tick()
        cached = self._local(thunk_id, thunk, fresh=False)
        if cached is None and self.shared is not None and thunk_id not in self._looked_up:
            # Off the graph looked up at the start (a tail call, a rebuild): ask first.
            self._spawn(node, self._visit_after_look_up(node, thunk))
            return
        self._visit_loaded(node, thunk, cached)

    async def _visit_after_look_up(self, node: _Node, thunk: Thunk) -> None:
        await self._look_up(self._refs(node.id, thunk))
        self._visit_loaded(node, thunk, self._local(node.id, thunk, fresh=False))

    def _visit_loaded(self, node: _Node, thunk: Thunk, cached: dict[str, str] | None) -> None:
        thunk_id = node.id
        remote = cached is None and (cached := self._claimed(thunk_id, thunk)) is not None
        if cached is not None:
            self._hit(thunk_id, thunk_id, thunk, cached, remote, ran=False)
            self._finish(node, cached, (thunk_id,))
            return
        node.thunk = thunk
        if not thunk.thunks:
            node.run_id = thunk_id
            self._ready(node)
            return
        dep_ids = sorted({item.id for item in thunk.thunks})
        self._paths.below(thunk_id, thunk.function_hash, dep_ids)
        pending = 0
        nodes, reduced = self._nodes, self._reduced
        for dep_id in dep_ids:
            dep = nodes.get(dep_id)
            if dep is None:
                if dep_id in reduced:
                    continue
                dep = self._new_node(dep_id)
            if dep.error is not None:
                self._dependency_failed(node, dep_id)
                return
            if dep.outputs is None:
                parents = dep.parents
                if parents is None:
                    dep.parents = node
                elif isinstance(parents, list):
                    parents.append(node)
                else:
                    dep.parents = [parents, node]
                pending += 1
        node.deps = tuple(dep_ids)
        node.pending = pending
        if pending == 0:
            self._deps_done(node)

    def _deps_done(self, node: _Node) -> None:
        """Every dependency is reduced: rewrite the thunk with their values (gg's rule),
        store it, and check the rewritten ID's reductions before making it ready."""
        thunk = node.thunk
        assert thunk is not None
        thunk_id = node.id
        try:
            runnable = rewrite(thunk, {dep_id: self._outputs_of(dep_id) for dep_id in node.deps})
        except KeyError as exc:
            self._settle_error(node, self._fail(NodeFailed(thunk_id, f"a dependency has no output {exc}")))
            return
        node.deps = ()
        try:
            run_id = self.store.put_thunk(runnable)
        except StoreError as exc:
            self._settle_error(node, self._fail(NodeFailed(thunk_id, f"storing its rewritten thunk: {exc}")))
            return
        cached = self._local(run_id, runnable, fresh=False)
        remote = cached is None and (cached := self._claimed(run_id, runnable)) is not None
        if cached is not None:
            self._hit(thunk_id, run_id, runnable, cached, remote, ran=True)
            if not remote:
                self._record(thunk_id, runnable, cached)
            self._finish(node, cached, (thunk_id, run_id))
            return
        node.thunk, node.run_id = runnable, run_id
        self._ready(node)

    def _outputs_of(self, thunk_id: str) -> dict[str, str]:
        """A reduced node's outputs (KeyError if it has none)."""
        outputs = self._reduced.get(thunk_id)
        if outputs is None:
            node = self._nodes.get(thunk_id)
            outputs = node.outputs if node is not None else None
            if outputs is None:
                raise KeyError(thunk_id)
        return outputs

    def _hit(self, thunk_id: str, run_id: str, thunk: Thunk, cached: dict[str, str], remote: bool,
             ran: bool) -> None:
        """A node reduced by a record (local, or a remote claim): said, counted, remembered."""
        self._remember_producer(thunk_id, run_id, thunk, cached, remote)
        self.observer.counts.cached += 1
        self.remote_hits += remote
        extra: dict[str, Any] = {"ran": run_id} if ran else {}
        if remote:
            extra["remote"] = True
        self.observer.event("cached", thunk=thunk_id, result=cached[FIRST], **extra)

    def _ready(self, node: _Node) -> None:
        """Queue a node that must run: it starts when it gets a claim slot."""
        assert node.thunk is not None
        node.priority = self._thunk_priority(node.id, node.thunk)
        self._inflight.when_free(node.priority, self._start, node)

    def _start(self, node: _Node) -> None:
        """Called with a claim slot held for ``node``: run it as a task."""
        if self._startable(node):
            key = self._spawned = self._spawned + 1
            self._active[key] = asyncio.get_running_loop().create_task(self._execute(node, key))

    def _startable(self, node: _Node) -> bool:
        """A node granted a claim slot may run (else the slot is given back)."""
        if self._paused:
            self._maybe_resume()
        if self._stop.is_set() or node.outputs is not None or node.error is not None:
            self._inflight.give_back_slot()
            return False
        return True

    def _next_ready(self) -> _Node | None:
        """The best ready node, with a claim slot, if one is free for it now."""
        while (node := self._inflight.next_ready(self._start)) is not None:
            if self._startable(node):
                return node
        return None

    def _maybe_resume(self) -> None:
        """Resume discovery paused for a full ready queue once half of it has started."""
        if self._paused and len(self._queue) <= self._ready_high // 2:
            self._paused = False
            if self._undiscovered:
                self._schedule_discovery()

    def _spawn(self, node: _Node, work: Coroutine[Any, Any, None]) -> None:
        key = self._spawned = self._spawned + 1
        self._active[key] = asyncio.get_running_loop().create_task(self._guarded(node, work, key))

    async def _guarded(self, node: _Node, work: Coroutine[Any, Any, None], key: int) -> None:
        """Run a node's async work; whatever fails, the node settles with it."""
        try:
            await work
        except Exception as exc:  # noqa: BLE001 -- a bug fails its node (and says so), not the loop
            self._settle_failure(node, exc)
        finally:
            del self._active[key]

    def _settle_failure(self, node: _Node, exc: Exception) -> None:
        """The node settles with its failure, or with an internal error naming a bug
        (cancellation is not an ``Exception``: it goes on up)."""
        self._settle_error(node, exc if isinstance(exc, NodeFailed) else self._internal(node.id, exc))

    def _internal(self, thunk_id: str, exc: BaseException) -> NodeFailed:
        return self._fail(NodeFailed(thunk_id, f"internal error: {type(exc).__name__}: {exc}"))

    async def _execute(self, node: _Node, key: int) -> None:
        """A task running ready nodes (``_start``): ``node``, then the best one waiting
        while a slot is free for it (up to RUNS_PER_TASK). Whatever fails, its node
        settles with it (``_guarded``'s handling: this runs per thunk)."""
        try:
            runs = 0
            while True:
                try:
                    await self._execute_one(node)
                except Exception as exc:  # noqa: BLE001 -- a bug fails its node (and says so), not the loop
                    self._settle_failure(node, exc)
                runs += 1
                if runs >= RUNS_PER_TASK or (next_node := self._next_ready()) is None:
                    return
                node = next_node
        finally:
            del self._active[key]

    async def _execute_one(self, node: _Node) -> None:
        """Run a ready node holding a claim slot: claim the thunk (executor/inflight.py; a
        peer may have it), dispatch it, record it. The slot is free again when it returns."""
        thunk_id, run_id, runnable = node.id, node.run_id, node.thunk
        assert runnable is not None
        slot = True  # given to the claim below, or back
        try:
            if self.shared is not None and run_id != thunk_id:
                await self._look_up(self._refs(run_id, runnable))  # the rewritten ID: one request
                cached = self._claimed(run_id, runnable)
                if cached is not None:
                    self._inflight.give_back_slot()
                    slot = False
                    self._hit(thunk_id, run_id, runnable, cached, True, ran=True)
                    self._finish(node, cached, (thunk_id, run_id))
                    return
            slot = False
            try:
                claim = (self._inflight.try_claim(thunk_id, run_id, runnable)
                         or await self._inflight.claim(thunk_id, run_id, runnable, node.priority, slot=True))
            except ConfigError as exc:
                raise self._fatal(thunk_id, exc) from None
        finally:
            if slot:
                self._inflight.give_back_slot()
        if claim.outputs is not None:
            self._remember_producer(thunk_id, run_id, runnable, claim.outputs)
            self._finish(node, claim.outputs, (thunk_id, run_id))
            return
        try:
            try:
                result = await self._dispatch(thunk_id, run_id, runnable)
            except (MissingBlob, CorruptBlob) as missing:  # corrupt in the remote store: as good as gone
                result, run_id, runnable = await self._regenerate_input(thunk_id, run_id, runnable, claim, missing)
            outputs = {o.tag: o.id for o in result.outputs}
            cached = {FIRST: outputs[runnable.outputs[0]], **outputs}
            if self._lost:
                self._lost.difference_update(cached.values())
            self._remember_producer(thunk_id, run_id, runnable, cached)
            if result.output:  # before the records: whoever finds them finds the output kept
                self._keep_output(sorted({run_id, thunk_id}), run_id, runnable, result.output)
            for ident in {run_id, thunk_id}:
                self._record(ident, runnable, cached)
        except BaseException:
            self._inflight.abandon(claim)
            raise
        self._release_when_written(claim)
        if self.shared is not None and self.shared.writes:  # in the background: not on the critical path
            task = asyncio.get_running_loop().create_task(
                self._share(sorted({run_id, thunk_id}), runnable, cached, claim))
            self._sharing.add(task)
        self._finish(node, cached, (thunk_id, run_id))

    def _finish(self, node: _Node, outputs: dict[str, str], chain: tuple[str, ...]) -> None:
        """Settle ``node`` with ``outputs``, after following tail calls if any is a thunk."""
        for result in outputs.values():
            if result[0] == "T":
                self._spawn(node, self._follow_then_settle(node, outputs, chain))
                return
        self._settle(node, outputs)

    async def _follow_then_settle(self, node: _Node, outputs: dict[str, str], chain: tuple[str, ...]) -> None:
        self._settle(node, await self._follow_tail_calls(node.id, outputs, chain))

    def _settle(self, node: _Node, outputs: dict[str, str]) -> None:
        """``node`` is reduced: wake whoever waits, and the parents it was the last
        dependency of (iteratively: a long chain of cached nodes must not recurse)."""
        node.outputs = outputs
        node.thunk = None
        nodes = self._nodes
        if nodes.get(node.id) is node:
            del nodes[node.id]
            self._reduced[node.id] = outputs
        elif node.id not in nodes:  # dropped to rebuild a lost value while it followed a tail call
            self._reduced.setdefault(node.id, outputs)
        self._wake(node)

    def _settle_error(self, node: _Node, error: BaseException) -> None:
        """``node`` failed: so does every parent waiting for it (a DependencyFailed)."""
        if node.outputs is not None or node.error is not None:
            return
        node.error = error
        node.thunk = None
        self._wake(node)

    def _dependency_failed(self, node: _Node, dep_id: str) -> None:
        """``dep_id`` failed, so ``node`` fails (counted, not reported: the root cause is)."""
        self.observer.counts.failed += 1
        self._settle_error(node, DependencyFailed(node.id, f"dependency {dep_id} failed"))

    def _wake(self, node: _Node) -> None:
        self._settled.append(node)
        if self._waking:
            return
        self._waking = True
        try:
            settled = self._settled
            while settled:
                done = settled.popleft()
                waiters, done.waiters = done.waiters, None
                parents, done.parents = done.parents, None
                error, outputs = done.error, done.outputs
                for waiter in waiters or ():
                    if waiter.done():
                        continue
                    if outputs is not None:
                        waiter.set_result(outputs)
                    elif error is not None:
                        waiter.set_exception(error)
                if parents is None:
                    continue
                for parent in parents if isinstance(parents, list) else (parents,):
                    if parent.outputs is not None or parent.error is not None:
                        continue
                    if error is not None:
                        self._dependency_failed(parent, done.id)  # queued behind this loop, not recursed
                        continue
                    parent.pending -= 1
                    if parent.pending == 0:
                        try:
                            self._deps_done(parent)
                        except Exception as exc:  # noqa: BLE001 -- as in _discover_some
                            self._settle_error(parent, self._internal(parent.id, exc))
        finally:
            self._waking = False
        if self._paused:
            self._maybe_resume()

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
            if self._local(thunk_id, thunk, fresh=False) is not None:
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

    def _local(self, thunk_id: str, thunk: Thunk, fresh: bool = True) -> dict[str, str] | None:
        """The local records of ``thunk_id``, if usable. ``fresh=False`` (discovery) may
        miss a concurrent run's record of the last 50 ms: the claim, which re-checks
        freshly under the thunk's lock (executor/inflight.py), finds it then."""
        # The bare ID's record is written last: without it there is no hit, and a cold
        # build asks only this one record per node.
        get = self.store.get_reduction
        first = get(thunk_id, fresh)
        if first is None:
            return None
        outputs: dict[str, str | None] = {FIRST: first}
        for tag in thunk.outputs:
            outputs[tag] = get(f"{thunk_id}#{tag}", fresh)
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

    def _record(self, thunk_id: str, thunk: Thunk, outputs: dict[str, str]) -> None:
        """Queue ``thunk_id``'s records (the bare ID last: its presence is what _local()
        checks first); :meth:`_write_records` writes them with the rest of their batch
        in one append (see RECORD_BATCH)."""
        records = [(f"{thunk_id}#{tag}", outputs[tag]) for tag in thunk.outputs]
        records.append((thunk_id, outputs[FIRST]))
        self.store.put_reductions(records, defer=True)
        self._unwritten += len(records)
        self._schedule_write()

    def _keep_output(self, thunk_ids: list[str], run_id: str, thunk: Thunk, output: bytes) -> None:
        """Show what a successful run printed and keep it with its reduction (a blob and
        a record per ID, ``LocalStore.keep_output``), for gg-infer to replay on a warm
        build as ccache replays a hit's warnings. Only thunks that printed get here."""
        self.observer.thunk_output(describe_output(run_id, thunk, output))
        try:
            self.store.keep_output(thunk_ids, output)
        except (OSError, StoreError) as exc:  # the output was shown; only its replay is lost, and said
            self.observer.thunk_output(f"could not keep the output of thunk {run_id} for later builds: {exc}\n")

    def _release_when_written(self, claim: Claim) -> None:
        """The claim's thunk is recorded (queued): its slot is free now, its lock once the
        records are written -- a peer that finds the lock free must find the records."""
        self._inflight.ran(claim)
        self._unreleased.append(claim)
        self._schedule_write()

    def _schedule_write(self) -> None:
        """Have :meth:`_write_records` run RECORD_DELAY from now, or at once when
        RECORD_BATCH records wait."""
        if self._unwritten >= RECORD_BATCH:
            if not self._write_soon:
                self._write_soon = True
                asyncio.get_running_loop().call_soon(self._write_records)
        elif self._write_timer is None:
            self._write_timer = asyncio.get_running_loop().call_later(RECORD_DELAY, self._write_records)

    def _write_records(self) -> None:
        """Write the queued records (one append), then release the locks that waited for
        them. Called per batch (:meth:`_schedule_write`), before a lost value is rebuilt
        and before the run returns. A failure to write fails the run with one line (the
        values are right, but the records another run would use are not there)."""
        self._write_soon = False
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        self._unwritten = 0
        claims, self._unreleased = self._unreleased, []
        try:
            self.store.flush_reductions()
        except (OSError, StoreError) as exc:
            if not self._record_failed:
                self._record_failed = True
                self._fail(NodeFailed(claims[0].run_id if claims else "", f"recording reductions: {exc}"))
        finally:
            for claim in claims:
                self._inflight.recorded(claim)

    async def _follow_tail_calls(
        self, thunk_id: str, outputs: dict[str, str], chain: tuple[str, ...]
    ) -> dict[str, str]:
        """Replace every output that is a thunk by the value it reduces to (any depth)."""
        if not any(result[0] == "T" for result in outputs.values()):
            return outputs  # no tail call: nearly always
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

    async def _regenerate_input(self, node_id: str, run_id: str, thunk: Thunk, claim: Claim,
                                missing: MissingBlob | CorruptBlob) -> tuple[ExecutionResult, str, Thunk]:
        """A dispatch found input ``missing.ident`` gone from every store: rebuild it once
        and dispatch again. Returns the result and the thunk that ran (and its ID).

        A cached reduction can outlive its result (a bucket emptied, a blob removed as
        corrupt). gg retried such thunks forever; here the producer's reductions are
        dropped, the producer runs again (outputs are content-addressed, so it makes the
        same value), and this thunk is dispatched once more. If only a remote record
        vouched for the input, the rerun may make another value (the record was forged):
        the thunk is rewritten with it, so it runs -- and is recorded -- as what it is.
        """
        self._inflight.lend_slot(claim)  # the producer needs one; this node waits for it holding none
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
            self._write_records()
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
        self._write_records()  # the queued records first: a tombstone must come after them
        for thunk_id in {node_id, run_id}:
            for tag in tags:
                self.store.forget_reduction(f"{thunk_id}#{tag}")
            self.store.forget_reduction(thunk_id)
        self._nodes.pop(node_id, None)
        self._reduced.pop(node_id, None)
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
            if job.attempt != attempt:
                job = self._job(run_id, thunk, attempt)
            try:
                result = await self._attempt(node_id, engine, job)
            except ConfigError as exc:
                raise self._fatal(node_id, exc) from None
            except ExecutionFailed as exc:
                raise self._fail(NodeFailed(node_id, str(exc), exc.describe())) from None
            except (MissingBlob, CorruptBlob):
                raise  # _execute decides (_regenerate_input)
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
        # The median is recomputed when the samples have grown by a quarter, not on
        # every attempt: sorting them all per thunk made a large build quadratic.
        computed, median = self._median
        if count >= computed + max(1, computed >> 2):
            median = statistics.median(self._durations)
            self._median = (count, median)
        return max(config.speculate_min, config.speculate_factor * median)

    def _thunk_priority(self, node_id: str, thunk: Thunk) -> float:
        return 0.0 if self._fifo else self._paths.priority(node_id, thunk.function_hash)

    def _priority(self, node_id: str, job: Job) -> float:
        return self._thunk_priority(node_id, job.thunk)

    async def _run_once(self, node_id: str, engine: Engine, job: Job) -> tuple[ExecutionResult, float]:
        """A straggler's duplicate (:meth:`_check_stragglers`): run with a slot (critical
        path first), taken at once if free, else waited for here. Returns the result and
        the time it ran (not queued)."""
        counts = self.observer.counts
        slots = self._slots[id(engine)]
        if not slots.try_acquire():
            await slots.acquire(self._priority(node_id, job))
        try:
            counts.running += 1
            self._started(node_id, engine, job)
            started = time.monotonic()
            try:
                return await engine.run(job), time.monotonic() - started
            finally:
                counts.running -= 1
        finally:
            slots.release()

    def _started(self, node_id: str, engine: Engine, job: Job) -> None:
        if self._tracing:
            self.observer.event("started", thunk=node_id, ran=job.thunk_id, engine=engine.name, attempt=job.attempt)
        else:
            self.observer.tick()  # the progress line waits for this start (progress.py)

    async def _attempt(self, node_id: str, engine: Engine, job: Job) -> ExecutionResult:
        """One attempt with a slot (critical path first: taken at once if free, else
        waited for), duplicated once if it straggles; the first success wins.

        The straggler clock starts when the attempt gets a slot, not when it is queued:
        waiting for a slot is not straggling. The attempt runs in the node's own task
        either way; with speculation it is also *watched* (one timer for the whole run,
        :meth:`_check_stragglers`, not one per attempt), and a straggler's duplicate runs
        as a task that, if it wins, interrupts this one. One coroutine frame for all of
        it (it runs once per thunk): the duplicate alone goes through :meth:`_run_once`.
        """
        delay = self._speculation_delay()
        slots = self._slots[id(engine)]
        if not slots.try_acquire():
            await slots.acquire(self._priority(node_id, job))
        watch = None
        try:
            if delay is not None:
                task = asyncio.current_task()
                assert task is not None
                watch = _Watch(node_id, engine, job, task, asyncio.get_running_loop().time() + delay)
                self._watch(watch)
            counts = self.observer.counts
            counts.running += 1
            self._started(node_id, engine, job)
            started = time.monotonic()
            try:
                try:
                    result = await engine.run(job)
                finally:
                    counts.running -= 1
                duration = time.monotonic() - started
            except asyncio.CancelledError:
                # Interrupted by the duplicate (it won, or failed for good), unless this
                # task was also cancelled from outside.
                outcome = watch.outcome if watch is not None else None
                if outcome is None or watch is None or watch.task.uncancel() > 0:
                    raise
                if isinstance(outcome, BaseException):
                    raise outcome from None
                result, duration = outcome
            except ExecutionFailed:
                raise  # final, even if a duplicate is still running
            except BaseException as error:
                duplicate = watch.duplicate if watch is not None else None
                if duplicate is None or isinstance(error, ConfigError):
                    raise
                watch.finished = True  # type: ignore[union-attr]
                try:  # the duplicate may still succeed
                    result, duration = await duplicate
                except ExecutionFailed:
                    raise
                except Exception:  # noqa: BLE001 -- both failed: the first failure is the one to report
                    raise error from None
        finally:
            if watch is not None:
                watch.finished = True
                self._watching.discard(watch)
                duplicate = watch.duplicate
                if duplicate is not None and not duplicate.done():
                    duplicate.cancel()
                    await asyncio.gather(duplicate, return_exceptions=True)
            slots.release()  # the primary's slot: it has ended by now
        self._finished(node_id, engine, job, result, duration)
        return result

    def _watch(self, watch: _Watch) -> None:
        self._watching.add(watch)
        timer = self._straggler_timer
        if timer is None or timer.when() > watch.deadline:
            if timer is not None:
                timer.cancel()
            self._straggler_timer = asyncio.get_running_loop().call_at(watch.deadline, self._check_stragglers)

    def _check_stragglers(self) -> None:
        """Duplicate every watched attempt past its deadline; wake again at the next one."""
        self._straggler_timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        next_deadline = None
        for watch in [w for w in self._watching if w.deadline <= now]:
            self._watching.discard(watch)
            self.observer.event("speculated", thunk=watch.node_id, engine=watch.engine.name)
            duplicate = loop.create_task(self._run_once(watch.node_id, watch.engine, watch.job))
            watch.duplicate = duplicate
            duplicate.add_done_callback(functools.partial(self._duplicate_done, watch))
        for watch in self._watching:
            if next_deadline is None or watch.deadline < next_deadline:
                next_deadline = watch.deadline
        if next_deadline is not None:
            self._straggler_timer = loop.call_at(next_deadline, self._check_stragglers)

    @staticmethod
    def _duplicate_done(watch: _Watch, duplicate: asyncio.Task[tuple[ExecutionResult, float]]) -> None:
        """A duplicate ended while its primary still runs: a success (or a final failure)
        interrupts the primary with it; an infrastructure failure leaves the primary be."""
        if watch.finished or duplicate.cancelled():
            return
        error = duplicate.exception()
        if error is None:
            watch.outcome = duplicate.result()
        elif isinstance(error, ExecutionFailed):
            watch.outcome = error
        else:
            return
        watch.finished = True
        watch.task.cancel()

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
