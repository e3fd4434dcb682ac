"""The AWS Lambda function: run a batch of thunks, answer with their output IDs.

Entry point ``lambda_handler.handler.handle`` (run by ``python -m awslambdaric`` or
the managed Python runtime). Event and answer are versioned; see ``docs/lambda.md``::

    {"version": 1, "storage": "s3://...", "thunks": [{"id": T..., "data": base64}],
     "blobs": [{"id": V..., "data": base64}],     # optional: small inputs, inline
     "inline_values": 65536}                       # optional: answer values up to this size inline
    -> {"version": 1, "results": [{"id", "status", "outputs", "created", "error", "stderr_tail"}]}

Each thunk runs through :func:`executor.execution.execute`, the same core the local
engine uses. Inputs come inline (small ones the client chose to send) or from S3 (in
parallel, verified) into a size-capped store in ``/tmp`` that survives warm
invocations. Value outputs and created values go back to S3, except those up to
``inline_values`` bytes; those and thunk blobs (tail calls, created thunks) travel
inline in the answer, so the client stores them without a GET and nobody pays a
PUT. Only what does not fit the answer's budget is uploaded. (S3 requests cost tens
of milliseconds each; a few KiB more of payload cost nothing measurable.)

The handler never raises: every problem becomes a per-thunk status the client can act
on instead of a Lambda traceback, classified here, where the cause is known:
``execution_failed`` (the function failed, including its own timeout or the default
one the client sent: final everywhere), ``resource_exhausted`` (the sandbox ran out of
disk or memory, or of the invocation's time: a bigger engine may succeed; the answer
keeps the tail of the output, which was held in memory), ``config_error`` (the
function's own settings or role are wrong: the run stops) and
``infrastructure_error`` (anything else: worth a retry).

The heavy imports (aiobotocore, the execution core) and the event loop are set up at
module import, i.e. in Lambda's init phase, not in the first invocation (AWS's advice:
init gets a full CPU and is not on any caller's critical path). If that fails, the
first invocation tries again and reports the error in its answer.
"""

from __future__ import annotations

import base64
import os
import sys

EVENT_VERSION = 1
DEFAULT_CACHE_DIR = "/tmp/gg"
DEFAULT_CACHE_MAX_MIB = 400  # of Lambda's default 512 MiB of /tmp
# Seconds kept back from the invocation's remaining time (at most a quarter of it) for
# uploading results: a thunk still running then is stopped and reported as resource_exhausted, so the
# client gets an answer instead of Sandbox.Timedout.
RESULT_HEADROOM = 3.0
INLINE_LIMIT = 4 << 20  # total inline thunk bytes per answer (Lambda answers are <= 6 MB)

# State kept across warm invocations of one sandbox: the event loop (the S3 client is
# bound to it), S3 clients by storage URI, the /tmp store and an estimate of its size.
# This is the usual Lambda pattern ("initialize outside the handler"); it holds no
# knowledge of what is uploaded across invocations (see _Warm.storage).
_WARM = None


class _Warm:
    def __init__(self, environ) -> None:
        import asyncio

        from aiobotocore.session import get_session

        import executor.execution  # noqa: F401 - imported now so no invocation pays for it
        import ir.storage.s3  # noqa: F401

        self.loop = asyncio.new_event_loop()
        self.session = get_session()
        self.loop.run_until_complete(_load_s3_model(self.session))
        self.storages: dict = {}
        self.stores: dict = {}
        self.cache_bytes: dict[str, int] = {}  # cache dir -> blob bytes, None until scanned
        self.recency: dict[str, object] = {}  # cache dir -> cache.Recency (LRU order, in memory)
        self.runtime_env = _runtime_env()
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

    def store(self, cache_dir: str):
        """The /tmp store, created once per sandbox (again if something removed it)."""
        from pathlib import Path

        from ir.store import LocalStore

        from . import cache

        store = self.stores.get(cache_dir)
        if store is None or not store.blobs.is_dir():
            store = self.stores[cache_dir] = LocalStore.init(Path(cache_dir))
            self.cache_bytes.pop(cache_dir, None)
            self.recency[cache_dir] = cache.Recency()
        return store


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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _thunk_ids(event) -> list[str]:
    try:
        return [str(item.get("id", "")) for item in event.get("thunks", [])]
    except Exception:  # noqa: BLE001 - a malformed event still gets an answer
        return []


