"""``gg trace FILE``: what a ``gg-force --trace`` run did, and where its time went.

A trace is JSON lines (schema in docs/force.md). The summary gives totals and the
cache-hit ratio, time per engine, the slowest thunks, failures and retries, and the
**critical path**: the chain of runs that bounded the wall-clock time even with
unlimited parallelism. A node becomes ready when every dependency has its final value;
a thunk reached through a tail call also waits for the run that returned it; a node
that tail-calls is finished only when its tail is. Cached nodes cost nothing.

A run killed mid-write leaves a truncated last line: it is skipped with a one-line
note, so a trace is always readable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ir.errors import UsageError

PATH_ROWS = 8  # critical-path rows shown at each end in text output


@dataclass
class Node:
    thunk: str
    deps: list[str] = field(default_factory=list)
    tails: list[str] = field(default_factory=list)
    cached: bool = False
    started: bool = False
    finished: dict[str, Any] | None = None
    failed: str | None = None
    first_seen: int = -1  # index of the node's first event in the trace
    creator: str | None = None  # the node whose tail call brought this one into existence

    @property
    def duration(self) -> float:
        return _number(self.finished.get("duration")) if self.finished else 0.0


def _number(value: Any) -> float:
    """A trace field as a number; anything odd (a hand-edited trace) counts as 0."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        return 0.0
    return result if result == result and result not in (float("inf"), float("-inf")) else 0.0


@dataclass
class Trace:
    events: list[dict[str, Any]]
    notes: list[str]


def read_trace(path: Path) -> Trace:
    """Parse a trace; a truncated last line or stray bad lines become notes, not errors."""
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    events: list[dict[str, Any]] = []
    notes: list[str] = []
    bad = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "event" not in record:
                raise ValueError("not an event")
        except (ValueError, UnicodeDecodeError):
            if number == len(lines):
                notes.append(f"line {number} is truncated (was gg-force killed?); ignored")
            else:
                bad += 1
            continue
        events.append(record)
    if bad:
        notes.append(f"{bad} malformed line(s) skipped")
    return Trace(events, notes)


def _nodes(events: list[dict[str, Any]]) -> dict[str, Node]:
    nodes: dict[str, Node] = {}

    tailcalls: list[tuple[int, str, str]] = []

    def node(ident: str, index: int) -> Node:
        return nodes.setdefault(ident, Node(ident, first_seen=index))

    for index, event in enumerate(events):
        kind, ident = event.get("event"), event.get("thunk")
        if not isinstance(ident, str):
            continue
        current = node(ident, index)
        if kind == "queued":
            deps = event.get("deps")
            current.deps = [d for d in deps if isinstance(d, str)] if isinstance(deps, list) else []
        elif kind == "cached":
            current.cached = True
        elif kind == "started":
            current.started = True
        elif kind == "finished":
            current.finished = event
        elif kind == "failed":
            current.failed = str(event.get("error", ""))
        elif kind == "tailcall" and isinstance(event.get("next"), str):
            current.tails.append(event["next"])
            node(event["next"], index + 1)
            tailcalls.append((index, ident, event["next"]))
    _find_creators(nodes, tailcalls)
    return nodes


def _find_creators(nodes: dict[str, Node], tailcalls: list[tuple[int, str, str]]) -> None:
    """A thunk returned by a tail call, and every thunk first seen after that call and
    reachable from it through dependencies, was written by the run that made the call:
    it cannot have started before that run ended (fib(n) creates fib(n-1) and fib(n-2))."""
    for index, parent, target in tailcalls:  # in trace order: later calls override
        stack = [target]
        while stack:
            ident = stack.pop()
            item = nodes.get(ident)
            if item is None or item.first_seen <= index or item.creator == parent or ident == parent:
                continue
            item.creator = parent
            stack.extend(item.deps)


