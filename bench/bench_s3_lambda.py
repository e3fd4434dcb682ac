"""Side by side, in one run: our S3 and Lambda layers against raw aiobotocore.

    .venv/bin/python bench/bench_s3_lambda.py [--quick] [--workers N] [--concurrency C]

Starts a moto_server and ``gg lambda-local`` as real processes on 127.0.0.1, then prints

* invocations/s: raw aiobotocore ``invoke`` of a no-op event (the handler answers an
  empty batch) vs thunks through :class:`LambdaEngine` (one per invocation, and
  batched) on the same endpoint — the difference is what a thunk costs on top of an
  invocation (upload check, S3 fetch, fork/exec, output upload);
* S3 throughput: :class:`S3Storage` upload/download vs raw ``put_object``/``get_object``
  on the same moto server, small objects (ops/s) and large ones (MB/s).

Numbers depend on the machine; nothing here asserts on them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executor.engine import Job  # noqa: E402
from executor.lambda_engine import LambdaConfig, LambdaEngine  # noqa: E402
from ir.ids import Kind, id_of_bytes
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


async def raw_invokes(url: str, count: int, concurrency: int, storage_uri: str) -> float:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    payload = json.dumps({"version": 1, "thunks": [], "storage": storage_uri}).encode()
    config = AioConfig(retries={"max_attempts": 0}, read_timeout=120, max_pool_connections=concurrency)
    async with get_session().create_client("lambda", region_name="us-east-1", endpoint_url=url,
                                           config=config) as client:
        async def one():
            answer = await client.invoke(FunctionName="gg", Payload=payload)
            await answer["Payload"].read()
            assert "FunctionError" not in answer

        await one()  # warm up the connection pool
        started = time.perf_counter()
        await _gather_limited([one() for _ in range(count)], concurrency)
        return count / (time.perf_counter() - started)


async def engine_thunks(url: str, uri: str, store: LocalStore, count: int, concurrency: int, batch: int) -> float:
    shell = store.put_file(Path("/bin/sh"), executable=True)
    salt = uuid.uuid4().hex[:8]
    thunks = []
    for n in range(count + 1):
        thunk = Thunk(shell, ("sh", "-c", f"echo {salt} {batch} {n} > out"), ("out",),
                      executables=(Input(shell),))
        thunks.append(Job(store.put_thunk(thunk), thunk))
    storage = S3Storage(parse_s3_uri(uri))
    engine = LambdaEngine(LambdaConfig(endpoint_url=url, concurrency=concurrency, batch_max=batch,
                                       batch_window=0.002), store, storage)
    try:
        await engine.run(thunks[0])  # warm up: the shell is uploaded once
        started = time.perf_counter()
        await _gather_limited([engine.run(job) for job in thunks[1:]], concurrency)
        return count / (time.perf_counter() - started)
    finally:
        await engine.close()
        await storage.close()


async def s3_ours(uri: str, store: LocalStore, ids: list[str], concurrency: int) -> tuple[float, float]:
    storage = S3Storage(parse_s3_uri(uri))
    other = LocalStore.init(Path(tempfile.mkdtemp(prefix="gg-bench-dl-")))
    try:
        # Create the client before the clock starts, as the raw side does.
        await storage.has(id_of_bytes(uuid.uuid4().bytes, Kind.VALUE))
        started = time.perf_counter()
        await _gather_limited([storage.upload(store, i) for i in ids], concurrency)
        up = time.perf_counter() - started
        started = time.perf_counter()
        await _gather_limited([storage.download(other, i) for i in ids], concurrency)
        down = time.perf_counter() - started
    finally:
        await storage.close()
    return up, down


async def s3_raw(endpoint: str, bucket: str, blobs: list[bytes], concurrency: int) -> tuple[float, float]:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(retries={"max_attempts": 0}, max_pool_connections=concurrency,
                       s3={"addressing_style": "path"})
    async with get_session().create_client("s3", region_name="us-east-1", endpoint_url=endpoint,
                                           config=config) as client:
        keys = [f"raw/{uuid.uuid4().hex}" for _ in blobs]
        started = time.perf_counter()
        puts = [client.put_object(Bucket=bucket, Key=k, Body=b) for k, b in zip(keys, blobs, strict=True)]
        await _gather_limited(puts, concurrency)
        up = time.perf_counter() - started

        async def get(key: str) -> int:
            answer = await client.get_object(Bucket=bucket, Key=key)
            size = 0
            while chunk := await answer["Body"].read(1 << 20):
                size += len(chunk)
            return size

        started = time.perf_counter()
        await _gather_limited([get(k) for k in keys], concurrency)
        down = time.perf_counter() - started
    return up, down


def row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))


async def main_async(args) -> None:
    os.environ.update(FAKE_AWS_ENV)
    moto, endpoint = start_moto()
    lam = None
    try:
        import boto3

        bucket = f"gg-bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        uri = f"s3://{bucket}/blobs?endpoint={endpoint}&concurrency={args.concurrency}"
        lam = start_lambda_local(workers=args.workers, log_dir=Path(tempfile.mkdtemp(prefix="gg-bench-")))
        store = LocalStore.init(Path(tempfile.mkdtemp(prefix="gg-bench-")) / ".gg")

        invokes = 100 if args.quick else 1000
        thunks = 40 if args.quick else 300
        print(f"Lambda (gg lambda-local, {args.workers} workers, concurrency {args.concurrency})")
        widths = [52, 14]
        print(row(["what", "per second"], widths))
        raw = await raw_invokes(lam.url, invokes, args.concurrency, uri)
        print(row([f"raw aiobotocore invoke, no-op event (x{invokes})", f"{raw:,.0f}"], widths))
        for batch in (1, 8):
            rate = await engine_thunks(lam.url, uri, store, thunks, args.concurrency, batch)
            print(row([f"LambdaEngine.run, 1 sh thunk each, batch<={batch} (x{thunks})", f"{rate:,.0f}"], widths))

        print()
        print(f"S3 (moto_server, concurrency {args.concurrency})")
        widths = [40, 14, 14]
        print(row(["what", "upload", "download"], widths))
        small_n = 100 if args.quick else 1000
        large_n, large_size = (2, 16 * MIB) if args.quick else (4, 64 * MIB)
        cases = [
            (f"{small_n} x 1 KiB random, ops/s", [os.urandom(1024) for _ in range(small_n)], "ops"),
            (f"{large_n} x {large_size // MIB} MiB random, MB/s", [os.urandom(large_size) for _ in range(large_n)],
             "mb"),
            (f"{large_n} x {large_size // MIB} MiB text-like, MB/s",
             [(f"line {n} of a compressible blob\n".encode() * (large_size // 30))[:large_size]
              for n in range(large_n)], "mb"),
        ]
        for label, blobs, unit in cases:
            ids = [store.put_bytes(b) for b in blobs]
            total = sum(len(b) for b in blobs)

            def rate(seconds: float, count: int = len(ids), total: int = total, unit: str = unit) -> str:
                return f"{count / seconds:,.0f}" if unit == "ops" else f"{total / seconds / 1e6:,.0f}"

            raw_up, raw_down = await s3_raw(endpoint, bucket, blobs, args.concurrency)
            our_up, our_down = await s3_ours(uri, store, ids, args.concurrency)
            print(row([f"raw aiobotocore, {label}", rate(raw_up), rate(raw_down)], widths))
            print(row([f"S3Storage,       {label}", rate(our_up), rate(our_down)], widths))
    finally:
        if lam is not None:
            stop_process(lam.process)
        stop_process(moto)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument("--workers", type=int, default=8, help="lambda-local workers")
    parser.add_argument("--concurrency", type=int, default=32)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
