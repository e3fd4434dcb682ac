"""The AWS Lambda function: run a batch of thunks, answer with their output IDs.

Entry point ``lambda_handler.handler.handle`` (run by ``python -m awslambdaric`` or
the managed Python runtime). Event and answer are versioned; see ``docs/lambda.md``::

    {"version": 1, "storage": "s3://...", "thunks": [{"id": T..., "data": base64}]}
    -> {"version": 1, "results": [{"id", "status", "outputs", "created", "error", "stderr_tail"}]}

Each thunk runs through :func:`executor.execution.execute`, the same core the local
engine uses. Inputs come from S3 (in parallel, verified) into a size-capped store in
``/tmp`` that survives warm invocations; outputs and created blobs go back to S3, and
thunk blobs also travel inline so the client can store them without a GET.

The handler never raises: every problem becomes a per-thunk ``infrastructure_error``
(or ``execution_failed`` when the function itself failed), so the client always
gets an answer it can act on instead of a Lambda traceback.

Module-level imports are only the standard library's lightest, for cold starts;
everything else is imported on first use.
"""

from __future__ import annotations

import base64
import os
import sys

EVENT_VERSION = 1
DEFAULT_CACHE_DIR = "/tmp/gg"
DEFAULT_CACHE_MAX_MIB = 400  # of Lambda's default 512 MiB of /tmp
INLINE_LIMIT = 4 << 20  # total inline thunk bytes per answer (Lambda answers are <= 6 MB)

# State kept across warm invocations of one sandbox: the event loop (the S3 client is
# bound to it), S3 clients by storage URI, and the /tmp store. This is the usual
# Lambda pattern ("initialize outside the handler"); it holds no knowledge of what is
# uploaded across invocations (see _Warm.storage).
_WARM = None


class _Warm:
    def __init__(self) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()
        self.storages: dict = {}

    def storage(self, uri: str):
        from ir.s3store import S3Storage

        storage = self.storages.get(uri)
        if storage is None:
            storage = self.storages[uri] = S3Storage.from_uri(uri)
        storage.forget_all()  # the bucket may have changed since the last invocation
        return storage


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
    global _WARM
    try:
        if _WARM is None:
            _WARM = _Warm()
        return _WARM.loop.run_until_complete(_handle(event, context, _WARM, os.environ))
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


async def _handle(event, context, warm: _Warm, environ) -> dict:
    from pathlib import Path

    from ir.ids import InvalidId, Kind, id_of_bytes, parse_id
    from ir.store import LocalStore
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
    store = LocalStore.init(Path(cache_dir))

    jobs: list[tuple[str, object | None, str | None]] = []  # (id, thunk, error)
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
            store.put_bytes(data)
            jobs.append((ident, thunk, None))
        except (KeyError, TypeError, ValueError, InvalidId, MalformedThunk) as exc:
            jobs.append((ident, None, f"bad thunk in event: {_one_line(exc)}"))

    needed = {i.id for _, thunk, _ in jobs if thunk for i in (*thunk.values, *thunk.executables)}
    cache.touch(store, needed)
    missing_bytes = sum(parse_id(i).size for i in needed if not store.has(i))
    cache.trim(store, cap, protect=frozenset(needed), reserve=missing_bytes)

    import asyncio

    slots = asyncio.Semaphore(parallel)
    runtime_env = _runtime_env()
    results = await asyncio.gather(*(
        _run_one(ident, thunk, store, storage, slots, runtime_env) if thunk is not None
        else _failed(ident, "infrastructure_error", error)
        for ident, thunk, error in jobs
    ))
    _inline_thunks(results, store)
    cache.trim(store, cap)
    return {"version": EVENT_VERSION, "results": results}


async def _failed(ident: str, status: str, error: str | None, stderr_tail: str = "", **extra) -> dict:
    return {"id": ident, "status": status, "outputs": [], "created": [], "error": error or "",
            "stderr_tail": stderr_tail, **extra}


async def _run_one(ident: str, thunk, store, storage, slots, runtime_env) -> dict:
    import asyncio

    from executor.execution import ExecutionFailed, execute
    from ir.store import CorruptBlob, MissingBlob

    inputs = sorted({i.id for i in (*thunk.values, *thunk.executables)})
    try:
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
            result = await execute(ident, thunk, store, runtime_env=runtime_env)
        produced = [o.id for o in result.outputs] + list(result.created)
        await asyncio.gather(*(storage.upload(store, i, overwrite=True) for i in dict.fromkeys(produced)))
    except ExecutionFailed as exc:
        return await _failed(ident, "execution_failed", exc.reason, exc.stderr_tail)
    except MissingBlob as exc:
        return await _failed(ident, "infrastructure_error", str(exc), missing=[exc.ident])
    except Exception as exc:  # noqa: BLE001 - S3, disk, anything: the client retries elsewhere
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


def _inline_thunks(results: list[dict], store) -> None:
    """Put thunk blobs inline (base64) until the answer's inline budget is spent.

    Past the budget the client fetches them from S3 (they were uploaded), so a huge
    fan-out of tail calls still fits in Lambda's 6 MB answer.
    """
    budget = INLINE_LIMIT
    for result in results:
        for entry in (*result["outputs"], *result["created"]):
            if entry["id"].startswith("T"):
                data = store.read_bytes(entry["id"])
                encoded = base64.b64encode(data).decode()
                if len(encoded) > budget:
                    continue
                budget -= len(encoded)
                entry["data"] = encoded
