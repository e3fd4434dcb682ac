"""``gg trace simulate`` against emulated Lambda, side by side, in one run.

    .venv/bin/python bench/bench_simulate.py [--workers 2,4,8] [--quick]

Starts a moto_server and ``gg lambda-local`` (real awslambdaric workers) on 127.0.0.1,
then:

1. builds a three-level graph of ``sh`` thunks whose run times are set by ``sleep``
   (leaves 0.15–0.6 s, a middle level that joins four leaves each, one top) — sleeps,
   so that the prediction is not at the mercy of the 2 shared cores;
2. records it with the **local** engine (``gg-force --trace -j CORES``; more slots than
   cores would make thunks wait for a core *inside* their measured ``duration``): the
   trace the prediction is made from;
3. measures the per-invocation latency the way a user would: a calibration run of
   trivial thunks on the Lambda engine, one at a time; the latency is the median
   ``duration`` there minus the median local ``duration`` of the same thunks;
4. for each worker count N: ``gg trace simulate --policy fifo`` (gg-force's dispatch order
   today; ``critical-path`` beside it) on the local trace (with that latency,
   and with a latency calibrated the same way at concurrency N), and a real run of a
   fresh copy of the graph (a salt in every script, so nothing is cached) on the Lambda
   engine with ``-j N`` and ``GG_LAMBDA_BATCH=1`` (one thunk per invocation, as the
   model assumes); measured = that run's scheduler span (the ``done`` event's ``t``),
   with gg-force's whole ``elapsed`` (engine start included) beside it.

Numbers depend on the machine; nothing here asserts on them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executor.trace_simulate import report  # noqa: E402
from executor.trace_summary import read_trace  # noqa: E402
from ir.store import LocalStore  # noqa: E402
from tests.aws_fixtures import FAKE_AWS_ENV, start_lambda_local, start_moto, stop_process  # noqa: E402
from tests.forcing import ShellThunks  # noqa: E402

BIN = Path(sys.executable).parent


def build_graph(store: LocalStore, salt: str, leaves: int) -> str:
    """The benchmark graph; the same run times for every salt. Returns the top thunk."""
    sh = ShellThunks(store)
    leaf_ids = [sh.thunk(f"# {salt}\nsleep 0.{15 + (i * 7) % 46:02d}; echo leaf {i} > out") for i in range(leaves)]
    middles = []
    for start in range(0, leaves, 4):
        group = {f"i{k}": ident for k, ident in enumerate(leaf_ids[start:start + 4])}
        middles.append(sh.thunk(f"# {salt}\nsleep 0.3; cat {' '.join(group)} > out", thunks=group))
    inputs = {f"m{k}": ident for k, ident in enumerate(middles)}
    return sh.thunk(f"# {salt}\nsleep 0.2; cat {' '.join(inputs)} > out", thunks=inputs)


def trivial(store: LocalStore, salt: str, count: int) -> list[str]:
    sh = ShellThunks(store)
    return [sh.thunk(f"# {salt}\necho {i} > out") for i in range(count)]


def gg_force(env: dict[str, str], targets: list[str], trace: Path, engine: str, jobs: int) -> None:
    run = subprocess.run([str(BIN / "gg-force"), "--engine", engine, "-j", str(jobs), "--quiet", "--no-fallback",
                          "--no-speculate", "--trace", str(trace), *targets],
                         env=env, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        raise SystemExit(f"gg-force --engine {engine} failed: {run.stderr.strip()}")


def durations(trace: Path) -> list[float]:
    return [e["duration"] for e in read_trace(trace).events if e.get("event") == "finished"]


def elapsed(trace: Path) -> tuple[float, float]:
    """(the scheduler's span: the ``done`` event's ``t``, gg-force's whole ``elapsed``).

    The trace's clock starts once the engines are open; ``elapsed`` also counts opening
    them (for Lambda: the client, the function check), which no trace of another engine
    can know about."""
    done = next(e for e in reversed(read_trace(trace).events) if e.get("event") == "done")
    return done["t"], done["elapsed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="2,4,8", help="worker counts (default 2,4,8)")
    parser.add_argument("--quick", action="store_true", help="a smaller graph (a smoke run)")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    leaves = 12 if args.quick else 24
    root = Path(tempfile.mkdtemp(prefix="gg-bench-simulate-"))
    os.environ.update(FAKE_AWS_ENV)
    moto, endpoint = start_moto()
    lam = None
    try:
        import boto3

        bucket = f"gg-bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        lam = start_lambda_local(workers=max(counts), log_dir=root)
        store = LocalStore.init(root / ".gg")
        env = {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(root), "LANG": "C.UTF-8",
               **FAKE_AWS_ENV, "GG_DIR": str(store.root), "GG_STORAGE_URI": f"s3://{bucket}/blobs?endpoint={endpoint}",
               "GG_LAMBDA_FUNCTION": lam.function_name, "GG_LAMBDA_ENDPOINT": lam.url, "GG_LAMBDA_TIMEOUT": "60",
               "GG_LAMBDA_BATCH": "1"}

        local_trace = root / "local.jsonl"
        top = build_graph(store, "local", leaves)
        # -j = cores: the local engine's `duration` counts time spent waiting for a core
        # in its resource gate, so more slots than cores would inflate the run times.
        gg_force(env, [top], local_trace, "local", os.cpu_count() or 1)

        # Calibration: trivial thunks, one at a time, locally and on Lambda.
        calib_local, calib_lambda = root / "calib-local.jsonl", root / "calib-lambda.jsonl"
        gg_force(env, trivial(store, "warm-up", 4), root / "warm-up.jsonl", "lambda", 1)  # uploads sh once
        gg_force(env, trivial(store, "calib-local", 16), calib_local, "local", 1)
        gg_force(env, trivial(store, "calib-lambda", 16), calib_lambda, "lambda", 1)
        latency_ms = 1000 * (statistics.median(durations(calib_lambda)) - statistics.median(durations(calib_local)))

        predicted = report(read_trace(local_trace), counts, latency_ms, None, "fifo")
        rows = []
        for count, prediction in zip(counts, predicted["predictions"], strict=True):
            # The emulated workers share this machine's cores with the coordinator and moto,
            # so an invocation's overhead grows with concurrency: calibrate at N as well.
            calib = root / f"calib-lambda-{count}.jsonl"
            gg_force(env, trivial(store, f"calib-lambda-{count}", 3 * count), calib, "lambda", count)
            latency_at_n = 1000 * (statistics.median(durations(calib)) - statistics.median(durations(calib_local)))
            fifo, ideal = (report(read_trace(local_trace), [count], latency_at_n, None, policy)["predictions"][0]
                           ["predicted"] for policy in ("fifo", "critical-path"))
            trace = root / f"lambda-{count}.jsonl"
            gg_force(env, [build_graph(store, f"lambda-{count}", leaves)], trace, "lambda", count)
            rows.append((count, prediction["predicted"], latency_at_n, fifo, ideal, *elapsed(trace)))

        thunks = predicted["thunks_run"]
        print(f"graph: {thunks} sh thunks ({leaves} sleeping leaves, {len(range(0, leaves, 4))} joins, 1 top); "
              f"local run (-j {os.cpu_count()}) {elapsed(local_trace)[0]:.3f} s")
        print(f"invoke latency {latency_ms:.1f} ms (calibration: 16 trivial thunks one at a time, Lambda minus "
              f"local median); coordinator {predicted['coordinator_ms']:.2f} ms/thunk "
              f"({predicted['coordinator_source']})")
        print(f"serial sum {predicted['serial_sum']:.3f} s, critical path {predicted['critical_path']:.3f} s "
              "(latency included)")
        print()
        print("| workers | measured s (scheduler span) | fifo, latency 1-at-a-time | error | latency at N, ms "
              "| fifo, latency at N | error | critical-path, latency at N | gg-force elapsed s (+ engine start) |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for count, guess, latency_at_n, fifo, ideal, span, total in rows:
            print(f"| {count} | {span:.3f} | {guess:.3f} | {(guess - span) / span:+.1%} | {latency_at_n:.1f} | "
                  f"{fifo:.3f} | {(fifo - span) / span:+.1%} | {ideal:.3f} | {total:.3f} |")
        (root / "result.json").write_text(json.dumps({"latency_ms": latency_ms, "prediction": predicted,
                                                      "rows": rows}, indent=2))
        print(f"\ntraces in {root}")
    finally:
        if lam is not None:
            stop_process(lam.process)
        stop_process(moto)


if __name__ == "__main__":
    main()