def _all_failed(event, error: str) -> dict:
    return {
        "version": EVENT_VERSION,
        "error": error,
        "results": [
            {"id": ident, "status": "infrastructure_error", "outputs": [], "created": [], "error": error,
             "stderr_tail": ""}
            for ident in _thunk_ids(event)
        ],
    }


def handle(event, context=None) -> dict:
    """The Lambda entry point. Never raises."""
    import time

    global _WARM
    # When thunks must be done, on the monotonic clock: the invocation's end less the
    # time kept for uploading results (None: no limit, e.g. called in-process).
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    deadline = None
    if callable(remaining):
        left = remaining() / 1000
        deadline = time.monotonic() + left - min(RESULT_HEADROOM, left / 4)
    try:
        if _WARM is None:
            _WARM = _Warm(os.environ)
        return _WARM.loop.run_until_complete(_handle(event, deadline, _WARM, os.environ))
    except Exception as exc:  # noqa: BLE001 - the contract is: always answer
        return _all_failed(event, f"handler: {_one_line(exc)}")


def _config(environ) -> tuple[str, int, int]:
    cache_dir = environ.get("GG_CACHE_DIR") or DEFAULT_CACHE_DIR
    cap = int(environ.get("GG_CACHE_MAX_MIB") or DEFAULT_CACHE_MAX_MIB) << 20
    parallel = int(environ.get("GG_THUNK_PARALLELISM") or os.cpu_count() or 1)
    return cache_dir, cap, max(1, parallel)


def _runtime_env() -> dict[str, str]:
    """What functions may rely on: an interpreter that can import the gg runtime."""
    import ir

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(ir.__file__)))
    return {"GG_PYTHON": sys.executable, "GG_PYTHONPATH": package_parent}


async def _handle(event, deadline: float | None, warm: _Warm, environ) -> dict:
    from ir.ids import InvalidId, Kind, id_of_bytes, parse_id
    from ir.thunk import MalformedThunk, parse_thunk

    from . import cache

    if not isinstance(event, dict) or event.get("version") != EVENT_VERSION:
        version = event.get("version") if isinstance(event, dict) else None
        return _all_failed(event if isinstance(event, dict) else {},
                           f"unsupported event version {version!r} (this handler speaks {EVENT_VERSION})")
    uri = event.get("storage") or environ.get("GG_STORAGE_URI")
    if not uri:
        return _all_failed(event, "no storage: the event has no 'storage' and GG_STORAGE_URI is not set")
    try:
        storage = warm.storage(uri)
    except Exception as exc:  # noqa: BLE001
        return _all_failed(event, f"storage {uri!r}: {_one_line(exc)}")
    cache_dir, cap, parallel = _config(environ)
    store = warm.store(cache_dir)

    jobs: list[tuple[str, object | None, str | None]] = []  # (id, thunk, error)
    timeouts: dict[str, float] = {}  # the client's time limit per thunk (its own, or the default)
    added = 0  # bytes this invocation puts into the cache
    for item in event.get("thunks") or []:
        ident = str(item.get("id", "")) if isinstance(item, dict) else ""
        try:
            if not parse_id(ident).is_thunk:
                raise InvalidId(f"{ident} is not a thunk ID")
            data = base64.b64decode(item["data"], validate=True)
            actual = id_of_bytes(data, Kind.THUNK)
            if actual != ident:
                raise InvalidId(f"thunk data hashes to {actual}, not {ident}")
            thunk = parse_thunk(data, where=f"thunk {ident}")
            if item.get("timeout") is not None:
                timeouts[ident] = float(item["timeout"])
                if not timeouts[ident] > 0:
                    raise ValueError(f"timeout {item['timeout']!r} is not positive")
            if not store.has(ident):
                store.put_bytes(data)
                added += len(data)
            jobs.append((ident, thunk, None))
        except (KeyError, TypeError, ValueError, InvalidId, MalformedThunk) as exc:
            jobs.append((ident, None, f"bad thunk in event: {_one_line(exc)}"))
    added += _store_inline_blobs(event.get("blobs"), store)
    try:
        inline_values = max(0, int(event.get("inline_values") or 0))
    except (TypeError, ValueError):
        inline_values = 0

    needed = {i.id for _, thunk, _ in jobs if thunk for i in (*thunk.values, *thunk.executables)}
    recency = warm.recency[cache_dir]
    recency.touch(needed)
    missing_bytes = sum(parse_id(i).size for i in needed if not store.has(i))
    # The cache's size is scanned once per sandbox and then kept up to date here, so a
    # warm invocation does not stat every blob in /tmp twice; a trim rescans.
    used = warm.cache_bytes.get(cache_dir)
    if used is None:
        used = cache.usage(store)
    if used + missing_bytes > cap:
        used = cache.trim_to(store, cap, protect=frozenset(needed), reserve=missing_bytes, recency=recency)

    import asyncio

    slots = asyncio.Semaphore(parallel)
    results = await asyncio.gather(*(
        _run_one(ident, thunk, store, storage, slots, warm.runtime_env, inline_values,
                 timeouts.get(ident), deadline) if thunk is not None
        else _failed(ident, "infrastructure_error", error)
        for ident, thunk, error in jobs
    ))
    await _send_blobs(results, store, storage, inline_values)
    used += added + missing_bytes + sum(
        parse_id(entry["id"]).size for result in results for entry in (*result["outputs"], *result["created"]))
    if used > cap:
        used = cache.trim_to(store, cap, recency=recency)
    warm.cache_bytes[cache_dir] = used
    return {"version": EVENT_VERSION, "results": results}


