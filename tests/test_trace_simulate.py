"""``gg trace simulate``: synthetic traces whose answers are known exactly."""

from __future__ import annotations

import argparse
import json
import random

import pytest

from executor import trace_summary
from executor.trace_simulate import SimulationConfig, measured_coordinator, report, simulate
from executor.trace_summary import _nodes, read_trace

from .test_trace_summary import finished, write_trace


def graph(durations: dict[str, float], deps: dict[str, list[str]], cached=()) -> list[dict]:
    """A trace of a run where every node ran once, in an order that respects deps."""
    events = [{"t": 0, "event": "queued", "thunk": n, "deps": deps.get(n, [])} for n in durations]
    events += [{"t": 0, "event": "cached", "thunk": n, "result": "V"} for n in cached]
    events += [finished(1, n, d) for n, d in durations.items() if n not in cached]
    return events


def nodes_of(events, tmp_path):
    return _nodes(read_trace(write_trace(tmp_path / "t.jsonl", events)).events)


def wall(nodes, workers, latency=0.0, coordinator=0.0) -> float:
    return simulate(nodes, SimulationConfig(workers, latency, coordinator)).wall


CHAIN = graph({"A": 1.0, "B": 2.0, "C": 3.0}, {"B": ["A"], "C": ["B"]})
FAN = graph({"L1": 1.0, "L2": 1.0, "L3": 1.0, "L4": 1.0, "R": 0.5}, {"R": ["L1", "L2", "L3", "L4"]})


def test_chain_is_serial_whatever_the_workers(tmp_path):
    nodes = nodes_of(CHAIN, tmp_path)
    for workers in (1, 2, None):
        assert wall(nodes, workers, 0.1) == pytest.approx(6.3)
        assert wall(nodes, workers, 0.1, 0.01) == pytest.approx(6.33)


def test_fan_out(tmp_path):
    nodes = nodes_of(FAN, tmp_path)
    assert wall(nodes, 1, 0.1) == pytest.approx(4 * 1.1 + 0.6)
    assert wall(nodes, 2, 0.1) == pytest.approx(2 * 1.1 + 0.6)
    assert wall(nodes, 3, 0.1) == pytest.approx(2 * 1.1 + 0.6)
    assert wall(nodes, None, 0.1) == pytest.approx(1.1 + 0.6)
    # A serial coordinator: leaves leave it at 0.05, 0.10, 0.15, 0.20; the last ends at
    # 1.30, the root is prepared by 1.35 and ends at 1.95.
    assert wall(nodes, None, 0.1, 0.05) == pytest.approx(1.95)
    # One worker: the coordinator prepares ahead while the worker is busy.
    assert wall(nodes, 1, 0.1, 0.05) == pytest.approx(0.05 + 4 * 1.1 + 0.05 + 0.6)


def test_longest_remaining_path_first(tmp_path):
    """P1 -> P2 -> P3 and three independent Q's, two workers: path first gives 3 s,
    anything that starts two Q's first gives 4 s."""
    durations = {name: 1.0 for name in ("P1", "P2", "P3", "Q1", "Q2", "Q3")}
    nodes = nodes_of(graph(durations, {"P2": ["P1"], "P3": ["P2"]}), tmp_path)
    assert wall(nodes, 2) == pytest.approx(3.0)
    # First ready first: P1 and Q1 at 0, then Q2 and Q3 (ready since 0) before P2.
    fifo = simulate(nodes, SimulationConfig(2, 0.0, 0.0, "fifo"))
    assert fifo.wall == pytest.approx(4.0)


def test_bounds_on_a_random_dag(tmp_path):
    """N=1 is the serial sum plus latencies; unlimited workers is the critical path plus
    latencies; anything between lies between the two."""
    rng = random.Random(13)
    names = [f"N{i:03}" for i in range(120)]
    durations = {n: round(rng.uniform(0.01, 2.0), 3) for n in names}
    deps = {n: rng.sample(names[:i], min(i, rng.randint(0, 3))) for i, n in enumerate(names)}
    nodes = nodes_of(graph(durations, deps), tmp_path)
    latency = 0.07
    serial = sum(durations.values()) + latency * len(names)
    finish: dict[str, float] = {}
    for n in names:  # names are in topological order
        finish[n] = max((finish[d] for d in deps[n]), default=0.0) + durations[n] + latency
    critical = max(finish.values())
    assert wall(nodes, 1, latency) == pytest.approx(serial)
    assert wall(nodes, None, latency) == pytest.approx(critical)
    assert wall(nodes, 10_000, latency) == pytest.approx(critical)
    prediction = simulate(nodes, SimulationConfig(4, latency, 0.0))
    assert prediction.serial == pytest.approx(serial) and prediction.critical_path == pytest.approx(critical)
    assert max(critical, serial / 4) - 1e-9 <= prediction.wall <= serial + 1e-9
    previous = serial
    for workers in (1, 2, 4, 8, 16):  # list scheduling here never gets worse with more workers
        current = wall(nodes, workers, latency)
        assert current <= previous + 1e-9
        previous = current


