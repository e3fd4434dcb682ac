"""The warm model server: one per store (and namespace), models imported once, a worker per run.

``python -m model_sub.warm_server SOCKET STORE FINGERPRINT IDLE READY_FD``, started by
the first gg-infer that needs it (``warm_client.py``). It detaches (forks, ``setsid``,
``chdir /``; its stdin/stdout are /dev/null and its stderr the server log, so it never
holds a build's pipes open), imports the models, binds its socket, and writes one byte
to ``READY_FD``.

Then, one connection at a time on its socket (each is short):

- ``run``: the client's listening socket (SCM_RIGHTS) and its cwd, umask, pid, store,
  build root, PATH and environment. The server forks; the child is that run's worker
  (``warm_worker.py``) and the server goes back to its socket. The server has no
  threads, so forking it is safe, and each run gets the models' state fresh, exactly as
  in gg-infer's own process, except for the imports and a *seed*: the in-memory copies
  of the on-disk caches (file IDs, dependency scans, driver answers) that earlier
  workers reported through a pipe when they ended, each checked before use exactly as
  the on-disk entry would be (``ModelContext.seed_caches``);
- ``status``: its pid, fingerprint, runs served, active workers, idle timeout;
- ``stop``: stop accepting, wait for the workers, exit.

A ``run`` or ``stop`` from a client whose :func:`~.warm.code_fingerprint` differs gets
``STALE`` and the server winds down the same way (the client starts a new one). Workers
are reaped through pidfds as they end (no zombies), and the server exits once it has
been idle (no worker, no connection) for ``IDLE`` seconds, or when its socket was
removed or replaced (store deleted, a newer server started).
"""

from __future__ import annotations

import gc
import marshal
import os
import select
import socket
import sys
import time
import traceback
from pathlib import Path

from .warm import MAGIC, code_fingerprint, connectable, decode_fields, read_frame

CONNECTION_TIMEOUT = 10.0  # a client that stops talking mid-message never blocks the server longer
SOCKET_CHECK_SECONDS = 5.0
MAX_SEED_ENTRIES = 1_000_000
SECTION_LIMITS = {"memo": 2_000}  # memo records are large (memo.MAX_ENTRIES); the rest are read from disk


