"""Lua 5.4: plain ``make -j2`` against ``gg-infer make`` + ``gg-force -j2``, cold and warm,
and the cost of one model call against the real tool's own. Prints a table.

Wall times on a shared 2-core machine vary with load, so every build row also shows
the CPU time (user + system, the process and all its children): that is the work the
step costs, whatever else runs.

Per-call rows time a loop *inside* one gg-infer run (the shell reads the clock before
and after the loop), so gg-infer's own start and stop are not spread over the calls:

* model ``gcc -c``, warm: the compile commands make ran, each once (as in a rebuild
  after ``make clean``), the store and the model caches filled by an earlier run;
* model ``gcc -c``, cold: the same in a fresh store (header scans, ``-###``, storing
  the toolchain on the first call);
* pass-through: ``gcc -dumpmachine`` is not modelled, so the shim asks the server and
  then execs the real gcc; against the real gcc run directly.

Run: .venv/bin/python bench/bench_infer.py
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_infer_support import VENV_BIN, extract_lua54, tool_env  # noqa: E402

PASS_CALLS = 200


def timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=tool_env(), check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def inner_loop(command: list[str], cwd: Path, calls: list[str]) -> float:
    """Seconds the shell spends running ``calls`` one after another, under ``command``."""
    script = "s=$(date +%s%N)\n" + "".join(f"{call} >/dev/null\n" for call in calls) + \
        "e=$(date +%s%N)\necho $((e - s)) >&2\n"
    result = subprocess.run([*command, "sh", "-c", script], cwd=cwd, env=tool_env(), check=True,
                            capture_output=True, text=True)
    return int(result.stderr.strip().splitlines()[-1]) / 1e9


def infer(*command: str) -> list[str]:
    return [sys.executable, "-m", "model_sub.infer", *command]


def force(*targets: str) -> list[str]:
    return [str(VENV_BIN / "gg-force"), "-q", "-j2", *targets]


def clean(tree: Path) -> None:
    for pattern in ("*.o", "liblua.a", "lua", "all"):
        for path in tree.glob(pattern):
            path.unlink()


def model_calls(tree: Path) -> list[tuple[str, float]]:
    """(command, server-side milliseconds) of the modelled calls in ``.gg/infer/log``."""
    calls = []
    for line in (tree / ".gg" / "infer" / "log").read_text().splitlines():
        fields = line.split("\t")
        if len(fields) == 4 and fields[0] == "model" and fields[2].endswith("ms"):
            calls.append((fields[3], float(fields[2][:-2])))
    return calls


def main() -> None:
    rows: list[tuple[str, float, float | None]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gg-bench-") as tmp:
        tmp_path = Path(tmp)
        plain = extract_lua54(tmp_path / "plain")
        rows.append(("plain make -j2", *timed(["make", "-s", "-j2"], plain)))

        gg = extract_lua54(tmp_path / "gg")
        cold_infer = timed(infer("make", "-s", "-j2"), gg)
        cold_force = timed(force("lua"), gg)
        rows += [("gg-infer make -j2 (cold: fresh store)", *cold_infer), ("gg-force -j2 lua (cold)", *cold_force),
                 ("  total cold", cold_infer[0] + cold_force[0], cold_infer[1] + cold_force[1])]
        clean(gg)
        (gg / ".gg" / "infer" / "log").unlink()
        warm_infer = timed(infer("make", "-s", "-j2"), gg)
        logged = model_calls(gg)
        warm_model = [ms for _, ms in logged]
        # the compile commands make really ran, replayed one by one below
        compiles = [command for command, _ in logged if command.startswith("gcc ") and " -c " in command]
        warm_force = timed(force("lua"), gg)
        rows += [("gg-infer make -j2 (warm: same store)", *warm_infer), ("gg-force -j2 lua (warm)", *warm_force),
                 ("  total warm", warm_infer[0] + warm_force[0], warm_infer[1] + warm_force[1])]
        rows.append(("gg-infer start + stop (no tool calls)", *timed(infer("true"), gg)))

        # per call, each timed inside one gg-infer run
        real = inner_loop([], plain, compiles) / len(compiles)
        clean(gg)
        warm = inner_loop(infer(), gg, compiles) / len(compiles)
        fresh = extract_lua54(tmp_path / "fresh")
        cold = inner_loop(infer(), fresh, compiles) / len(compiles)
        dump = ["gcc -dumpmachine"] * PASS_CALLS
        real_dump = inner_loop([], gg, dump) / PASS_CALLS
        shim_dump = inner_loop(infer(), gg, dump) / PASS_CALLS
        rows += [
            (f"real gcc -c, per call (make's {len(compiles)} Lua compiles)", real, None),
            ("model gcc -c, per call, warm caches", warm, None),
            ("model gcc -c, per call, cold (fresh store)", cold, None),
            ("real gcc -dumpmachine, per call", real_dump, None),
            ("shim -> server -> real gcc -dumpmachine, per call", shim_dump, None),
        ]
        notes.append(f"server time per modelled call in the warm make: median {statistics.median(warm_model):.1f} ms,"
                     f" max {max(warm_model):.1f} ms ({len(warm_model)} calls)")
        notes.append(f"pass-through overhead: {(shim_dump - real_dump) * 1000:.2f} ms per call")
        shutil.rmtree(fresh)
    width = max(len(name) for name, _, _ in rows)
    print(f"{'step':<{width}}  {'wall s':>8}  {'CPU s':>7}")
    for name, wall, cpu in rows:
        print(f"{name:<{width}}  {wall:8.4f}  {'' if cpu is None else f'{cpu:7.2f}'}")
    print()
    for note in notes:
        print(note)
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (2 cores)")


if __name__ == "__main__":
    main()
