"""Side by side, in one run: our S3 and Lambda layers against raw aiobotocore.

    .venv/bin/python bench/bench_s3_lambda.py [--quick] [--workers N] [--concurrency C]
                                              [--repeat R] [--profile DIR]

Starts a moto_server and ``gg lambda-local`` (real ``awslambdaric`` workers) as real
processes on 127.0.0.1. Every variant runs ``--repeat`` times, interleaved (raw, ours,
raw, ours, ...), and the table shows the median and the ratio to the raw baseline, with
the load average (the machine is shared: only ratios from one run mean anything).

**Lambda: thunks per second.** Every variant runs the same kind of thunk (``sh -c 'echo
SALT > out'``, each one distinct so the function really runs it) on the same endpoint
with at most C invocations in flight:

* *raw aiobotocore invoke*: the baseline. The bench builds each thunk's request once,
  before the clock starts, with the engine's own encoder (same storage URI, same
  inline settings, the shell already in S3), then times only C concurrent
  ``client.invoke(Payload=...)`` calls and reading each answer's bytes. The function
  does exactly the work it does for the engine (decode, fetch ``sh`` from its cache,
  fork/exec, answer the output inline); the client does nothing else — no encode,
  no decode, nothing stored. So ``engine / raw`` is the share of the endpoint's rate
  the coordinator keeps: what ``LambdaEngine.run`` adds per thunk (input checks,
  encoding, batching, decoding, verifying and storing the output) is the difference.
* *LambdaEngine, batch 1*: ``LambdaEngine.run`` per thunk, one thunk per invocation,
  fed as the scheduler feeds it (at most ``engine.slots`` jobs at once).
* *LambdaEngine, fixed batch k*: batches of exactly up to k (a batch waits up to the
  batch window to fill), at most C invocations in flight.
* *LambdaEngine, adaptive*: the default — a free invocation slot takes what is
  pending at once, spread over the slots, capped by ``batch_max``, the payload budget
  and the observed thunk durations (see ``executor/lambda_engine.py``).

**S3: ops/s for 1 KiB objects, MB/s for 16 MiB ones** (``--quick``; 64 MiB otherwise).
Raw: ``put_object`` of bytes already in memory; ``get_object`` read into memory, and
``get_object`` streamed into a file on the disk the store is on (1 MiB reads, each
written as it comes: what a plain client that lands the object on disk does). A store
must land every blob on disk, so on a machine whose disk is slower than the loopback
network the file baseline is the like-for-like one; both are shown.
Ours: :class:`S3Storage` ``upload`` from the local store (hashing to verify what it
sends, compression when it pays) and ``download`` into another local store (verified
while it streams, installed atomically). Random data is incompressible; the
"text-like" rows show what compression buys on top.

``--profile DIR`` writes a cProfile of the engine process for the batch-1 engine run
and for the raw run to DIR (``python -m pstats``), to see where a batch-1 invoke spends
its time. Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executor import protocol  # noqa: E402
from executor.engine import Job  # noqa: E402
from executor.lambda_engine import LambdaConfig, LambdaEngine  # noqa: E402
from ir.ids import Kind, id_of_bytes  # noqa: E402
from ir.storage.s3 import S3Storage  # noqa: E402
from ir.storage.uri import MIB, parse_s3_uri  # noqa: E402
from ir.store import LocalStore  # noqa: E402
from ir.thunk import Input, Thunk  # noqa: E402
from tests.aws_fixtures import FAKE_AWS_ENV, start_lambda_local, start_moto, stop_process  # noqa: E402


async def _gather_limited(coros, limit: int):
    gate = asyncio.Semaphore(limit)

    async def one(coro):
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


class ThunkMaker:
    """Distinct ``sh`` thunks in the local store (the shell uploaded once)."""

    def __init__(self, store: LocalStore):
        self.store = store
        self.shell = store.put_file(Path("/bin/sh"), executable=True)

    def jobs(self, count: int) -> list[Job]:
        salt = uuid.uuid4().hex
        jobs = []
        for n in range(count):
            thunk = Thunk(self.shell, ("sh", "-c", f"echo {salt} {n} > out"), ("out",),
                          executables=(Input(self.shell),))
            jobs.append(Job(self.store.put_thunk(thunk), thunk))
        return jobs


def _rates(count: int, started: float, cpu: float) -> tuple[float, float]:
    """(thunks per second, milliseconds of this process's CPU per thunk) since then."""
    return count / (time.perf_counter() - started), (time.process_time() - cpu) / count * 1000


async def raw_invokes(url: str, uri: str, jobs: list[Job], concurrency: int, inline_max: int,
                      profile: Path | None = None) -> tuple[float, float]:
    """The baseline: the same thunks' requests, encoded before the clock starts."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    payloads = [protocol.encode(protocol.ExecutionRequest(
        version=protocol.EVENT_VERSION, storage=uri, inline_values=inline_max,
        thunks=[protocol.ExecutionRequest.Thunk(id=job.thunk_id, data=job.thunk.serialize())]))
        for job in jobs]
    config = AioConfig(retries={"max_attempts": 0}, read_timeout=120, max_pool_connections=concurrency)
    async with get_session().create_client("lambda", region_name="us-east-1", endpoint_url=url,
                                           config=config) as client:
        async def one(payload: bytes) -> None:
            answer = await client.invoke(FunctionName="gg", Payload=payload)
            await answer["Payload"].read()
            assert "FunctionError" not in answer

        await one(payloads[0])  # warm up the connection pool
        with _profiling(profile):
            started, cpu = time.perf_counter(), time.process_time()
            await _gather_limited([one(p) for p in payloads[1:]], concurrency)
            return _rates(len(payloads) - 1, started, cpu)


async def engine_thunks(url: str, uri: str, store: LocalStore, jobs: list[Job], config: LambdaConfig,
                        profile: Path | None = None) -> tuple[float, float]:
    storage = S3Storage(parse_s3_uri(uri))
    engine = LambdaEngine(config, store, storage)
    try:
        await engine.run(jobs[0])  # warm up: clients made, the shell uploaded once
        with _profiling(profile):
            started, cpu = time.perf_counter(), time.process_time()
            await _gather_limited([engine.run(job) for job in jobs[1:]], engine.slots)
            return _rates(len(jobs) - 1, started, cpu)
    finally:
        await engine.close()
        await storage.close()


class Clock:
    """Wall and process CPU seconds of the phases of one run, by name."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.wall[name] = time.perf_counter() - wall
        self.cpu[name] = time.process_time() - cpu


async def s3_ours(uri: str, store: LocalStore, ids: list[str], concurrency: int, clock: Clock) -> None:
    storage = S3Storage(parse_s3_uri(uri))
    other = LocalStore.init(store.root.parent / f"dl-{uuid.uuid4().hex[:8]}" / ".gg")  # the same disk
    try:
        # Create the client before the clock starts, as the raw side does.
        await storage.has(id_of_bytes(uuid.uuid4().bytes, Kind.VALUE))
        with clock.phase("our up"):
            await _gather_limited([storage.upload(store, i, overwrite=True) for i in ids], concurrency)
        with clock.phase("our down"):
            await _gather_limited([storage.download(other, i) for i in ids], concurrency)
    finally:
        await storage.close()


async def s3_raw(endpoint: str, bucket: str, blobs: list[bytes], concurrency: int,
                 directory: Path, clock: Clock) -> None:
    """Put ``blobs``, get them into memory, and get them into files in ``directory`` (a
    plain client's download: chunks written as they come, no hashing)."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(retries={"max_attempts": 0}, max_pool_connections=concurrency,
                       s3={"addressing_style": "path"})
    async with get_session().create_client("s3", region_name="us-east-1", endpoint_url=endpoint,
                                           config=config) as client:
        await client.list_buckets()  # connect before the clock starts, as ours does
        keys = [f"raw/{uuid.uuid4().hex}" for _ in blobs]
        with clock.phase("raw up"):
            puts = [client.put_object(Bucket=bucket, Key=k, Body=b) for k, b in zip(keys, blobs, strict=True)]
            await _gather_limited(puts, concurrency)

        async def get(key: str) -> int:
            answer = await client.get_object(Bucket=bucket, Key=key)
            data = await answer["Body"].read()
            return len(data)

        with clock.phase("raw down"):
            await _gather_limited([get(k) for k in keys], concurrency)

        async def get_to_file(key: str) -> None:
            answer = await client.get_object(Bucket=bucket, Key=key)
            path = directory / uuid.uuid4().hex
            with open(path, "wb") as sink:
                while chunk := await answer["Body"].read(1 << 20):
                    sink.write(chunk)
            path.unlink()

        with clock.phase("raw file"):
            await _gather_limited([get_to_file(k) for k in keys], concurrency)


def row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))


@contextlib.contextmanager
def _profiling(path: Path | None) -> Iterator[None]:
    """cProfile what runs inside (the timed part only) into ``path``, if given."""
    if path is None:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(path)


async def bench_lambda(args, lam_url: str, uri: str, store: LocalStore) -> None:
    count = 60 if args.quick else 300
    conc = args.concurrency
    maker = ThunkMaker(store)
    base = LambdaConfig(endpoint_url=lam_url, concurrency=conc)
    variants: list[tuple[str, Callable[[Path | None], Awaitable[tuple[float, float]]]]] = [
        ("raw aiobotocore invoke, 1 thunk each",
         lambda prof: raw_invokes(lam_url, uri, maker.jobs(count + 1), conc, base.inline_max, prof)),
        ("LambdaEngine, batch 1",
         lambda prof: engine_thunks(lam_url, uri, store, maker.jobs(count + 1),
                                    LambdaConfig(endpoint_url=lam_url, concurrency=conc, batch_max=1), prof)),
    ]
    for k in args.batches:
        variants.append((f"LambdaEngine, fixed batch {k}",
                         lambda prof, k=k: engine_thunks(lam_url, uri, store, maker.jobs(count * k + 1), LambdaConfig(
                             endpoint_url=lam_url, concurrency=conc, batch_max=k, adaptive_batch=False))))
    cap = max([*args.batches, 1])  # the same cap as the largest fixed batch
    variants.append((f"LambdaEngine, adaptive (batch_max {cap})",
                     lambda prof: engine_thunks(lam_url, uri, store, maker.jobs(count * cap + 1),
                                                LambdaConfig(endpoint_url=lam_url, concurrency=conc, batch_max=cap))))
    rates: dict[str, list[float]] = {name: [] for name, _ in variants}
    cpu: dict[str, list[float]] = {name: [] for name, _ in variants}
    for rep in range(args.repeat):
        for n, (name, run) in enumerate(variants):
            prof = args.profile / f"lambda-{n}.prof" if args.profile and rep == 0 and n < 2 else None
            rate, ms = await run(prof)
            rates[name].append(rate)
            cpu[name].append(ms)
    raw = statistics.median(rates[variants[0][0]])
    print(f"Lambda (gg lambda-local, {args.workers} workers; {conc} invocations in flight; "
          f"{count} invocations' worth of thunks per variant; median of {args.repeat}, interleaved)")
    print("  cpu: milliseconds of the client process's CPU per thunk (what the coordinator costs)")
    widths = [44, 9, 7, 7, 26]
    print(row(["what", "thunks/s", "vs raw", "cpu ms", "all runs (thunks/s)"], widths))
    for name, _ in variants:
        median = statistics.median(rates[name])
        print(row([name, f"{median:,.0f}", f"{median / raw:.0%}", f"{statistics.median(cpu[name]):.2f}",
                   " ".join(f"{r:.0f}" for r in rates[name])], widths))


async def bench_s3(args, endpoint: str, bucket: str, uri: str, store: LocalStore) -> None:
    small_n = 300 if args.quick else 1000
    large_n, large_size = (2, 16 * MIB) if args.quick else (4, 64 * MIB)
    cases = [
        (f"{small_n} x 1 KiB random", [os.urandom(1024) for _ in range(small_n)], "ops/s"),
        (f"{large_n} x {large_size // MIB} MiB random", [os.urandom(large_size) for _ in range(large_n)], "MB/s"),
        (f"{large_n} x {large_size // MIB} MiB text-like",
         [(f"line {n} of a compressible blob\n".encode() * (large_size // 30))[:large_size]
          for n in range(large_n)], "MB/s"),
    ]
    print(f"S3 (moto_server, concurrency {args.concurrency}; median of {args.repeat}, interleaved)")
    print("  up: raw put_object from memory vs S3Storage.upload from the local store")
    print("  down: raw get_object into memory / streamed into a file on the store's disk "
          "vs S3Storage.download into the store")
    widths = [32, 8, 8, 6, 9, 9, 9, 6, 6]
    print(row(["what", "raw up", "ours up", "ratio", "raw down", "raw>file", "ours down", "ratio", ">file"],
              widths))
    cpu_lines: list[str] = []
    for label, blobs, unit in cases:
        ids = [store.put_bytes(b) for b in blobs]
        total = sum(len(b) for b in blobs)

        def rate(seconds: float, count: int = len(ids), total: int = total, unit: str = unit) -> float:
            return count / seconds if unit == "ops/s" else total / seconds / 1e6

        got: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            clock = Clock()
            await s3_raw(endpoint, bucket, blobs, args.concurrency, store.tmp, clock)
            await s3_ours(uri, store, ids, args.concurrency, clock)
            for name, seconds in clock.wall.items():
                got.setdefault(name, []).append(rate(seconds))
                cpu.setdefault(name, []).append(clock.cpu[name] / len(ids) * 1000)
        m = {k: statistics.median(v) for k, v in got.items()}
        cpu_lines.append(f"  {label}: " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in cpu.items()))
        print(row([f"{label}, {unit}", f"{m['raw up']:,.0f}", f"{m['our up']:,.0f}",
                   f"{m['our up'] / m['raw up']:.0%}", f"{m['raw down']:,.0f}", f"{m['raw file']:,.0f}",
                   f"{m['our down']:,.0f}", f"{m['our down'] / m['raw down']:.0%}",
                   f"{m['our down'] / m['raw file']:.0%}"], widths))
    print("client CPU, ms per object (medians):")
    print("\n".join(cpu_lines))


async def main_async(args) -> None:
    os.environ.update(FAKE_AWS_ENV)
    moto, endpoint = start_moto()
    lam = None
    scratch = Path(tempfile.mkdtemp(prefix="gg-bench-s3-"))  # the store and the endpoint's logs
    try:
        import boto3

        bucket = f"gg-bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        uri = f"s3://{bucket}/blobs?endpoint={endpoint}&concurrency={args.concurrency}"
        store = LocalStore.init(scratch / ".gg")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if not args.s3_only:
            lam = start_lambda_local(workers=args.workers, log_dir=scratch)
            await bench_lambda(args, lam.url, uri, store)
            print()
        if not args.lambda_only:
            await bench_s3(args, endpoint, bucket, uri, store)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if lam is not None:
            stop_process(lam.process)
        stop_process(moto)
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument("--workers", type=int, default=4, help="lambda-local workers")
    parser.add_argument("--concurrency", type=int, default=8, help="invocations (S3: requests) in flight")
    parser.add_argument("--batches", type=int, nargs="*", default=[2, 4, 8], help="fixed batch sizes to compare")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--lambda-only", action="store_true")
    parser.add_argument("--s3-only", action="store_true")
    parser.add_argument("--profile", type=Path, help="write cProfiles of the raw and batch-1 engine runs here")
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