class WarmServer:
    """The accept loop (single-threaded: it forks)."""

    def __init__(self, listener: socket.socket, path: Path, fingerprint: str, idle_seconds: float):
        self.listener: socket.socket | None = listener
        self.path = path
        self.fingerprint = fingerprint
        self.idle_seconds = idle_seconds
        self.identity = _file_identity(path)
        self.started = time.time()
        self.runs = 0
        self.workers: dict[int, int] = {}  # pidfd -> pid
        self.reports: dict[int, bytearray] = {}  # a worker's pipe -> what it sent so far
        self.seed: dict[str, dict] = {}  # the runs' in-memory caches, merged (see warm_worker)
        self.last_active = time.monotonic()

    def serve(self) -> None:
        poller = select.poll()
        assert self.listener is not None
        poller.register(self.listener.fileno(), select.POLLIN)
        next_check = time.monotonic() + SOCKET_CHECK_SECONDS
        while True:
            now = time.monotonic()
            if self.listener is None and not self.workers:
                return
            if self.listener is not None and not self.workers and now - self.last_active >= self.idle_seconds:
                return
            if now >= next_check:
                next_check = now + SOCKET_CHECK_SECONDS
                if self.listener is not None and _file_identity(self.path) != self.identity:
                    self._wind_down(poller, "its socket was removed or replaced")
                    continue
            wait = min(next_check, self.last_active + self.idle_seconds) - now
            for fd, _ in poller.poll(max(0, int(wait * 1000)) + 1):
                if fd in self.workers:
                    self._reap(poller, fd)
                elif fd in self.reports:
                    self._read_report(poller, fd)
                elif self.listener is not None and fd == self.listener.fileno():
                    self._accept(poller)

    def _reap(self, poller: select.poll, pidfd: int) -> None:
        pid = self.workers.pop(pidfd)
        poller.unregister(pidfd)
        os.close(pidfd)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        self.last_active = time.monotonic()

    def _read_report(self, poller: select.poll, fd: int) -> None:
        """Collect a worker's cache report; at its end, merge it into the seed."""
        data = os.read(fd, 1 << 20)
        if data:
            self.reports[fd] += data
            return
        poller.unregister(fd)
        os.close(fd)
        report = bytes(self.reports.pop(fd))
        if not report:
            return  # the worker ended without one (it failed, or was killed)
        try:
            delta = marshal.loads(report)
        except (EOFError, ValueError, TypeError):
            return
        if sum(len(section) for section in self.seed.values()) > MAX_SEED_ENTRIES:
            self.seed = {}  # a server used for very many trees: start over rather than grow
        for name, section in delta.items():
            merged = self.seed.setdefault(name, {})
            merged.update(section)
            limit = SECTION_LIMITS.get(name)
            if limit is not None and len(merged) > limit:  # keep the newest: dicts keep insertion order
                self.seed[name] = dict(list(merged.items())[-limit:])
        gc.freeze()  # as at start: the next worker's GC leaves these pages alone

    def _wind_down(self, poller: select.poll, why: str) -> None:
        """Take no more connections; the loop ends when the last worker has."""
        print(f"gg-infer server {os.getpid()}: stopping: {why}", file=sys.stderr, flush=True)
        if self.listener is not None:
            poller.unregister(self.listener.fileno())
            self.listener.close()
            self.listener = None

    def _accept(self, poller: select.poll) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.last_active = time.monotonic()
        with conn:
            try:
                conn.settimeout(CONNECTION_TIMEOUT)
                self._answer(conn, poller)
            except (OSError, ValueError, IndexError) as exc:
                print(f"gg-infer server {os.getpid()}: a request failed: {exc}", file=sys.stderr, flush=True)

    def _answer(self, conn: socket.socket, poller: select.poll) -> None:
        if _peer_uid(conn) != os.getuid():
            conn.sendall(b"ERR the server belongs to another user\n")
            return
        first, fds, _, _ = socket.recv_fds(conn, 65536, 1)
        try:
            fields = decode_fields(read_frame(conn, first))
            if fields[0] != MAGIC.decode():
                conn.sendall(b"ERR not a gg-infer client\n")
                return
            op, fingerprint = fields[1], fields[2]
            if op == "status":
                conn.sendall(self._status().encode())
            elif op == "stop":
                conn.sendall(b"stopping\n")
                self._wind_down(poller, "asked to stop")
            elif fingerprint != self.fingerprint:
                conn.sendall(b"STALE\n")
                self._wind_down(poller, "a client runs other code")
            elif op == "run" and len(fds) == 1:
                self._fork_worker(conn, fds.pop(), fields[3:], poller)
            else:
                conn.sendall(b"ERR unknown request\n")
        finally:
            for fd in fds:
                os.close(fd)

    def _status(self) -> str:
        return (f"pid {os.getpid()}\nfingerprint {self.fingerprint}\nstarted {self.started:.3f}\n"
                f"runs {self.runs}\nactive {len(self.workers)}\nworkers {' '.join(map(str, self.workers.values()))}\n"
                f"idle {self.idle_seconds:g}\n")

    def _fork_worker(self, conn: socket.socket, listen_fd: int, fields: list[str], poller: select.poll) -> None:
        report_read, report_write = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the server's loop
            status = 1
            try:
                os.close(report_read)
                if self.listener is not None:
                    self.listener.close()
                for fd in (*self.workers, *self.reports):
                    os.close(fd)
                from .warm_worker import run_worker

                conn.settimeout(None)
                status = run_worker(conn, listen_fd, fields, self.seed, report_write)
            except BaseException:  # noqa: BLE001 - reported in the server log; the client falls back
                traceback.print_exc()
            finally:
                os._exit(status)
        os.close(listen_fd)
        os.close(report_write)
        self.reports[report_read] = bytearray()
        poller.register(report_read, select.POLLIN)
        self.runs += 1
        pidfd = os.pidfd_open(pid)
        self.workers[pidfd] = pid
        poller.register(pidfd, select.POLLIN)


def _peer_uid(conn: socket.socket) -> int:
    import struct

    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _bind(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    name, dirfd = connectable(path)
    try:
        listener.bind(name)
    finally:
        if dirfd is not None:
            os.close(dirfd)
    os.chmod(path, 0o600)
    listener.listen(128)
    return listener


def _preload() -> None:
    """Import everything a run's first request would (the point of the server)."""
    from ir.store import LocalStore  # noqa: F401

    from . import server, warm_worker  # noqa: F401 - the models, their context, protobuf


def main(argv: list[str]) -> int:
    path, store_root, fingerprint, idle, ready_fd = Path(argv[0]), Path(argv[1]), argv[2], float(argv[3]), int(argv[4])
    if os.fork():  # the starter waits for this process only: the server is reparented, never a zombie
        os._exit(0)
    os.setsid()
    os.chdir("/")
    if code_fingerprint() != fingerprint:
        print(f"gg-infer server: the code differs from the client's ({sys.executable}); not started",
              file=sys.stderr, flush=True)
        return 1
    _preload()
    gc.collect()
    gc.freeze()  # the imported objects are never collected: a worker's GC then never touches (copies) their pages
    listener = _bind(path)
    print(f"gg-infer server {os.getpid()}: serving {store_root} on {path.name}", file=sys.stderr, flush=True)
    os.write(ready_fd, b"R")
    os.close(ready_fd)
    WarmServer(listener, path, fingerprint, idle).serve()
    print(f"gg-infer server {os.getpid()}: exiting", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