def critical_path(nodes: dict[str, Node]) -> tuple[float, list[dict[str, Any]]]:
    """(length in seconds, steps) of the longest chain of run durations.

    Two quantities per node, evaluated as a DAG:
    ``run(N) = max(final(dep) for deps, run(creator)) + duration(N)``, where the creator is
    the run whose tail call wrote N (see :func:`_find_creators`),
    and ``final(N) = max(run(N), final(tail) for its tail calls)``. Evaluated with an
    explicit stack (graphs can be deeper than Python's recursion limit); a cycle, which
    a sane trace cannot contain, is cut rather than followed.
    """

    def needs(vertex: tuple[str, str]) -> list[tuple[str, str]]:
        kind, ident = vertex
        item = nodes[ident]
        if kind == "run":
            created = [("run", item.creator)] if item.creator in nodes else []
            return [("final", d) for d in item.deps if d in nodes] + created
        return [("run", ident)] + [("final", t) for t in item.tails]

    value: dict[tuple[str, str], float] = {}
    source: dict[tuple[str, str], tuple[str, str] | None] = {}
    visiting: set[tuple[str, str]] = set()
    for root in nodes:
        stack = [("final", root)]
        while stack:
            vertex = stack[-1]
            if vertex in value:
                stack.pop()
                continue
            if vertex not in visiting:
                visiting.add(vertex)
                stack.extend(v for v in needs(vertex) if v not in value and v not in visiting)
                continue
            stack.pop()
            best, best_from = 0.0, None
            for other in needs(vertex):
                if other in value and (value[other] > best or best_from is None):
                    best, best_from = value[other], other
            if vertex[0] == "run":
                best += nodes[vertex[1]].duration
            value[vertex], source[vertex] = best, best_from
    if not value:
        return 0.0, []
    end = max((v for v in value if v[0] == "final"), key=lambda v: (value[v], v[1]))
    steps: list[dict[str, Any]] = []
    step: tuple[str, str] | None = end
    previous_kind = ""
    seen: set[tuple[str, str]] = set()
    while step is not None and step not in seen:
        seen.add(step)
        if step[0] == "run":
            item = nodes[step[1]]
            if steps:
                steps[-1]["reached_by"] = "created by" if previous_kind == "run" else "dependency"
            steps.append({
                "thunk": item.thunk,
                "duration": round(item.duration, 6),
                "end": round(value[step], 6),
                "how": "run" if item.finished else ("cached" if item.cached else "not run"),
                "engine": item.finished.get("engine") if item.finished else None,
                "reached_by": "start",
            })
        previous_kind = step[0]
        step = source.get(step)
    steps.reverse()
    return round(value[end], 6), steps


