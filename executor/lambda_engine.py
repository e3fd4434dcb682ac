"""The Lambda engine: runs thunks on AWS Lambda (or anything speaking its Invoke API).

For each job, :meth:`LambdaEngine.run`

1. uploads the thunk's missing inputs to S3 — per job, as it is dispatched, so uploads
   overlap with invocations instead of all happening up front (S3Storage shares one
   upload between jobs that need the same blob);
2. joins a small batch: jobs that become ready within ``batch_window`` seconds travel
   in one invocation (up to ``batch_max`` thunks and a payload budget), so that short
   thunks do not each pay an invocation;
3. invokes the function (aiobotocore, botocore retries off; throttling is retried here
   with capped exponential back-off and full jitter, a bounded number of times);
4. maps the handler's answer: ``execution_failed`` -> :class:`ExecutionFailed`,
   everything else (function timeout, crashed worker, throttling that does not stop,
   unreachable endpoint, missing inputs) -> :class:`InfrastructureError`, raised
   quickly: the scheduler owns retries and the fallback engine;
5. stores thunk outputs and created thunks (inline in the answer) in the local store,
   because the scheduler reads them there, and records value outputs as present in S3.

It refuses what a Lambda cannot take (payload over 6 MB, inputs larger than the
function's ephemeral storage, more memory than configured) so the scheduler sends
those to the fallback engine up front.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ir.aws_client import LazyClient
from ir.cli import CliError
from ir.ids import MAGIC, Kind, id_of_bytes, parse_id
from ir.s3store import S3Error, S3Storage
from ir.storage_uri import S3Config
from ir.store import CorruptBlob, LocalStore, MissingBlob, StoreError

from .engine import Job
from .execution import ExecutionFailed, ExecutionResult, InfrastructureError, Output

EVENT_VERSION = 1
MAX_PAYLOAD = 6_291_456  # Lambda's synchronous request limit
PAYLOAD_BUDGET = 5_500_000  # what one batch may use (JSON overhead stays below the limit)
EPHEMERAL_HEADROOM = 0.8  # inputs may fill this much of /tmp; outputs need the rest
# Small blobs travel inside the invocation instead of through S3: a PUT and a GET on
# S3 cost tens of milliseconds each, far more than a few KiB more of payload.
# LambdaConfig.inline_max: an input blob up to this size goes in the event (up to
# INLINE_INPUTS_PER_THUNK per thunk), and value outputs up to it come back in the answer.
INLINE_MAX = 64 << 10
INLINE_INPUTS_PER_THUNK = 512 << 10


@dataclass(frozen=True)
class LambdaConfig:
    function_name: str = "gg"
    region: str = "us-east-1"
    endpoint_url: str | None = None  # e.g. http://127.0.0.1:9001 (gg lambda-local)
    concurrency: int = 64
    function_timeout: float = 300.0  # the function's configured Timeout
    memory_mib: int = 3008
    ephemeral_mib: int = 512
    batch_max: int = 4
    batch_window: float = 0.002
    connect_timeout: float = 5.0
    throttle_attempts: int = 6
    backoff_base: float = 0.05
    backoff_cap: float = 2.0
    inline_max: int = INLINE_MAX  # 0: every blob goes through S3

    @classmethod
    def from_env(cls, environ: Mapping[str, str], jobs: int | None = None) -> LambdaConfig:
        """From the documented GG_LAMBDA_* variables (see docs/lambda.md)."""

        def number(name: str, default, kind=int):
            text = environ.get(name)
            if not text:
                return default
            try:
                return kind(text)
            except ValueError:
                raise ValueError(f"{name}={text!r} is not a number") from None

        return cls(
            function_name=environ.get("GG_LAMBDA_FUNCTION") or "gg",
            region=environ.get("GG_LAMBDA_REGION") or environ.get("AWS_REGION")
            or environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            endpoint_url=environ.get("GG_LAMBDA_ENDPOINT") or None,
            concurrency=jobs or number("GG_LAMBDA_CONCURRENCY", 64),
            function_timeout=number("GG_LAMBDA_TIMEOUT", 300.0, float),
            memory_mib=number("GG_LAMBDA_MEMORY_MIB", 3008),
            ephemeral_mib=number("GG_LAMBDA_EPHEMERAL_MIB", 512),
            batch_max=max(1, number("GG_LAMBDA_BATCH", 4)),
            inline_max=max(0, number("GG_LAMBDA_INLINE_MAX", INLINE_MAX)),
        )


@dataclass
class _Pending:
    job: Job
    data: bytes
    future: asyncio.Future = field(repr=False)
    blobs: dict[str, bytes] = field(default_factory=dict, repr=False)  # inputs sent inline

    def size(self) -> int:
        return _payload_size(self.data) + sum(_payload_size(b) for b in self.blobs.values())


def _first_line(text: object) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else ""


def _payload_size(data: bytes | int) -> int:
    """Bytes ``data`` (or that many bytes) take in a JSON event: base64 plus its entry."""
    size = data if isinstance(data, int) else len(data)
    return 4 * ((size + 2) // 3) + 200


class LambdaEngine:
    name = "lambda"

    def __init__(self, config: LambdaConfig, store: LocalStore, storage: S3Storage):
        self.config = config
        self.store = store
        self.storage = storage
        self.slots = max(1, config.concurrency)
        self._pending: list[_Pending] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._inflight: set[asyncio.Task] = set()
        self._client = LazyClient(
            "lambda", region=config.region, endpoint_url=config.endpoint_url,
            connect_timeout=config.connect_timeout, read_timeout=config.function_timeout + 30,
            max_pool_connections=max(10, config.concurrency),
        )
        # Inputs a function reported missing although sent: from now on they go via S3.
        self._sent_to_s3: set[str] = set()
        self.invocations = 0

    # -- what Lambda cannot take --------------------------------------------------------

    def refuses(self, job: Job) -> str | None:
        cfg = self.config
        size = _payload_size(job.thunk.serialize())
        if size > PAYLOAD_BUDGET:
            return f"request payload {size} bytes is over Lambda's {MAX_PAYLOAD}-byte limit"
        inputs = {i.id for i in (*job.thunk.values, *job.thunk.executables)}
        total = sum(parse_id(i).size for i in inputs)
        room = int(cfg.ephemeral_mib * (1 << 20) * EPHEMERAL_HEADROOM)
        if total > room:
            return f"inputs total {total >> 20} MiB, over the function's {cfg.ephemeral_mib} MiB of /tmp"
        wants = job.thunk.resources
        if wants.memory_mib > cfg.memory_mib:
            return f"needs {wants.memory_mib} MiB of memory; the function has {cfg.memory_mib} MiB"
        if wants.disk_mib and wants.disk_mib > cfg.ephemeral_mib:
            return f"needs {wants.disk_mib} MiB of disk; the function has {cfg.ephemeral_mib} MiB"
        return None

    # -- running ---------------------------------------------------------------------------

    async def run(self, job: Job) -> ExecutionResult:
        blobs = await self._upload_inputs(job)
        loop = asyncio.get_running_loop()
        pending = _Pending(job, job.thunk.serialize(), loop.create_future(), blobs)
        self._enqueue(pending)
        try:
            answer = await asyncio.shield(pending.future)
        except asyncio.CancelledError:
            if pending in self._pending:  # not sent yet: take it out of the batch
                self._pending.remove(pending)
            # Sent: the batch still answers it later; nobody will read that answer.
            pending.future.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise
        return await self._result(job, answer)

    def _inline_inputs(self, job: Job, inputs: list[str]) -> dict[str, bytes]:
        """Small local inputs to send in the event (read now: the event needs the bytes),
        within what the thunk itself leaves of the payload budget."""
        blobs: dict[str, bytes] = {}
        room = min(INLINE_INPUTS_PER_THUNK, PAYLOAD_BUDGET - _payload_size(job.thunk.serialize()))
        for ident in inputs:
            size = parse_id(ident).size
            if size > self.config.inline_max or _payload_size(size) > room or ident in self._sent_to_s3:
                continue
            try:
                blobs[ident] = self.store.read_bytes(ident)
            except MissingBlob:
                continue
            room -= _payload_size(blobs[ident])
        return blobs

    async def _upload_inputs(self, job: Job) -> dict[str, bytes]:
        """Make every input reachable by the function: inline (returned) or in S3."""
        inputs = sorted({i.id for i in (*job.thunk.values, *job.thunk.executables)})
        blobs = self._inline_inputs(job, inputs)
        inputs = [i for i in inputs if i not in blobs]
        results = await asyncio.gather(*(self.storage.upload(self.store, i) for i in inputs),
                                       return_exceptions=True)
        for ident, result in zip(inputs, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, MissingBlob):
                # Not an infrastructure failure: retrying cannot help, but the scheduler
                # can rebuild the value from the thunk that produced it.
                raise MissingBlob(ident, "the local store nor in S3") from None
            if isinstance(result, CorruptBlob):
                self.store.remove_corrupt(ident)
                raise InfrastructureError(f"lambda: cannot upload input: {result}") from None
            if isinstance(result, BaseException):
                raise InfrastructureError(f"lambda: uploading input {ident}: {_first_line(result)}") from None
        return blobs

    def _enqueue(self, pending: _Pending) -> None:
        batch_bytes = sum(p.size() for p in self._pending)
        if self._pending and batch_bytes + pending.size() > PAYLOAD_BUDGET:
            self._flush()
        self._pending.append(pending)
        if len(self._pending) >= self.config.batch_max:
            self._flush()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(self.config.batch_window, self._flush)

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        batch, self._pending = self._pending, []
        if not batch:
            return
        task = asyncio.ensure_future(self._invoke_batch(batch))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _invoke_batch(self, batch: list[_Pending]) -> None:
        blobs = {ident: data for p in batch for ident, data in p.blobs.items()}
        event = {
            "version": EVENT_VERSION,
            "storage": self.storage.config.uri,
            "thunks": [{"id": p.job.thunk_id, "data": base64.b64encode(p.data).decode()} for p in batch],
            "blobs": [{"id": i, "data": base64.b64encode(d).decode()} for i, d in blobs.items()],
            "inline_values": self.config.inline_max,
        }
        try:
            answer = await self._invoke(json.dumps(event).encode())
            if not isinstance(answer, dict) or answer.get("version") != EVENT_VERSION:
                raise InfrastructureError(f"lambda {self.config.function_name}: answer is not a version "
                                          f"{EVENT_VERSION} answer")
            by_id = {r.get("id"): r for r in answer.get("results", []) if isinstance(r, dict)}
            for pending in batch:
                result = by_id.get(pending.job.thunk_id)
                if result is None:
                    why = answer.get("error") or "no result for it in the answer"
                    _fail(pending, InfrastructureError(f"lambda: thunk {pending.job.thunk_id}: {why}"))
                elif not pending.future.done():
                    pending.future.set_result(result)
        except InfrastructureError as exc:
            for pending in batch:
                _fail(pending, exc)
        except BaseException as exc:
            error = InfrastructureError(f"lambda {self.config.function_name}: {_first_line(exc) or type(exc).__name__}")
            for pending in batch:
                _fail(pending, error)
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def _get_client(self) -> Any:
        return await self._client.get()

    async def _invoke(self, payload: bytes) -> Any:
        """One synchronous invocation; throttling retried here, all else raised."""
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        cfg = self.config
        client = await self._get_client()
        where = cfg.endpoint_url or f"region {cfg.region}"
        for attempt in range(1, cfg.throttle_attempts + 1):
            try:
                async with asyncio.timeout(cfg.function_timeout + cfg.connect_timeout + 60):
                    self.invocations += 1
                    response = await client.invoke(FunctionName=cfg.function_name, Payload=payload)
                    body = await response["Payload"].read()
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code = str(error.get("Code", ""))
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if (code in ("TooManyRequestsException", "ThrottlingException") or status == 429) \
                        and attempt < cfg.throttle_attempts:
                    await asyncio.sleep(random.uniform(0, min(cfg.backoff_cap, cfg.backoff_base * 2**attempt)))
                    continue
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                raise InfrastructureError(
                    f"lambda {cfg.function_name}: {code or status}{tries}: {_first_line(error.get('Message', ''))}"
                ) from None
            except (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError) as exc:
                raise InfrastructureError(f"lambda: cannot reach {where}: {_first_line(exc)}") from None
            except (ReadTimeoutError, TimeoutError):
                raise InfrastructureError(
                    f"lambda {cfg.function_name}: no answer from {where} within "
                    f"{cfg.function_timeout + 30:g} s") from None
            if response.get("FunctionError"):
                try:
                    detail = json.loads(body)
                    why = f"{detail.get('errorType', 'Error')}: {_first_line(detail.get('errorMessage', ''))}"
                except (ValueError, AttributeError):
                    why = _first_line(body.decode(errors="replace"))
                raise InfrastructureError(f"lambda {cfg.function_name}: {why}")
            try:
                return json.loads(body)
            except ValueError:
                raise InfrastructureError(f"lambda {cfg.function_name}: answer is not JSON") from None
        raise AssertionError("unreachable")

    # -- answers -----------------------------------------------------------------------------

    async def _result(self, job: Job, answer: dict) -> ExecutionResult:
        status = answer.get("status")
        error = _first_line(answer.get("error", ""))
        if status == "execution_failed":
            raise ExecutionFailed(job.thunk_id, error or "failed on Lambda", list(job.thunk.args),
                                  str(answer.get("stderr_tail", "")))
        if status != "ok":
            for ident in answer.get("missing") or []:
                self.storage.forget(ident)  # the next attempt uploads it again
                self._sent_to_s3.add(ident)
            raise InfrastructureError(f"lambda: thunk {job.thunk_id}: {error or status}")
        try:
            entries = [*answer.get("outputs", []), *answer.get("created", [])]
            kept = await asyncio.gather(*(self._keep(entry) for entry in entries),  # GETs, if any, at once
                                        return_exceptions=True)
            for outcome in kept:
                if isinstance(outcome, BaseException):
                    raise outcome
            outputs = [Output(str(e["tag"]), str(e["id"]), bool(e.get("executable")))
                       for e in answer.get("outputs", [])]
            created = [str(e["id"]) for e in answer.get("created", [])]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InfrastructureError(f"lambda: thunk {job.thunk_id}: malformed answer ({exc})") from None
        if [o.tag for o in outputs] != list(job.thunk.outputs):
            raise InfrastructureError(f"lambda: thunk {job.thunk_id}: answer has outputs "
                                      f"{[o.tag for o in outputs]}, expected {list(job.thunk.outputs)}")
        return ExecutionResult(job.thunk_id, outputs, created, float(answer.get("duration") or 0.0))

    async def _keep(self, entry: dict) -> None:
        """Blobs that came inline (thunks, small values) into the local store; the
        function did not upload those, so they are not believed to be in S3. Thunk blobs
        that did not fit the answer are fetched from S3; larger values stay there."""
        ident = str(entry["id"])
        parsed = parse_id(ident)
        executable = bool(entry.get("executable"))
        if "data" in entry:
            data = base64.b64decode(entry["data"], validate=True)
            actual = id_of_bytes(data, Kind.THUNK if data.startswith(MAGIC) else Kind.VALUE)
            if actual != ident:  # checked before storing: never cache a corrupt blob
                raise InfrastructureError(f"lambda: inline blob {ident} hashes to {actual}")
            self.store.put_bytes(data, executable)
            return
        self.storage.remember(ident, executable)
        if not parsed.is_thunk:
            if executable and self.store.has(ident):
                self.store.mark_executable(ident)
            return
        try:
            await self.storage.download(self.store, ident)
        except (StoreError, S3Error) as exc:
            raise InfrastructureError(f"lambda: fetching created thunk: {exc}") from None

    async def close(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        for pending in self._pending:
            _fail(pending, InfrastructureError("lambda engine closed"))
        self._pending = []
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        await self._client.close()


def _fail(pending: _Pending, error: BaseException) -> None:
    if not pending.future.done():
        pending.future.set_exception(error)


class LambdaSetupError(CliError, OSError):
    """A configuration problem found before anything runs: one line, exit status 1.

    Also an ``OSError`` so that every CLI's user-error handling prints it as one line.
    """


def _host_port(url: str) -> tuple[str, int]:
    parsed = urlsplit(url)
    if not parsed.hostname:
        raise LambdaSetupError(f"{url!r} is not an http(s) URL")
    return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)


def preflight(config: LambdaConfig, storage: S3Config) -> None:
    """Refuse to start when the Lambda or S3 endpoint cannot even be connected to.

    A wrong ``GG_LAMBDA_ENDPOINT`` would otherwise make every thunk retry, back off and
    then quietly run on this machine instead: a user who asked for Lambda wants to be
    told at once. One TCP connect each, bounded by the connect timeout; an outage in
    the middle of a run is still retried and falls back as usual.
    """
    checks = [
        ("Lambda", config.endpoint_url or f"https://lambda.{config.region}.amazonaws.com",
         "GG_LAMBDA_ENDPOINT / GG_LAMBDA_REGION"),
        ("S3", storage.endpoint or f"https://s3.{storage.region}.amazonaws.com", "GG_STORAGE_URI"),
    ]
    for what, url, variable in checks:
        host, port = _host_port(url)
        try:
            socket.create_connection((host, port), timeout=config.connect_timeout).close()
        except OSError as exc:
            why = exc.strerror or str(exc) or type(exc).__name__
            raise LambdaSetupError(f"cannot reach the {what} endpoint {url}: {why} "
                                   f"(check {variable}, or use --engine local)") from None


def build_lambda_engine(store: LocalStore, jobs: int | None, environ: Mapping[str, str],
                        check: bool = True) -> tuple[LambdaEngine, S3Storage]:
    """The engine and its S3 storage from the environment (GG_STORAGE_URI, GG_LAMBDA_*).

    The caller owns the storage (closes it after the engine) and passes it to the
    fallback engine, so work produced on Lambda can be fetched locally. With ``check``,
    both endpoints must accept a connection first (:func:`preflight`).
    """
    from ir.storage_uri import StorageUriError, parse_storage_uri

    uri = environ.get("GG_STORAGE_URI")
    if not uri:
        raise LambdaSetupError("--engine lambda needs GG_STORAGE_URI (e.g. s3://BUCKET/PREFIX?region=us-east-1)")
    try:
        s3_config = parse_storage_uri(uri)
        config = LambdaConfig.from_env(environ, jobs)
    except (StorageUriError, ValueError) as exc:
        raise LambdaSetupError(str(exc)) from None
    if check:
        preflight(config, s3_config)
    storage = S3Storage(s3_config)
    return LambdaEngine(config, store, storage), storage
