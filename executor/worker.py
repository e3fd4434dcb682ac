"""The worker core: serve one ExecutionRequest on this machine and build its answer.

For each thunk of the request: fetch its inputs (inline from the request, from the
warm cache after verifying them, or from storage, in parallel and verified) -> run
:func:`executor.execution.execute` (the same core the local engine uses) -> upload the
values the answer does not carry inline. The Lambda handler is a thin entry point
around :meth:`Worker.serve`; any other remote engine's worker calls it the same way.

Nothing here raises for a thunk: every problem becomes that thunk's status, classified
here, where the cause is known (the statuses are in ``ir/execution.proto``):
``execution_failed`` (the function failed, including its own timeout or the default
the client sent: final everywhere), ``resource_exhausted`` (out of disk or memory, or of
the invocation's time: a bigger engine may succeed; the answer keeps the tail of the
output), ``config_error`` (the worker's own settings or role are wrong: the run stops),
``missing_input`` (inputs not in storage, or corrupt there: the client uploads them
again) and ``infrastructure_error`` (anything else: worth a retry).

Value outputs and created values go to storage, except those up to the request's
``inline_values`` bytes; those and thunk blobs (tail calls, created thunks) travel inline
in the answer while :data:`~executor.protocol.ANSWER_INLINE_BUDGET` lasts, so the client
stores them without a GET and nobody pays a PUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ir.errors import ConfigError
from ir.ids import InvalidId, Kind, id_of_blob, id_of_bytes, parse_id
from ir.store import CorruptBlob, LocalStore, MissingBlob
from ir.thunk import MalformedThunk, Thunk, parse_thunk

from . import protocol, worker_cache
from .execution import ExecutionFailed, ResourceExhausted, execute
from .protocol import ExecutionRequest, ExecutionResponse, Status, one_line
from .rundirs import RunDirs

if TYPE_CHECKING:
    from ir.storage import RemoteStorage

DEFAULT_CACHE_DIR = "/tmp/gg"
DEFAULT_CACHE_MAX_MIB = 400  # of Lambda's default 512 MiB of /tmp

Result = ExecutionResponse.Result


def _entries(result: Result) -> list[ExecutionResponse.Output | ExecutionResponse.Created]:
    """The blobs ``result`` names: its outputs and the blobs the function created."""
    return [*result.outputs, *result.created]


@dataclass(frozen=True)
class WorkerConfig:
    """Where the blob cache lives, how big it may grow, how many thunks run at once."""

    cache_dir: Path = Path(DEFAULT_CACHE_DIR)
    cache_max_bytes: int = DEFAULT_CACHE_MAX_MIB << 20
    parallelism: int = 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WorkerConfig:
        """From GG_CACHE_DIR, GG_CACHE_MAX_MIB and GG_THUNK_PARALLELISM (docs/lambda.md)."""

        def number(name: str, text: str | None, default: int, least: int) -> int:
            try:
                value = int(text) if text else default
            except ValueError:
                raise ConfigError(f"{name}={text!r} is not a whole number") from None
            if value < least:
                raise ConfigError(f"{name}={text!r} must be at least {least}")
            return value

        return cls(
            cache_dir=Path(environ.get("GG_CACHE_DIR") or DEFAULT_CACHE_DIR),
            # 0: keep nothing between requests beyond what the running batch needs.
            cache_max_bytes=number("GG_CACHE_MAX_MIB", environ.get("GG_CACHE_MAX_MIB"), DEFAULT_CACHE_MAX_MIB, 0) << 20,
            parallelism=number("GG_THUNK_PARALLELISM", environ.get("GG_THUNK_PARALLELISM"), os.cpu_count() or 1, 1),
        )


def runtime_env() -> dict[str, str]:
    """What functions may rely on: an interpreter that can import the gg runtime."""
    import ir

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(ir.__file__)))
    return {"GG_PYTHON": sys.executable, "GG_PYTHONPATH": package_parent}


def failure(ident: str, status: Status, error: str, stderr_tail: str = "", missing: list[str] | None = None) -> Result:
    return Result(id=ident, status=status, error=error, stderr_tail=stderr_tail, missing=missing or [])


def failed_response(idents: list[str], status: Status, error: str) -> ExecutionResponse:
    """The answer to a request that could not be served at all: every thunk fails alike."""
    return ExecutionResponse(version=protocol.EVENT_VERSION, error=error,
                             results=[failure(i, status, error) for i in idents])


class Worker:
    """One worker's state across requests: its blob cache in ``cache_dir`` (the store,
    what it verified, its size, the LRU order). Keep one per cache directory for the
    life of the process (on Lambda: the warm sandbox)."""

    def __init__(self, cache_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.cache_dir = cache_dir
        self.runtime_env = dict(runtime_env() if env is None else env)
        self._store: LocalStore | None = None
        self._rundirs: RunDirs | None = None  # run directories, reused while the store lasts
        self._cache_bytes: int | None = None  # blob bytes in the cache, None until scanned
        self.recency = worker_cache.Recency()

    @property
    def store(self) -> LocalStore:
        """The cache's store, created once (again if something removed it)."""
        if self._store is None or not self._store.blobs.is_dir():
            self._store = LocalStore.init(self.cache_dir)
            if self._rundirs is not None:
                self._rundirs.close()
            self._rundirs = RunDirs(self._store.root / "work")
            self._cache_bytes = None
            self.recency = worker_cache.Recency()
        return self._store

    @property
    def rundirs(self) -> RunDirs:
        """The run directories under the cache (made again with the store)."""
        if self._rundirs is None:
            self._rundirs = RunDirs(self.store.root / "work")
        return self._rundirs

    async def serve(self, request: ExecutionRequest, storage: RemoteStorage, config: WorkerConfig,
                    deadline: float | None = None) -> ExecutionResponse:
        """Run every thunk of ``request``; ``deadline`` (monotonic clock) is when thunks
        still running are stopped and reported as ``resource_exhausted``."""
        store = self.store
        jobs: list[tuple[str, Thunk | None, str]] = []  # (id, thunk, error)
        timeouts: dict[str, float] = {}  # the client's limit per thunk (its default timeout)
        added = 0  # bytes this request puts into the cache
        for item in request.thunks:
            try:
                thunk = _accept_thunk(item, store)
                if item.HasField("timeout"):
                    if not item.timeout > 0:
                        raise ValueError(f"timeout {item.timeout!r} is not positive")
                    timeouts[item.id] = item.timeout
                if not store.has(item.id):
                    store.put_bytes(item.data)
                    added += len(item.data)
                jobs.append((item.id, thunk, ""))
            except (ValueError, InvalidId, MalformedThunk) as exc:
                jobs.append((item.id, None, f"bad thunk in request: {one_line(exc)}"))
        added += _store_inline_blobs(request.blobs, store)

        needed = {i.id for _, thunk, _ in jobs if thunk for i in (*thunk.values, *thunk.executables)}
        self.recency.touch(needed)
        missing_bytes = sum(parse_id(i).size for i in needed if not store.has(i))
        # The cache's size is scanned once and then kept up to date here, so a warm
        # request does not stat every cached blob twice; a trim rescans.
        used = worker_cache.usage(store) if self._cache_bytes is None else self._cache_bytes
        cap = config.cache_max_bytes
        if used + missing_bytes > cap:
            self.rundirs.clear_free(store)  # their kept inputs would hold evicted blobs on the disk
            used = worker_cache.trim_to(store, cap, protect=frozenset(needed), reserve=missing_bytes,
                                        recency=self.recency)

        slots = asyncio.Semaphore(config.parallelism)
        inline_values = request.inline_values
        results = await asyncio.gather(*(
            self._run_one(ident, thunk, storage, slots, inline_values, timeouts.get(ident), deadline)
            if thunk is not None else _done(failure(ident, protocol.INFRASTRUCTURE_ERROR, error))
            for ident, thunk, error in jobs
        ))
        await _send_blobs(results, store, storage, inline_values)
        used += added + missing_bytes + sum(
            parse_id(entry.id).size for result in results for entry in _entries(result))
        if used > cap:
            self.rundirs.clear_free(store)
            used = worker_cache.trim_to(store, cap, recency=self.recency)
        self._cache_bytes = used
        return ExecutionResponse(version=protocol.EVENT_VERSION, results=results)

    async def _run_one(self, ident: str, thunk: Thunk, storage: RemoteStorage, slots: asyncio.Semaphore,
                       inline_values: int, timeout: float | None, deadline: float | None) -> Result:
        store = self.store
        inputs = sorted({i.id for i in (*thunk.values, *thunk.executables)})
        try:
            _drop_corrupt(store, inputs)
            fetched = await asyncio.gather(*(storage.download(store, i) for i in inputs), return_exceptions=True)
            # Missing or corrupt in storage: the client has a good copy and uploads it again.
            missing = [i for i, r in zip(inputs, fetched, strict=True) if isinstance(r, MissingBlob | CorruptBlob)]
            if missing:
                first = next(r for r in fetched if isinstance(r, MissingBlob | CorruptBlob))
                return failure(ident, protocol.MISSING_INPUT,
                               f"{len(missing)} input(s) missing or corrupt in storage; first: {first}",
                               missing=missing)
            for outcome in fetched:
                if isinstance(outcome, BaseException):
                    raise outcome
            async with slots:
                budget = None if deadline is None else deadline - time.monotonic()
                if budget is not None and budget <= 0:
                    return failure(ident, protocol.RESOURCE_EXHAUSTED, "no time left in the invocation to start it")
                # The thunk's own limit (or the client's default) kills it as an execution
                # failure; if the invocation ends first, it is stopped at that point instead
                # and reported as resource_exhausted (a bigger engine may finish it).
                limit = thunk.timeout_ms / 1000 if thunk.timeout_ms else timeout
                capped = budget is not None and (limit is None or budget < limit)
                runnable = thunk
                if capped and budget is not None:
                    runnable = replace(thunk, timeout_ms=max(1, int(budget * 1000)))
                try:
                    result = await execute(ident, runnable, store, default_timeout=timeout,
                                           runtime_env=self.runtime_env, rundirs=self.rundirs)
                except ExecutionFailed as exc:
                    if not (capped and exc.reason.startswith("timed out")):
                        raise
                    return failure(ident, protocol.RESOURCE_EXHAUSTED,
                                   f"stopped after {budget:.1f} s: the function's timeout leaves no more time "
                                   "(it needs longer than this worker allows)", exc.stderr_tail)
            # Values go to storage now (overwriting: a corrupt copy there must not be
            # trusted); thunk blobs and values up to ``inline_values`` bytes travel in the
            # answer and are uploaded only if it has no room for them (see _send_blobs).
            produced = [o.id for o in result.outputs] + list(result.created)
            values = [i for i in dict.fromkeys(produced)
                      if not parse_id(i).is_thunk and parse_id(i).size > inline_values]
            await asyncio.gather(*(storage.upload(store, i, overwrite=True) for i in values))
        except ExecutionFailed as exc:
            return failure(ident, protocol.EXECUTION_FAILED, exc.reason, exc.stderr_tail)
        except ResourceExhausted as exc:
            return failure(ident, protocol.RESOURCE_EXHAUSTED, str(exc), exc.output_tail)
        except ConfigError as exc:  # e.g. the worker's role may not read the bucket
            return failure(ident, protocol.CONFIG_ERROR, str(exc))
        except MissingBlob as exc:
            return failure(ident, protocol.MISSING_INPUT, str(exc), missing=[exc.ident])
        except Exception as exc:  # noqa: BLE001 - storage, disk, anything: the client retries elsewhere
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                return failure(ident, protocol.RESOURCE_EXHAUSTED,
                               f"no space left on the worker's disk: {one_line(exc)}")
            return failure(ident, protocol.INFRASTRUCTURE_ERROR, one_line(exc))
        return Result(
            id=ident, status=protocol.OK,
            outputs=[ExecutionResponse.Output(tag=o.tag, id=o.id, executable=o.executable) for o in result.outputs],
            created=[ExecutionResponse.Created(id=i) for i in result.created],
            duration=round(result.duration, 6),
            # what a successful run printed (its warnings), for the client to show and keep
            stderr_tail=result.output.decode(errors="replace"),
        )


