"""Soak: many short thunks on the emulated Lambda engine, 1% of which hang.

    .venv/bin/python bench/bench_lambda_soak.py [--quick] [--thunks N] [--workers W]

Starts a moto_server and ``gg lambda-local`` (W workers) as real processes, then runs
``force(..., engines=("lambda",), keep_going=True)`` (the library call behind
``gg-force --engine lambda --keep-going``) twice, each on a fresh store and fresh thunks:

* **baseline**: N thunks of 50 ms (``sleep 0.05``), none hanging — the ideal run on
  this machine (invocation, handler, fork/exec, S3 and scheduler costs included);
* **soak**: the same, except that 1% of them hang (``sleep 3600``).

Every thunk has a 2 s timeout. A hanging thunk is an execution failure at its timeout
(final: not retried, not moved to the local engine), so the soak run must finish within
the baseline's time plus two timeouts, with every other thunk reduced. It prints one
table (the numbers in docs/force.md come from it) and exits 1 if a bound is broken.
This is a benchmark, not a test; ``--quick`` is a small run of a minute or two.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executor.force import ForceFailed  # noqa: E402
from executor.force import force as force_targets  # noqa: E402
from ir.store import LocalStore  # noqa: E402
from tests.aws_fixtures import FAKE_AWS_ENV, start_lambda_local, start_moto, stop_process  # noqa: E402
from tests.forcing import ShellThunks  # noqa: E402

BIN = Path(sys.executable).parent
THUNK_SECONDS = 0.05
TIMEOUT_S = 2.0


def make_thunks(store: LocalStore, count: int, hanging: int, salt: str) -> tuple[list[str], set[str]]:
    """``count`` thunks of 50 ms; ``hanging`` of them (spread evenly) never finish."""
    sh = ShellThunks(store)
    every = count // hanging if hanging else count + 1
    tids, hung = [], set()
    for n in range(count):
        if hanging and n % every == every // 2 and len(hung) < hanging:
            tid = sh.thunk(f"sleep 3600; echo {salt} {n} > out", timeout_ms=int(TIMEOUT_S * 1000))
            hung.add(tid)
        else:
            tid = sh.thunk(f"sleep {THUNK_SECONDS}; echo {salt} {n} > out", timeout_ms=int(TIMEOUT_S * 1000))
        tids.append(tid)
    return tids, hung


def force(store: LocalStore, root: Path, tids: list[str], env: dict[str, str],
          jobs: int) -> tuple[float, list[dict], int]:
    trace = root / "trace.jsonl"
    started = time.monotonic()
    try:  # what gg-force --engine lambda --keep-going does, as a library call
        force_targets(tids, ("lambda",), store=store, jobs=jobs, keep_going=True, trace=trace,
                      environ=env)
        status = 0
    except ForceFailed:  # the hanging thunks: expected in the soak run
        status = 1
    elapsed = time.monotonic() - started
    events = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]
    return elapsed, events, status


def one_run(label: str, count: int, hanging: int, env: dict[str, str], jobs: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"gg-soak-{label}-"))
    try:
        store = LocalStore.init(root / ".gg")
        tids, hung = make_thunks(store, count, hanging, uuid.uuid4().hex[:8])
        elapsed, events, status = force(store, root, tids, env, jobs)
        reduced = {t for t in tids if store.get_reduction(t) is not None}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    kinds = [e["event"] for e in events]
    return {
        "label": label, "thunks": count, "hanging": len(hung), "elapsed": elapsed, "status": status,
        "reduced": len(reduced), "missing": len(set(tids) - hung - reduced),
        "retried": kinds.count("retried"), "fallback": kinds.count("fallback"), "failed": kinds.count("failed"),
        "timed_out": sum(1 for e in events if e["event"] == "failed" and "timed out" in e.get("error", "")),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 thunks, 8 workers (a run of a minute or two)")
    parser.add_argument("--thunks", type=int, default=None, help="thunks per run (default 2000; --quick: 200)")
    parser.add_argument("--workers", type=int, default=None, help="lambda-local workers (default 16; --quick: 8)")
    args = parser.parse_args()
    count = args.thunks or (200 if args.quick else 2000)
    workers = args.workers or (8 if args.quick else 16)
    hanging = max(1, count // 100)

    os.environ.update(FAKE_AWS_ENV)  # moto accepts any credentials
    moto, moto_url = start_moto()
    endpoint = None
    try:
        env = {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", **FAKE_AWS_ENV,
               "GG_LAMBDA_BATCH": "1", "GG_LAMBDA_TIMEOUT": "60"}
        bucket = f"gg-soak-{uuid.uuid4().hex[:8]}"
        import boto3

        boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1").create_bucket(Bucket=bucket)
        env["GG_STORAGE_URI"] = f"s3://{bucket}/blobs?region=us-east-1&endpoint={moto_url}"
        # One thunk at a time per worker, like one Lambda sandbox per invocation.
        endpoint = start_lambda_local(workers=workers, function_timeout=60,
                                      env={"GG_THUNK_PARALLELISM": "1"})
        env["GG_LAMBDA_ENDPOINT"] = endpoint.url
        baseline = one_run("baseline", count, 0, env, workers)
        soak = one_run("soak", count, hanging, env, workers)
    finally:
        if endpoint is not None:
            stop_process(endpoint.process)
        stop_process(moto)

    ideal = math.ceil(count / workers) * THUNK_SECONDS
    bound = baseline["elapsed"] + 2 * TIMEOUT_S
    print(f"{count} thunks of {THUNK_SECONDS * 1000:.0f} ms, {hanging} hanging, {TIMEOUT_S:g} s timeout each; "
          f"lambda-local with {workers} workers (one thunk per invocation), -j {workers}, "
          f"{os.cpu_count()} cores")
    print("| run | thunks | hanging | wall s | reduced | timed out | retried | moved to local | exit |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| sleep time only (thunks x 50 ms / workers) | {count} | 0 | {ideal:.2f} | | | | | |")
    for run in (baseline, soak):
        print(f"| {run['label']} | {run['thunks']} | {run['hanging']} | {run['elapsed']:.2f} | {run['reduced']} | "
              f"{run['timed_out']} | {run['retried']} | {run['fallback']} | {run['status']} |")
    ok = (soak["elapsed"] <= bound and soak["missing"] == 0 and baseline["missing"] == 0
          and soak["timed_out"] == hanging and soak["retried"] == 0 and soak["fallback"] == 0)
    print(f"bound: baseline + 2 timeouts = {bound:.2f} s; soak {soak['elapsed']:.2f} s; every non-hung thunk "
          f"reduced: {soak['missing'] == 0}; {'OK' if ok else 'BROKEN'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
