"""Benchmark: critical-path-first dispatch against first-ready-first, measured and simulated.

Run from the repository root: ``.venv/bin/python bench/bench_critical_path.py [--trace LUA.jsonl]``.

Two tables, printed as Markdown:

1. **A synthetic graph** where the order matters: one chain of ``--chain`` thunks (each
   sleeps ``--chain-s``) and ``--leaves`` independent short thunks (each sleeps
   ``--leaf-s``), joined by a root; forced for real on the local engine at ``-j``
   (fresh store each time, interleaved, ``--repeat`` times, median) with
   ``dispatch="fifo"``, with critical-path-first and no earlier run (every estimate is
   the default: the priority is then the depth), and with critical-path-first and the
   run times of an earlier run. Below it, ``gg trace simulate``'s model of the same
   graph (from the recorded trace) under both policies at a few worker counts.
2. **A recorded trace of a real build** (``--trace``, e.g. Lua through gg-infer +
   gg-force): the simulator's prediction under both policies, with no invocation
   latency and no coordinator cost, so only the order differs.

This is a benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from executor.critical_path import DurationEstimates  # noqa: E402
from executor.local_engine import LocalEngine  # noqa: E402
from executor.observe import RunObserver  # noqa: E402
from executor.scheduler import ForceConfig, Scheduler  # noqa: E402
from executor.trace import TraceWriter  # noqa: E402
from executor.trace_simulate import SimulationConfig, simulate  # noqa: E402
from executor.trace_summary import _nodes, read_trace  # noqa: E402
from ir.store import LocalStore  # noqa: E402
from ir.thunk import Input, Thunk  # noqa: E402


def build(store: LocalStore, chain: int, chain_s: float, leaves: int, leaf_s: float) -> str:
    shell = store.put_file(Path("/bin/sh"), executable=True)

    def thunk(script: str, deps: dict[str, str]) -> str:
        return store.put_thunk(Thunk(shell, ("sh", "-c", script), ("out",), executables=(Input(shell),),
                                     thunks=tuple(Input(ref, name) for name, ref in deps.items())))

    below: dict[str, str] = {}
    for index in range(chain):
        below = {"in": thunk(f"sleep {chain_s}; echo chain{index} > out", below)}
    joined = {f"leaf{i}": thunk(f"sleep {leaf_s}; echo leaf{i} > out", {}) for i in range(leaves)}
    return thunk("cat * > out", {"chain": below["in"], **joined})


def run(args: argparse.Namespace, dispatch: str, history: DurationEstimates | None,
        trace: Path | None) -> tuple[float, DurationEstimates]:
    """Force the graph in a fresh store; returns (scheduler wall seconds, run times measured)."""
    with tempfile.TemporaryDirectory(prefix="gg-bench-cp-") as tmp:
        store = LocalStore.init(Path(tmp) / ".gg")
        root = build(store, args.chain, args.chain_s, args.leaves, args.leaf_s)
        estimates = history or DurationEstimates()

        async def go() -> float:
            engine = LocalEngine(store, args.jobs)
            scheduler = Scheduler(store, [engine], None, ForceConfig(dispatch=dispatch),
                                  RunObserver(TraceWriter(trace)), estimates=estimates)
            started = time.perf_counter()
            try:
                await scheduler.force([root])
            finally:
                await engine.close()
                scheduler.observer.close()
            return time.perf_counter() - started

        return asyncio.run(go()), estimates


def simulated(trace: Path, workers: list[int]) -> list[tuple[int, float, float, float, float]]:
    """(workers, fifo, critical-path, serial sum, critical path) per worker count."""
    nodes = _nodes(read_trace(trace).events)
    rows = []
    for count in workers:
        fifo = simulate(nodes, SimulationConfig(count, 0.0, 0.0, "fifo"))
        best = simulate(nodes, SimulationConfig(count, 0.0, 0.0, "critical-path"))
        rows.append((count, fifo.wall, best.wall, best.serial, best.critical_path))
    return rows


def print_simulation(title: str, rows: list[tuple[int, float, float, float, float]]) -> None:
    print(f"\n{title}\n")
    print("| workers | fifo s | critical-path s | fifo / critical-path | serial sum s | critical path s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for count, fifo, best, serial, critical in rows:
        print(f"| {count} | {fifo:.3f} | {best:.3f} | {fifo / best:.2f} | {serial:.3f} | {critical:.3f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument("--chain", type=int, default=8)
    parser.add_argument("--chain-s", type=float, default=0.2)
    parser.add_argument("--leaves", type=int, default=16)
    parser.add_argument("--leaf-s", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", default="2,4,8")
    parser.add_argument("--trace", type=Path, help="a recorded trace of a real build to simulate")
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    variants = ("fifo", "critical-path, no history", "critical-path, earlier run's times")
    walls: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="gg-bench-cp-traces-") as tmp:
        recorded = Path(tmp) / "fifo.jsonl"
        for index in range(args.repeat):
            seconds, measured = run(args, "fifo", None, recorded if index == 0 else None)
            walls["fifo"].append(seconds)
            walls["critical-path, no history"].append(run(args, "critical-path", None, None)[0])
            history = DurationEstimates()
            for ident, (function, took) in measured._by_thunk.items():
                history.record(ident, function, took)
            walls["critical-path, earlier run's times"].append(run(args, "critical-path", history, None)[0])
        rows = simulated(recorded, workers)
    print(f"synthetic graph: a chain of {args.chain} x {args.chain_s} s and {args.leaves} leaves x {args.leaf_s} s, "
          f"joined by a root; local engine -j {args.jobs}; median of {args.repeat} interleaved runs; "
          f"load average {load} before, {' '.join(f'{x:.2f}' for x in os.getloadavg())} after\n")
    print("| dispatch | wall s (median) | runs | / fifo |")
    print("|---|---:|---|---:|")
    base = statistics.median(walls["fifo"])
    for name in variants:
        median = statistics.median(walls[name])
        print(f"| {name} | {median:.3f} | {', '.join(f'{w:.2f}' for w in walls[name])} | {median / base:.2f} |")
    print_simulation("the same graph, simulated from the fifo run's trace (latency 0, coordinator 0):", rows)
    if args.trace:
        print_simulation(f"recorded build {args.trace.name}, simulated (latency 0, coordinator 0):",
                         simulated(args.trace, workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