async def _done(result: Result) -> Result:
    return result


def _accept_thunk(item: ExecutionRequest.Thunk, store: LocalStore) -> Thunk:
    """The thunk of a request entry, checked: a thunk ID, data that hashes to it."""
    if not parse_id(item.id).is_thunk:
        raise InvalidId(f"{item.id} is not a thunk ID")
    actual = id_of_bytes(item.data, Kind.THUNK)
    if actual != item.id:
        raise InvalidId(f"thunk data hashes to {actual}, not {item.id}")
    return parse_thunk(item.data, where=f"thunk {item.id}")


def _store_inline_blobs(blobs, store: LocalStore) -> int:
    """Input blobs the client sent in the request (small ones): verified, then stored,
    so they need no GET. A bad one is skipped; the input is then fetched from storage
    as usual. A cached copy is verified too (an earlier thunk may have rewritten it),
    and replaced by the client's when it is corrupt."""
    added = 0
    for blob in blobs:
        try:
            data = blob.data
            if id_of_blob(data) != blob.id:
                continue
            if store.has(blob.id):
                try:
                    store.verify_for_use(blob.id)
                    continue
                except CorruptBlob:
                    pass  # dropped: the client's copy replaces it
            store.put_bytes(data)
            added += len(data)
        except (ValueError, InvalidId):
            continue
    return added


