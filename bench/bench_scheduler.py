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

The trivial program is a tiny C program (``gcc`` is on every build machine here) that
writes its argument to ``out``; ``--program sh`` uses ``/bin/sh -c`` instead.
This is a benchmark, not a test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from executor.execution import execute  # noqa: E402
from executor.local_engine import LocalEngine  # noqa: E402
from executor.observe import RunObserver  # noqa: E402
from executor.scheduler import ForceConfig, Scheduler  # noqa: E402
from ir.store import LocalStore  # noqa: E402
from ir.thunk import Input, Thunk  # noqa: E402

TRIVIAL_C = r"""
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int fd = open("out", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return 1;
    const char *text = argc > 1 ? argv[1] : "";
    if (write(fd, text, strlen(text)) < 0) return 1;
    return close(fd) != 0;
}
"""


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
        source, binary = workdir / "trivial.c", workdir / "trivial"
        source.write_text(TRIVIAL_C)
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(source)], check=True)
        return binary, ["trivial"]
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

    async def one(ident: str, thunk: Thunk) -> None:
        async with gate:
            await execute(ident, thunk, store, runtime_env=runtime)

    started = time.perf_counter()
    await asyncio.gather(*(one(i, t) for i, t in zip(ids, thunks, strict=True)))
    return time.perf_counter() - started


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--thunks", type=int, default=10_000, help="graph size (default 10000)")
    parser.add_argument("--fan-in", type=int, default=100, help="leaves per group thunk (default 100)")
    parser.add_argument("--samples", type=int, default=2000,
                        help="runs for the bare and execution-core rows (default 2000)")
    parser.add_argument("--program", choices=("c", "sh"), default="c" if shutil.which("gcc") else "sh")
    args = parser.parse_args(argv)
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
