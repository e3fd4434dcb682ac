"""``gg trace TRACE --chrome OUT.json``: a gg-force trace in Chrome's Trace Event Format.

Why: to *look* at a run the way Bazel's ``--profile`` or ninja's traces are looked at,
in Perfetto (ui.perfetto.dev) or ``chrome://tracing``. One process per engine, one
thread (lane) per slot: the trace does not name slots, so lanes are reconstructed by
giving each attempt the lowest-numbered lane free when it started, which uses exactly
as many lanes as attempts ran at once on that engine. Process 0 ("coordinator") holds
what happens outside engines (cache hits, tail calls, failures, the end of the run).

* every attempt is a complete event (``ph: "X"``, ``ts``/``dur`` in µs from the run's
  start) named by the thunk's command when the store holds the thunk, by its ID
  otherwise; ``args`` carry the thunk ID, the attempt, its bytes and its ``outcome``
  (``ok``, ``retried``, ``failed``, ``duplicate lost``, ``unfinished``);
* retries, speculated duplicates, fallbacks, cache hits, tail calls, regenerations,
  abandoned engines and failures are instant events (``ph: "i"``);
* lanes and processes are named by metadata events (``ph: "M"``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ir.atomic import atomic_write_bytes

from .trace_summary import Trace, _number

COORDINATOR_PID = 0
NAME_LIMIT = 120  # characters of a command shown as a span's name

Namer = Callable[[str], "str | None"]


def store_namer(store) -> Namer:
    """Names thunks by their command line (argv0's basename and the arguments)."""

    def name(ident: str) -> str | None:
        try:
            thunk = store.load_thunk(ident)
        except Exception:  # noqa: BLE001 - a missing or odd thunk only costs its name
            return None
        words = [os.path.basename(thunk.args[0]), *thunk.args[1:]]
        text = " ".join(" ".join(words).split())  # one line: scripts' newlines become spaces
        return text if len(text) <= NAME_LIMIT else text[: NAME_LIMIT - 1] + "…"

    return name


def _us(seconds: float) -> float:
    return round(seconds * 1_000_000, 3)


class _Builder:
    """Turns trace events, in order, into Chrome events."""

    def __init__(self, namer: Namer):
        self.namer = namer
        self.names: dict[str, str] = {}
        self.out: list[dict[str, Any]] = []
        self.pids: dict[str, int] = {}
        self.open: list[dict[str, Any]] = []  # attempts started, not yet ended
        self.closed: list[dict[str, Any]] = []  # ended attempts, given lanes at the end
        self.on_lane: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (instant, its attempt)
        self.last_t = 0.0
        self._meta(COORDINATOR_PID, 0, "process_name", "coordinator")
        self._meta(COORDINATOR_PID, 0, "thread_name", "scheduler events")

    def _meta(self, pid: int, tid: int, kind: str, name: str) -> None:
        self.out.append({"ph": "M", "name": kind, "ts": 0, "pid": pid, "tid": tid, "args": {"name": name}})

    def name(self, ident: str) -> str:
        if ident not in self.names:
            self.names[ident] = self.namer(ident) or ident
        return self.names[ident]

    def pid(self, engine: str) -> int:
        if engine not in self.pids:
            self.pids[engine] = len(self.pids) + 1
            self._meta(self.pids[engine], 0, "process_name", f"engine {engine}")
            self._meta(self.pids[engine], 0, "thread_name", "engine events")
        return self.pids[engine]

    def instant(self, t: float, name: str, pid: int = COORDINATOR_PID, tid: int = 0, **args: Any) -> None:
        self.out.append({"ph": "i", "name": name, "ts": _us(t), "pid": pid, "tid": tid, "s": "t",
                         "args": {k: v for k, v in args.items() if v is not None}})

    def start(self, t: float, event: dict[str, Any]) -> None:
        pid = self.pid(str(event.get("engine", "?")))
        self.open.append({"thunk": event["thunk"], "engine": str(event.get("engine", "?")),
                          "attempt": event.get("attempt"), "ran": event.get("ran"), "t": t, "pid": pid})

    def close(self, span: dict[str, Any], end: float, outcome: str, **args) -> None:
        self.open.remove(span)
        span["event"] = {
            "ph": "X", "name": self.name(span["thunk"]), "cat": outcome, "ts": _us(span["t"]),
            "dur": _us(max(0.0, end - span["t"])), "pid": span["pid"], "tid": 0,
            "args": {"thunk": span["thunk"], "ran": span["ran"], "engine": span["engine"],
                     "attempt": span["attempt"], "outcome": outcome,
                     **{k: v for k, v in args.items() if v is not None}}}
        span["end"] = max(span["t"], end)
        self.closed.append(span)
        self.out.append(span["event"])

    def assign_lanes(self) -> None:
        """Interval partitioning per engine, by start time: the trace may record an
        attempt's start before the end of the one whose slot it took, so lanes are
        chosen once every attempt's end is known."""
        busy: dict[int, list[float]] = {}
        for span in sorted(self.closed, key=lambda s: (s["pid"], s["t"], s["end"])):
            lanes = busy.setdefault(span["pid"], [])
            lane = next((i for i, until in enumerate(lanes) if until <= span["t"]), None)
            if lane is None:
                lanes.append(0.0)
                lane = len(lanes) - 1
                self._meta(span["pid"], lane + 1, "thread_name", f"slot {lane + 1}")
            lanes[lane] = span["end"]
            span["event"]["tid"] = lane + 1
        for instant, span in self.on_lane:
            instant["tid"] = span["event"]["tid"]

    def matching(self, thunk: str, engine: str | None = None, attempt: Any = None) -> list[dict[str, Any]]:
        return [s for s in self.open if s["thunk"] == thunk and (engine is None or s["engine"] == engine)
                and (attempt is None or s["attempt"] == attempt)]

    def feed(self, event: dict[str, Any]) -> None:
        kind, thunk, t = event.get("event"), event.get("thunk"), _number(event.get("t"))
        self.last_t = max(self.last_t, t)
        if kind == "done":
            self.instant(t, "done", status=event.get("status"), elapsed=event.get("elapsed"))
            return
        if kind == "abandoned":
            self.instant(t, "engine abandoned", self.pid(str(event.get("engine", "?"))), engine=event.get("engine"),
                         reason=event.get("reason"), to=event.get("to"))
            return
        if not isinstance(thunk, str):
            return
        if kind == "started":
            self.start(t, event)
        elif kind == "finished":
            spans = self.matching(thunk, str(event.get("engine", "?")), event.get("attempt")) or self.matching(thunk)
            duration = _number(event.get("duration"))
            if not spans:  # a started line lost (hand-edited trace): place it by its duration
                self.start(t - duration, {**event, "t": t - duration})
                spans = self.matching(thunk)
            winner = min(spans, key=lambda s: abs(s["t"] + duration - t))
            self.close(winner, winner["t"] + duration, "ok", bytes_in=event.get("bytes_in"),
                       bytes_out=event.get("bytes_out"))
            for span in [s for s in spans if s is not winner]:
                self.close(span, t, "duplicate lost")
        elif kind == "retried":
            spans = self.matching(thunk, str(event.get("engine", "?")), event.get("attempt"))
            if spans:
                self.close(spans[0], t, "retried", error=event.get("error"))
            self.instant(t, "retry", spans[0]["pid"] if spans else COORDINATOR_PID, thunk=thunk,
                         engine=event.get("engine"), attempt=event.get("attempt"), error=event.get("error"),
                         delay=event.get("delay"))
            if spans:
                self.on_lane.append((self.out[-1], spans[0]))
        elif kind == "failed":
            for span in self.matching(thunk):
                self.close(span, t, "failed", error=event.get("error"))
            self.instant(t, f"failed: {self.name(thunk)}", thunk=thunk, error=event.get("error"))
        elif kind == "fallback":
            details: dict[str, Any] = {"from": event.get("from"), "to": event.get("to"),
                                       "reason": event.get("reason")}
            self.instant(t, f"fallback to {event.get('to')}", thunk=thunk, **details)
        elif kind == "speculated":
            self.instant(t, "speculated", self.pid(str(event.get("engine", "?"))), thunk=thunk,
                         engine=event.get("engine"))
        elif kind == "cached":
            self.instant(t, f"cached: {self.name(thunk)}", thunk=thunk, result=event.get("result"))
        elif kind == "tailcall":
            self.instant(t, f"tail call: {self.name(thunk)}", thunk=thunk, next=event.get("next"))
        elif kind == "regenerate":
            self.instant(t, f"regenerate: {self.name(thunk)}", thunk=thunk, missing=event.get("missing"))

    def finish(self) -> list[dict[str, Any]]:
        for span in list(self.open):
            self.close(span, self.last_t, "unfinished")
        self.assign_lanes()
        return self.out


def chrome_events(trace: Trace, namer: Namer = lambda ident: None) -> list[dict[str, Any]]:
    """The Trace Event Format events of ``trace`` (see the module doc)."""
    builder = _Builder(namer)
    for event in trace.events:
        builder.feed(event)
    return builder.finish()


def write_chrome(path: Path, trace: Trace, namer: Namer = lambda ident: None) -> int:
    """Write the JSON object form (``traceEvents``) atomically; returns the event count."""
    events = chrome_events(trace, namer)
    document = {"traceEvents": events, "displayTimeUnit": "ms",
                "otherData": {"source": "gg-force --trace", "notes": trace.notes}}
    atomic_write_bytes(path, json.dumps(document, separators=(",", ":")).encode())
    return len(events)
