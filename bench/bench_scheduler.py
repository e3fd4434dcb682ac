"""Benchmark: thunks/s through the scheduler, and the local engine's cost per thunk.

Run from the repository root: ``.venv/bin/python bench/bench_scheduler.py [-j N]``.

One run prints one table, side by side:

* **bare fork/exec** — the trivial program started N times straight from asyncio at
  the same concurrency: the floor any engine pays;
* **execution core** — the same program as N thunks through ``executor.execution.
  execute`` (work directory, hard-linked inputs, clean environment, output hashing and
  storing), no scheduler;
* **scheduler, cold** — a 10,000-thunk graph (by default a two-level tree: 99 groups of
  100 leaves, a reduce thunk per group and one root) forced by the real scheduler on the
  local engine: loading, dependency tracking, rewriting, reductions;
* **scheduler, warm** — every node of the graph forced again as a target: each one is
  a cache hit.

``--null-engine`` prints a different table: scheduler bookkeeping alone. A graph of
``--thunks`` (default 100,000) two-level thunks is written to a fresh store and forced
through the real :class:`Scheduler` with :class:`NullEngine`, which runs nothing and
returns a deterministic output ID per job (it lives here, not in the product). Each
measurement runs in a fresh child process so its peak RSS (``getrusage``) is its own;
``--baseline SRC`` (a source tree, e.g. from ``git archive``) runs the same child
against that tree too, interleaved, ``--repeat`` times, and the table shows medians and
the ratio. ``--profile FILE`` writes a cProfile of one forced run instead.

The trivial program is a tiny C program (``gcc`` is on every build machine here) that
writes its argument to ``out``; ``--program sh`` uses ``/bin/sh -c`` instead.
This is a benchmark, not a test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if "--source" in sys.argv:  # a null-engine child measuring another source tree (--baseline)
    sys.path.insert(0, sys.argv[sys.argv.index("--source") + 1])

from trivial_program import build_trivial  # noqa: E402  (bench/, beside this script)

from executor.execution import ExecutionResult, Output, execute  # noqa: E402
from executor.local_engine import LocalEngine  # noqa: E402
from executor.observe import RunObserver  # noqa: E402
from executor.rundirs import RunDirs  # noqa: E402
from executor.scheduler import ForceConfig, Scheduler  # noqa: E402
from ir.ids import Kind, id_of_bytes  # noqa: E402
from ir.store import LocalStore  # noqa: E402
from ir.thunk import Input, Thunk  # noqa: E402


@dataclass
class Row:
    what: str
    thunks: int
    seconds: float

    @property
    def per_thunk_ms(self) -> float:
        return 1000 * self.seconds / self.thunks

    @property
    def rate(self) -> float:
        return self.thunks / self.seconds if self.seconds else float("inf")


def build_program(kind: str, workdir: Path) -> tuple[Path, list[str]]:
    """(program path, argv prefix); the thunk's index is appended as the last arg."""
    if kind == "c":
        return build_trivial(workdir), ["trivial"]
    return Path("/bin/sh"), ["sh", "-c", 'printf %s "$1" > out', "sh"]


async def bare(program: Path, argv: list[str], count: int, jobs: int, workdir: Path) -> float:
    """Start the program ``count`` times, ``jobs`` at a time, each in its own directory."""
    gate = asyncio.Semaphore(jobs)
    dirs = [workdir / f"bare{i % jobs}" for i in range(jobs)]
    for directory in dirs:
        directory.mkdir()

    async def one(index: int) -> None:
        async with gate:
            process = await asyncio.create_subprocess_exec(
                argv[0], *argv[1:], str(index), executable=str(program), cwd=dirs[index % jobs],
                env={}, stdin=asyncio.subprocess.DEVNULL)
            if await process.wait() != 0:
                raise RuntimeError("trivial program failed")

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return time.perf_counter() - started


def leaf(function: str, argv: list[str], index: int) -> Thunk:
    return Thunk(function_hash=function, args=(*argv, str(index)), outputs=("out",),
                 executables=(Input(function),))


async def core(store: LocalStore, function: str, argv: list[str], count: int, jobs: int) -> float:
    """``count`` distinct thunks through the execution core, ``jobs`` at a time."""
    thunks = [leaf(function, argv, -1 - i) for i in range(count)]
    ids = [store.put_thunk(t) for t in thunks]
    gate = asyncio.Semaphore(jobs)
    runtime = {"GG_PYTHON": sys.executable}
    rundirs = RunDirs(store.root / "work")  # kept from one thunk to the next, as the local engine does

    async def one(ident: str, thunk: Thunk) -> None:
        async with gate:
            await execute(ident, thunk, store, runtime_env=runtime, rundirs=rundirs)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(one(i, t) for i, t in zip(ids, thunks, strict=True)))
        return time.perf_counter() - started
    finally:
        rundirs.close()


