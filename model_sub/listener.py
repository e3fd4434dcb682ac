"""The model server's socket side: accept shim requests, load the models on the first one.

Why separate from ``server.py``: a build that never calls a tool (``gg-infer true``, a
no-op ``make``) should cost gg-infer no more than a Python start. The models, their
caches and the protobuf code they pull in take several times that to import and set up,
so they are loaded (:class:`Models`) only when the first request arrives; the socket
itself is listening before the build command starts, so no request is ever refused.
"""

from __future__ import annotations

import os
import queue
import select
import socket
import struct
import threading
from collections.abc import Callable

from ir.atomic import unlink_quietly

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads the name)
if TYPE_CHECKING:
    from .context import ModelContext
    from .warm_client import Handoff


class Models:
    """The run's :class:`ModelContext`, created by ``load`` once, on first use (thread-safe)."""

    def __init__(self, load: Callable[[], ModelContext]):
        self._load = load
        self._lock = threading.Lock()
        self._ctx: ModelContext | None = None

    def get(self) -> ModelContext:
        with self._lock:
            if self._ctx is None:
                self._ctx = self._load()
            return self._ctx

    @property
    def loaded(self) -> ModelContext | None:
        """The context if a request needed it, else None (nothing to summarize or close)."""
        with self._lock:
            return self._ctx


class RunNotes:
    """What the preload library reported during the run (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._static: dict[str, None] = {}

    def note(self, data: bytes, models: Models) -> None:
        """Record a ``GGN1`` note: ``"GGN1\\0static\\0" cwd "\\0" path "\\0"``."""
        fields = [f.decode("utf-8", "surrogateescape") for f in data.split(b"\0")]
        if len(fields) < 4 or fields[1] != "static":
            return
        path = os.path.normpath(os.path.join(fields[2], fields[3]))
        with self._lock:
            new = path not in self._static
            self._static[path] = None
        if new:
            models.get().log(f"static\t{path}\tstatically linked: the tools it runs by absolute path are not seen")

    @property
    def static_programs(self) -> list[str]:
        with self._lock:
            return list(self._static)


def _peer_pid(sock: socket.socket) -> int:
    """The pid of the process at the other end of a unix socket (0 if unknown)."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[0]
    except OSError:
        return 0


def _receive_all(conn: socket.socket) -> bytes:
    """Everything the peer sends before it shuts down its side (the shim does, after its request)."""
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


class ModelServer:
    """Serves model requests on ``socket_path`` (or an already bound ``listener``) while
    the build runs.

    The thread that runs the build waits in :meth:`serve_until_exit`, polling the
    socket and a pidfd of the build's process: it accepts requests until the build
    exits, and each request is answered on a thread, one per request in flight at once,
    kept for the run (a parallel build calls many tools at once). So a run that calls
    no tool starts no thread and needs no stop signal, and the loop ends the moment the
    build does. Plain sockets and threads, not ``socketserver``: importing it cost more
    than this loop.

    With a :class:`~.warm_client.Handoff`, the first request hands the socket to a warm server's
    worker instead (the models are already imported there), and this loop only watches
    the build and the worker; should the worker end early, it serves here again.
    ``stop_pid`` ends the walk up a caller's processes (default: this process)."""

    def __init__(self, models: Models, socket_path: str | None = None, listener: socket.socket | None = None,
                 stop_pid: int | None = None):
        self.socket_path = socket_path
        self.models = models
        # Requests go to threads that stay for the run: starting a thread per request
        # made the accept loop wait for it to start (behind the running requests' hold on
        # the GIL), while the build's next call waited to be accepted. A thread is added
        # only when every one is busy, so a slow request (a fallback forcing inputs)
        # never holds up another.
        self._requests: queue.SimpleQueue[socket.socket] = queue.SimpleQueue()
        self._idle = 0
        self._idle_lock = threading.Lock()
        self.notes = RunNotes()
        self.stop_pid = os.getpid() if stop_pid is None else stop_pid
        if listener is not None:
            self._socket = listener
            return
        assert socket_path is not None
        if os.path.exists(socket_path):
            os.unlink(socket_path)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._socket.bind(socket_path)
            self._socket.listen(128)
        except BaseException:
            self._socket.close()
            unlink_quietly(socket_path)
            raise

    def serve_until_exit(self, pid: int, handoff: Handoff | None = None) -> int:
        """Answer requests until process ``pid`` (a child) exits; reap it and return
        its wait status. A ^C (KeyboardInterrupt) leaves the child to the caller."""
        pidfd = os.pidfd_open(pid)
        listening = self._socket.fileno()
        control: int | None = None
        try:
            poller = select.poll()
            poller.register(listening, select.POLLIN)
            poller.register(pidfd, select.POLLIN)
            while True:
                for fd, _ in poller.poll():
                    if fd == pidfd:
                        return os.waitpid(pid, 0)[1]
                    if fd == control:
                        assert handoff is not None
                        handoff.lost()
                        poller.unregister(control)
                        control = None
                        poller.register(listening, select.POLLIN)
                    elif fd == listening and control is None:
                        if handoff is not None and handoff.usable:
                            control = handoff.start(self._socket)
                            if control is not None:
                                poller.unregister(listening)
                                poller.register(control, select.POLLIN)
                                continue
                        self._accept()
        finally:
            os.close(pidfd)

    def serve_until_readable(self, fd: int) -> None:
        """Answer requests until ``fd`` becomes readable (a warm worker's control connection)."""
        poller = select.poll()
        poller.register(self._socket.fileno(), select.POLLIN)
        poller.register(fd, select.POLLIN)
        while True:
            for ready, _ in poller.poll():
                if ready == fd:
                    return
                self._accept()

    def _accept(self) -> None:
        try:
            conn, _ = self._socket.accept()
        except OSError:  # the peer gave up before we accepted (ECONNABORTED)
            return
        with self._idle_lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        self._requests.put(conn)
        if spawn:
            threading.Thread(target=self._answer_requests, name="gg-infer-request", daemon=True).start()

    def _answer_requests(self) -> None:
        while True:
            self._answer(self._requests.get())
            with self._idle_lock:
                self._idle += 1

    def _answer(self, conn: socket.socket) -> None:
        """Read one request, reply, close. A model never raises (``server.handle``); an
        error here (a shim that went away) only ends this request: the shim then runs
        the real tool or fails on its own."""
        with conn:
            try:
                conn.sendall(self._reply(conn, _receive_all(conn)))
            except OSError:
                pass

    def _reply(self, conn: socket.socket, data: bytes) -> bytes:
        if data.startswith(b"GGN1\0"):
            self.notes.note(data, self.models)
            return b"K"
        from .server import decode_request, handle  # the models: imported by the first request

        try:
            request = decode_request(data, _peer_pid(conn))
        except (ValueError, IndexError):
            return b"X"
        return handle(self.models.get(), request, self.stop_pid).encode()

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc) -> None:
        self._socket.close()
        if self.socket_path is not None:
            unlink_quietly(self.socket_path)
