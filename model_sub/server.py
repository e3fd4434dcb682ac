"""The long-lived model server that the C shims talk to (one per gg-infer run).

A request is the shim's cwd, argv and environment (see ``shim.c``). The server picks
the model by tool name; a model either writes thunks and placeholders (reply ``R0``)
or decides the call is not for it (reply ``X``: the shim execs the real tool).

Two kinds of "not for it" (``reasons.py``): a configure probe or a query
(:class:`RunReal`) runs as it is; any other unmodelled call (:class:`Unmodelled`, a
scan or driver failure, or an unexpected error in a model) goes through
:func:`run_locally` — its placeholder inputs are forced first, so the real tool only
ever reads real files, and it is counted for gg-infer's summary line. A build never
breaks because a model did not understand it, and is never silently wrong either.
"""

from __future__ import annotations

import os
import socketserver
import threading
import time
import traceback
from dataclasses import dataclass

from . import binutils_model
from .binutils_args import binutils_name
from .context import ModelContext
from .deps import ScanFailed
from .driver import DriverError
from .fallback import ForceError, candidate_inputs, placeholders_among, probe_reason
from .gcc_model import GccModel
from .launcher import GCC_NAMES, GXX_NAMES
from .reasons import RunReal, Unmodelled
from .toolchain import ToolchainError


@dataclass(frozen=True)
class Request:
    cwd: str
    argv: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class Reply:
    exec_real: bool
    status: int = 0
    stderr: bytes = b""

    def encode(self) -> bytes:
        if self.exec_real:
            return b"X"
        return b"R" + str(self.status).encode() + b"\n" + self.stderr


def decode_request(data: bytes) -> Request:
    fields = data.split(b"\0")
    if fields[0] != b"GGI1":
        raise ValueError("not a gg-infer shim request")
    text = [f.decode("utf-8", "surrogateescape") for f in fields]
    cwd = text[1]
    argc = int(text[2])
    argv = text[3 : 3 + argc]
    envc = int(text[3 + argc])
    env = {}
    for entry in text[4 + argc : 4 + argc + envc]:
        name, _, value = entry.partition("=")
        env[name] = value
    return Request(cwd, argv, env)


def handle(ctx: ModelContext, request: Request) -> Reply:
    """Run the model for one tool call; never raises."""
    tool = os.path.basename(request.argv[0]) if request.argv else ""
    started = time.monotonic()
    try:
        stderr = b""
        probe = probe_reason(request.argv, request.cwd)
        if probe:
            raise RunReal(probe)
        if tool in GCC_NAMES or tool in GXX_NAMES:
            GccModel(ctx, request.argv, request.cwd, request.env).run()
        elif binutils_name(tool) == "ar":
            stderr = binutils_model.run_ar(ctx, request.argv, request.cwd)
        elif binutils_name(tool) == "ranlib":
            binutils_model.run_ranlib(ctx, request.argv, request.cwd)
        elif binutils_name(tool) == "strip":
            binutils_model.run_strip(ctx, request.argv, request.cwd)
        elif binutils_name(tool) == "objcopy":
            binutils_model.run_objcopy(ctx, request.argv, request.cwd)
        elif not candidate_inputs(request.argv, request.cwd):
            raise RunReal("no model for this tool, and no file arguments (a query)")
        else:
            raise Unmodelled("no model for this tool", label="")
    except RunReal as exc:
        ctx.log(f"real\t{tool}\t{exc}\t{' '.join(request.argv)}")
        return Reply(exec_real=True)
    except Unmodelled as exc:
        return run_locally(ctx, request, tool, exc.label, str(exc))
    except ScanFailed as exc:
        return run_locally(ctx, request, tool, "(preprocessor failed)", f"scan failed: {exc}")
    except DriverError as exc:
        return run_locally(ctx, request, tool, "(driver refused the mapped call)", f"driver error: {exc}")
    except ToolchainError as exc:
        return run_locally(ctx, request, tool, "(toolchain)", f"toolchain error: {exc}")
    except Exception:  # noqa: BLE001 - a model bug must not break the user's build
        ctx.log(f"error\t{tool}\t{' '.join(request.argv)}\n" + traceback.format_exc())
        return run_locally(ctx, request, tool, "(model error)", "model error")
    ctx.log(f"model\t{tool}\t{(time.monotonic() - started) * 1000:.1f}ms\t{' '.join(request.argv)}")
    return Reply(exec_real=False, status=0, stderr=stderr)


def run_locally(ctx: ModelContext, request: Request, tool: str, label: str, detail: str) -> Reply:
    """The fallback for an unmodelled call: force its placeholder inputs, then let the
    shim exec the real tool (counted under ``tool label`` for the summary line). If a
    placeholder cannot be forced, the call fails with one line: the real tool never
    runs on placeholder text."""
    command = " ".join(request.argv)
    try:
        placeholders = placeholders_among(candidate_inputs(request.argv, request.cwd, request.env))
        forced = ctx.forcer.force(placeholders) if placeholders else 0
    except ForceError as exc:
        ctx.log(f"fail\t{tool}\t{detail}\tforcing inputs failed: {exc}\t{command}")
        message = f"gg-infer: cannot run {tool} for real: forcing its inputs failed: {exc}\n"
        return Reply(exec_real=False, status=1, stderr=message.encode("utf-8", "replace"))
    ctx.local_runs.record(f"{tool} {label}".strip())
    note = f" (forced {forced} input{'s' if forced != 1 else ''})" if forced else ""
    if len(placeholders) > forced:
        note += f" (waited for {len(placeholders) - forced} forced by another call)"
    ctx.log(f"real\t{tool}\t{detail}{note}\t{command}")
    return Reply(exec_real=True)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        chunks = []
        while True:
            chunk = self.request.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        try:
            request = decode_request(b"".join(chunks))
        except (ValueError, IndexError):
            self.request.sendall(b"X")
            return
        self.request.sendall(handle(self.server.ctx, request).encode())


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 128


class ModelServer:
    """Serves model requests on ``socket_path`` in a background thread."""

    def __init__(self, ctx: ModelContext, socket_path: str):
        self.socket_path = socket_path
        if os.path.exists(socket_path):
            os.unlink(socket_path)
        self._server = _Server(socket_path, _Handler)
        self._server.ctx = ctx
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,),
                                        name="gg-infer-models", daemon=True)

    def __enter__(self) -> ModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
