"""Benchmark: the local engine against bare fork/exec, side by side in one run.

Run from the repository root: ``.venv/bin/python bench/bench_local_engine.py [-j N] [--quick]``.

Rows, each measured ``--repeats`` times with the variants interleaved (the median is
printed, the machine is shared):

* **bare fork/exec (asyncio)** — the trivial program started straight from asyncio
  (``create_subprocess_exec`` + ``wait``) at the same concurrency: the baseline of
  issue 13 and of ``bench/bench_scheduler.py``;
* **bare spawn (posix_spawn + waitpid)** — the same from a thread pool with no event
  loop at all: a floor no engine that runs a process per thunk can beat;
* **execution core** — distinct thunks through ``executor.execution.execute`` (work
  directory, hard-linked input, clean environment, output hashed and stored, inputs
  verified before and after), no scheduler;
* **scheduler + local engine** — a two-level graph (leaves, one reduce thunk per
  ``--fan-in`` leaves, one root) forced cold by the real scheduler on the local engine.

The ratio column is the baseline's ms per thunk over the row's (1.00 = as fast as
bare fork/exec from asyncio). The CPU column is this process's own CPU time (user +
system, all its threads, not the children's) per thunk: on a machine shared with other
jobs it moves much less than wall time, and at ``-j`` = cores it is what limits the
rate. The trivial program is a tiny C program that writes its argument to ``out``.
This is a benchmark, not a test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from executor.execution import execute  # noqa: E402
from executor.local_engine import LocalEngine  # noqa: E402
from executor.observe import RunObserver  # noqa: E402

try:
    from executor.rundirs import RunDirs  # noqa: E402
except ImportError:  # a tree from before run directories were reused (run as a baseline)
    RunDirs = None
from bench_scheduler import bare  # noqa: E402  (bench/, beside this script)
from trivial_program import build_trivial  # noqa: E402

from executor.scheduler import ForceConfig, Scheduler  # noqa: E402
from ir.store import LocalStore  # noqa: E402
from ir.thunk import Input, Thunk  # noqa: E402


class Clock:
    """Wall time and this process's CPU time (all threads, not children) of a section."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), _cpu()
        return self

    def __exit__(self, *_exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, _cpu() - self.cpu


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def bare_asyncio(program: Path, count: int, jobs: int, workdir: Path, salt: str) -> Clock:
    """bench_scheduler's bare fork/exec (asyncio subprocesses, ``jobs`` at a time, each in
    its own directory), timed with this process's CPU too."""
    directory = workdir / f"bare-{salt}"
    directory.mkdir()
    with Clock() as clock:
        await bare(program, ["trivial"], count, jobs, directory)
    return clock


def bare_spawn(program: Path, count: int, jobs: int, workdir: Path, salt: str) -> Clock:
    """posix_spawn + waitpid from ``jobs`` threads (os.posix_spawn has no cwd argument:
    every child runs in this process's cwd, one directory, set once)."""
    directory = workdir / f"spawn-{salt}"
    directory.mkdir()
    old = os.getcwd()
    os.chdir(directory)
    try:
        def worker(start: int) -> None:
            for index in range(start, count, jobs):
                pid = os.posix_spawn(str(program), ["trivial", str(index)], {})
                _, status = os.waitpid(pid, 0)
                if status != 0:
                    raise RuntimeError("trivial program failed")

        with Clock() as clock, ThreadPoolExecutor(jobs) as pool:
            list(pool.map(worker, range(jobs)))
        return clock
    finally:
        os.chdir(old)


def leaf(function: str, salt: str, index: int) -> Thunk:
    return Thunk(function_hash=function, args=("trivial", f"{salt}-{index}"), outputs=("out",),
                 executables=(Input(function),))


def leaves(store: LocalStore, function: str, count: int, salt: str) -> list[tuple[str, Thunk]]:
    thunks = [leaf(function, salt, i) for i in range(count)]
    return [(store.put_thunk(t), t) for t in thunks]


async def core(store: LocalStore, thunks: list[tuple[str, Thunk]], jobs: int) -> Clock:
    gate = asyncio.Semaphore(jobs)
    runtime = {"GG_PYTHON": sys.executable}
    pool = RunDirs and "rundirs" in inspect.signature(execute).parameters
    rundirs = RunDirs(store.root / "work") if pool else None  # as the local engine keeps them
    pooled = {"rundirs": rundirs} if rundirs else {}

    async def one(ident: str, thunk: Thunk) -> None:
        async with gate:
            await execute(ident, thunk, store, runtime_env=runtime, **pooled)

    try:
        with Clock() as clock:
            await asyncio.gather(*(one(i, t) for i, t in thunks))
    finally:
        if rundirs:
            rundirs.close()
    return clock


def build_graph(store: LocalStore, function: str, total: int, fan_in: int, salt: str) -> str:
    """A two-level tree of ``total`` thunks; returns the root's ID."""
    groups = max(1, (total - 1) // (fan_in + 1))
    leaf_ids = [store.put_thunk(leaf(function, salt, i)) for i in range(total - 1 - groups)]
    group_ids = []
    for g in range(groups):
        group = Thunk(function_hash=function, args=("trivial", f"{salt}-group{g}"), outputs=("out",),
                      thunks=tuple(Input(m, f"in/{k}") for k, m in enumerate(leaf_ids[g::groups])),
                      executables=(Input(function),))
        group_ids.append(store.put_thunk(group))
    root = Thunk(function_hash=function, args=("trivial", f"{salt}-root"), outputs=("out",),
                 thunks=tuple(Input(g, f"in/{k}") for k, g in enumerate(group_ids)),
                 executables=(Input(function),))
    return store.put_thunk(root)


async def scheduled(store: LocalStore, root: str, jobs: int) -> tuple[Clock, int]:
    engine = LocalEngine(store, jobs)
    scheduler = Scheduler(store, [engine], None, ForceConfig(speculate=False), RunObserver())
    try:
        with Clock() as clock:
            await scheduler.force([root])
    finally:
        await engine.close()
    return clock, scheduler.executed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument("--thunks", type=int, default=None, help="thunks per row and repeat (default 10000)")
    parser.add_argument("--fan-in", type=int, default=100, help="leaves per group thunk (default 100)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1,000 thunks per row (unless --thunks is given)")
    parser.add_argument("--rows", default="asyncio,spawn,core,scheduler",
                        help="comma-separated subset of asyncio,spawn,core,scheduler")
    args = parser.parse_args(argv)
    count = args.thunks or (1000 if args.quick else 10_000)
    wanted = set(args.rows.split(","))
    names = {
        "asyncio": f"bare fork/exec, asyncio (j={args.jobs})",
        "spawn": f"bare posix_spawn + waitpid, threads (j={args.jobs})",
        "core": f"execution core, no scheduler (j={args.jobs})",
        "scheduler": f"scheduler + local engine, cold (j={args.jobs})",
    }
    per_thunk: dict[str, list[tuple[float, float]]] = {key: [] for key in names if key in wanted}
    with tempfile.TemporaryDirectory(prefix="gg-bench-local-") as tmp:
        workdir = Path(tmp)
        program = build_trivial(workdir)
        store = LocalStore.init(workdir / ".gg")
        function = store.put_file(program, executable=True)
        for repeat in range(args.repeats):
            salt = f"r{repeat}"
            if "asyncio" in per_thunk:
                clock = asyncio.run(bare_asyncio(program, count, args.jobs, workdir, salt))
                per_thunk["asyncio"].append((clock.wall / count, clock.cpu / count))
            if "spawn" in per_thunk:
                clock = bare_spawn(program, count, args.jobs, workdir, salt)
                per_thunk["spawn"].append((clock.wall / count, clock.cpu / count))
            if "core" in per_thunk:
                clock = asyncio.run(core(store, leaves(store, function, count, salt), args.jobs))
                per_thunk["core"].append((clock.wall / count, clock.cpu / count))
            if "scheduler" in per_thunk:
                root = build_graph(store, function, count, args.fan_in, "g" + salt)
                clock, executed = asyncio.run(scheduled(store, root, args.jobs))
                per_thunk["scheduler"].append((clock.wall / executed, clock.cpu / executed))
    load = os.getloadavg()
    print(f"{count} trivial thunks per row, median of {args.repeats} interleaved repeats; "
          f"cores: {os.cpu_count()}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    header = (f"{'what':<52} {'ms/thunk':>9} {'thunks/s':>9} {'vs asyncio fork/exec':>21} "
              f"{'CPU ms/thunk':>13} {'CPU vs asyncio':>15}")
    print(header)
    print("-" * len(header))
    base = [statistics.median(s[k] for s in per_thunk["asyncio"]) for k in (0, 1)] if "asyncio" in per_thunk else None
    for key, samples in per_thunk.items():
        wall = statistics.median(s[0] for s in samples)
        cpu = statistics.median(s[1] for s in samples)
        ratio, cpu_ratio = (f"{base[0] / wall:.2f}", f"{base[1] / cpu:.2f}") if base else ("", "")
        print(f"{names[key]:<52} {1000 * wall:>9.3f} {1 / wall:>9.0f} {ratio:>21} {1000 * cpu:>13.3f} {cpu_ratio:>15}")
    print("ratio = bare fork/exec's per thunk / the row's, for wall time and for this process's CPU time "
          "(issue 13's target: wall >= 0.70)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