def build_graph(
    store: LocalStore, function: str, argv: list[str], total: int, fan_in: int
) -> tuple[list[str], float]:
    """A two-level tree of ``total`` thunks; returns (IDs, root first; seconds to write it)."""
    started = time.perf_counter()
    groups = max(1, (total - 1) // (fan_in + 1))
    leaves_total = total - 1 - groups
    leaf_ids = [store.put_thunk(leaf(function, argv, i)) for i in range(leaves_total)]
    group_ids = []
    for g in range(groups):
        members = leaf_ids[g::groups]
        group = Thunk(function_hash=function, args=(*argv, f"group{g}"), outputs=("out",),
                      thunks=tuple(Input(m, f"in/{k}") for k, m in enumerate(members)),
                      executables=(Input(function),))
        group_ids.append(store.put_thunk(group))
    root = Thunk(function_hash=function, args=(*argv, "root"), outputs=("out",),
                 thunks=tuple(Input(g, f"in/{k}") for k, g in enumerate(group_ids)),
                 executables=(Input(function),))
    return [store.put_thunk(root), *group_ids, *leaf_ids], time.perf_counter() - started


async def force(store: LocalStore, targets: list[str], jobs: int) -> tuple[float, int]:
    engine = LocalEngine(store, jobs)
    scheduler = Scheduler(store, [engine], None, ForceConfig(speculate=False), RunObserver())
    started = time.perf_counter()
    try:
        await scheduler.force(targets)
    finally:
        await engine.close()
    return time.perf_counter() - started, scheduler.executed


class NullEngine:
    """An engine that runs nothing: each job "produces" a value ID derived from its thunk
    ID and output tag (deterministic, so a rerun agrees). Measures the scheduler alone."""

    name = "null"
    remote = None

    def __init__(self, slots: int):
        self.slots = slots

    def refuses(self, job) -> str | None:
        return None

    async def run(self, job) -> ExecutionResult:
        outputs = [Output(tag, id_of_bytes(f"{job.thunk_id}#{tag}".encode(), Kind.VALUE), False)
                   for tag in job.thunk.outputs]
        return ExecutionResult(job.thunk_id, outputs)

    async def close(self) -> None:
        pass


def null_child(thunks: int, fan_in: int, slots: int, profile: str | None, where: str | None,
               speculate: bool = True) -> dict[str, float]:
    """One measurement in this (fresh) process: write the graph, force it, report."""
    with tempfile.TemporaryDirectory(prefix="gg-bench-null-", dir=where) as tmp:
        store = LocalStore.init(Path(tmp) / ".gg")
        function = store.put_bytes(b"#!/bin/sh\n", executable=True)  # never run
        ids, build_seconds = build_graph(store, function, ["f"], thunks, fan_in)
        del ids[1:]
        engine = NullEngine(slots)
        scheduler = Scheduler(store, [engine], None, ForceConfig(speculate=speculate), RunObserver())
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        asyncio.run(scheduler.force(ids))
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        assert scheduler.executed == thunks, (scheduler.executed, thunks)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"thunks": thunks, "build_s": build_seconds, "force_s": seconds, "force_cpu_s": cpu,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def interleaved_medians(script: str, child_args: list[str], baseline: str | None, repeat: int,
                        keys: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Run ``script child_args`` for this tree and the ``baseline`` tree (if any),
    interleaved ``repeat`` times, each in a fresh process (so peak RSS is its own); the
    child prints one JSON line last. Returns each variant's medians of ``keys``."""
    variants = [("this tree", None)] + ([("baseline", baseline)] if baseline else [])
    samples: dict[str, list[dict[str, float]]] = {name: [] for name, _ in variants}
    for _ in range(repeat):
        for name, source in variants:
            command = [sys.executable, str(Path(script).resolve()), *child_args]
            if source:
                command += ["--source", str(Path(source).resolve())]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            samples[name].append(json.loads(out.splitlines()[-1]))
    return {name: {key: statistics.median(r[key] for r in rows) for key in keys} for name, rows in samples.items()}


def null_rows(args: argparse.Namespace) -> int:
    """Interleave the variants ``--repeat`` times, each in a fresh process; print medians."""
    medians = interleaved_medians(
        __file__, ["--null-child", "--thunks", str(args.thunks), "--fan-in", str(args.fan_in), "-j", str(args.jobs),
                   *(["--dir", args.dir] if args.dir else [])], args.baseline, args.repeat,
        ("build_s", "force_s", "force_cpu_s", "peak_rss_mb"))
    print(f"null engine: {args.thunks} thunks (two-level, fan-in {args.fan_in}), {args.jobs} slots, "
          f"store in {args.dir or tempfile.gettempdir()}, "
          f"median of {args.repeat} interleaved runs; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    header = (f"{'variant':<12} {'write graph s':>14} {'force s':>9} {'thunks/s':>10} {'force CPU s':>12} "
              f"{'peak RSS MB':>12}")
    print(header)
    print("-" * len(header))
    for name, med in medians.items():
        print(f"{name:<12} {med['build_s']:>14.2f} {med['force_s']:>9.2f} {args.thunks / med['force_s']:>10.0f} "
              f"{med['force_cpu_s']:>12.2f} {med['peak_rss_mb']:>12.0f}")
    if args.baseline:
        now, base = medians["this tree"], medians["baseline"]
        print(f"{'ratio':<12} {base['build_s'] / now['build_s']:>13.1f}x {base['force_s'] / now['force_s']:>8.1f}x "
              f"{'':>10} {base['force_cpu_s'] / now['force_cpu_s']:>11.1f}x "
              f"{now['peak_rss_mb'] / base['peak_rss_mb']:>11.2f}x")
        print("ratio: baseline time / this tree's time (higher is faster); RSS: this tree / baseline")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--null-engine", action="store_true",
                        help="scheduler bookkeeping alone: force a graph with an engine that runs nothing")
    parser.add_argument("--baseline", metavar="SRC", help="with --null-engine: also measure this source tree")
    parser.add_argument("--repeat", type=int, default=3, help="with --null-engine: interleaved runs (default 3)")
    parser.add_argument("--profile", metavar="FILE", help="with --null-engine: write a cProfile of one run")
    parser.add_argument("--dir", help="with --null-engine: make the store here (default: the temp directory)")
    parser.add_argument("--null-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--thunks", type=int, default=None,
                        help="graph size (default 10000; 100000 with --null-engine)")
    parser.add_argument("--fan-in", type=int, default=100, help="leaves per group thunk (default 100)")
    parser.add_argument("--samples", type=int, default=2000,
                        help="runs for the bare and execution-core rows (default 2000)")
    parser.add_argument("--program", choices=("c", "sh"), default="c" if shutil.which("gcc") else "sh")
    args = parser.parse_args(argv)
    if args.thunks is None:
        args.thunks = 100_000 if (args.null_engine or args.null_child) else 10_000
    if args.null_child or (args.null_engine and args.profile):
        print(json.dumps(null_child(args.thunks, args.fan_in, args.jobs, args.profile, args.dir)))
        return 0
    if args.null_engine:
        return null_rows(args)
    with tempfile.TemporaryDirectory(prefix="gg-bench-") as tmp:
        workdir = Path(tmp)
        program, prefix = build_program(args.program, workdir)
        store = LocalStore.init(workdir / ".gg")
        function = store.put_file(program, executable=True)
        rows = [Row(f"bare fork/exec (j={args.jobs})", args.samples,
                    asyncio.run(bare(program, prefix, args.samples, args.jobs, workdir)))]
        rows.append(Row(f"execution core, no scheduler (j={args.jobs})", args.samples,
                        asyncio.run(core(store, function, prefix, args.samples, args.jobs))))
        ids, build_seconds = build_graph(store, function, prefix, args.thunks, args.fan_in)
        cold, executed = asyncio.run(force(store, ids[:1], args.jobs))
        rows.append(Row(f"scheduler + local engine, cold (j={args.jobs})", executed, cold))
        # Every node as a target: each one is looked up and found reduced.
        warm, warm_executed = asyncio.run(force(store, ids, args.jobs))
        rows.append(Row(f"scheduler, warm: all cache hits ({warm_executed} run)", len(ids), warm))
    floor = rows[0].per_thunk_ms
    print(f"program: {args.program} ({' '.join(prefix)} N); graph: {args.thunks} thunks "
          f"(written in {build_seconds:.2f} s); cores: {os.cpu_count()}")
    header = f"{'what':<50} {'thunks':>7} {'wall s':>8} {'ms/thunk':>9} {'thunks/s':>9} {'overhead ms':>12}"
    print(header)
    print("-" * len(header))
    for index, row in enumerate(rows):
        overhead = "" if index == 0 or "warm" in row.what else f"{row.per_thunk_ms - floor:+.3f}"
        print(f"{row.what:<50} {row.thunks:>7} {row.seconds:>8.2f} {row.per_thunk_ms:>9.3f} "
              f"{row.rate:>9.0f} {overhead:>12}")
    print("overhead = ms per thunk above bare fork/exec at the same concurrency")
    return 0


if __name__ == "__main__":
    sys.exit(main())
