"""gg-infer's side of the warm model server: find it, start it, hand a run to it.

:class:`Handoff` is what gg-infer's accept loop (``listener.ModelServer``) calls on the
build's first tool call. It connects to the store's server (starting one if there is
none, the socket is stale, or the server runs other code), passes the run's listening
socket and the client's cwd, umask, pid, environment, build root and PATH, and gets back
a worker that answers the build's requests from then on.

Anything that goes wrong — no server can be started, a handshake fails, the worker ends
during the build — leaves the socket with gg-infer, which loads the models itself, and
:attr:`Handoff.note` says so in one line at the end of the run: slower, never wrong. A
tool call the worker was in the middle of is retried by the shim on gg-infer's socket.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import sys
from pathlib import Path

from .warm import (
    MAGIC,
    ServerSettings,
    code_fingerprint,
    connectable,
    decode_fields,
    encode_fields,
    ensure_server_dir,
    frame,
    namespace_key,
    read_frame,
    socket_name,
)

HANDSHAKE_TIMEOUT = 30.0  # a stopped (SIGSTOP) or wedged server: give up and serve in-process
READY_TIMEOUT = 60.0  # a server starting on a loaded machine imports for a while
_ABSENT, _STALE = "absent", "stale"


class WarmRun:
    """A run's worker in the warm server: its control connection."""

    def __init__(self, conn: socket.socket, pid: int):
        self.conn = conn
        self.pid = pid

    def finish(self) -> tuple[list[str], list[str]]:
        """Tell the worker the build is over; its summary lines and static programs."""
        self.conn.settimeout(HANDSHAKE_TIMEOUT)
        self.conn.sendall(b"D")
        fields = decode_fields(read_frame(self.conn))
        lines = [f[1:] for f in fields if f.startswith("L")]
        statics = [f[1:] for f in fields if f.startswith("S")]
        return lines, statics

    def close(self) -> None:
        self.conn.close()


