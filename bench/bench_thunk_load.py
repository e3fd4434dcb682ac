"""Benchmark: loading, rewriting and writing thunks — the store half of the scheduler's work.

Run from the repository root::

    .venv/bin/python bench/bench_thunk_load.py [--thunks N] [--baseline SRC] [--repeat 3] [--dir /dev/shm]

Each measurement runs in a fresh child process (so memory numbers are its own) on the
graph ``bench_scheduler.py --null-engine`` forces (a two-level tree: groups of
``--fan-in`` leaves and a root), written to a fresh store by the code under test:

* **write graph** — ``store.put_thunk`` for every thunk (encoding + validation + a blob);
* **load** — ``store.load_thunk`` for every thunk (read, ID check, decode, validation),
  then the fields the scheduler reads (``outputs``, ``thunks``, ``function_hash``);
* **rewrite + put** — every group and the root rewritten with its dependencies'
  results (``executor.scheduler.rewrite``) and stored (``put_thunk``), as ``_reduce`` does;
* **KB per thunk** — the resident-memory growth of holding every loaded thunk.

``--baseline SRC`` (a source tree, e.g. ``git archive`` of main unpacked) measures that
tree too, interleaved ``--repeat`` times; the table shows medians and ratios. A
benchmark, not a test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if "--source" in sys.argv:  # a child measuring another source tree (--baseline)
    sys.path.insert(0, sys.argv[sys.argv.index("--source") + 1])

from bench_scheduler import build_graph, interleaved_medians  # noqa: E402  (bench/, beside this script)

from executor.scheduler import FIRST, rewrite  # noqa: E402
from ir.ids import Kind, id_of_bytes  # noqa: E402
from ir.store import LocalStore  # noqa: E402


def _rss_kb() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def child(thunks: int, fan_in: int, where: str | None, profile: str | None) -> dict[str, float]:
    """One measurement in this (fresh) process."""
    with tempfile.TemporaryDirectory(prefix="gg-bench-load-", dir=where) as tmp:
        store = LocalStore.init(Path(tmp) / ".gg")
        function = store.put_bytes(b"#!/bin/sh\n", executable=True)
        ids, write_s = build_graph(store, function, ["f"], thunks, fan_in)
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        rss_before = _rss_kb()
        cpu = time.process_time()
        started = time.perf_counter()
        loaded = [store.load_thunk(ident) for ident in ids]
        for thunk in loaded:  # what the scheduler reads of every node
            thunk.outputs, thunk.thunks, thunk.function_hash  # noqa: B018
        load_s, load_cpu = time.perf_counter() - started, time.process_time() - cpu
        rss_kb = (_rss_kb() - rss_before) / len(ids)
        results = {ident: {FIRST: id_of_bytes(ident.encode(), Kind.VALUE),
                           "out": id_of_bytes(ident.encode(), Kind.VALUE)} for ident in ids}
        parents = [thunk for thunk in loaded if thunk.thunks]
        started = time.perf_counter()
        for thunk in parents:
            store.put_thunk(rewrite(thunk, results))
        rewrite_s = time.perf_counter() - started
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
    return {"write_s": write_s, "load_s": load_s, "load_cpu_s": load_cpu, "rewrite_s": rewrite_s,
            "parents": len(parents), "kb_per_thunk": rss_kb}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thunks", type=int, default=100_000, help="graph size (default 100000)")
    parser.add_argument("--fan-in", type=int, default=100, help="leaves per group (default 100)")
    parser.add_argument("--baseline", metavar="SRC", help="also measure this source tree, interleaved")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs per variant (default 3)")
    parser.add_argument("--dir", help="make the stores here (default: the temp directory)")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of one load + rewrite (this tree)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child or args.profile:
        print(json.dumps(child(args.thunks, args.fan_in, args.dir, args.profile)))
        return 0
    load_before = os.getloadavg()
    medians = interleaved_medians(
        __file__, ["--child", "--thunks", str(args.thunks), "--fan-in", str(args.fan_in),
                   *(["--dir", args.dir] if args.dir else [])], args.baseline, args.repeat,
        ("write_s", "load_s", "load_cpu_s", "rewrite_s", "kb_per_thunk"))
    n = args.thunks
    print(f"{n} thunks (two-level, fan-in {args.fan_in}), store in {args.dir or tempfile.gettempdir()}, "
          f"median of {args.repeat} interleaved runs; load average before "
          f"{' '.join(f'{x:.2f}' for x in load_before)}")
    header = (f"{'variant':<10} {'write s':>8} {'load s':>7} {'load us/thunk':>14} {'load CPU s':>11} "
              f"{'rewrite+put s':>14} {'KB/thunk':>9}")
    print(header)
    print("-" * len(header))
    for name, med in medians.items():
        print(f"{name:<10} {med['write_s']:>8.2f} {med['load_s']:>7.2f} {1e6 * med['load_s'] / n:>14.1f} "
              f"{med['load_cpu_s']:>11.2f} {med['rewrite_s']:>14.2f} {med['kb_per_thunk']:>9.2f}")
    if args.baseline:
        now, base = medians["this tree"], medians["baseline"]

        def ratio(key: str) -> str:
            return f"{base[key] / now[key]:.1f}x" if now[key] else "-"

        print(f"{'ratio':<10} {ratio('write_s'):>8} {ratio('load_s'):>7} {'':>14} {ratio('load_cpu_s'):>11} "
              f"{ratio('rewrite_s'):>14} {ratio('kb_per_thunk'):>9}")
        print("ratio: baseline / this tree (times: higher is faster; KB/thunk: higher is smaller)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
