"""``gg trace simulate TRACE --workers N --invoke-latency MS``: what the same build
would take on N remote workers, predicted from a recorded trace.

Why: a user should know whether a build is worth sending to Lambda before paying for
it. The trace already holds what the prediction needs: each thunk's run time
(``finished.duration``), the graph (``queued.deps``, ``tailcall.next``) and the
coordinator's own gaps between events.

The model (docs/trace.md, "gg trace simulate"):

* The graph is the one :func:`executor.trace_summary.critical_path` evaluates: a node
  runs once its dependencies have their final values and the run that created it (by a
  tail call) has ended; its final value exists once its tail calls have theirs. Nodes
  that were cached, failed or never finished cost nothing.
* Every node that ran costs the **coordinator** ``coordinator`` seconds of serial work
  (one event loop prepares thunks one at a time, and may prepare ahead while workers
  are busy), then occupies one **worker** for ``invoke_latency + duration``.
* Policy: *list scheduling, longest remaining path first* (``critical-path``, the
  default). Whenever the coordinator or a worker is free, it takes the ready thunk
  whose remaining path to the end of the build (its own cost plus the costliest chain
  after it) is longest — the ideal critical-path-first dispatch. ``fifo`` takes them
  in the order they became ready (ties: the order the trace first saw them), which is
  what a scheduler without duration estimates does.

With one worker and no coordinator cost the prediction is the serial sum of
``latency + duration``; with unlimited workers it is the critical path with the latency
added to each of its thunks. Both bounds are printed beside the prediction.
"""

from __future__ import annotations

import bisect
import heapq
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ir.cli_errors import CliError

from .trace_summary import Node, Trace, _nodes, _number

POLICIES = ("critical-path", "fifo")
POLICY_TEXT = {"critical-path": "list scheduling, longest remaining path first",
               "fifo": "list scheduling, first ready first (gg-force's dispatch order before critical-path-first)"}
DEFAULT_COORDINATOR_MS = 2.0  # per thunk, when the trace has no gaps to measure it from