class Handoff:
    """Hands one gg-infer run to the store's warm server (see the module docstring)."""

    def __init__(self, store_root: Path, build_root: str, real_path: str, environ: dict[str, str],
                 settings: ServerSettings):
        self.store_root = store_root
        self.build_root = build_root
        self.real_path = real_path
        self.environ = environ
        self.settings = settings
        self.usable = settings.enabled
        self.run: WarmRun | None = None
        self.note = ""  # why the models ran in gg-infer's process, if they did

    def start(self, listener: socket.socket) -> int | None:
        """The worker's control fd, or None (and :attr:`note`): serve in this process."""
        self.usable = False  # one attempt per run
        try:
            outcome = self._connect(listener)
        except OSError as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        if isinstance(outcome, WarmRun):
            self.run = outcome
            return outcome.conn.fileno()
        self.note = f"the model server could not be used ({outcome}): the models ran in this process"
        return None

    def lost(self) -> None:
        if self.run is not None:
            self.run.close()
            self.run = None
        self.note = "the model server's worker ended during the build: the rest was modelled in this process"

    def finish(self) -> tuple[list[str], list[str]]:
        """The worker's summary lines and static programs (none if it is gone: noted)."""
        if self.run is None:
            return [], []
        try:
            return self.run.finish()
        except (OSError, ConnectionError, ValueError):
            self.note = ("the model server's worker ended before it sent its summary: "
                         "calls that ran the real tool are not counted here (see .gg/infer/log)")
            return [], []
        finally:
            self.run.close()
            self.run = None

    def _connect(self, listener: socket.socket) -> WarmRun | str:
        fingerprint = code_fingerprint()
        directory = ensure_server_dir(self.store_root)
        path = socket_name(self.store_root)
        payload = encode_fields([MAGIC.decode(), "run", fingerprint, *self._run_fields()])
        outcome = _request(path, payload, listener.fileno())
        if outcome not in (_ABSENT, _STALE):
            return outcome
        lock = os.open(directory / f"{namespace_key()}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time; the others then find its server
            outcome = _request(path, payload, listener.fileno())
            if outcome not in (_ABSENT, _STALE):
                return outcome
            failure = _start_server(path, self.store_root, fingerprint, self.settings.idle_seconds, self.environ)
            if failure:
                return failure
            outcome = _request(path, payload, listener.fileno())
            return "the new server did not answer" if outcome in (_ABSENT, _STALE) else outcome
        finally:
            os.close(lock)

    def _run_fields(self) -> list[str]:
        return [os.getcwd(), _umask(), str(os.getpid()), str(self.store_root), self.build_root, self.real_path,
                *(f"{k}={v}" for k, v in self.environ.items())]


def _umask() -> str:
    """This process's umask, read without changing it (``os.umask`` sets it)."""
    with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
        for line in handle:
            if line.startswith("Umask:"):
                return line.split()[1]
    previous = os.umask(0o022)
    os.umask(previous)
    return f"{previous:o}"


def _open(path: Path) -> socket.socket | None:
    """A connection to the server at ``path``, or None if nothing listens there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(HANDSHAKE_TIMEOUT)
    name, dirfd = connectable(path)
    try:
        sock.connect(name)
        return sock
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    finally:
        if dirfd is not None:
            os.close(dirfd)


def _request(path: Path, payload: bytes, listen_fd: int | None) -> WarmRun | str:
    """Send ``payload`` (with ``listen_fd``); a worker, ``_ABSENT``, ``_STALE`` or a reason."""
    sock = _open(path)
    if sock is None:
        return _ABSENT
    try:
        message = frame(payload)
        sent = socket.send_fds(sock, [message[:4096]], [listen_fd] if listen_fd is not None else [])
        sock.sendall(message[sent:])
        reply = _read_line(sock)
    except (ConnectionError, TimeoutError) as exc:
        sock.close()
        # a server that closed on us was exiting (idle): start another; a silent one is wedged
        return f"no answer from the server: {exc}" if isinstance(exc, TimeoutError) else _ABSENT
    except OSError:
        sock.close()
        raise
    if reply.startswith("OK "):
        sock.settimeout(None)
        return WarmRun(sock, int(reply.split()[1]))
    sock.close()
    if reply == "STALE":
        return _STALE
    if reply == "":
        return _ABSENT
    return reply.removeprefix("ERR ").strip() or "the server refused the run"


def _read_line(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").strip()


def _start_server(path: Path, store_root: Path, fingerprint: str, idle: float, environ: dict[str, str]) -> str:
    """Start a server (the caller holds the lock); "" once it listens, else why not."""
    import subprocess  # only when a server is started: rare

    log_path = path.parent / "server.log"
    try:
        if log_path.stat().st_size > 1 << 20:
            log_path.unlink()
    except OSError:
        pass
    try:
        os.unlink(path)  # stale: nothing answered there under the lock
    except FileNotFoundError:
        pass
    env = {k: v for k, v in environ.items() if not k.startswith("GG_INFER") and k != "LD_PRELOAD"}
    read_end, write_end = os.pipe()
    try:
        with open(log_path, "ab") as log:
            starter = subprocess.Popen(
                [sys.executable, "-m", "model_sub.warm_server", str(path), str(store_root), fingerprint, str(idle),
                 str(write_end)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, pass_fds=(write_end,),
                env=env, start_new_session=True)
        os.close(write_end)
        write_end = -1
        starter.wait()  # it forks the server and exits at once
        poller = select.poll()
        poller.register(read_end, select.POLLIN)
        if not poller.poll(int(READY_TIMEOUT * 1000)):
            return f"the server did not start within {READY_TIMEOUT:g} s"
        if os.read(read_end, 1) == b"R":
            return ""
        return "the server failed to start: " + _last_line(log_path)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return f"{lines[-1].strip()} (see {path})" if lines else "(empty log)"


def query(store_root: Path, op: str) -> str | None:
    """``status`` or ``stop`` the store's server; its answer, or None if none runs."""
    path = socket_name(store_root)
    sock = _open(path) if path.parent.is_dir() else None
    if sock is None:
        return None
    with sock:
        try:
            sock.sendall(frame(encode_fields([MAGIC.decode(), op, code_fingerprint()])))
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        except (ConnectionError, TimeoutError):
            return None
    return data.decode("utf-8", "replace") or None