def summarize(trace: Trace, top: int = 10) -> dict[str, Any]:
    """Everything ``gg trace`` reports, as a JSON-ready dict."""
    events = trace.events
    nodes = _nodes(events)
    done = next((e for e in reversed(events) if e.get("event") == "done"), None)
    kinds = Counter(str(e.get("event")) for e in events)
    finished = [n for n in nodes.values() if n.finished]
    cached = [n for n in nodes.values() if n.cached and not n.finished]
    settled = len(finished) + len(cached)
    engines: dict[str, dict[str, Any]] = {}
    for item in finished:
        event = item.finished or {}
        stats = engines.setdefault(str(event.get("engine", "?")), {
            "thunks": 0, "busy_seconds": 0.0, "max_seconds": 0.0, "bytes_in": 0, "bytes_out": 0})
        stats["thunks"] += 1
        stats["busy_seconds"] += item.duration
        stats["max_seconds"] = max(stats["max_seconds"], item.duration)
        stats["bytes_in"] += int(_number(event.get("bytes_in")))
        stats["bytes_out"] += int(_number(event.get("bytes_out")))
    for stats in engines.values():
        stats["mean_seconds"] = round(stats["busy_seconds"] / stats["thunks"], 6)
        stats["busy_seconds"] = round(stats["busy_seconds"], 6)
    slowest = sorted(finished, key=lambda n: (-n.duration, n.thunk))[:top]
    length, path = critical_path(nodes)
    elapsed = _number(done.get("elapsed")) if done else max((_number(e.get("t")) for e in events), default=0.0)
    unfinished = [n.thunk for n in nodes.values() if n.started and not n.finished and not n.failed]

    def pick(kind: str, *keys: str) -> list[dict[str, Any]]:
        return [{k: e.get(k) for k in ("t", "thunk", *keys) if k in e} for e in events if e.get("event") == kind]

    return {
        "status": done.get("status") if done else "incomplete (no 'done' event)",
        "elapsed": elapsed,
        "notes": list(trace.notes),
        "totals": {
            "thunks": len(nodes), "run": len(finished), "cached": len(cached),
            "failed": kinds["failed"], "retried": kinds["retried"], "speculated": kinds["speculated"],
            "fallbacks": kinds["fallback"], "tail_calls": kinds["tailcall"], "unfinished": len(unfinished),
            "executed_reported": done.get("executed") if done else None,
        },
        "cache_hit_ratio": round(len(cached) / settled, 4) if settled else None,
        "engines": engines,
        "slowest": [{"thunk": n.thunk, "duration": round(n.duration, 6),
                     "engine": (n.finished or {}).get("engine"), "attempt": (n.finished or {}).get("attempt")}
                    for n in slowest],
        "critical_path": {"seconds": length, "thunks": len(path), "steps": path},
        "failures": pick("failed", "engine", "error"),
        "retries": pick("retried", "engine", "attempt", "error", "delay"),
        "fallbacks": pick("fallback", "from", "to", "reason"),
        "abandoned": pick("abandoned", "engine", "attempts", "reason", "to"),
        "speculations": pick("speculated", "engine"),
        "unfinished": unfinished,
        "transfer": next(({k: v for k, v in e.items() if k not in ("t", "event")}
                          for e in reversed(events) if e.get("event") == "transfer"), None),
    }


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def render(summary: dict[str, Any], name: str) -> str:
    """The human-readable report."""
    out: list[str] = []
    totals = summary["totals"]
    elapsed = float(summary["elapsed"] or 0)
    for note in summary["notes"]:
        out.append(f"note: {note}")
    out.append(f"{name}: status {summary['status']}, elapsed {elapsed:.3f} s")
    ratio = summary["cache_hit_ratio"]
    out.append(
        f"thunks: {totals['thunks']} seen, {totals['run']} run, {totals['cached']} cached "
        f"(cache hits {'n/a' if ratio is None else f'{ratio:.1%}'}), {totals['failed']} failed, "
        f"{totals['retried']} retried, {totals['speculated']} speculated, {totals['fallbacks']} fallbacks, "
        f"{totals['tail_calls']} tail calls"
        + (f", {totals['unfinished']} never finished" if totals["unfinished"] else ""))
    if summary["engines"]:
        out.append("")
        out.append(f"{'engine':<10} {'thunks':>7} {'busy s':>10} {'mean s':>9} {'max s':>9} "
                   f"{'bytes in':>11} {'bytes out':>11}")
        for engine, stats in sorted(summary["engines"].items()):
            out.append(f"{engine:<10} {stats['thunks']:>7} {stats['busy_seconds']:>10.3f} "
                       f"{stats['mean_seconds']:>9.3f} {stats['max_seconds']:>9.3f} "
                       f"{_size(stats['bytes_in']):>11} {_size(stats['bytes_out']):>11}")
    if transfer := summary.get("transfer"):
        moved = (f"{_size(int(_number(transfer.get('bytes_up'))))} up, "
                 f"{_size(int(_number(transfer.get('bytes_down'))))} down") if "bytes_up" in transfer else "not counted"
        out.append(f"remote store {transfer.get('storage')}: {moved}")
    if summary["slowest"]:
        out.append("")
        out.append("slowest thunks:")
        for item in summary["slowest"]:
            out.append(f"  {item['duration']:9.3f} s  {item['engine'] or '?':<8} {item['thunk']}")
    path = summary["critical_path"]
    if path["steps"]:
        share = f" ({path['seconds'] / elapsed:.0%} of elapsed)" if elapsed > 0 else ""
        out.append("")
        out.append(f"critical path: {path['thunks']} thunk(s), {path['seconds']:.3f} s{share}")
        steps = path["steps"]
        shown = steps if len(steps) <= 2 * PATH_ROWS else [*steps[:PATH_ROWS], None, *steps[-PATH_ROWS:]]
        for step in shown:
            if step is None:
                out.append(f"  ... {len(steps) - 2 * PATH_ROWS} more ...")
                continue
            out.append(f"  {step['end']:9.3f} s  +{step['duration']:.3f}  {step['how']:<7} "
                       f"{step['reached_by']:<10} {step['thunk']}")
    if summary["failures"] or summary["retries"] or summary["fallbacks"]:
        out.append("")
    for item in summary["failures"]:
        out.append(f"failed: {item.get('thunk')}: {item.get('error')}")
    if summary["retries"]:
        reasons = Counter(str(item.get("error")) for item in summary["retries"])
        out.append(f"retries: {len(summary['retries'])}")
        for reason, count in reasons.most_common(5):
            out.append(f"  {count} x {reason}")
    for item in summary.get("abandoned", []):
        out.append(f"abandoned: {item.get('engine')} at {float(item.get('t') or 0):.3f} s after "
                   f"{item.get('attempts')} attempts ({item.get('reason')}); the rest went to {item.get('to')}")
    for item in summary["fallbacks"]:
        source = f"from {item['from']} " if item.get("from") else ""
        out.append(f"fallback: {item.get('thunk')} {source}to {item.get('to')}: {item.get('reason')}")
    if summary["unfinished"]:
        out.append(f"never finished (started, no result): {len(summary['unfinished'])}")
    return "\n".join(out) + "\n"


