"""A fresh ``gg-force`` process on a build whose every target is already reduced.

Issue 13's target: all 10,000 targets cached, fresh ``gg-force`` process, ≤ 0.5 s. The
store holds ``--targets`` trivial leaf thunks (``sh -c 'printf %s "$1" > out'``), each
with its value and reduction records (``T#out``, then ``T``), written with
``LocalStore.put_reductions`` as a run writes them (``--execute`` runs the thunks
with gg-force instead, which takes minutes). Rows, interleaved and repeated
(``--rounds``), medians of wall and CPU (user + system) time, with the load average
(on a shared machine the CPU column is the steadier one):

* ``python -c pass`` — the interpreter start every row pays;
* ``cp`` of the same values — a floor for writing the targets;
* ``gg-force`` on the thunk IDs (``--print``: nothing to write);
* ``gg-force`` on placeholders (each replaced by its value, hashed on the way);
* with ``--source DIR``, the same two rows from another checkout (``python -m
  executor.force_cli`` with ``PYTHONPATH=DIR``), e.g. the commit before the fast path.
  Each source gets its own copy of the store that also has the records as the files of
  stores from before the reduction log (``.gg/reductions/<ref>``), which older
  checkouts read (a newer one imports them into its log on its first run).

With ``--start``, instead: the start of a warm build's ``gg-force`` -- one cached
placeholder in a store of 100 reduced thunks, ``--rounds`` runs per row (20 is a good
number), ``python -c pass`` beside it -- what a build that changed nothing pays at its
end.

The placeholders are rewritten before every timed run (untimed). A benchmark, not a
test: it asserts nothing about speed.

Run: .venv/bin/python bench/bench_cached_force.py [--targets 10000] [--rounds 3] [--source DIR] [--start]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ir.placeholder import write_placeholder  # noqa: E402
from ir.store import LocalStore, encode_reduction, reduction_name  # noqa: E402
from ir.thunk import Input, Thunk  # noqa: E402

VENV_BIN = Path(sys.executable).parent
ARGV = ("sh", "-c", 'printf %s "$1" > out', "sh")


def make_store(work: Path, count: int, execute: bool, env: dict[str, str]) -> tuple[list[str], list[str]]:
    """``count`` reduced leaf thunks: (thunk IDs, value IDs)."""
    store = LocalStore.init(work / ".gg")
    sh = store.put_file(Path("/bin/sh"), executable=True)
    thunks = [store.put_thunk(Thunk(function_hash=sh, args=(*ARGV, f"value {i}\n"), outputs=("out",),
                                    executables=(Input(sh),))) for i in range(count)]
    if execute:
        subprocess.run([str(VENV_BIN / "gg-force"), "-q", *thunks], cwd=work, env=env, check=True)
        values = [store.resolve(t) for t in thunks]
    else:
        values = [store.put_bytes(f"value {i}\n".encode()) for i in range(count)]
        for thunk, value in zip(thunks, values, strict=True):  # as the scheduler records a run
            store.put_reductions([(f"{thunk}#out", value), (thunk, value)])
    assert all(values)
    return thunks, [v for v in values if v]


def store_for_older_checkouts(store: LocalStore, where: Path) -> Path:
    """A copy of ``store`` whose records are also files, the layout before the reduction log."""
    shutil.copytree(store.root, where)
    legacy = where / "reductions"
    legacy.mkdir(exist_ok=True)
    for ref, result in store.reduction_records().items():
        (legacy / reduction_name(ref)).write_bytes(encode_reduction(result))
    return where


def reset_placeholders(directory: Path, thunks: list[str]) -> list[str]:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir()
    names = []
    for index, thunk in enumerate(thunks):
        name = f"t{index}.o"
        write_placeholder(directory / name, thunk)
        names.append(name)
    return names


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the command)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


Forcers = dict[str, tuple[list[str], dict[str, str]]]  # row name -> (command, environment)
Rows = dict[str, list[tuple[float, float]]]


def time_finished_build(work: Path, env: dict[str, str], forcers: Forcers, thunks: list[str], blobs: list[str],
                        rounds: int) -> Rows:
    """The 10,000-target rows: ``python -c pass``, ``cp`` of the values, then per forcer
    the IDs (``--print``) and the placeholders, interleaved, ``rounds`` times."""
    rows: Rows = {"python -c pass": [], f"cp of the {len(blobs)} values": []}
    for name in forcers:
        rows[f"{name}: IDs (--print)"] = []
        rows[f"{name}: placeholders"] = []
    targets = work / "targets"
    for _ in range(rounds):
        rows["python -c pass"].append(timed([sys.executable, "-c", "pass"], work, env))
        copies = work / "copies"
        copies.mkdir()
        rows[f"cp of the {len(blobs)} values"].append(timed(["cp", "-t", str(copies), *blobs], work, env))
        shutil.rmtree(copies)
        for name, (command, forcer_env) in forcers.items():
            rows[f"{name}: IDs (--print)"].append(timed([*command, "-q", "--print", *thunks], work, forcer_env))
            names = reset_placeholders(targets, thunks)
            rows[f"{name}: placeholders"].append(timed([*command, "-q", *names], targets, forcer_env))
            assert (targets / names[-1]).read_bytes() == f"value {len(names) - 1}\n".encode()
    return rows


def time_start(work: Path, env: dict[str, str], forcers: Forcers, thunks: list[str], blobs: list[str],
               rounds: int) -> Rows:
    """``--start``: ``python -c pass`` and each forcer on one cached placeholder, interleaved."""
    rows: Rows = {"python -c pass": [], **{f"{name}: 1 placeholder": [] for name in forcers}}
    targets = work / "targets"
    for _ in range(rounds):
        rows["python -c pass"].append(timed([sys.executable, "-c", "pass"], work, env))
        for name, (command, forcer_env) in forcers.items():
            names = reset_placeholders(targets, thunks[:1])
            rows[f"{name}: 1 placeholder"].append(timed([*command, "-q", *names], targets, forcer_env))
            assert (targets / names[0]).read_bytes() == b"value 0\n"
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--execute", action="store_true", help="run the thunks with gg-force to reduce them")
    parser.add_argument("--source", action="append", default=[], type=Path,
                        help="also time python -m executor.force_cli from this checkout (repeatable)")
    parser.add_argument("--start", action="store_true",
                        help="time gg-force on one cached placeholder in a small store instead")
    args = parser.parse_args()
    if args.start:
        args.targets = 100
    base_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    with tempfile.TemporaryDirectory(prefix="gg-bench-cached-") as tmp:
        work = Path(tmp)
        env = {**base_env, "GG_DIR": str(work / ".gg")}
        thunks, values = make_store(work, args.targets, args.execute, env)
        store = LocalStore(work / ".gg")
        blobs = [str(store.blob_path(v)) for v in values]
        forcers: Forcers = {"gg-force": ([str(VENV_BIN / "gg-force")], env)}
        for number, source in enumerate(args.source):
            gg_dir = store_for_older_checkouts(store, work / f"gg-source-{number}")
            forcers[f"{source}"] = ([sys.executable, "-m", "executor.force_cli"],
                                    {**env, "GG_DIR": str(gg_dir), "PYTHONPATH": str(source.resolve())})
        measure = time_start if args.start else time_finished_build
        rows = measure(work, env, forcers, thunks, blobs, args.rounds)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    what = "1 cached placeholder, a store of 100 thunks" if args.start else f"{args.targets} cached targets"
    print(f"{what}, {args.rounds} rounds (median), load average {load}")
    print(f"{'row':<60} {'wall s':>7} {'min':>7} {'CPU s':>7}")
    for name, times in rows.items():
        walls, cpus = [t[0] for t in times], [t[1] for t in times]
        print(f"{name:<60} {statistics.median(walls):>7.3f} {min(walls):>7.3f} {statistics.median(cpus):>7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
