"""Benchmark: N concurrent ``gg-force`` processes on one synthetic graph.

Run from the repository root: ``.venv/bin/python bench/bench_concurrent.py [--quick]``.

For N = 1, 2, 4 forcers started together on the same graph (``--leaves`` slow thunks
under 8 combiners and a top; each leaf sleeps ``--sleep`` seconds), one table prints,
side by side, the total **executions** -- counted by the thunks themselves, each appends
its name to a counter file, so a thunk run twice by two forcers counts twice -- and the
**wall time** until the last forcer finished. Two ways of sharing:

* ``one .gg``: every forcer on one local store (merged by the per-thunk ``flock``);
* ``file://``: a ``.gg`` per forcer and one shared ``file://`` store, results shared
  read-write (merged by leases in the store, as on S3).

Variants are interleaved and repeated (``--repeat``, default 3; ``--quick``: 1 and a
smaller graph); the medians are printed with the load average. Without merging, N
forcers would execute N times the thunks. This is a benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ir.store import LocalStore  # noqa: E402
from ir.thunk import Input, Thunk  # noqa: E402

BIN = Path(sys.executable).parent
GROUPS = 8


def build(store: LocalStore, counter: Path, leaves: int, sleep: float) -> tuple[str, int]:
    """The graph in ``store`` (the same IDs in every store for one counter): (top, thunks)."""
    shell = store.put_file(Path("/bin/sh"), executable=True)

    def thunk(name: str, script: str, deps: list[str]) -> str:
        names = [f"i{k}" for k in range(len(deps))]
        body = f"echo {name} >> {counter}; {script.format(' '.join(names))}"
        return store.put_thunk(Thunk(shell, ("sh", "-c", body), ("out",), executables=(Input(shell),),
                                     thunks=tuple(Input(d, n) for d, n in zip(deps, names, strict=True))))

    leaf_ids = [thunk(f"leaf{i}", f"sleep {sleep}; echo {i} > out", []) for i in range(leaves)]
    groups = [thunk(f"group{g}", "cat {} > out", leaf_ids[g::GROUPS]) for g in range(GROUPS)]
    return thunk("top", "cat {} > out", groups), leaves + GROUPS + 1


def one_run(mode: str, forcers: int, leaves: int, sleep: float, jobs: int) -> tuple[int, int, float]:
    """(executions, thunks, wall seconds) of ``forcers`` gg-force processes started together."""
    root = Path(tempfile.mkdtemp(prefix="gg-bench-concurrent-"))
    try:
        counter = root / "counter"
        shared = root / "shared"
        shared.mkdir()
        stores = [root / ".gg"] if mode == "one .gg" else [root / f"user{n}" / ".gg" for n in range(forcers)]
        tops = {build(LocalStore.init(gg), counter, leaves, sleep) for gg in stores}
        (top, thunks), = tops
        base = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
        envs = []
        for n in range(forcers):
            env = {**base, "GG_DIR": str(stores[n % len(stores)])}
            if mode == "file://":
                env.update(GG_STORAGE_URI=f"file://{shared}", GG_REMOTE_RESULTS="read-write")
            else:
                env.pop("GG_STORAGE_URI", None)
            envs.append(env)
        argv = [str(BIN / "gg-force"), "-q", "--no-speculate", "-j", str(jobs), "--print", top]
        started = time.monotonic()
        processes = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for env in envs]
        outputs = [process.communicate() for process in processes]
        wall = time.monotonic() - started
        for process, (_out, err) in zip(processes, outputs, strict=True):
            if process.returncode != 0:
                raise SystemExit(f"bench_concurrent: a forcer failed: {err.strip()}")
        if len({out for out, _ in outputs}) != 1:
            raise SystemExit("bench_concurrent: the forcers disagree on the result")
        ran = Counter(counter.read_text().split())
        return sum(ran.values()), thunks, wall
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=200)
    parser.add_argument("--sleep", type=float, default=0.05, help="seconds each leaf sleeps (default 0.05)")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="-j of each forcer (default 2)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--forcers", default="1,2,4")
    parser.add_argument("--modes", default="one .gg,file://")
    parser.add_argument("--quick", action="store_true", help="one repetition of a 100-leaf graph")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.leaves = 1, min(args.leaves, 100)
    counts = [int(n) for n in args.forcers.split(",")]
    modes = args.modes.split(",")
    samples: dict[tuple[str, int], list[tuple[int, int, float]]] = {}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeat):
        for mode in modes:
            for forcers in counts:
                samples.setdefault((mode, forcers), []).append(one_run(mode, forcers, args.leaves, args.sleep,
                                                                       args.jobs))
    print(f"{args.leaves} leaves x {args.sleep:g} s, -j {args.jobs} per forcer, median of {args.repeat}; "
          f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} cores)")
    print(f"{'sharing':<8} {'forcers':>7} {'thunks':>7} {'executions':>10} {'unmerged':>9} {'wall s':>7} {'vs 1':>6}")
    for mode in modes:
        alone = statistics.median(s[2] for s in samples[(mode, counts[0])])
        for forcers in counts:
            runs = samples[(mode, forcers)]
            executions = statistics.median(s[0] for s in runs)
            wall = statistics.median(s[2] for s in runs)
            print(f"{mode:<8} {forcers:>7} {runs[0][1]:>7} {executions:>10g} {forcers * runs[0][1]:>9} "
                  f"{wall:>7.2f} {wall / alone:>6.2f}")


if __name__ == "__main__":
    main()
