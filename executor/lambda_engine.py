"""The Lambda engine: runs thunks on AWS Lambda (or anything speaking its Invoke API).

For each job, :meth:`LambdaEngine.run`

1. uploads the thunk's missing inputs to S3 — per job, as it is dispatched, so uploads
   overlap with invocations instead of all happening up front (the storage shares one
   upload between jobs that need the same blob);
2. joins the queue of jobs waiting for an invocation slot (at most ``concurrency``
   invocations are out at once; the scheduler may hand over ``batch_max`` times as many
   jobs). Adaptive batching (the default, "work-size tuning"): while fewer than half the
   slots are out, a free slot takes what is waiting at once, spread over the free slots
   (one thunk per invocation: the lowest latency); once half or more are out, the
   endpoint is the bottleneck and a partial batch waits up to ``batch_window`` to fill
   (fewer invocations). A batch is capped by ``batch_max``, the payload budget, and the
   observed thunk durations against the observed invocation overhead (a batch of long
   thunks would only serialize them behind each other). Fixed batching
   (``adaptive_batch=False``) always waits up to ``batch_window`` for ``batch_max``;
3. invokes the function (aiobotocore, botocore retries off; throttling is retried here
   with capped exponential back-off and full jitter, a bounded number of times);
4. maps the handler's answer: ``execution_failed`` -> :class:`ExecutionFailed` (final:
   it includes the thunk's own timeout, or the default one), ``resource_exhausted``
   and the function's own timeout -> :class:`ResourceExhausted` (the scheduler moves
   the thunk to the fallback engine at once), ``config_error`` and configuration
   faults of the Invoke API (unknown function, access denied, credentials, TLS) ->
   :class:`~ir.errors.ConfigError` (the run stops), everything else (crashed worker,
   throttling that does not stop, unreachable endpoint, missing inputs) ->
   :class:`InfrastructureError`, raised quickly: the scheduler owns retries;
5. stores thunk outputs and created thunks (inline in the answer) in the local store,
   because the scheduler reads them there, and records value outputs as present in S3.

Nothing waits without a deadline: each invocation gets the time its thunks may take
(their timeouts, capped by the function's) plus ``deadline_margin``; while invocations
are out, a DryRun invoke every ``probe_after`` seconds checks that the endpoint still
answers at all, so a stopped endpoint is given up within seconds, not at the deadline.

It refuses what a Lambda cannot take (payload over 6 MB, inputs larger than the
function's ephemeral storage, more memory or disk than configured) so the scheduler
sends those to the fallback engine up front; :meth:`LambdaEngine.preflight` checks the
function and the bucket before the first thunk.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ir.errors import ConfigError, first_line
from ir.ids import id_of_blob, parse_id
from ir.retry import backoff_delay
from ir.storage import RemoteStorage, StorageError, StorageUriError, Traffic, open_storage
from ir.storage.aws_client import AwsFault, LazyClient, classify
from ir.store import CorruptBlob, LocalStore, MissingBlob, StoreError

from . import protocol
from .engine import Job
from .execution import ExecutionFailed, ExecutionResult, InfrastructureError, Output, ResourceExhausted
from .protocol import MAX_PAYLOAD, REQUEST_BUDGET, ExecutionRequest, ExecutionResponse, inline_size

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
    batch_max: int = 4  # thunks per invocation at most
    adaptive_batch: bool = True  # False: wait up to batch_window for batch_max thunks
    batch_window: float = 0.002
    connect_timeout: float = 5.0
    throttle_attempts: int = 6
    backoff_base: float = 0.05
    backoff_cap: float = 2.0
    inline_max: int = INLINE_MAX  # 0: every blob goes through S3
    # An invocation may take what its thunks may take, plus this (transfers, cold start).
    deadline_margin: float = 15.0
    # Liveness: while an invocation has been out this long, a DryRun invoke (answered
    # at once by a live endpoint) must come back within probe_timeout (connecting
    # included), every probe_after; the pre-flight DryRun has the same deadline.
    probe_after: float = 2.0
    probe_timeout: float = 3.0

    def __post_init__(self) -> None:
        for name, setting in (("function_timeout", "GG_LAMBDA_TIMEOUT"), ("memory_mib", "GG_LAMBDA_MEMORY_MIB"),
                              ("ephemeral_mib", "GG_LAMBDA_EPHEMERAL_MIB"), ("concurrency", "GG_LAMBDA_CONCURRENCY"),
                              ("batch_max", "GG_LAMBDA_BATCH"), ("connect_timeout", ""),
                              ("deadline_margin", ""), ("probe_after", ""), ("probe_timeout", "")):
            value = getattr(self, name)
            if not value > 0 or value == float("inf"):
                raise LambdaSetupError(f"{setting or name}={value!r} must be a positive number")
        if self.endpoint_url is not None and not self.endpoint_url.startswith(("http://", "https://")):
            raise LambdaSetupError(f"GG_LAMBDA_ENDPOINT={self.endpoint_url!r} is not an http(s) URL")

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
                raise LambdaSetupError(f"{name}={text!r} is not a number") from None

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


# Adaptive batching: a batch holds at most this many times the observed invocation
# overhead of thunk run time (beyond that, amortizing the overhead gains little and the
# thunks would wait behind each other), and never less than BATCH_TIME_FLOOR seconds.
BATCH_OVERHEAD_FACTOR = 4.0
BATCH_TIME_FLOOR = 0.5
EWMA = 0.2  # weight of a new observation in the latency and duration estimates


@dataclass
class _Pending:
    job: Job
    data: bytes
    future: asyncio.Future = field(repr=False)
    blobs: dict[str, bytes] = field(default_factory=dict, repr=False)  # inputs sent inline

    def size(self) -> int:
        return inline_size(self.data) + sum(inline_size(b) for b in self.blobs.values())


_THROTTLED = frozenset({"TooManyRequestsException", "ThrottlingException", "429"})
_UNREACHABLE = frozenset({"EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"})


class LambdaEngine:
    name = "lambda"

    @property
    def remote(self) -> RemoteStorage:
        """Results stay in the remote store (the Engine interface's ``remote``); the run closes it."""
        return self.storage

    def __init__(self, config: LambdaConfig, store: LocalStore, storage: RemoteStorage):
        self.config = config
        self.store = store
        self.storage = storage
        # Jobs the scheduler may hand over at once: enough to fill every invocation slot
        # with a full batch; at most config.concurrency invocations are out at once.
        self.slots = max(1, config.concurrency) * max(1, config.batch_max)
        self._pending: list[_Pending] = []
        self._invoking = 0  # invocations out
        self._dispatch_soon: asyncio.Handle | None = None
        # Observed: seconds an invocation costs beyond its thunks' run time, and seconds
        # a thunk runs (exponentially weighted); None until the first answer.
        self.overhead: float | None = None
        self.thunk_time: float | None = None
        self._storage_uri = storage.uri
        self._flush_timer: asyncio.TimerHandle | None = None
        self._inflight: set[asyncio.Task] = set()
        self._client = LazyClient(
            "lambda", region=config.region, endpoint_url=config.endpoint_url,
            connect_timeout=config.connect_timeout, read_timeout=config.function_timeout + config.deadline_margin,
            max_pool_connections=max(10, config.concurrency),
        )
        # Probes get connections of their own: the invocation pool may be all in use.
        self._probe_client = LazyClient(
            "lambda", region=config.region, endpoint_url=config.endpoint_url,
            connect_timeout=config.probe_timeout, read_timeout=config.probe_timeout, max_pool_connections=2,
        )
        # Inputs a function reported missing although sent: from now on they go via S3.
        self._sent_to_s3: set[str] = set()
        self.invocations = 0
        self._started: dict[asyncio.Task, float] = {}  # invocation tasks out -> when sent
        self._watchdog: asyncio.Task | None = None
        self._down: str | None = None  # why the endpoint is believed dead (a probe failed)
        self._down_at = 0.0
        self._probing: asyncio.Future | None = None
        # Blobs carried inside invocations (inputs in events, values in answers): bytes
        # moved besides the storage's own (ir.storage.Metered; gg-force reports both).
        self.traffic = Traffic()

    @property
    def where(self) -> str:
        return self.config.endpoint_url or f"region {self.config.region}"

    # -- configuration problems, liveness --------------------------------------------------

    def config_error(self, fault: AwsFault) -> ConfigError:
        """One line naming the setting to fix, for a configuration fault of the Invoke API."""
        name = self.config.function_name
        if fault.code == "ResourceNotFoundException":
            return LambdaSetupError(f"Lambda function {name!r} does not exist at {self.where} "
                                    f"(GG_LAMBDA_FUNCTION={name})")
        hint = fault.setting or (f"GG_LAMBDA_ENDPOINT={self.config.endpoint_url}" if fault.code == "SSLError"
                                 else f"GG_LAMBDA_FUNCTION={name} and the credentials' lambda:InvokeFunction "
                                      "permission")
        return LambdaSetupError(f"Lambda function {name!r} at {self.where}: {fault.reason} (check {hint})")

    async def _dry_run(self) -> None:
        """A DryRun invoke: checks the function exists and may be invoked, runs nothing."""
        client = await self._probe_client.get()
        async with asyncio.timeout(self.config.probe_timeout):
            await client.invoke(FunctionName=self.config.function_name, InvocationType="DryRun")

    async def preflight(self) -> None:
        """Before the first thunk: the function answers a DryRun invoke, and the bucket
        takes a write and a read (RemoteStorage.probe). Any problem is a :class:`ConfigError`
        with one line naming the setting: a wrong setting must not turn into a quiet
        local build. Transient trouble of the service itself (5xx) is left to the run.
        """
        outcomes = await asyncio.gather(self._preflight_lambda(), self._preflight_storage(), return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        for error in errors:  # a setting named by the service first, then reachability
            if isinstance(error, ConfigError) and not isinstance(error, _Unreachable):
                raise error
        if errors:
            raise errors[0]

    async def _preflight_lambda(self) -> None:
        cfg = self.config
        hint = "check GG_LAMBDA_ENDPOINT / GG_LAMBDA_REGION, or use --engine local"
        try:
            await self._dry_run()
        except TimeoutError:
            raise _Unreachable(f"the Lambda endpoint {self.where} does not answer (no answer to a DryRun invoke "
                               f"within {cfg.probe_timeout:g} s; {hint})") from None
        except Exception as exc:
            fault = classify(exc)
            if fault.kind == "config":
                raise self.config_error(fault) from None
            if fault.code in _UNREACHABLE or fault.kind != "transient":
                raise _Unreachable(f"cannot reach the Lambda endpoint {self.where}: {fault.reason} ({hint})") from None

    async def _preflight_storage(self) -> None:
        hint = f"check GG_STORAGE_URI={self.storage.uri}, or use --engine local"
        try:
            async with asyncio.timeout(2 * self.config.connect_timeout + self.config.probe_timeout):
                await self.storage.probe()
        except TimeoutError:
            raise _Unreachable(f"the storage does not answer ({hint})") from None
        except ConfigError:
            raise
        except StorageError as exc:
            raise _Unreachable(f"cannot use the storage: {exc} ({hint})") from None

    async def _alive(self) -> str | None:
        """None if the endpoint answers a DryRun now; else why not. Concurrent callers
        share one probe."""
        if self._probing is None:
            self._probing = asyncio.ensure_future(self._probe())
            self._probing.add_done_callback(lambda _f: setattr(self, "_probing", None))
        return await asyncio.shield(self._probing)

    async def _probe(self) -> str | None:
        cfg = self.config
        try:
            await self._dry_run()
        except TimeoutError:
            return (f"lambda: the endpoint {self.where} stopped answering (no answer to a DryRun invoke "
                    f"within {cfg.probe_timeout:g} s)")
        except Exception as exc:
            from botocore.exceptions import ClientError

            if isinstance(exc, ClientError):  # it answered (if only to throttle): alive
                return None
            fault = classify(exc)
            if fault.kind == "transient":
                return f"lambda: cannot reach {self.where}: {fault.reason}"
        return None

    async def _watch(self) -> None:
        """While invocations are out, check now and then that the endpoint is alive; if
        it is not, fail what waits on it instead of waiting for the deadlines."""
        cfg = self.config
        while True:
            await asyncio.sleep(cfg.probe_after / 2)
            now = time.monotonic()
            if not any(now - sent >= cfg.probe_after for sent in self._started.values()):
                continue
            reason = await self._alive()
            if reason is None:
                continue
            self._down, self._down_at = reason, time.monotonic()
            for task in list(self._started):
                task.cancel()
            await asyncio.sleep(cfg.probe_after)

    async def _check_not_down(self) -> None:
        """Fail fast while the endpoint is known dead; re-probe now and then."""
        if self._down is None:
            return
        if time.monotonic() - self._down_at < self.config.probe_after:
            raise InfrastructureError(self._down)
        reason = await self._alive()
        if reason is not None:
            self._down, self._down_at = reason, time.monotonic()
            raise InfrastructureError(reason)
        self._down = None

    # -- what Lambda cannot take --------------------------------------------------------

    def refuses(self, job: Job) -> str | None:
        cfg = self.config
        size = inline_size(job.thunk.serialize())
        if size > REQUEST_BUDGET:
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
        await self._check_not_down()
        data = job.thunk.serialize()
        blobs = await self._upload_inputs(job, data)
        loop = asyncio.get_running_loop()
        pending = _Pending(job, data, loop.create_future(), blobs)
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

    def _inline_inputs(self, data: bytes, inputs: list[str]) -> dict[str, bytes]:
        """Small local inputs to send in the event (read now: the event needs the bytes),
        within what the thunk itself (``data``) leaves of the payload budget."""
        blobs: dict[str, bytes] = {}
        room = min(INLINE_INPUTS_PER_THUNK, REQUEST_BUDGET - inline_size(data))
        for ident in inputs:
            size = parse_id(ident).size
            if size > self.config.inline_max or inline_size(size) > room or ident in self._sent_to_s3:
                continue
            try:
                blobs[ident] = self.store.read_bytes(ident)
            except MissingBlob:
                continue
            room -= inline_size(blobs[ident])
        return blobs

    async def _upload_inputs(self, job: Job, data: bytes) -> dict[str, bytes]:
        """Make every input reachable by the function: inline (returned) or in S3."""
        inputs = sorted({i.id for i in (*job.thunk.values, *job.thunk.executables)})
        blobs = self._inline_inputs(data, inputs)
        inputs = [i for i in inputs if i not in blobs]
        if not inputs:
            return blobs
        results = await asyncio.gather(*(self.storage.upload(self.store, i) for i in inputs),
                                       return_exceptions=True)
        for ident, result in zip(inputs, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, MissingBlob):
                # Not an infrastructure failure: retrying cannot help, but the scheduler
                # can rebuild the value from the thunk that produced it.
                raise MissingBlob(ident, "the local store nor in S3") from None
            if isinstance(result, ConfigError):
                raise result
            if isinstance(result, CorruptBlob):
                self.store.remove_corrupt(ident)
                raise InfrastructureError(f"lambda: cannot upload input: {result}") from None
            if isinstance(result, BaseException):
                raise InfrastructureError(f"lambda: uploading input {ident}: {first_line(result)}") from None
        return blobs

    def _enqueue(self, pending: _Pending) -> None:
        self._pending.append(pending)
        if self.config.adaptive_batch:
            # Once this loop iteration is over: jobs dispatched together are counted together.
            if self._dispatch_soon is None:
                self._dispatch_soon = asyncio.get_running_loop().call_soon(self._dispatch)
        elif len(self._pending) >= self.config.batch_max:
            self._flush()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(self.config.batch_window, self._flush)

    def _flush(self) -> None:
        """A batch window is over (or, batching fixed, a batch is full): send what waits,
        as far as invocation slots are free."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self._dispatch(flushing=True)

    def _batch_cap(self) -> int:
        """Adaptive: the largest batch worth making — ``batch_max``, and no more thunk
        run time than a few invocation overheads (both observed)."""
        cap = self.config.batch_max
        if self.overhead is not None and self.thunk_time:
            budget = max(BATCH_TIME_FLOOR, BATCH_OVERHEAD_FACTOR * self.overhead)
            cap = min(cap, max(1, int(budget / self.thunk_time)))
        return max(1, cap)

    def _busy(self) -> bool:
        """At least half the invocation slots are out: the endpoint is the bottleneck,
        so fuller batches (fewer invocations) beat sending at once."""
        return self._invoking >= max(1, self.config.concurrency // 2)

    def _dispatch(self, flushing: bool = False) -> None:
        """Send waiting jobs while invocation slots are free."""
        cfg = self.config
        self._dispatch_soon = None
        while self._pending and self._invoking < cfg.concurrency:
            if cfg.adaptive_batch:
                cap = self._batch_cap()
                if not flushing and len(self._pending) < cap and self._busy():
                    # A partial batch on a busy endpoint waits for its window to fill.
                    if self._flush_timer is None:
                        self._flush_timer = asyncio.get_running_loop().call_later(cfg.batch_window, self._flush)
                    return
                free = cfg.concurrency - self._invoking
                size = min(cap, -(-len(self._pending) // free))  # spread over the free slots
            elif flushing or len(self._pending) >= cfg.batch_max:
                size = cfg.batch_max
            else:  # a partial batch waits for its window
                if self._flush_timer is None:
                    self._flush_timer = asyncio.get_running_loop().call_later(cfg.batch_window, self._flush)
                return
            batch: list[_Pending] = []
            room = REQUEST_BUDGET
            while self._pending and len(batch) < size:
                cost = self._pending[0].size()
                if batch and cost > room:
                    break
                batch.append(self._pending.pop(0))
                room -= cost
            self._start(batch)

    def _start(self, batch: list[_Pending]) -> None:
        self._invoking += 1
        task = asyncio.ensure_future(self._invoke_batch(batch))
        self._inflight.add(task)
        self._started[task] = time.monotonic()
        task.add_done_callback(self._finished)
        if self._watchdog is None:
            self._watchdog = asyncio.ensure_future(self._watch())

    def _finished(self, task: asyncio.Task) -> None:
        """An invocation is over: its slot takes the next waiting jobs."""
        self._inflight.discard(task)
        self._started.pop(task, None)
        self._invoking -= 1
        if self._pending:
            self._dispatch()

    def _observe(self, elapsed: float, durations: list[float]) -> None:
        """Update the invocation overhead and thunk time estimates from one answer."""
        if not durations:
            return
        overhead = max(0.0, elapsed - max(durations))
        thunk_time = sum(durations) / len(durations)
        if self.overhead is None or self.thunk_time is None:
            self.overhead, self.thunk_time = overhead, thunk_time
        else:
            self.overhead += EWMA * (overhead - self.overhead)
            self.thunk_time += EWMA * (thunk_time - self.thunk_time)

    async def _invoke_batch(self, batch: list[_Pending]) -> None:
        blobs = {ident: data for p in batch for ident, data in p.blobs.items()}
        request = ExecutionRequest(
            version=protocol.EVENT_VERSION,
            storage=self._storage_uri,
            thunks=[ExecutionRequest.Thunk(id=p.job.thunk_id, data=p.data, timeout=p.job.timeout or None)
                    for p in batch],
            blobs=[protocol.Blob(id=i, data=d) for i, d in blobs.items()],
            inline_values=self.config.inline_max,
        )
        # What the thunks may take (serially, at worst), capped by the function's timeout.
        need = sum(p.job.timeout or self.config.function_timeout for p in batch)
        deadline = min(need, self.config.function_timeout) + self.config.deadline_margin
        name = self.config.function_name
        try:
            try:
                payload = protocol.encode(request)
            except protocol.ProtocolError as exc:  # the budgets should make this impossible
                raise InfrastructureError(f"lambda {name}: {exc}") from None
            sent = time.monotonic()
            body = await self._invoke(payload, deadline)
            self.traffic.sent(sum(len(b.data) for b in request.blobs), len(request.blobs))
            elapsed = time.monotonic() - sent
            try:
                answer = protocol.decode_response(body)
            except protocol.VersionMismatch as exc:
                raise LambdaSetupError(f"the Lambda function {name!r} {exc} (redeploy it: gg lambda package, "
                                       "then terraform apply)") from None
            except protocol.ProtocolError as exc:
                raise InfrastructureError(f"lambda {name}: {exc}") from None
            by_id = {r.id: r for r in answer.results}
            self._observe(elapsed, [r.duration for r in answer.results if r.status == protocol.OK])
            for pending in batch:
                result = by_id.get(pending.job.thunk_id)
                if result is None:
                    why = answer.error or "no result for it in the answer"
                    _fail(pending, InfrastructureError(f"lambda: thunk {pending.job.thunk_id}: {why}"))
                elif not pending.future.done():
                    pending.future.set_result(result)
        except (InfrastructureError, ConfigError) as exc:
            for pending in batch:
                _fail(pending, exc)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and self._down is not None:
                error = InfrastructureError(self._down)
            else:
                error = InfrastructureError(f"lambda {self.config.function_name}: "
                                            f"{first_line(exc)}")
            for pending in batch:
                _fail(pending, error)
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def _get_client(self) -> Any:
        return await self._client.get()

    async def _invoke(self, payload: bytes, deadline: float) -> bytes:
        """One synchronous invocation within ``deadline`` seconds, returning the answer's
        bytes; throttling retried here, configuration faults raised as ConfigError, all
        else as InfrastructureError."""
        cfg = self.config
        client = await self._get_client()
        where = self.where
        for attempt in range(1, cfg.throttle_attempts + 1):
            try:
                async with asyncio.timeout(deadline):
                    self.invocations += 1
                    response = await client.invoke(FunctionName=cfg.function_name, Payload=payload)
                    body = await response["Payload"].read()
            except TimeoutError:
                raise InfrastructureError(
                    f"lambda {cfg.function_name}: no answer from {where} within {deadline:g} s") from None
            except Exception as exc:
                fault = classify(exc)
                if fault.kind == "config":
                    raise self.config_error(fault) from None
                if fault.code in _THROTTLED and attempt < cfg.throttle_attempts:
                    await asyncio.sleep(backoff_delay(attempt, 2 * cfg.backoff_base, cfg.backoff_cap))
                    continue
                if fault.code in _UNREACHABLE:
                    raise InfrastructureError(f"lambda: cannot reach {where}: {first_line(exc)}") from None
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                raise InfrastructureError(f"lambda {cfg.function_name}: {fault.code or 'error'}{tries}: "
                                          f"{fault.reason}") from None
            if response.get("FunctionError"):
                try:
                    detail = json.loads(body)
                    kind = str(detail.get("errorType", "Error"))
                    why = f"{kind}: {first_line(detail.get('errorMessage', ''))}"
                except (ValueError, AttributeError):
                    kind, why = "", first_line(body.decode(errors="replace"))
                if kind in ("Sandbox.Timedout", "Runtime.OutOfMemory"):
                    # The function's own limits, not the endpoint's health: the same
                    # function would hit them again; a bigger engine may not.
                    raise ResourceExhausted(f"lambda {cfg.function_name}: {why}")
                raise InfrastructureError(f"lambda {cfg.function_name}: {why}")
            return body
        raise AssertionError("unreachable")

    # -- answers -----------------------------------------------------------------------------

    async def _result(self, job: Job, answer: ExecutionResponse.Result) -> ExecutionResult:
        status = answer.status
        error = first_line(answer.error)
        if status == protocol.EXECUTION_FAILED:
            raise ExecutionFailed(job.thunk_id, error or "failed on Lambda", list(job.thunk.args), answer.stderr_tail)
        if status == protocol.RESOURCE_EXHAUSTED:
            raise ResourceExhausted(f"lambda: {error or 'resource_exhausted'}", answer.stderr_tail)
        if status == protocol.CONFIG_ERROR:
            raise LambdaSetupError(f"in the Lambda function {self.config.function_name!r}: {error}")
        if status != protocol.OK:
            for ident in answer.missing:
                self.storage.forget(ident)  # the next attempt uploads it again
                self._sent_to_s3.add(ident)
            raise InfrastructureError(f"lambda: thunk {job.thunk_id}: {error or protocol.status_name(status)}")
        entries: list[ExecutionResponse.Output | ExecutionResponse.Created] = [*answer.outputs, *answer.created]
        kept = await asyncio.gather(*(self._keep(entry) for entry in entries),  # GETs, if any, at once
                                    return_exceptions=True)
        for outcome in kept:
            if isinstance(outcome, BaseException):
                raise outcome
        outputs = [Output(e.tag, e.id, e.executable) for e in answer.outputs]
        created = [e.id for e in answer.created]
        if [o.tag for o in outputs] != list(job.thunk.outputs):
            raise InfrastructureError(f"lambda: thunk {job.thunk_id}: answer has outputs "
                                      f"{[o.tag for o in outputs]}, expected {list(job.thunk.outputs)}")
        # On success stderr_tail is what the function printed (executor.worker): shown and kept.
        return ExecutionResult(job.thunk_id, outputs, created, answer.duration, answer.stderr_tail.encode())

    async def _keep(self, entry: ExecutionResponse.Output | ExecutionResponse.Created) -> None:
        """Blobs that came inline (thunks, small values) into the local store; the
        function did not upload those, so they are not believed to be in S3. Thunk blobs
        that did not fit the answer are fetched from S3; larger values stay there."""
        ident = entry.id
        try:
            parsed = parse_id(ident)
        except ValueError as exc:
            raise InfrastructureError(f"lambda: malformed answer: {first_line(exc)}") from None
        executable = isinstance(entry, ExecutionResponse.Output) and entry.executable
        if entry.HasField("data"):
            data = entry.data
            actual = id_of_blob(data)
            self.traffic.received(len(data))
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
        except StoreError as exc:
            raise InfrastructureError(f"lambda: fetching created thunk: {exc}") from None

    async def close(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._dispatch_soon is not None:
            self._dispatch_soon.cancel()
            self._dispatch_soon = None
        for pending in self._pending:
            _fail(pending, InfrastructureError("lambda engine closed"))
        self._pending = []
        for task in [*self._inflight, *([self._watchdog] if self._watchdog else [])]:
            task.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._watchdog is not None:
            await asyncio.gather(self._watchdog, return_exceptions=True)
            self._watchdog = None
        await self._client.close()
        await self._probe_client.close()


def _fail(pending: _Pending, error: BaseException) -> None:
    if not pending.future.done():
        pending.future.set_exception(error)


class LambdaSetupError(ConfigError):
    """A setting of the Lambda engine is wrong: one line naming it; the run stops."""


class _Unreachable(LambdaSetupError):
    """Pre-flight: an endpoint that cannot be reached or does not answer."""


def build_lambda_engine(store: LocalStore, jobs: int | None,
                        environ: Mapping[str, str]) -> tuple[LambdaEngine, RemoteStorage]:
    """The engine and its storage from the environment (GG_STORAGE_URI, GG_LAMBDA_*).

    The caller owns the storage (closes it after the engine) and passes it to the
    fallback engine, so work produced on Lambda can be fetched locally; it should
    ``await engine.preflight()`` before the first thunk.
    """
    uri = environ.get("GG_STORAGE_URI")
    if not uri:
        raise LambdaSetupError("--engine lambda needs GG_STORAGE_URI (e.g. s3://BUCKET/PREFIX?region=us-east-1)")
    try:
        storage = open_storage(uri)
    except StorageUriError as exc:
        raise LambdaSetupError(str(exc)) from None
    config = LambdaConfig.from_env(environ, jobs)
    return LambdaEngine(config, store, storage), storage
