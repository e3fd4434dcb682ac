"""The model server's socket side: accept shim requests, load the models on the first one.

Why separate from ``server.py``: a build that never calls a tool (``gg-infer true``, a
no-op ``make``) should cost gg-infer no more than a Python start. The models, their
caches and the protobuf code they pull in take several times that to import and set up,
so they are loaded (:class:`Models`) only when the first request arrives; the socket
itself is listening before the build command starts, so no request is ever refused.
"""

from __future__ import annotations

import os
import selectors
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ir.atomic import unlink_quietly

if TYPE_CHECKING:
    from .context import ModelContext


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


class _Handler(socketserver.BaseRequestHandler):
    server: _Server  # the attributes ModelServer sets (models, notes)

    def handle(self) -> None:
        chunks = []
        while True:
            chunk = self.request.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        if data.startswith(b"GGN1\0"):
            self.server.notes.note(data, self.server.models)
            self.request.sendall(b"K")
            return
        from .server import decode_request, handle  # the models: imported by the first request

        try:
            request = decode_request(data, _peer_pid(self.request))
        except (ValueError, IndexError):
            self.request.sendall(b"X")
            return
        self.request.sendall(handle(self.server.models.get(), request).encode())


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 128
    models: Models  # set by ModelServer before it serves
    notes: RunNotes


class ModelServer:
    """Serves model requests on ``socket_path`` in a background thread.

    The accept loop waits on the socket and on a pipe that ``__exit__`` writes to, so
    stopping is immediate (``serve_forever`` notices a shutdown only at its next poll,
    which cost every gg-infer run up to one poll interval)."""

    def __init__(self, models: Models, socket_path: str):
        self.socket_path = socket_path
        if os.path.exists(socket_path):
            os.unlink(socket_path)
        self._server = _Server(socket_path, _Handler)
        self._server.models = models
        self._server.notes = self.notes = RunNotes()
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="gg-infer-models", daemon=True)

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._server.socket, selectors.EVENT_READ)
            selector.register(self._stop_read, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj == self._stop_read:
                        return
                    self._server.handle_request()

    def __enter__(self) -> ModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        os.write(self._stop_write, b"x")
        self._thread.join()
        os.close(self._stop_read)
        os.close(self._stop_write)
        self._server.server_close()
        unlink_quietly(self.socket_path)
