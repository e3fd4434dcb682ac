"""Per request: a warm model call answered by the memo against one re-modelled, Lua 5.4.

What a warm worker spends on each of a warm ``make clean && gg-infer make``'s calls,
without the processes around it: Lua is built once with ``gg-infer make -s`` (a fresh
store, the models' caches and the memo filled), then the calls that run modelled (from
``.gg/infer/log``) are answered again in this process, one after another on one thread,
through ``server.handle`` after Lua's ``make clean``, with a context of their own per
pass seeded with what the earlier passes learnt, as the warm server's worker is per
run: with the memo (``memo``), and with ``GG_INFER_MEMO=off`` (``model``, every cache
of the models warm). The two variants are interleaved, ``--repeat`` passes each (a
first pass of the memo variant records, it is not counted), and each row is the median
pass. ``--profile FILE`` writes a cProfile of one more pass of each variant
(``FILE.memo``, ``FILE.model``) and prints their top entries.

The configure-step and consumed-output checks (``/proc`` walks) are not in these
numbers: a request made here has no shim process (pid 0); they cost 0.3–0.5 ms a call.

Run: .venv/bin/python bench/bench_model_requests.py [--repeat 3] [--profile /tmp/req.prof]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_infer_support import extract_lua54, tool_env  # noqa: E402


def logged_calls(tree: Path) -> list[list[str]]:
    """argv of each modelled call in the run's log (Lua's arguments have no blanks)."""
    calls = []
    for line in (tree / ".gg" / "infer" / "log").read_text().splitlines():
        fields = line.split("\t")
        if len(fields) == 4 and fields[0] == "model":
            calls.append(fields[3].split(" "))
    return calls


def clean(tree: Path) -> None:
    """What Lua's ``make clean`` removes (each pass starts as a warm run after it)."""
    for pattern in ("*.o", "liblua.a", "lua", "luac"):
        for path in tree.glob(pattern):
            path.unlink()


def one_pass(tree: Path, calls: list[list[str]], env: dict[str, str], memo: bool, seed: dict[str, dict],
             profile: cProfile.Profile | None = None) -> list[float]:
    """Seconds per call, answering ``calls`` with a fresh context seeded from ``seed`` (as
    a run's worker does; what the pass learnt is merged into ``seed`` afterwards)."""
    from ir.store import LocalStore
    from model_sub.context import ModelContext
    from model_sub.server import Request, handle

    clean(tree)
    ctx = ModelContext.create(LocalStore.init(tree / ".gg"), str(tree), env["PATH"], memo=memo)
    ctx.seed_caches(seed)
    times = []
    try:
        for argv in calls:
            request = Request(str(tree), argv, env)
            if profile is not None:
                profile.enable()
            started = time.perf_counter()
            reply = handle(ctx, request, stop_pid=os.getpid())
            times.append(time.perf_counter() - started)
            if profile is not None:
                profile.disable()
            if reply.exec_real or reply.status:
                raise SystemExit(f"not modelled: {' '.join(argv)}")
        for name, section in ctx.cache_snapshot().items():
            seed.setdefault(name, {}).update(section)
    finally:
        ctx.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="interleaved passes per variant (default 3)")
    parser.add_argument("--profile", metavar="FILE", help="also write a cProfile of one pass of each variant")
    args = parser.parse_args()
    env = tool_env()
    env.pop("GG_INFER_MEMO", None)
    with tempfile.TemporaryDirectory(prefix="gg-bench-requests-") as tmp:
        tree = extract_lua54(Path(tmp) / "lua")
        subprocess.run([sys.executable, "-m", "model_sub.infer", "make", "-s"], cwd=tree,
                       env={**env, "GG_INFER_SERVER": "off"}, check=True, capture_output=True)
        calls = logged_calls(tree)
        os.chdir(tree)
        seed: dict[str, dict] = {}
        one_pass(tree, calls, env, memo=True, seed=seed)  # records this process's requests (another environment)
        passes: dict[str, list[list[float]]] = {"memo": [], "model": []}
        for _ in range(args.repeat):
            for name in passes:
                passes[name].append(one_pass(tree, calls, env, memo=name == "memo", seed=seed))
        print(f"Lua 5.4, {len(calls)} modelled calls per pass, median of {args.repeat} interleaved passes; "
              f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{'variant':<8} {'pass ms':>9} {'per call ms':>12} {'median call ms':>15} {'first call ms':>14}")
        totals = {}
        for name, runs in passes.items():
            total = statistics.median(sum(run) for run in runs)
            totals[name] = total
            median_call = statistics.median(statistics.median(run) for run in runs)
            first = statistics.median(run[0] for run in runs)
            print(f"{name:<8} {total * 1000:>9.1f} {total / len(calls) * 1000:>12.2f} {median_call * 1000:>15.2f} "
                  f"{first * 1000:>14.2f}")
        print(f"memo / model: {totals['memo'] / totals['model']:.2f}")
        if args.profile:
            for name in passes:
                profile = cProfile.Profile()
                one_pass(tree, calls, env, memo=name == "memo", seed=seed, profile=profile)
                profile.dump_stats(f"{args.profile}.{name}")
                print(f"\n--- {name}: cProfile of one pass (cumulative) ---")
                pstats.Stats(profile).sort_stats("cumulative").print_stats(22)
        os.chdir("/")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
