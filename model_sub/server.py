"""The long-lived model server that the C shims talk to (one per gg-infer run).

A request is the shim's cwd, the program the build executed, argv and environment
(see ``shim.c``); the shim's pid comes from the socket (``SO_PEERCRED``). A call that
is part of a configure step runs the real tool at once (``configure.py``), and so does
one whose output an ancestor reads at once (``$(shell ...)``, ``consumed.py``; its
placeholder inputs are forced first, as for a fallback). Otherwise
the server picks the model by tool name (``toolnames.py``); a model either writes
thunks and placeholders (reply ``R0``) or decides the call is not for it (reply
``X``: the shim execs the real program). Any unexpected error in a model also falls
back to the real tool, with a line in ``.gg/infer/log``: a build must never break
because a model did not understand it.

The preload library also sends notes (``GGN1``): a static program ran, whose execs
it cannot see; gg-infer warns about those at the end of the run (:class:`~.listener.RunNotes`).
The socket side is ``listener.py``, which imports this module on the first request.

Two kinds of "not for it" (``reasons.py``): a configure probe or a query
(:class:`RunReal`) runs as it is; any other unmodelled call (:class:`Unmodelled`, a
scan or driver failure, or an unexpected error in a model) goes through
:func:`run_locally` — its placeholder inputs are forced first, so the real tool only
ever reads real files, and it is counted for gg-infer's summary line. A build never
breaks because a model did not understand it, and is never silently wrong either.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass

from . import binutils_model
from .binutils_args import binutils_name
from .configure import configure_step
from .consumed import consumed_output
from .context import ModelContext
from .deps import ScanFailed
from .driver import DriverError
from .fallback import ForceError, candidate_inputs, placeholders_among, probe_reason
from .gcc_model import GccModel
from .reasons import RunReal, Unmodelled
from .toolchain import ToolchainError
from .toolnames import GCC_KINDS, tool_kind


@dataclass(frozen=True)
class Request:
    cwd: str
    argv: list[str]
    env: dict[str, str]
    program: str = ""  # the program the build executed (from the preload library); "" if the shim ran by name
    pid: int = 0  # the shim's pid (0: unknown)

    @property
    def tool(self) -> str:
        """The tool's basename: of the program the build named, else of argv[0]."""
        return os.path.basename(self.program or (self.argv[0] if self.argv else ""))

    @property
    def program_path(self) -> str | None:
        """The absolute path of the program the build executed, if the preload named it."""
        return os.path.join(self.cwd, self.program) if self.program else None


@dataclass(frozen=True)
class Reply:
    exec_real: bool
    status: int = 0
    stderr: bytes = b""

    def encode(self) -> bytes:
        if self.exec_real:
            return b"X"
        return b"R" + str(self.status).encode() + b"\n" + self.stderr


def decode_request(data: bytes, pid: int = 0) -> Request:
    """Decode a shim's ``GGI2`` request (format in ``shim.c``)."""
    fields = data.split(b"\0")
    if fields[0] != b"GGI2":
        raise ValueError("not a gg-infer shim request")
    text = [f.decode("utf-8", "surrogateescape") for f in fields]
    cwd, program = text[1], text[2]
    argc = int(text[3])
    argv = text[4 : 4 + argc]
    envc = int(text[4 + argc])
    env = {}
    for entry in text[5 + argc : 5 + argc + envc]:
        name, _, value = entry.partition("=")
        env[name] = value
    return Request(cwd, argv, without_preload(env), program=program, pid=pid)


def without_preload(env: dict[str, str]) -> dict[str, str]:
    """``env`` as the tool would have it without gg-infer: our library out of LD_PRELOAD
    (the models run the real preprocessor and driver with this environment)."""
    ours = env.get("GG_INFER_PRELOAD")
    if not ours or "LD_PRELOAD" not in env:
        return env
    rest = [entry for entry in env["LD_PRELOAD"].replace(" ", ":").split(":") if entry and entry != ours]
    cleaned = {k: v for k, v in env.items() if k != "LD_PRELOAD"}
    if rest:
        cleaned["LD_PRELOAD"] = ":".join(rest)
    return cleaned


