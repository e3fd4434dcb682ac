"""``gg-infer`` start + stop with no tool calls, side by side with a bare Python start
and a bare shell start, in one run. Prints a table of medians and ratios.

A build that calls no tool (``gg-infer true``, a no-op ``make``) measures what gg-infer
itself costs before and after the build: the interpreter start, its imports, the cached
shim/preload lookup, the socket server. The machine is shared and noisy, so each row is
the median of ``--runs`` runs, interleaved (one run of each row per round) so that a
burst of load hits all rows alike. The store is created by a first, untimed run.

Run: .venv/bin/python bench/bench_infer_start.py [--runs 20] [--source DIR]
(``--source DIR`` times ``python -m model_sub.infer`` from another checkout, e.g. an
older commit extracted with ``git archive``, to compare before and after in one run.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def _time(command: list[str], cwd: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--source", action="append", default=[], type=Path,
                        help="also time python -m model_sub.infer from this checkout (repeatable)")
    args = parser.parse_args()
    # warm means bytecode cached too: a PYTHONDONTWRITEBYTECODE shell would time compiling every run
    env = {k: v for k, v in os.environ.items() if k not in ("GG_DIR", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    rows: dict[str, tuple[list[str], dict[str, str]]] = {
        "sh -c true": (["/bin/sh", "-c", "true"], env),
        "python -c pass": ([sys.executable, "-c", "pass"], env),
        "gg-infer true (console script)": ([str(VENV_BIN / "gg-infer"), "true"], env),
    }
    for source in args.source:
        rows[f"python -m model_sub.infer true ({source})"] = (
            [sys.executable, "-m", "model_sub.infer", "true"], {**env, "PYTHONPATH": str(source.resolve())})
    with tempfile.TemporaryDirectory(prefix="gg-bench-start-") as work:
        for command, row_env in rows.values():  # create the store and the cached shim/preload
            subprocess.run(command, cwd=work, env=row_env, check=True)
        times: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.runs):
            for name, (command, row_env) in rows.items():
                times[name].append(_time(command, work, row_env))
    base_sh = statistics.median(times["sh -c true"])
    base_py = statistics.median(times["python -c pass"])
    print(f"{'row':<60} {'median ms':>10} {'min ms':>8} {'/ sh':>7} {'/ python':>9}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<60} {median * 1000:>10.1f} {min(values) * 1000:>8.1f} {median / base_sh:>7.1f} "
              f"{median / base_py:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