async def _failed(ident: str, status: str, error: str | None, stderr_tail: str = "", **extra) -> dict:
    return {"id": ident, "status": status, "outputs": [], "created": [], "error": error or "",
            "stderr_tail": stderr_tail, **extra}


def _store_inline_blobs(items, store) -> int:
    """Input blobs the client sent in the event (small ones): verified, then stored, so
    they need no GET. A bad one is skipped; the input is then fetched from S3 as usual.
    A cached copy is verified too (an earlier thunk may have rewritten it), and replaced
    by the client's when it is corrupt."""
    from ir.ids import MAGIC, InvalidId, Kind, id_of_bytes
    from ir.store import CorruptBlob

    added = 0
    for item in items if isinstance(items, list) else []:
        try:
            ident = str(item["id"])
            data = base64.b64decode(item["data"], validate=True)
            if id_of_bytes(data, Kind.THUNK if data.startswith(MAGIC) else Kind.VALUE) != ident:
                continue
            if store.has(ident):
                try:
                    store.verify_for_use(ident)
                    continue
                except CorruptBlob:
                    pass  # dropped: the client's copy replaces it
            store.put_bytes(data)
            added += len(data)
        except (KeyError, TypeError, ValueError, InvalidId):
            continue
    return added


def _out_of_space(exc: BaseException) -> bool:
    import errno

    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