def handle(ctx: ModelContext, request: Request, stop_pid: int | None = None) -> Reply:
    """Run the model for one tool call; never raises.

    ``stop_pid`` ends the walk up the caller's processes (default: this process, the
    gg-infer that started the build)."""
    tool = request.tool
    kind = tool_kind(tool)
    started = time.monotonic()
    stop = os.getpid() if stop_pid is None else stop_pid
    configure = configure_step(request.pid, request.cwd, request.argv, stop)
    if configure:
        ctx.log(f"real\t{tool}\t{configure}\t{' '.join(request.argv)}")
        return Reply(exec_real=True)
    consumed = consumed_output(request.pid, stop)
    if consumed:
        # a RunReal whose inputs may be placeholders (`ar t libx.a` in a recipe's $(...)):
        # forced first like a fallback's, but not counted
        return run_locally(ctx, request, tool, "", consumed, count=False)
    try:
        probe = probe_reason(request.argv, request.cwd)
        if probe:
            raise RunReal(probe)
        memo_key = None
        if ctx.memo is not None:
            memo_key = ctx.memo.key(tool, request.program, request.cwd, request.argv, request.env)
            replayed = ctx.memo.replay(memo_key) if memo_key is not None else None
            if replayed is not None:
                ctx.log(f"model\t{tool}\t{(time.monotonic() - started) * 1000:.1f}ms memo\t{' '.join(request.argv)}")
                stderr, thunks = replayed
                return Reply(exec_real=False, status=0, stderr=stderr + _kept_output(ctx, thunks, request))
        with ctx.observer.recording() as record:
            stderr = _model(ctx, request, tool, kind)
        if memo_key is not None and ctx.memo is not None:
            ctx.memo.remember(memo_key, record, stderr)  # the model's own stderr: kept output is looked up anew
        stderr += _kept_output(ctx, record.thunks, request)
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


def _kept_output(ctx: ModelContext, thunks: list[str], request: Request) -> bytes:
    """What the call's thunks printed when gg-force ran them (a warm build's warnings)."""
    if ctx.outputs is None or not thunks:
        return b""
    return ctx.outputs.of(thunks, ctx.paths, request.cwd, request.argv)


def _model(ctx: ModelContext, request: Request, tool: str, kind: str | None) -> bytes:
    """Run the model for ``tool``; what the tool would print on stderr."""
    if kind in GCC_KINDS:
        GccModel(ctx, request.argv, request.cwd, request.env, program=request.program_path).run()
        return b""
    name = binutils_name(tool)
    if name == "ar":
        return binutils_model.run_ar(ctx, request.argv, request.cwd)
    if name == "ranlib":
        binutils_model.run_ranlib(ctx, request.argv, request.cwd)
    elif name == "strip":
        binutils_model.run_strip(ctx, request.argv, request.cwd)
    elif name == "objcopy":
        binutils_model.run_objcopy(ctx, request.argv, request.cwd)
    elif not candidate_inputs(request.argv, request.cwd):
        raise RunReal("no model for this tool, and no file arguments (a query)")
    else:
        raise Unmodelled("no model for this tool", label="")
    return b""


def run_locally(ctx: ModelContext, request: Request, tool: str, label: str, detail: str,
                count: bool = True) -> Reply:
    """The fallback for an unmodelled call: force its placeholder inputs, then let the
    shim exec the real tool (counted under ``tool label`` for the summary line unless
    ``count`` is false: a result the build reads at once is a RunReal, not a fallback).
    If a placeholder cannot be forced, the call fails with one line: the real tool never
    runs on placeholder text."""
    command = " ".join(request.argv)
    try:
        placeholders = placeholders_among(candidate_inputs(request.argv, request.cwd, request.env))
        forced = ctx.forcer.force(placeholders) if placeholders else 0
    except ForceError as exc:
        ctx.log(f"fail\t{tool}\t{detail}\tforcing inputs failed: {exc}\t{command}")
        message = f"gg-infer: cannot run {tool} for real: forcing its inputs failed: {exc}\n"
        return Reply(exec_real=False, status=1, stderr=message.encode("utf-8", "replace"))
    if count:
        ctx.local_runs.record(f"{tool} {label}".strip())
    else:
        ctx.local_runs.record_read_at_once(tool)
    note = f" (forced {forced} input{'s' if forced != 1 else ''})" if forced else ""
    if len(placeholders) > forced:
        note += f" (waited for {len(placeholders) - forced} forced by another call)"
    ctx.log(f"real\t{tool}\t{detail}{note}\t{command}")
    return Reply(exec_real=True)