def test_cached_nodes_and_tail_calls(tmp_path):
    """Cached nodes cost nothing; a thunk created by a tail call waits for its creator."""
    events = [
        {"t": 0, "event": "queued", "thunk": "Q", "deps": []},
        {"t": 0, "event": "queued", "thunk": "P", "deps": []},
        {"t": 0, "event": "queued", "thunk": "K", "deps": []},
        {"t": 0, "event": "cached", "thunk": "K", "result": "V"},
        finished(0.5, "Q", 0.5),
        finished(1.0, "P", 1.0),
        {"t": 1.0, "event": "tailcall", "thunk": "P", "next": "T"},
        {"t": 1.0, "event": "queued", "thunk": "T", "deps": ["X", "Q", "K"]},
        {"t": 1.0, "event": "queued", "thunk": "X", "deps": []},
        finished(3.0, "X", 2.0),
        finished(4.0, "T", 1.0),
    ]
    nodes = nodes_of(events, tmp_path)
    assert wall(nodes, None) == pytest.approx(4.0)  # P, X (created by P), T
    assert wall(nodes, 1) == pytest.approx(4.5)
    assert wall(nodes, None, 0.25) == pytest.approx(4.75)
    assert simulate(nodes, SimulationConfig(1, 0.0, 0.0)).runs == 4


def test_coordinator_cost_measured_from_gaps(tmp_path):
    """A starts 3 ms after being queued; B starts 6 ms after A's engine returned (A's
    finished event, written 1 ms after the return, does not count): median 4.5 ms."""
    events = [
        {"t": 0.0, "event": "queued", "thunk": "B", "deps": ["A"]},
        {"t": 0.0, "event": "queued", "thunk": "A", "deps": []},
        {"t": 0.003, "event": "started", "thunk": "A", "ran": "A", "engine": "local", "attempt": 1},
        finished(1.004, "A", 1.0),
        {"t": 1.009, "event": "started", "thunk": "B", "ran": "B", "engine": "local", "attempt": 1},
        finished(2.010, "B", 1.0),
        {"t": 2.02, "event": "done", "elapsed": 2.02, "status": "ok", "executed": 2},
    ]
    trace = read_trace(write_trace(tmp_path / "t.jsonl", events))
    assert measured_coordinator(trace, _nodes(trace.events)) == pytest.approx(0.0045)
    result = report(trace, [1, 2], 100.0, None)
    assert result["coordinator_ms"] == pytest.approx(4.5)
    assert "measured" in result["coordinator_source"]
    # A second start on the engine right after A returned is not slowed by A's slot.
    events.insert(5, {"t": 1.0035, "event": "queued", "thunk": "C", "deps": []})
    events.insert(6, {"t": 1.0035, "event": "started", "thunk": "C", "ran": "C", "engine": "local", "attempt": 1})
    events.insert(7, finished(1.6, "C", 0.5))
    again = read_trace(write_trace(tmp_path / "t2.jsonl", events))
    assert measured_coordinator(again, _nodes(again.events)) == pytest.approx(0.003)
    assert [r["predicted"] for r in result["predictions"]] == pytest.approx([2 * 1.1045, 2 * 1.1045])
    assert result["serial_sum"] == pytest.approx(2.2) and result["critical_path"] == pytest.approx(2.2)
    given = report(trace, [1], 100.0, 0.0)
    assert given["predictions"][0]["predicted"] == pytest.approx(2.2)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    from ir.cli import run_handler

    parser = argparse.ArgumentParser(prog="gg")
    trace_summary.add(parser.add_subparsers())
    args = parser.parse_args(["trace", *argv])
    status = run_handler(args.handler, args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli(tmp_path, capsys):
    path = str(write_trace(tmp_path / "fan.jsonl", FAN))
    status, out, _ = run(["simulate", path, "--workers", "1,2", "--invoke-latency", "100",
                          "--coordinator-ms", "0"], capsys)
    assert status == 0
    assert "longest remaining path first" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert rows == [["1", "5.000"], ["2", "2.800"]]
    assert "serial sum (1 worker, latency included):         5.000 s" in out
    assert "critical path (unlimited workers, latency incl.): 1.700 s" in out
    status, out, _ = run(["simulate", path, "--workers", "4", "--invoke-latency", "0", "--json"], capsys)
    data = json.loads(out)
    assert status == 0 and data["predictions"][0]["workers"] == 4 and data["thunks_run"] == 5
    status, out, _ = run(["simulate", path, "--workers", "1", "--invoke-latency", "0", "--policy", "fifo"], capsys)
    assert status == 0 and "first ready first" in out


@pytest.mark.parametrize("argv, message", [
    (["simulate", "FILE", "--workers", "2"], "needs --workers N and --invoke-latency MS"),
    (["FILE", "--workers", "2"], "--workers belongs to 'gg trace simulate FILE'"),
    (["FILE", "other"], "unexpected argument 'other'"),
    (["FILE", "--policy", "fifo"], "--policy belongs to 'gg trace simulate FILE'"),
    (["simulate", "FILE", "--workers", "2", "--invoke-latency", "1", "--chrome", "x.json"], "--chrome belongs"),
    (["simulate", "FILE", "--workers", "2", "--invoke-latency", "-5"], "must not be negative"),
])
def test_usage_errors_are_one_line(tmp_path, capsys, argv, message):
    path = str(write_trace(tmp_path / "fan.jsonl", FAN))
    status, out, err = run([path if a == "FILE" else a for a in argv], capsys)
    assert status in (1, 2) and message in err and err.count("\n") == 1 and not out


def test_bad_worker_count_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run(["simulate", "x", "--workers", "0", "--invoke-latency", "1"], capsys)
    assert exit_.value.code == 2