async def _run_one(ident: str, thunk, store, storage, slots, runtime_env, inline_values: int = 0,
                   timeout: float | None = None, deadline: float | None = None) -> dict:
    import asyncio
    import time
    from dataclasses import replace

    from executor.execution import ExecutionFailed, ResourceExhausted, execute
    from ir.errors import ConfigError
    from ir.ids import parse_id
    from ir.store import CorruptBlob, MissingBlob

    inputs = sorted({i.id for i in (*thunk.values, *thunk.executables)})
    try:
        _drop_corrupt(store, inputs)
        fetched = await asyncio.gather(*(storage.download(store, i) for i in inputs), return_exceptions=True)
        # Missing or corrupt in storage: the client has a good copy and uploads it again.
        missing = [i for i, r in zip(inputs, fetched, strict=True) if isinstance(r, MissingBlob | CorruptBlob)]
        if missing:
            first = next(r for r in fetched if isinstance(r, MissingBlob | CorruptBlob))
            return await _failed(ident, "infrastructure_error",
                                 f"{len(missing)} input(s) missing or corrupt in storage; first: {first}",
                                 missing=missing)
        for result in fetched:
            if isinstance(result, BaseException):
                raise result
        async with slots:
            budget = None if deadline is None else deadline - time.monotonic()
            if budget is not None and budget <= 0:
                return await _failed(ident, "resource_exhausted", "no time left in the invocation to start it")
            # The thunk's own limit (or the client's default) kills it as an execution
            # failure; if the invocation ends first, it is stopped at that point instead
            # and reported as resource_exhausted (a bigger engine may finish it).
            limit = thunk.timeout_ms / 1000 if thunk.timeout_ms else timeout
            capped = budget is not None and (limit is None or budget < limit)
            runnable = replace(thunk, timeout_ms=max(1, int(budget * 1000))) if capped else thunk
            try:
                result = await execute(ident, runnable, store, default_timeout=timeout, runtime_env=runtime_env)
            except ExecutionFailed as exc:
                if not (capped and exc.reason.startswith("timed out")):
                    raise
                return await _failed(ident, "resource_exhausted",
                                     f"stopped after {budget:.1f} s: the function's timeout leaves no more time "
                                     "(it needs longer than this Lambda function allows)", exc.stderr_tail)
        # Values go to S3 now (overwriting: a corrupt copy there must not be trusted);
        # thunk blobs and values up to ``inline_values`` bytes travel in the answer and
        # are uploaded only if it has no room for them (see _send_blobs).
        produced = [o.id for o in result.outputs] + list(result.created)
        values = [i for i in dict.fromkeys(produced)
                  if not parse_id(i).is_thunk and parse_id(i).size > inline_values]
        await asyncio.gather(*(storage.upload(store, i, overwrite=True) for i in values))
    except ExecutionFailed as exc:
        return await _failed(ident, "execution_failed", exc.reason, exc.stderr_tail)
    except ResourceExhausted as exc:
        return await _failed(ident, "resource_exhausted", str(exc), exc.output_tail)
    except ConfigError as exc:  # e.g. the function's role may not read the bucket
        return await _failed(ident, "config_error", str(exc))
    except MissingBlob as exc:
        return await _failed(ident, "infrastructure_error", str(exc), missing=[exc.ident])
    except Exception as exc:  # noqa: BLE001 - S3, disk, anything: the client retries elsewhere
        if _out_of_space(exc):
            return await _failed(ident, "resource_exhausted", f"no space left on the function's /tmp: "
                                 f"{_one_line(exc)}")
        return await _failed(ident, "infrastructure_error", _one_line(exc))
    return {
        "id": ident,
        "status": "ok",
        "outputs": [{"tag": o.tag, "id": o.id, "executable": o.executable} for o in result.outputs],
        "created": [{"id": i} for i in result.created],
        "error": "",
        "stderr_tail": "",
        "duration": round(result.duration, 6),
    }


def _drop_corrupt(store, inputs: list[str]) -> None:
    """Verify the cached inputs before use (cheap for a blob verified and unchanged since).

    The cache outlives invocations, and every thunk runs as the same user as this
    handler: an earlier thunk may have rewritten a cached blob (through
    ``$GG_DIR/../../../blobs/ID``, say). A corrupt one is dropped here, so it is
    fetched again below; execute() verifies every input once more before the run.
    """
    import contextlib

    from ir.store import CorruptBlob

    for ident in inputs:
        if store.has(ident):
            with contextlib.suppress(CorruptBlob):
                store.verify_for_use(ident)


async def _send_blobs(results: list[dict], store, storage, inline_values: int = 0) -> None:
    """Put thunk blobs and small values inline (base64) until the answer's inline budget
    is spent, and upload the rest to S3, where the client fetches them: a huge fan-out
    of tail calls still fits in Lambda's 6 MB answer, and the common case costs no PUT.
    """
    import asyncio

    from ir.ids import parse_id

    budget = INLINE_LIMIT
    remote: dict[str, list[dict]] = {}  # blob -> results that need it uploaded
    for result in results:
        for entry in (*result["outputs"], *result["created"]):
            parsed = parse_id(entry["id"])
            if parsed.is_thunk or parsed.size <= inline_values:
                data = store.read_bytes(entry["id"])
                encoded = base64.b64encode(data).decode()
                if len(encoded) > budget:
                    remote.setdefault(entry["id"], []).append(result)
                    continue
                budget -= len(encoded)
                entry["data"] = encoded
    idents = list(remote)
    sent = await asyncio.gather(*(storage.upload(store, i, overwrite=True) for i in idents),
                                return_exceptions=True)
    for ident, outcome in zip(idents, sent, strict=True):
        if isinstance(outcome, BaseException):
            for result in remote[ident]:
                result.update(status="infrastructure_error", outputs=[], created=[],
                              error=f"uploading {ident}: {_one_line(outcome)}")


_init()
