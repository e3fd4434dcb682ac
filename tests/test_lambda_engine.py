"""LambdaEngine.run against real processes: moto_server (S3) and gg lambda-local
(Invoke + Runtime API with real awslambdaric workers running lambda_handler)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from dataclasses import replace

import pytest

from executor.engine import Job
from executor.execution import ExecutionFailed, InfrastructureError, ResourceExhausted
from executor.lambda_engine import LambdaConfig, LambdaEngine
from ir.storage.s3 import S3Storage
from ir.storage.uri import parse_s3_uri
from ir.store import LocalStore
from ir.thunk import Resources
from tests.forcing import ShellThunks

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore.init(tmp_path / ".gg")


def job(store: LocalStore, thunk_id: str) -> Job:
    return Job(thunk_id, store.load_thunk(thunk_id))


class Harness:
    def __init__(self, store: LocalStore, s3_uri: str, url: str, **options):
        self.store = store
        self.storage = S3Storage(parse_s3_uri(s3_uri))
        self.engine = LambdaEngine(LambdaConfig(endpoint_url=url, **options), store, self.storage)

    async def __aenter__(self) -> Harness:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.engine.close()
        await self.storage.close()

    async def value_of(self, ident: str) -> bytes:
        if self.store.has(ident):  # a small value came back inline (LambdaConfig.inline_max)
            return self.store.read_bytes(ident)
        other = LocalStore.init(self.store.root.parent / "check" / ".gg")
        await self.storage.download(other, ident)
        return other.read_bytes(ident)


async def test_runs_thunks_with_inputs(store, s3_uri, lambda_endpoint):
    sh = ShellThunks(store)
    tid = sh.thunk("cat a b > out", values={"a": "hello ", "b": "lambda"})
    async with Harness(store, s3_uri, lambda_endpoint.url) as h:
        result = await h.engine.run(job(store, tid))
        assert [o.tag for o in result.outputs] == ["out"]
        assert await h.value_of(result.outputs[0].id) == b"hello lambda"


async def test_batches_thunks_that_arrive_together(store, s3_uri, lambda_endpoint):
    sh = ShellThunks(store)
    tids = [sh.thunk(f"echo {n} > out") for n in range(8)]
    async with Harness(store, s3_uri, lambda_endpoint.url, batch_max=4, batch_window=0.05,
                       adaptive_batch=False) as h:
        results = await asyncio.gather(*(h.engine.run(job(store, t)) for t in tids))
        assert h.engine.invocations == 2
        for n, result in enumerate(results):
            assert await h.value_of(result.outputs[0].id) == f"{n}\n".encode()


async def test_adaptive_batches_only_when_slots_are_busy(store, s3_uri, lambda_endpoint):
    """Free invocation slots take one thunk each; what waits for a busy slot is spread
    over the slots as they free up, in batches of up to batch_max."""
    sh = ShellThunks(store)
    async with Harness(store, s3_uri, lambda_endpoint.url, batch_max=4, concurrency=8) as h:
        assert h.engine.slots == 32
        tids = [sh.thunk(f"echo {n} > out") for n in range(4)]
        await asyncio.gather(*(h.engine.run(job(store, t)) for t in tids))
        assert h.engine.invocations == 4  # 8 slots free: no thunk waits for another
    async with Harness(store, s3_uri, lambda_endpoint.url, batch_max=4, concurrency=2) as h:
        tids = [sh.thunk(f"echo {n} more > out") for n in range(8)]
        results = await asyncio.gather(*(h.engine.run(job(store, t)) for t in tids))
        assert h.engine.invocations == 2  # 8 at once on 2 slots: 2 batches of 4
        for n, result in enumerate(results):
            assert await h.value_of(result.outputs[0].id) == f"{n} more\n".encode()
        assert h.engine.overhead is not None and h.engine.thunk_time is not None


async def test_execution_failure_and_tail_call(store, s3_uri, lambda_endpoint):
    sh = ShellThunks(store)
    failing = sh.thunk("echo nope >&2; exit 7")
    inner = sh.thunk("echo inner > out")
    tail = sh.returning(inner)
    other = LocalStore.init(store.root.parent / "fresh" / ".gg")
    thunk_data = store.read_bytes(tail)
    other.put_bytes(thunk_data)
    other.put_bytes(store.read_bytes(sh.shell), executable=True)
    async with Harness(store, s3_uri, lambda_endpoint.url) as h:
        with pytest.raises(ExecutionFailed) as caught:
            await h.engine.run(job(store, failing))
        assert "exit status 7" in str(caught.value) and "nope" in caught.value.stderr_tail
    # The tail call's thunk output lands in a store that never had it.
    async with Harness(other, s3_uri, lambda_endpoint.url) as h:
        result = await h.engine.run(job(other, tail))
        assert result.outputs[0].id == inner and other.read_bytes(inner) == store.read_bytes(inner)


async def test_refuses_what_lambda_cannot_take(store, s3_uri, lambda_endpoint):
    sh = ShellThunks(store)
    huge_arg = sh.thunk("true " + "x" * 7_000_000)
    big_input = sh.thunk("cat a > out", values={"a": os.urandom(2 << 20)})
    hungry = store.put_thunk(replace(store.load_thunk(sh.thunk("true")), resources=Resources(memory_mib=20000)))
    small = sh.thunk("echo small > out")
    async with Harness(store, s3_uri, lambda_endpoint.url, ephemeral_mib=2) as h:
        assert "6291456" in h.engine.refuses(job(store, huge_arg))
        assert "/tmp" in h.engine.refuses(job(store, big_input))
        assert "memory" in h.engine.refuses(job(store, hungry))
        assert h.engine.refuses(job(store, small)) is None


async def test_worker_killed_mid_thunk(store, s3_uri, lambda_endpoint, tmp_path):
    sh = ShellThunks(store)
    pid_file = tmp_path / "worker.pid"
    slow = sh.thunk(f"echo $PPID > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; sleep 60; echo x > out")
    async with Harness(store, s3_uri, lambda_endpoint.url) as h:
        running = asyncio.ensure_future(h.engine.run(job(store, slow)))
        while not pid_file.exists():
            assert not running.done(), running.exception()
            await asyncio.sleep(0.05)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        with pytest.raises(InfrastructureError) as caught:
            await asyncio.wait_for(running, 60)
        assert "Runtime.ExitError" in str(caught.value)
        # The endpoint replaced the worker: work goes on.
        again = sh.thunk("echo after > out")
        result = await h.engine.run(job(store, again))
        assert await h.value_of(result.outputs[0].id) == b"after\n"


async def test_function_timeout(store, s3_uri, lambda_endpoint_factory):
    """A thunk allowed longer than the function's timeout: the handler stops it before the
    sandbox is killed and says so (resource_exhausted, a bigger engine may finish it)."""
    endpoint = lambda_endpoint_factory(workers=1, function_timeout=2)
    sh = ShellThunks(store)
    forever = sh.thunk("echo started; sleep 120; echo x > out")
    async with Harness(store, s3_uri, endpoint.url, function_timeout=2) as h:
        with pytest.raises(ResourceExhausted) as caught:
            await asyncio.wait_for(h.engine.run(replace(job(store, forever), timeout=600)), 60)
        assert "function's timeout" in str(caught.value) and "started" in caught.value.output_tail
        result = await h.engine.run(job(store, sh.thunk("echo ok > out")))
        assert await h.value_of(result.outputs[0].id) == b"ok\n"


async def test_throttling_is_retried_then_reported(store, s3_uri, lambda_endpoint_factory):
    endpoint = lambda_endpoint_factory(workers=1, extra=["--queue-limit", "0"])
    sh = ShellThunks(store)
    tids = [sh.thunk(f"sleep 0.3; echo {n} > out") for n in range(3)]
    async with Harness(store, s3_uri, endpoint.url, batch_max=1, throttle_attempts=40,
                       backoff_base=0.05, backoff_cap=0.3) as h:
        results = await asyncio.gather(*(h.engine.run(job(store, t)) for t in tids))
        assert h.engine.invocations > 3  # some were throttled and retried
        assert [await h.value_of(r.outputs[0].id) for r in results] == [b"0\n", b"1\n", b"2\n"]
    async with Harness(store, s3_uri, endpoint.url, batch_max=1, throttle_attempts=1) as h:
        outcomes = await asyncio.gather(*(h.engine.run(job(store, sh.thunk(f"sleep 0.5; echo {n} > out")))
                                          for n in range(3)), return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, InfrastructureError)]
        assert errors and all("TooManyRequestsException" in str(e) for e in errors)


async def test_unreachable_endpoint_fails_fast(store, s3_uri):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        sh = ShellThunks(store)
        async with Harness(store, s3_uri, url, connect_timeout=2) as h:
            started = time.monotonic()
            with pytest.raises(InfrastructureError) as caught:
                await asyncio.wait_for(h.engine.run(job(store, sh.thunk("echo x > out"))), 30)
    assert "cannot reach" in str(caught.value), time.monotonic() - started


async def test_emptied_bucket_and_corrupt_object_are_uploaded_again(store, s3_uri, lambda_endpoint_factory,
                                                                     boto3_s3):
    # A cache cap of 0 empties the worker's /tmp after each invocation: every input comes from S3.
    lambda_endpoint = lambda_endpoint_factory(workers=1, env={"GG_CACHE_MAX_MIB": "0"})
    sh = ShellThunks(store)
    value = store.put_bytes(b"input that disappears")
    config = parse_s3_uri(s3_uri)
    first = sh.thunk("cat a > out", values={"a": "input that disappears"})
    async with Harness(store, s3_uri, lambda_endpoint.url, inline_max=0) as h:  # inputs via S3
        await h.engine.run(job(store, first))
        for tamper in ("delete", "corrupt"):
            if tamper == "delete":
                boto3_s3.delete_object(Bucket=config.bucket, Key=config.key(value))
            else:
                boto3_s3.put_object(Bucket=config.bucket, Key=config.key(value), Body=b"garbage garbage ....")
            tid = sh.thunk(f"cat a > out; echo {tamper} >> out", values={"a": "input that disappears"})
            with pytest.raises(InfrastructureError) as caught:
                await h.engine.run(job(store, tid))
            assert value in str(caught.value)
            # The retry (the scheduler's job) uploads it again and succeeds.
            result = await h.engine.run(job(store, tid))
            assert await h.value_of(result.outputs[0].id) == f"input that disappears{tamper}\n".encode()


def test_config_from_env():
    config = LambdaConfig.from_env({"GG_LAMBDA_FUNCTION": "f", "GG_LAMBDA_ENDPOINT": "http://x:1",
                                    "GG_LAMBDA_TIMEOUT": "30", "GG_LAMBDA_BATCH": "2"}, jobs=7)
    assert (config.function_name, config.endpoint_url, config.function_timeout, config.batch_max,
            config.concurrency) == ("f", "http://x:1", 30.0, 2, 7)



async def test_cancelled_run_does_not_disturb_its_batch(store, s3_uri, lambda_endpoint):
    """The scheduler cancels the loser of a straggler race: its batch mates still finish."""
    sh = ShellThunks(store)
    slow, quick = sh.thunk("sleep 1; echo slow > out"), sh.thunk("echo quick > out")
    async with Harness(store, s3_uri, lambda_endpoint.url, batch_max=2, batch_window=0.5,
                       adaptive_batch=False) as h:
        slow_run = asyncio.ensure_future(h.engine.run(job(store, slow)))
        quick_run = asyncio.ensure_future(h.engine.run(job(store, quick)))
        while h.engine.invocations == 0:
            await asyncio.sleep(0.02)
        slow_run.cancel()
        result = await quick_run
        assert await h.value_of(result.outputs[0].id) == b"quick\n"
        with pytest.raises(asyncio.CancelledError):
            await slow_run
