"""What the warm model server and its clients share: settings, identity, paths, framing.

Why a warm server at all: every gg-infer run that calls a tool used to import the
models first (protobuf, the model modules, ~150 ms CPU), which was ~40% of a warm
``make clean && gg-infer make``. A per-store server that has them imported forks one
worker per gg-infer run (``warm_server.py``); the worker serves that run's requests.

Identity rules, so that a server is never used where it would answer differently from
the models in gg-infer's own process:

- **code**: :func:`code_fingerprint` (the interpreter, its file-system encoding, every
  source file of the packages the models import, by name, size and mtime, and the
  installed packages' directory); a server with another fingerprint says ``STALE`` and exits, and the client
  starts a new one;
- **view of the machine**: the socket's name carries :func:`namespace_key` (mount, pid
  and user namespaces and the root directory), so a gg-infer in another mount namespace
  (``unshare -m``, a container sharing the store) never reaches a server that sees other
  files or other processes;
- **per request**: the worker takes the client's cwd, environment and umask, and every
  request carries its own cwd, argv and environment.

Configuration is explicit (:class:`ServerSettings`, from the environment once per run).
This module is imported only when the first tool call arrives, never at gg-infer's start.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import xxhash

from ir.errors import ConfigError

MAGIC = b"GGS1"
DEFAULT_IDLE_SECONDS = 600.0
_PACKAGES = ("ir", "model_sub")  # what the server imports from this project (gg-force runs as its own process)
_HEADER = struct.Struct("!I")


class ServerSettings:
    """Whether to use the warm server and how long an idle one lives.

    ``GG_INFER_SERVER=off`` (or ``0``/``no``/``false``; gg-infer's ``--no-server``)
    keeps the models in gg-infer's process; ``GG_INFER_SERVER_IDLE`` is the idle timeout
    in seconds (default 600)."""

    __slots__ = ("enabled", "idle_seconds")

    def __init__(self, enabled: bool = True, idle_seconds: float = DEFAULT_IDLE_SECONDS):
        self.enabled = enabled
        self.idle_seconds = idle_seconds

    @classmethod
    def from_environ(cls, environ: dict[str, str], disabled: bool = False) -> ServerSettings:
        """Raise :class:`ConfigError` (one line naming the setting) for a bad value."""
        switch = environ.get("GG_INFER_SERVER", "on").strip().lower()
        if switch not in ("on", "1", "yes", "true", "off", "0", "no", "false", ""):
            raise ConfigError(f"GG_INFER_SERVER={environ['GG_INFER_SERVER']!r}: expected on or off")
        raw = environ.get("GG_INFER_SERVER_IDLE", "").strip()
        try:
            idle = float(raw) if raw else DEFAULT_IDLE_SECONDS
        except ValueError:
            idle = -1.0
        if not idle > 0 or idle != idle or idle == float("inf"):
            raise ConfigError(f"GG_INFER_SERVER_IDLE={raw!r}: expected a number of seconds > 0")
        return cls(enabled=not disabled and switch not in ("off", "0", "no", "false"), idle_seconds=idle)


def namespace_key() -> str:
    """What a process's view of files and processes depends on: a server is shared only
    by processes with the same key (it names the socket)."""
    parts = []
    for ns in ("mnt", "pid", "user"):
        try:
            parts.append(os.readlink(f"/proc/self/ns/{ns}"))
        except OSError:
            parts.append(ns + ":?")
    root = os.stat("/")
    parts.append(f"{root.st_dev}:{root.st_ino}")
    return xxhash.xxh3_64_hexdigest("\0".join(parts).encode())


def code_fingerprint() -> str:
    """The code a server runs: a server whose fingerprint differs is never used.

    Source files by (path, size, mtime): an edit, a reinstall or a checkout of other
    code changes it. ~1 ms: it is computed on the first tool call only."""
    # and how paths and environment are decoded (a server takes its locale from the run that started it)
    # and where else modules may come from (protobuf, xxhash)
    # The interpreter by what it is (``python`` and ``python3`` in a venv are one) and the
    # environment it runs in (``sys.prefix``: the venv).
    parts = [os.path.realpath(sys.executable), sys.prefix, sys.version, sys.getfilesystemencoding(),
             str(sys.flags.utf8_mode),
             os.environ.get("PYTHONPATH", ""), os.environ.get("PYTHONHOME", "")]
    base = Path(__file__).resolve().parent.parent
    for package in _PACKAGES:
        parts += _tree_stats(base / package)
    for entry in sys.path:  # installing or removing any package changes its directory
        if entry.endswith("-packages"):
            try:
                parts.append(f"{entry}:{os.stat(entry).st_mtime_ns}")
            except OSError:
                pass
    return xxhash.xxh3_64_hexdigest("\0".join(parts).encode("utf-8", "surrogateescape"))


def _tree_stats(directory: Path) -> list[str]:
    out: list[str] = []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return out
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and entry.name != "__pycache__" and not entry.name.startswith("."):
            out += _tree_stats(Path(entry.path))
        elif entry.name.endswith((".py", ".c")):
            st = entry.stat()
            out.append(f"{entry.path}:{st.st_size}:{st.st_mtime_ns}")
    return out


def server_dir(store_root: Path) -> Path:
    """``.gg/infer/server``: the servers' sockets, locks and log (mode 0700)."""
    return store_root / "infer" / "server"


def ensure_server_dir(store_root: Path) -> Path:
    """Create the directory 0700 and check that it is ours and private: nobody else may
    connect to our server or replace its socket."""
    directory = server_dir(store_root)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.stat(directory)
    if st.st_uid != os.getuid():
        raise OSError(f"{directory} belongs to another user")
    if st.st_mode & 0o077:
        os.chmod(directory, 0o700)
    return directory


def socket_name(store_root: Path) -> Path:
    return server_dir(store_root) / f"{namespace_key()}.sock"


def connectable(path: Path) -> tuple[str, int | None]:
    """A name for ``path`` that fits a unix socket address (108 bytes), and the fd to close
    after use (``/proc/self/fd/N/name`` of the directory, for a deep store)."""
    if len(os.fsencode(path)) < 100:
        return str(path), None
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{path.name}", fd


def frame(payload: bytes) -> bytes:
    """A length-prefixed message (the environment may be larger than one read)."""
    return _HEADER.pack(len(payload)) + payload


def read_frame(conn, first: bytes = b"") -> bytes:
    """The rest of a frame whose first bytes (maybe none) were already read."""
    data = first
    while len(data) < _HEADER.size:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("the peer closed the connection")
        data += chunk
    (size,) = _HEADER.unpack_from(data)
    body = data[_HEADER.size:]
    while len(body) < size:
        chunk = conn.recv(max(65536, size - len(body)))
        if not chunk:
            raise ConnectionError("the peer closed the connection")
        body += chunk
    return body[:size]


def encode_fields(fields: list[str]) -> bytes:
    return b"\0".join(f.encode("utf-8", "surrogateescape") for f in fields)


def decode_fields(data: bytes) -> list[str]:
    return [f.decode("utf-8", "surrogateescape") for f in data.split(b"\0")]