def _drop_corrupt(store: LocalStore, inputs: list[str]) -> None:
    """Verify the cached inputs before use (cheap for a blob verified and unchanged since).

    The cache outlives requests, and every thunk runs as the same user as the worker:
    an earlier thunk may have rewritten a cached blob (through
    ``$GG_DIR/../../../blobs/ID``, say). A corrupt one is dropped here, so it is
    fetched again; execute() verifies every input once more before the run.
    """
    for ident in inputs:
        if store.has(ident):
            with contextlib.suppress(CorruptBlob):
                store.verify_for_use(ident)


async def _send_blobs(results: list[Result], store: LocalStore, storage: RemoteStorage, inline_values: int) -> None:
    """Put thunk blobs and small values inline until the answer's inline budget is
    spent, and upload the rest to storage, where the client fetches them: a huge
    fan-out of tail calls still fits in the answer, and the common case costs no PUT.
    """
    budget = protocol.ANSWER_INLINE_BUDGET
    remote: dict[str, list[Result]] = {}  # blob -> results that need it uploaded
    for result in results:
        for entry in _entries(result):
            parsed = parse_id(entry.id)
            if parsed.is_thunk or parsed.size <= inline_values:
                size = protocol.base64_size(parsed.size)
                if size > budget:
                    remote.setdefault(entry.id, []).append(result)
                    continue
                budget -= size
                entry.data = store.read_bytes(entry.id)
    idents = list(remote)
    sent = await asyncio.gather(*(storage.upload(store, i, overwrite=True) for i in idents),
                                return_exceptions=True)
    for ident, outcome in zip(idents, sent, strict=True):
        if isinstance(outcome, BaseException):
            for result in remote[ident]:
                del result.outputs[:]
                del result.created[:]
                result.status = protocol.INFRASTRUCTURE_ERROR
                result.error = f"uploading {ident}: {one_line(outcome)}"
