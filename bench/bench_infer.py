"""Lua 5.4: plain ``make -j2`` against ``gg-infer make`` + ``gg-force -j2``, cold and warm.

Also measures one model call against the real tool's own cost. Prints a table.
Run: .venv/bin/python bench/bench_infer.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_infer_support import VENV_BIN, extract_lua54, tool_env  # noqa: E402

CALLS = 40


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=tool_env(), check=True, capture_output=True)
    return time.perf_counter() - started


def infer(*command: str) -> list[str]:
    return [sys.executable, "-m", "model_sub.infer", *command]


def force(*targets: str) -> list[str]:
    return [str(VENV_BIN / "gg-force"), "-q", "-j2", *targets]


def clean(tree: Path) -> None:
    for pattern in ("*.o", "liblua.a", "lua", "all"):
        for path in tree.glob(pattern):
            path.unlink()


def main() -> None:
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="gg-bench-") as tmp:
        tmp_path = Path(tmp)
        plain = extract_lua54(tmp_path / "plain")
        rows.append(("plain make -j2", timed(["make", "-s", "-j2"], plain)))

        gg = extract_lua54(tmp_path / "gg")
        cold_infer = timed(infer("make", "-s", "-j2"), gg)
        cold_force = timed(force("lua"), gg)
        rows += [("gg-infer make -j2 (cold)", cold_infer), ("gg-force -j2 lua (cold)", cold_force),
                 ("  total cold", cold_infer + cold_force)]
        clean(gg)
        warm_infer = timed(infer("make", "-s", "-j2"), gg)
        warm_force = timed(force("lua"), gg)
        rows += [("gg-infer make -j2 (warm: same store)", warm_infer), ("gg-force -j2 lua (warm)", warm_force),
                 ("  total warm", warm_infer + warm_force)]

        # one call: a modelled `gcc -c` (warm caches), an unmodelled call through the shim, the real tools
        (tmp_path / "calls").mkdir()
        work = tmp_path / "calls"
        shutil.copy(plain / "lctype.c", work)
        for header in plain.glob("*.h"):
            shutil.copy(header, work)
        flags = "-O2 -Wall -std=c99 -DLUA_USE_LINUX"
        loop = f"i=0; while [ $i -lt {CALLS} ]; do %s >/dev/null; i=$((i+1)); done"
        compile_call = f"gcc {flags} -c lctype.c -o lctype.o"
        timed(infer("sh", "-c", compile_call), work)  # warm the scan and driver caches
        real_compile = timed(["sh", "-c", loop % compile_call], work) / CALLS
        model_compile = timed(infer("sh", "-c", loop % compile_call), work) / CALLS
        empty = timed(infer("true"), work)
        real_dump = timed(["sh", "-c", loop % "gcc -dumpmachine"], work) / CALLS
        shim_dump = timed(infer("sh", "-c", loop % "gcc -dumpmachine"), work) / CALLS
        rows += [
            ("real gcc -c lctype.c, per call", real_compile),
            ("model gcc -c lctype.c, per call (incl. gg-infer start/CALLS)", model_compile),
            ("gg-infer start + stop (no tool calls)", empty),
            ("real gcc -dumpmachine, per call", real_dump),
            ("shim -> server -> real gcc -dumpmachine, per call", shim_dump),
        ]
    width = max(len(name) for name, _ in rows)
    print(f"{'step':<{width}}  seconds")
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:8.4f}")
    model_only = model_compile - empty / CALLS
    print(f"\nmodel call overhead vs real gcc -c: {model_only * 1000:.1f} ms vs {real_compile * 1000:.1f} ms")


if __name__ == "__main__":
    main()
