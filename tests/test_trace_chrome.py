"""``gg trace TRACE --chrome OUT.json``: Chrome Trace Event Format from hand-written
traces and from a real run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from executor import trace_summary
from executor.trace_chrome import chrome_events
from executor.trace_summary import read_trace
from ir.store import LocalStore
from tests.forcing import ShellThunks, force

from .test_trace_summary import DIAMOND, finished, write_trace


def check_format(events: list[dict]) -> None:
    """Every event has what the Trace Event Format requires of its phase."""
    assert events
    for event in events:
        assert event["ph"] in ("X", "i", "M"), event
        assert isinstance(event["name"], str) and event["name"], event
        assert isinstance(event["pid"], int) and isinstance(event["tid"], int), event
        assert isinstance(event["ts"], int | float) and event["ts"] >= 0, event
        if event["ph"] == "X":
            assert isinstance(event["dur"], int | float) and event["dur"] >= 0, event
        else:
            assert "dur" not in event, event
        if event["ph"] == "i":
            assert event["s"] in ("g", "p", "t"), event
        if event["ph"] == "M":
            assert event["name"] in ("process_name", "thread_name") and event["args"]["name"], event


def lanes_do_not_overlap(events: list[dict]) -> None:
    spans: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for event in events:
        if event["ph"] == "X":
            spans.setdefault((event["pid"], event["tid"]), []).append((event["ts"], event["ts"] + event["dur"]))
    for intervals in spans.values():
        intervals.sort()
        for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
            assert start >= end - 1e-3


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    from ir.cli import run_handler

    parser = argparse.ArgumentParser(prog="gg")
    trace_summary.add(parser.add_subparsers())
    args = parser.parse_args(["trace", *argv])
    status = run_handler(args.handler, args)
    return status, capsys.readouterr().err


def test_hand_written_trace_retries_fallbacks_duplicates(tmp_path):
    events = [
        *DIAMOND[:6],
        {"t": 0.0, "event": "started", "thunk": "D", "ran": "D", "engine": "lambda", "attempt": 1},
        *DIAMOND[7:9],  # retried on lambda, then fallback to local
        {"t": 0.6, "event": "started", "thunk": "D", "ran": "D", "engine": "local", "attempt": 1},
        finished(1.6, "D", 1.0),
        {"t": 1.6, "event": "started", "thunk": "B", "ran": "B", "engine": "lambda", "attempt": 1},
        {"t": 1.6, "event": "started", "thunk": "C", "ran": "C", "engine": "local", "attempt": 1},
        finished(3.6, "B", 2.0, engine="lambda"),
        {"t": 3.6, "event": "speculated", "thunk": "C", "engine": "local"},
        {"t": 3.6, "event": "started", "thunk": "C", "ran": "C", "engine": "local", "attempt": 1},
        finished(6.6, "C", 5.0),  # the first attempt wins; the duplicate lost
        {"t": 6.6, "event": "started", "thunk": "A", "ran": "A", "engine": "local", "attempt": 1},
        {"t": 7.0, "event": "done", "elapsed": 7.1, "status": "failed", "executed": 4},
    ]
    out = chrome_events(read_trace(write_trace(tmp_path / "t.jsonl", events)), {"C": "cc -c c.c"}.get)
    check_format(out)
    lanes_do_not_overlap(out)
    spans = [e for e in out if e["ph"] == "X"]
    by_outcome = {(e["args"]["thunk"], e["args"]["outcome"]) for e in spans}
    assert by_outcome == {("D", "retried"), ("D", "ok"), ("B", "ok"), ("C", "ok"), ("C", "duplicate lost"),
                          ("A", "unfinished")}
    c_ok = next(e for e in spans if e["args"]["thunk"] == "C" and e["args"]["outcome"] == "ok")
    assert c_ok["name"] == "cc -c c.c" and (c_ok["ts"], c_ok["dur"]) == (1_600_000, 5_000_000)
    assert next(e for e in spans if e["args"]["thunk"] == "B")["name"] == "B"  # no name known: the ID
    instants = {e["name"] for e in out if e["ph"] == "i"}
    assert {"retry", "fallback to local", "speculated", "cached: E", "done"} <= instants
    local = {e["pid"] for e in out if e["ph"] == "M" and e["args"]["name"] == "engine local"}
    c_lanes = {e["tid"] for e in spans if e["args"]["thunk"] == "C"}
    assert len(c_lanes) == 2 and {e["pid"] for e in spans if e["args"]["thunk"] == "C"} == local


def test_every_thunk_of_a_real_run_appears(tmp_path, capsys, monkeypatch):
    """A small ShellThunks graph (a fan-in with a retry-free run), forced with --trace,
    then exported through the CLI with the store located by GG_DIR."""
    store = LocalStore.init(tmp_path / ".gg")
    sh = ShellThunks(store)
    leaves = [sh.thunk(f"sleep 0.0{i}; echo leaf {i} > out") for i in range(4)]
    middle = sh.thunk("cat a b > out", thunks={"a": leaves[0], "b": leaves[1]})
    top = sh.thunk("cat m c d > out", thunks={"m": middle, "c": leaves[2], "d": leaves[3]})
    trace = tmp_path / "trace.jsonl"
    force(store, [top], jobs=2, trace=trace)
    monkeypatch.setenv("GG_DIR", str(store.root))
    out_path = tmp_path / "out.json"
    status, err = run_cli([str(trace), "--chrome", str(out_path)], capsys)
    assert status == 0 and "wrote" in err and "named by thunk ID" not in err
    document = json.loads(out_path.read_text())
    events = document["traceEvents"]
    check_format(events)
    lanes_do_not_overlap(events)
    spans = [e for e in events if e["ph"] == "X"]
    assert {e["args"]["thunk"] for e in spans} == {*leaves, middle, top}
    assert all(e["args"]["outcome"] == "ok" for e in spans)
    assert {e["name"] for e in spans} >= {"sh -c cat a b > out", "sh -c cat m c d > out"}
    assert max(e["tid"] for e in spans) <= 2  # -j2: at most two lanes
    assert Path(out_path).stat().st_size > 0 and not list(tmp_path.glob("out.json.*"))