Vertex = tuple[str, str]  # ("run" | "final", node ID)


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. ``workers=None`` is unlimited; times are in seconds."""

    workers: int | None
    invoke_latency: float
    coordinator: float
    policy: str = "critical-path"  # or "fifo"


@dataclass(frozen=True)
class Prediction:
    wall: float  # predicted wall time
    serial: float  # one worker, no overlap: sum of latency + duration (+ coordinator) over runs
    critical_path: float  # unlimited workers and a free coordinator: longest chain of latency + duration
    runs: int  # thunks that cost a worker


def _graph(nodes: dict[str, Node]) -> dict[Vertex, list[Vertex]]:
    """vertex -> the vertices it waits for (the same rules as the critical path)."""
    needs: dict[Vertex, list[Vertex]] = {}
    for ident, item in nodes.items():
        run = [("final", d) for d in item.deps if d in nodes]
        if item.creator in nodes:
            run.append(("run", item.creator))
        needs[("run", ident)] = run
        needs[("final", ident)] = [("run", ident)] + [("final", t) for t in item.tails if t in nodes]
    return needs


def _topological(needs: dict[Vertex, list[Vertex]]) -> list[Vertex]:
    waiting = {v: len(set(n)) for v, n in needs.items()}
    users: dict[Vertex, list[Vertex]] = defaultdict(list)
    for vertex, needed in needs.items():
        for other in set(needed):
            users[other].append(vertex)
    order = [v for v, count in waiting.items() if count == 0]
    for vertex in order:  # grows while iterating: Kahn's algorithm
        for user in users[vertex]:
            waiting[user] -= 1
            if waiting[user] == 0:
                order.append(user)
    if len(order) != len(needs):
        raise CliError("the trace's dependencies form a cycle; it cannot be simulated")
    return order


def simulate(nodes: dict[str, Node], config: SimulationConfig) -> Prediction:
    """List-schedule the recorded graph on ``config.workers`` workers (see the module doc)."""
    if config.workers is not None and config.workers < 1:
        raise CliError("--workers must be at least 1")
    needs = _graph(nodes)
    order = _topological(needs)
    users: dict[Vertex, list[Vertex]] = defaultdict(list)
    for vertex, needed in needs.items():
        for other in set(needed):
            users[other].append(vertex)

    def work(vertex: Vertex) -> float:  # worker time; 0 for vertices that are not runs
        item = nodes[vertex[1]]
        return config.invoke_latency + item.duration if vertex[0] == "run" and item.finished else 0.0

    runs = [v for v in order if v[0] == "run" and nodes[v[1]].finished]
    costly = set(runs)
    # Remaining path (priority) and the critical path, one pass each over the DAG.
    remaining: dict[Vertex, float] = {}
    for vertex in reversed(order):
        own = work(vertex) + (config.coordinator if vertex in costly else 0.0)
        remaining[vertex] = own + max((remaining[u] for u in users[vertex]), default=0.0)
    earliest: dict[Vertex, float] = {}
    for vertex in order:
        earliest[vertex] = work(vertex) + max((earliest[n] for n in needs[vertex]), default=0.0)
    critical = max(earliest.values(), default=0.0)
    serial = sum(work(v) for v in runs)
    if config.policy not in POLICIES:
        raise CliError(f"unknown policy {config.policy!r} (one of {', '.join(POLICIES)})")
    first_seen = {v: nodes[v[1]].first_seen for v in order}
    wall = _list_schedule(order, needs, users, costly, work, remaining, config, first_seen)
    return Prediction(wall=wall, serial=serial, critical_path=critical, runs=len(runs))


def _list_schedule(order, needs, users, costly, work, remaining, config: SimulationConfig,
                   first_seen: dict[Vertex, int] | None = None) -> float:
    """The discrete-event simulation: a serial coordinator feeding ``workers`` workers."""
    fifo = config.policy == "fifo"
    became_ready: dict[Vertex, float] = {}

    def key(vertex: Vertex) -> tuple:
        if fifo:  # the order thunks became ready, then the order the trace first saw them
            return (became_ready[vertex], (first_seen or {}).get(vertex, 0), vertex[1], vertex)
        return (-remaining[vertex], vertex[1], vertex)

    waiting = {v: len(set(needs[v])) for v in order}
    events: list[tuple[float, int, str, Vertex]] = []  # (time, sequence, kind, vertex)
    prepare: list[tuple[float, str, Vertex]] = []  # ready for the coordinator, by priority
    dispatch: list[tuple[float, str, Vertex]] = []  # prepared, waiting for a worker
    free = float("inf") if config.workers is None else config.workers
    coordinator_busy = False
    sequence = 0
    now = 0.0

    def push(time: float, kind: str, vertex: Vertex) -> None:
        nonlocal sequence
        sequence += 1
        heapq.heappush(events, (time, sequence, kind, vertex))

    def ready(vertex: Vertex) -> None:
        if vertex in costly:
            became_ready[vertex] = now
            heapq.heappush(prepare, key(vertex))
        else:
            push(now, "done", vertex)

    for vertex in order:
        if waiting[vertex] == 0:
            ready(vertex)
    finish = 0.0
    while True:
        # Settle everything that happens at `now` before choosing what starts next.
        while events and events[0][0] <= now:
            _, _, kind, vertex = heapq.heappop(events)
            if kind == "prepared":
                coordinator_busy = False
                heapq.heappush(dispatch, key(vertex))
                continue
            if kind == "done" and vertex in costly:
                free += 1
            finish = max(finish, now)
            for user in users[vertex]:
                waiting[user] -= 1
                if waiting[user] == 0:
                    ready(user)
        if not coordinator_busy and prepare:
            vertex = heapq.heappop(prepare)[-1]
            coordinator_busy = True
            push(now + config.coordinator, "prepared", vertex)
            if config.coordinator == 0:
                continue  # prepare everything ready now before any of it takes a worker
        while free > 0 and dispatch:
            vertex = heapq.heappop(dispatch)[-1]
            free -= 1
            push(now + work(vertex), "done", vertex)
        if not events:
            break
        now = events[0][0]
    return finish


def measured_coordinator(trace: Trace, nodes: dict[str, Node]) -> float | None:
    """Median coordinator time per run thunk, from the trace's own gaps, in seconds.

    Per node that ran: ``started.t`` minus the moment it could have started — the latest
    of its ``queued`` event, the moment each dependency's engine returned (its
    ``started.t + duration``; a cached one's ``cached`` event) and the last moment
    before it that an attempt on the same engine returned (a slot came free). That gap
    is the coordinator's work between one thunk's end and the next one's start
    (recording results, rewriting, loading, cache checks). Nodes reached by tail calls
    are left out (their readiness is not in the trace); the median damps the odd gap
    where something else held the coordinator.
    """
    queued: dict[str, float] = {}
    first_start: dict[str, tuple[float, str]] = {}
    last_start: dict[str, float] = {}
    returned: dict[str, float] = {}  # node -> when its engine returned (or it was found cached)
    engine_returns: dict[str, list[float]] = defaultdict(list)
    for event in trace.events:
        kind, ident, t = event.get("event"), event.get("thunk"), _number(event.get("t"))
        if not isinstance(ident, str):
            continue
        if kind == "queued":
            queued.setdefault(ident, t)
        elif kind == "started":
            first_start.setdefault(ident, (t, str(event.get("engine"))))
            last_start[ident] = t
        elif kind == "cached":
            returned.setdefault(ident, t)
        elif kind == "finished" and ident in last_start:
            end = last_start[ident] + _number(event.get("duration"))
            returned[ident] = end
            engine_returns[str(event.get("engine"))].append(end)
    for ends in engine_returns.values():
        ends.sort()
    gaps: list[float] = []
    for ident, (start, engine) in first_start.items():
        item = nodes.get(ident)
        if item is None or item.creator is not None or ident not in queued:
            continue
        if any(d not in returned or nodes[d].tails for d in item.deps if d in nodes):
            continue
        ends = engine_returns[engine]
        freed = ends[bisect.bisect_right(ends, start) - 1] if ends and ends[0] <= start else 0.0
        ready = max([queued[ident], freed, *(returned[d] for d in item.deps if d in nodes)])
        gaps.append(max(0.0, start - ready))
    return statistics.median(gaps) if gaps else None


def report(trace: Trace, workers: list[int], invoke_latency_ms: float,
           coordinator_ms: float | None, policy: str = "critical-path") -> dict[str, Any]:
    """Predictions for each worker count, as a JSON-ready dict."""
    nodes = _nodes(trace.events)
    measured = measured_coordinator(trace, nodes)
    if coordinator_ms is not None:
        coordinator, source = coordinator_ms / 1000, "given"
    elif measured is not None:
        coordinator, source = measured, "measured from the trace (median gap)"
    else:
        coordinator, source = DEFAULT_COORDINATOR_MS / 1000, f"default ({DEFAULT_COORDINATOR_MS:g} ms)"
    latency = invoke_latency_ms / 1000
    if latency < 0 or coordinator < 0:
        raise CliError("--invoke-latency and --coordinator-ms must not be negative")
    rows = []
    for count in workers:
        prediction = simulate(nodes, SimulationConfig(count, latency, coordinator, policy))
        rows.append({"workers": count, "predicted": round(prediction.wall, 6)})
    bounds = simulate(nodes, SimulationConfig(None, latency, 0.0))
    done = next((e for e in reversed(trace.events) if e.get("event") == "done"), None)
    engines = sorted({str(n.finished.get("engine")) for n in nodes.values() if n.finished})
    return {
        "policy": POLICY_TEXT[policy] + "; one serial coordinator",
        "thunks_run": bounds.runs,
        "invoke_latency_ms": invoke_latency_ms,
        "coordinator_ms": round(coordinator * 1000, 3),
        "coordinator_source": source,
        "recorded_elapsed": _number(done.get("elapsed")) if done else None,
        "recorded_engines": engines,
        "serial_sum": round(bounds.serial, 6),
        "critical_path": round(bounds.critical_path, 6),
        "predictions": rows,
        "notes": list(trace.notes),
    }


def render(result: dict[str, Any], name: str) -> str:
    out = [f"note: {note}" for note in result["notes"]]
    elapsed = result["recorded_elapsed"]
    out.append(f"{name}: {result['thunks_run']} thunks run"
               + (f" on {', '.join(result['recorded_engines'])}" if result["recorded_engines"] else "")
               + (f", recorded wall {elapsed:.3f} s" if elapsed is not None else ""))
    out.append(f"model: {result['policy']}; invoke latency {result['invoke_latency_ms']:g} ms, "
               f"coordinator {result['coordinator_ms']:g} ms/thunk ({result['coordinator_source']})")
    if any(engine != "local" for engine in result["recorded_engines"]):
        out.append("note: durations recorded on a remote engine already include its invocation overhead")
    out.append("")
    out.append(f"{'workers':>8} {'predicted s':>12}")
    for row in result["predictions"]:
        out.append(f"{row['workers']:>8} {row['predicted']:>12.3f}")
    out.append("")
    out.append(f"serial sum (1 worker, latency included):         {result['serial_sum']:.3f} s")
    out.append(f"critical path (unlimited workers, latency incl.): {result['critical_path']:.3f} s")
    return "\n".join(out) + "\n"