def _worker_counts(text: str) -> list[int]:
    """``--workers 4`` or ``--workers 1,4,16``."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a worker count: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be at least 1: {text!r}")
    return counts


def _handle(args: argparse.Namespace) -> int:
    simulate_only = ("workers", "invoke_latency", "coordinator_ms", "policy")
    if args.file == "simulate" and args.simulated is not None:
        return _handle_simulate(args)
    if args.simulated is not None:
        raise UsageError(f"unexpected argument {args.simulated!r} (did you mean 'gg trace simulate FILE'?)")
    given = [name for name in simulate_only if getattr(args, name) is not None]
    if given:
        raise UsageError(f"--{given[0].replace('_', '-')} belongs to 'gg trace simulate FILE'")
    path = Path(args.file)
    trace = read_trace(path)
    if args.chrome is not None:
        from .trace_chrome import write_chrome

        namer, note = _namer()
        count = write_chrome(Path(args.chrome), trace, namer)
        print(f"wrote {count} trace events to {args.chrome}" + (f" ({note})" if note else ""), file=sys.stderr)
        return 0
    summary = summarize(trace, top=args.top)
    return _print(summary, args.json, lambda: render(summary, str(path)))


def _namer():
    """Spans are named by command when the store ($GG_DIR or .gg above) holds the thunks."""
    from ir.store import LocalStore, StoreError

    from .trace_chrome import store_namer

    try:
        return store_namer(LocalStore.locate()), ""
    except StoreError as exc:
        return (lambda ident: None), f"spans named by thunk ID: {exc}"


def _handle_simulate(args: argparse.Namespace) -> int:
    from .trace_simulate import render as render_simulation
    from .trace_simulate import report

    if args.chrome is not None:
        raise UsageError("--chrome belongs to 'gg trace FILE', not 'gg trace simulate'")
    if args.workers is None or args.invoke_latency is None:
        raise UsageError("gg trace simulate needs --workers N and --invoke-latency MS")
    path = Path(args.simulated)
    result = report(read_trace(path), args.workers, args.invoke_latency, args.coordinator_ms,
                    args.policy or "critical-path")
    return _print(result, args.json, lambda: render_simulation(result, str(path)))


def _print(result: dict, as_json: bool, text: Callable[[], str]) -> int:
    """Print a report as JSON (``--json``) or as the text its renderer makes."""
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text())
    return 0


def add(sub) -> None:
    """Register ``gg trace FILE`` and ``gg trace simulate FILE``."""
    parser = sub.add_parser("trace", help="summarise, simulate or export a gg-force --trace file", description=(
        "gg trace FILE: summarise a trace written by gg-force --trace (totals, cache-hit ratio, time per "
        "engine, slowest thunks, the critical path, failures and retries); with --chrome OUT.json, write it "
        "in Chrome's Trace Event Format instead (Perfetto, chrome://tracing). "
        "gg trace simulate FILE --workers N --invoke-latency MS: predict the wall time of the same build "
        "on N remote workers (list scheduling, longest remaining path first)."))
    parser.add_argument("file", metavar="FILE", help="a trace written by gg-force --trace FILE (or 'simulate')")
    parser.add_argument("simulated", nargs="?", default=None, metavar="TRACE",
                        help="with 'simulate': the trace to simulate")
    parser.add_argument("--json", action="store_true", help="print the summary (or prediction) as JSON")
    parser.add_argument("--top", type=int, default=10, metavar="N", help="slowest thunks to list (default 10)")
    parser.add_argument("--chrome", metavar="OUT.json", default=None,
                        help="write the trace in Chrome's Trace Event Format to OUT.json")
    parser.add_argument("--workers", type=_worker_counts, default=None, metavar="N[,N...]",
                        help="simulate: remote worker counts to predict for")
    parser.add_argument("--invoke-latency", type=float, default=None, metavar="MS",
                        help="simulate: what one remote invocation adds to a thunk's run time, in ms")
    parser.add_argument("--policy", choices=("critical-path", "fifo"), default=None,
                        help="simulate: dispatch order, longest remaining path first (default) or first ready first")
    parser.add_argument("--coordinator-ms", type=float, default=None, metavar="MS",
                        help="simulate: coordinator time per thunk (default: measured from the trace's gaps)")
    parser.set_defaults(handler=_handle)
