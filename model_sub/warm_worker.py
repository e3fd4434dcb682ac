"""One gg-infer run's worker, forked from the warm server (``warm_server.py``).

It becomes the client's stand-in: the client's environment, cwd and umask (so the
models, and the preprocessor, driver and gg-force they run, see what they would see in
gg-infer's own process), a fresh :class:`~.context.ModelContext` for the client's store,
build root and PATH, and the client's listening socket, on which it answers the build's
shims until the client says the build is over (or goes away). It then sends the run's
summary (the lines gg-infer prints, the static programs the preload library reported),
closes the context and exits.

The control connection carries nothing else during the build, so the client knows the
worker is gone the moment it becomes readable without a summary having been asked for.
"""

from __future__ import annotations

import marshal
import os
import signal
import socket
from pathlib import Path

from .early import Placements
from .infer import local_run_lines
from .listener import Models, ModelServer
from .warm import encode_fields, frame


def run_worker(conn: socket.socket, listen_fd: int, fields: list[str], seed: dict[str, dict],
               report_fd: int) -> int:
    """Serve one run; the exit status for the worker process.

    ``seed`` is what earlier runs' caches held (the server's); what this run added to
    them is written to ``report_fd`` at the end, after the client has its summary."""
    cwd, umask, client_pid, store_root, build_root, real_path, *env = fields
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # the client's ^C ends the run: it closes the connection
    os.environ.clear()
    os.environ.update(entry.partition("=")[::2] for entry in env if "=" in entry)
    listener = socket.socket(fileno=listen_fd)
    try:
        os.chdir(cwd)
        os.umask(int(umask, 8))
        from ir.store import LocalStore

        from .context import ModelContext

        ctx = ModelContext.create(LocalStore.init(Path(store_root)), build_root, real_path,
                                  Placements.from_environ(os.environ))
        ctx.seed_caches(seed)
    except Exception as exc:  # noqa: BLE001 - the client falls back and says why
        conn.sendall(f"ERR {type(exc).__name__}: {exc}\n".replace("\n", " ").strip().encode() + b"\n")
        return 1
    try:
        server = ModelServer(Models(lambda: ctx), listener=listener, stop_pid=int(client_pid))
        conn.sendall(b"OK %d\n" % os.getpid())
        server.serve_until_readable(conn.fileno())
        try:
            asked = conn.recv(1) == b"D"
        except OSError:
            asked = False
        if asked:
            summary = [f"L{line}" for line in local_run_lines(ctx)]
            summary += [f"S{path}" for path in server.notes.static_programs]
            conn.sendall(frame(encode_fields(summary)))
        conn.close()
        listener.close()
        _report(ctx.cache_snapshot(), seed, report_fd)
        return 0
    finally:
        ctx.close()
        listener.close()


def _report(snapshot: dict[str, dict], seed: dict[str, dict], fd: int) -> None:
    """Send the server the cache entries it does not have yet (marshal: plain data)."""
    delta = {name: {key: value for key, value in section.items() if seed.get(name, {}).get(key) != value}
             for name, section in snapshot.items()}
    data = marshal.dumps(delta)
    with open(fd, "wb", closefd=True) as pipe:
        pipe.write(data)

