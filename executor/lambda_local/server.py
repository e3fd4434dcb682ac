"""A local AWS Lambda: the Invoke API in front, the Runtime API behind, real workers.

Clients (the Lambda engine, aiobotocore, boto3) call the real Invoke API::

    POST /2015-03-31/functions/{name}/invocations

and N long-lived ``awslambdaric`` worker processes poll the real Runtime API
(``/2018-06-01/runtime/invocation/next``, ``.../{id}/response``, ``.../{id}/error``,
``/runtime/init/error``). Each worker gets its own Runtime API port, so the server
always knows which process holds which invocation: that is what lets it behave like
Lambda when things go wrong —

* a function that runs past the timeout: the worker is killed and restarted, the
  caller gets ``X-Amz-Function-Error: Unhandled`` with ``Sandbox.Timedout``;
* a worker that dies mid-invocation: ``Runtime.ExitError``, and a fresh worker;
* a worker that cannot initialise: the waiting invocation gets its init error;
* all workers busy and more than ``queue_limit`` invocations waiting: HTTP 429
  ``TooManyRequestsException``, as when Lambda's concurrency is exhausted;
* a request over 6 MB: 413 ``RequestTooLargeException``; an answer over 6 MB:
  ``Function.ResponseSizeTooLarge``;
* ``InvocationType: DryRun``: 204 once the function name checks out, nothing runs;
* ``enforce_memory``: a worker whose processes use more than ``memory_mib`` is killed
  and the invocation gets ``Runtime.OutOfMemory``;
* ``tmp_mib``: each worker's ``/tmp`` stand-in is a tmpfs of that size in a mount
  namespace of its own, so a thunk that writes more gets ENOSPC, as on Lambda.

Workers start only once their socket listens (else awslambdaric exits at once), and
are terminated explicitly on shutdown (aiohttp's graceful shutdown would wait on
their long polls forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from .workers import REPO, make_runtime_dir, worker_argv, worker_env

MAX_PAYLOAD = 6_291_456  # bytes, synchronous invocation request and response
ACCOUNT = "000000000000"


@dataclass(frozen=True)
class EndpointConfig:
    host: str = "127.0.0.1"
    port: int = 0
    workers: int = 2
    function_name: str = "gg"
    timeout: float = 300.0  # seconds per invocation, like the function's Timeout
    memory_mib: int = 3008
    # Invocations allowed to wait when every worker is busy; beyond that, 429.
    queue_limit: int = 1000
    handler: str = "lambda_handler.handler.handle"
    code_dir: Path | None = None
    sandbox_command: tuple[str, ...] = ()
    function_env: Mapping[str, str] = field(default_factory=dict)
    cache_root: Path | None = None  # per-worker GG_CACHE_DIR = cache_root/worker-N
    # Each worker's GG_CACHE_DIR on a tmpfs of this many MiB (0: no cap), like Lambda's
    # ephemeral storage: a thunk that fills it gets ENOSPC, as it would on Lambda.
    tmp_mib: int = 0
    # Kill a worker whose memory (its own and its functions' resident set) exceeds
    # memory_mib, answering Runtime.OutOfMemory, as Lambda does (polled every 0.1 s).
    enforce_memory: bool = False


def _working_in(sandbox_dir: Path) -> list[int]:
    """PIDs of the processes whose cwd is inside ``sandbox_dir`` (a worker's functions)."""
    root = str(sandbox_dir.resolve())
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + os.sep):
            pids.append(int(entry.name))
    return pids


