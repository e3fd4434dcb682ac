"""The AWS Lambda function: a thin entry point around the worker core.

Entry point ``lambda_handler.handler.handle`` (run by ``python -m awslambdaric`` or
the managed Python runtime). The event is an ``ExecutionRequest`` and the answer an
``ExecutionResponse`` (``ir/execution.proto``), both as JSON, decoded and built by
:mod:`executor.protocol`; the thunks run in :class:`executor.worker.Worker`, which any
other remote engine's worker reuses. See ``docs/lambda.md``.

What stays here is what only Lambda has: the warm state kept across invocations of one
sandbox (event loop, S3 clients, the worker and its ``/tmp`` cache), the deadline from
the context's remaining time, and the rule that the handler never raises: a request
that cannot be served at all becomes an answer where every thunk has the same status
(``config_error`` for a wrong setting or another protocol version, else
``infrastructure_error``), never a Lambda traceback.

The heavy imports (aiobotocore, the execution core) and the event loop are set up at
module import, i.e. in Lambda's init phase, not in the first invocation (AWS's advice:
init gets a full CPU and is not on any caller's critical path). If that fails, the
first invocation tries again and reports the error in its answer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from executor import protocol
from executor.protocol import one_line
from executor.worker import Worker, WorkerConfig, failed_response
from ir.errors import ConfigError

# Seconds kept back from the invocation's remaining time (at most a quarter of it) for
# uploading results: a thunk still running then is stopped and reported as
# resource_exhausted, so the client gets an answer instead of Sandbox.Timedout.
RESULT_HEADROOM = 3.0

# State kept across warm invocations of one sandbox: the event loop (the S3 client is
# bound to it), S3 clients by storage URI, and a worker (with its /tmp cache) per cache
# directory. This is the usual Lambda pattern ("initialize outside the handler"); it
# holds no knowledge of what is uploaded across invocations (see _Warm.storage).
_WARM: _Warm | None = None


class _Warm:
    def __init__(self, environ: Mapping[str, str]) -> None:
        import asyncio

        from aiobotocore.session import get_session

        import executor.execution  # noqa: F401 - imported now so no invocation pays for it
        import ir.storage.s3  # noqa: F401

        self.loop = asyncio.new_event_loop()
        self.session = get_session()
        self.loop.run_until_complete(_load_s3_model(self.session))
        self.storages: dict[str, Any] = {}
        self.workers: dict[str, Worker] = {}  # cache dir -> its worker
        uri = environ.get("GG_STORAGE_URI")
        if uri:  # the usual deployment: connect the client before the first event
            self.loop.run_until_complete(self.storage(uri).connect())

    def storage(self, uri: str):
        from ir.storage import StorageContext, open_storage

        storage = self.storages.get(uri)
        if storage is None:
            storage = self.storages[uri] = open_storage(uri, StorageContext(aws_session=self.session))
        storage.forget_all()  # the bucket may have changed since the last invocation
        return storage

    def worker(self, config: WorkerConfig) -> Worker:
        worker = self.workers.get(str(config.cache_dir))
        if worker is None:
            worker = self.workers[str(config.cache_dir)] = Worker(config.cache_dir)
        return worker

    def close(self) -> None:
        for storage in self.storages.values():
            self.loop.run_until_complete(storage.close())
        self.storages.clear()
        self.loop.close()


def shutdown() -> None:
    """Close the warm state (S3 clients, event loop).

    Lambda never needs this: the sandbox is destroyed with its connections. An in-process
    host that calls :func:`handle` and then goes on (the tests do) should call it.
    """
    global _WARM
    warm, _WARM = _WARM, None
    if warm is not None:
        warm.close()


async def _load_s3_model(session) -> None:
    """Create (and drop) an S3 client: the session keeps the service model it loaded,
    so the client each storage URI needs later is cheap. Nothing connects here."""
    async with session.create_client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:9"):
        pass


def _init() -> None:
    """Lambda's init phase: prepare the warm state now; on failure, leave it to handle()."""
    global _WARM
    try:
        _WARM = _Warm(os.environ)
    except Exception:  # noqa: BLE001 - handle() builds it again and answers with the error
        _WARM = None


def _thunk_ids(event: Any) -> list[str]:
    """The thunk IDs of an event, however malformed, so that each gets a result."""
    try:
        return [str(item.get("id", "")) for item in event.get("thunks", [])]
    except Exception:  # noqa: BLE001 - a malformed event still gets an answer
        return []


def _all_failed(event: object, status: protocol.Status, error: str) -> dict:
    return protocol.to_dict(failed_response(_thunk_ids(event), status, error))


def handle(event: object, context: Any = None) -> dict:
    """The Lambda entry point: an ExecutionRequest in, an ExecutionResponse out (JSON
    objects). Never raises."""
    global _WARM
    # When thunks must be done, on the monotonic clock: the invocation's end less the
    # time kept for uploading results (None: no limit, e.g. called in-process).
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    deadline = None
    if callable(remaining):
        left = remaining() / 1000
        deadline = time.monotonic() + left - min(RESULT_HEADROOM, left / 4)
    try:
        request = protocol.decode_request(event)  # type: ignore[arg-type]
    except protocol.VersionMismatch as exc:  # one side is out of date: redeploy, do not retry
        return _all_failed(event, protocol.CONFIG_ERROR, f"handler: {exc} (redeploy the function or update gg)")
    except protocol.ProtocolError as exc:
        return _all_failed(event, protocol.INFRASTRUCTURE_ERROR, f"handler: {exc}")
    try:
        if _WARM is None:
            _WARM = _Warm(os.environ)
        return protocol.to_dict(_WARM.loop.run_until_complete(_serve(request, deadline, _WARM, os.environ)))
    except ConfigError as exc:
        return _all_failed(event, protocol.CONFIG_ERROR, f"handler: {exc}")
    except Exception as exc:  # noqa: BLE001 - the contract is: always answer
        return _all_failed(event, protocol.INFRASTRUCTURE_ERROR, f"handler: {one_line(exc)}")


async def _serve(request: protocol.ExecutionRequest, deadline: float | None, warm: _Warm,
                 environ: Mapping[str, str]) -> protocol.ExecutionResponse:
    ids = [t.id for t in request.thunks]
    uri = request.storage or environ.get("GG_STORAGE_URI")
    if not uri:
        return failed_response(ids, protocol.CONFIG_ERROR,
                               "no storage: the event has no 'storage' and GG_STORAGE_URI is not set")
    try:
        storage = warm.storage(uri)
    except (ConfigError, ValueError) as exc:  # unknown scheme, backend not in the zip, bad URI: fix, not retry
        return failed_response(ids, protocol.CONFIG_ERROR, f"storage {uri!r}: {one_line(exc)}")
    except Exception as exc:  # noqa: BLE001
        return failed_response(ids, protocol.INFRASTRUCTURE_ERROR, f"storage {uri!r}: {one_line(exc)}")
    config = WorkerConfig.from_env(environ)
    return await warm.worker(config).serve(request, storage, config, deadline)


_init()