def kill_leftovers(sandbox_dir: Path) -> int:
    """SIGKILL every process still working inside a dead worker's ``/tmp`` (its cwd is
    there): what destroying a Lambda sandbox does to the thunks it was running.

    The execution core runs each function in its own session, so a worker killed for a
    timeout or a crash does not take its function's processes along; found by cwd
    because, once orphaned, they no longer have the worker as parent. Returns how many.
    """
    killed = 0
    for pid in _working_in(sandbox_dir):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class Invocation:
    request_id: str
    payload: bytes
    future: asyncio.Future
    worker: Worker | None = None
    timer: asyncio.TimerHandle | None = None

    def finish(self, body: bytes, function_error: str | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if not self.future.done():
            self.future.set_result((body, function_error))


@dataclass
class Worker:
    index: int
    runner: web.AppRunner | None = None
    port: int = 0
    process: asyncio.subprocess.Process | None = None
    current: Invocation | None = None
    polling: asyncio.Task | None = None
    init_error: bytes | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    watcher: asyncio.Task | None = None
    police: asyncio.Task | None = None
    out_of_memory: bool = False


def _error_body(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()


def _aws_error(status: int, error_type: str, message: str) -> web.Response:
    return web.Response(
        status=status, content_type="application/json",
        headers={"x-amzn-ErrorType": error_type, "x-amzn-RequestId": str(uuid.uuid4())},
        body=json.dumps({"Type": "User", "message": message}).encode(),
    )


CACHE_ROOT_PREFIX = "gg-lambda-tmp-"
STALE_ROOT_SECONDS = 60.0


def own_cache_root() -> tuple[Path, int]:
    """A fresh cache root (the workers' /tmp directories) in the system's temp directory,
    locked (``flock``) for as long as this endpoint lives; stale roots are swept first."""
    path = tempfile.mkdtemp(prefix=CACHE_ROOT_PREFIX)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX)
    sweep_stale_cache_roots(os.path.dirname(path), keep=path)
    return Path(path), fd


def sweep_stale_cache_roots(parent: str, keep: str) -> int:
    """Remove the cache roots of endpoints that died without :meth:`LocalLambda.stop`
    (killed with SIGKILL, or their parent was); the number removed.

    A live endpoint holds an ``flock`` on its root, so only roots nobody locks are
    taken, and only those untouched for a minute (one made an instant ago may not be
    locked yet). The workers' tmpfs mounts live in their own mount namespaces and ended
    with them, so removing a root never reaches into a mounted file system."""
    removed = 0
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(CACHE_ROOT_PREFIX) or entry.path == keep:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() \
                    or time.time() - st.st_mtime < STALE_ROOT_SECONDS:
                continue
            fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
        except OSError:
            continue  # a live endpoint's
        finally:
            os.close(fd)
    return removed


class LocalLambda:
    """The endpoint. ``await start()``, then ``url``; ``await stop()`` when done."""

    def __init__(self, config: EndpointConfig, host_env: Mapping[str, str] | None = None):
        self.config = config
        self.host_env = dict(os.environ if host_env is None else host_env)
        self.queue: asyncio.Queue[Invocation] = asyncio.Queue()
        self.invocations: dict[str, Invocation] = {}
        self.workers = [Worker(i) for i in range(config.workers)]
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._closing = False
        self._runtime_dir: Path | None = None
        self._root_lock = -1
        if config.cache_root is not None:
            self._cache_root = Path(config.cache_root)
        else:
            self._cache_root, self._root_lock = own_cache_root()
        self.stats = {"invocations": 0, "throttled": 0, "timeouts": 0, "worker_exits": 0}

    # -- life cycle ------------------------------------------------------------------

    async def start(self, ready_timeout: float = 60.0) -> str:
        app = web.Application(client_max_size=MAX_PAYLOAD + (1 << 20))
        app.router.add_post("/2015-03-31/functions/{name}/invocations", self._invoke)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{self.config.host}:{port}"
        if self.config.code_dir is not None:
            self._runtime_dir = make_runtime_dir()
        for worker in self.workers:
            await self._listen_runtime(worker)
            await self._spawn(worker)
        try:
            async with asyncio.timeout(ready_timeout):
                await asyncio.gather(*(w.ready.wait() for w in self.workers))
        except TimeoutError:
            raise RuntimeError(f"lambda-local: workers were not ready within {ready_timeout:g} s") from None
        return self.url

    async def stop(self) -> None:
        self._closing = True
        for worker in self.workers:
            self._kill(worker, signal.SIGTERM)
        await asyncio.sleep(0)
        deadline = time.monotonic() + 3
        for worker in self.workers:
            if worker.process and worker.process.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(worker.process.wait(), max(0.05, deadline - time.monotonic()))
                self._kill(worker, signal.SIGKILL)
            if worker.polling:
                worker.polling.cancel()
            if worker.watcher:
                worker.watcher.cancel()
            if worker.police:
                worker.police.cancel()
            kill_leftovers(self._cache_dir(worker))
        for invocation in list(self.invocations.values()):
            invocation.finish(_error_body("ServiceException", "the local Lambda endpoint is shutting down"),
                              "Unhandled")
        for worker in self.workers:
            if worker.runner:
                await worker.runner.cleanup()
        if self._runner:
            await self._runner.cleanup()
        if self._runtime_dir:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
        if self.config.cache_root is None:  # ours: a temp dir, like a sandbox's /tmp
            shutil.rmtree(self._cache_root, ignore_errors=True)
            if self._root_lock >= 0:
                os.close(self._root_lock)
                self._root_lock = -1

    # -- workers -----------------------------------------------------------------------

    async def _listen_runtime(self, worker: Worker) -> None:
        app = web.Application(client_max_size=MAX_PAYLOAD * 4)
        app.router.add_get("/2018-06-01/runtime/invocation/next", lambda r: self._next(worker, r))
        app.router.add_post("/2018-06-01/runtime/invocation/{id}/response", lambda r: self._response(worker, r))
        app.router.add_post("/2018-06-01/runtime/invocation/{id}/error", lambda r: self._error(worker, r))
        app.router.add_post("/2018-06-01/runtime/init/error", lambda r: self._init_error(worker, r))
        worker.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.2)
        await worker.runner.setup()
        site = web.TCPSite(worker.runner, "127.0.0.1", 0)
        await site.start()
        worker.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _spawn(self, worker: Worker) -> None:
        cfg = self.config
        cache_dir = self._cache_dir(worker)
        cache_dir.mkdir(parents=True, exist_ok=True)
        env = worker_env(
            f"127.0.0.1:{worker.port}", cfg.function_name, cfg.handler, cfg.memory_mib, cfg.timeout,
            cfg.code_dir, cache_dir, cfg.function_env, self.host_env,
        )
        argv = worker_argv(cfg.handler, cfg.code_dir, self._runtime_dir, tuple(cfg.sandbox_command),
                           cache_dir if cfg.tmp_mib else None, cfg.tmp_mib)
        worker.init_error = None
        worker.process = await asyncio.create_subprocess_exec(
            *argv, cwd=str(cfg.code_dir or REPO), env=env, stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        worker.watcher = asyncio.ensure_future(self._watch(worker, worker.process))
        worker.out_of_memory = False
        if cfg.enforce_memory:
            worker.police = asyncio.ensure_future(self._police_memory(worker, worker.process))

    async def _police_memory(self, worker: Worker, process: asyncio.subprocess.Process) -> None:
        """Lambda's memory limit: the sandbox dies when it uses more than its memory size."""
        limit = self.config.memory_mib << 20
        cache_dir = self._cache_dir(worker)
        while process.returncode is None:
            await asyncio.sleep(0.1)
            if worker.current is None:
                continue
            used = _rss(process.pid) + sum(_rss(pid) for pid in _working_in(cache_dir) if pid != process.pid)
            if used > limit:
                worker.out_of_memory = True
                self._kill(worker, signal.SIGKILL)
                kill_leftovers(cache_dir)
                return

    def _kill(self, worker: Worker, signum: int) -> None:
        if worker.process is not None and worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.process.pid, signum)

    def _cache_dir(self, worker: Worker) -> Path:
        return self._cache_root / f"worker-{worker.index}"

    async def _watch(self, worker: Worker, process: asyncio.subprocess.Process) -> None:
        """When a worker exits: fail what it held, then start a fresh one."""
        code = await process.wait()
        kill_leftovers(self._cache_dir(worker))
        if self._closing:
            return
        self.stats["worker_exits"] += 1
        if worker.polling is not None:
            worker.polling.cancel()
        held, worker.current = worker.current, None
        status = f"signal: {signal.Signals(-code).name.lower()[3:]}" if code < 0 else f"exit status {code}"
        if held is not None:
            kind = "Runtime.OutOfMemory" if worker.out_of_memory else "Runtime.ExitError"
            held.finish(_error_body(kind, f"RequestId: {held.request_id} Error: Runtime exited with error: {status}"),
                        "Unhandled")
        elif worker.init_error is not None and not self.queue.empty():
            waiting = self.queue.get_nowait()
            waiting.finish(worker.init_error, "Unhandled")
        await asyncio.sleep(1.0 if worker.init_error is not None else 0.05)
        if not self._closing:
            worker.ready.clear()
            await self._spawn(worker)

    # -- Runtime API (called by the workers) ----------------------------------------------

    async def _next(self, worker: Worker, request: web.Request) -> web.StreamResponse:
        worker.ready.set()
        worker.polling = asyncio.current_task()
        try:
            while True:
                invocation = await self.queue.get()
                if not invocation.future.done():
                    break
        finally:
            worker.polling = None
        invocation.worker = worker
        worker.current = invocation
        deadline_ms = int((time.time() + self.config.timeout) * 1000)
        loop = asyncio.get_running_loop()
        invocation.timer = loop.call_later(self.config.timeout, self._timed_out, invocation)
        arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{self.config.function_name}"
        return web.Response(body=invocation.payload, content_type="application/json", headers={
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": arn,
            "Lambda-Runtime-Trace-Id": f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}",
        })

    def _held(self, worker: Worker, request: web.Request) -> Invocation | None:
        invocation = self.invocations.get(request.match_info["id"])
        if invocation is not None and worker.current is invocation:
            worker.current = None
            return invocation
        return None

    async def _response(self, worker: Worker, request: web.Request) -> web.Response:
        body = await request.read()
        invocation = self._held(worker, request)
        if invocation is None:
            return web.json_response({"errorMessage": "unknown or finished invocation"}, status=400)
        if len(body) > MAX_PAYLOAD:
            invocation.finish(_error_body(
                "Function.ResponseSizeTooLarge",
                f"Response payload size ({len(body)} bytes) exceeded maximum allowed payload size "
                f"({MAX_PAYLOAD} bytes)."), "Unhandled")
        else:
            invocation.finish(body, None)
        return web.json_response({"status": "OK"}, status=202)

    async def _error(self, worker: Worker, request: web.Request) -> web.Response:
        body = await request.read()
        invocation = self._held(worker, request)
        if invocation is not None:
            invocation.finish(body or _error_body("Unknown", "the function reported an error"), "Unhandled")
        return web.json_response({"status": "OK"}, status=202)

    async def _init_error(self, worker: Worker, request: web.Request) -> web.Response:
        worker.init_error = await request.read() or _error_body("Runtime.Unknown", "init failed")
        worker.ready.set()  # initialisation is over (it failed): invocations will get the error
        print(f"lambda-local: worker {worker.index} failed to initialise: "
              f"{worker.init_error[:500].decode(errors='replace')}", file=sys.stderr, flush=True)
        return web.json_response({"status": "OK"}, status=202)

    def _timed_out(self, invocation: Invocation) -> None:
        if invocation.future.done():
            return
        self.stats["timeouts"] += 1
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        invocation.finish(_error_body(
            "Sandbox.Timedout",
            f"{stamp} {invocation.request_id} Task timed out after {self.config.timeout:.2f} seconds"),
            "Unhandled")
        worker = invocation.worker
        if worker is not None and worker.current is invocation:
            worker.current = None
            self._kill(worker, signal.SIGKILL)  # the watcher starts a fresh one

    # -- Invoke API (called by clients) --------------------------------------------------------

    def _idle_workers(self) -> int:
        return sum(1 for w in self.workers if w.polling is not None and w.current is None)

    async def _invoke(self, request: web.Request) -> web.Response:
        name = request.match_info["name"].rsplit(":function:", 1)[-1].split(":")[0]
        if name != self.config.function_name:
            return _aws_error(404, "ResourceNotFoundException",
                              f"Function not found: arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}")
        if request.headers.get("X-Amz-Invocation-Type", "RequestResponse") == "DryRun":
            return web.Response(status=204)
        if request.content_length is not None and request.content_length > MAX_PAYLOAD:
            return _aws_error(413, "RequestTooLargeException",
                              f"Request must be smaller than {MAX_PAYLOAD} bytes for the InvokeFunction operation")
        try:
            payload = await request.read()
        except web.HTTPRequestEntityTooLarge:
            payload = b"x" * (MAX_PAYLOAD + 1)
        if len(payload) > MAX_PAYLOAD:
            return _aws_error(413, "RequestTooLargeException",
                              f"Request must be smaller than {MAX_PAYLOAD} bytes for the InvokeFunction operation")
        if self._closing:
            return _aws_error(503, "ServiceException", "the local Lambda endpoint is shutting down")
        # Waiting invocations that no idle worker is about to take: beyond the limit, throttle.
        if self.queue.qsize() >= self._idle_workers() + self.config.queue_limit:
            self.stats["throttled"] += 1
            return _aws_error(429, "TooManyRequestsException", "Rate Exceeded.")
        self.stats["invocations"] += 1
        invocation = Invocation(str(uuid.uuid4()), payload or b"{}", asyncio.get_running_loop().create_future())
        self.invocations[invocation.request_id] = invocation
        try:
            self.queue.put_nowait(invocation)
            body, function_error = await invocation.future
        finally:
            self.invocations.pop(invocation.request_id, None)
            if not invocation.future.done():  # the client went away: drop it from the queue
                invocation.future.cancel()
        headers = {"X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": invocation.request_id}
        if function_error:
            headers["X-Amz-Function-Error"] = function_error
        return web.Response(body=body, content_type="application/json", headers=headers)


async def serve(config: EndpointConfig, ready_file: Path | None = None, quiet: bool = False) -> None:
    """Run the endpoint until SIGINT/SIGTERM."""
    server = LocalLambda(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        url = await server.start()
        if ready_file is not None:
            from ir.atomic import atomic_write_bytes

            atomic_write_bytes(Path(ready_file), (url + "\n").encode())
        if not quiet:
            print(f"gg lambda-local: function {config.function_name!r} at {url} "
                  f"({config.workers} workers, timeout {config.timeout:g} s)", flush=True)
        await stop.wait()
    finally:
        await server.stop()
