"""``gg-infer CMD...`` (and ``gg infer``): run a build with models in place of the tools.

It finds or creates the ``.gg`` store, builds (once, cached) the C shim and the exec
interposition library (``preload.c``), fills a shim directory with gcc/g++/cc/c++/
cpp/as/ld/ar/ranlib/strip links to the shim, starts the model server on a unix
socket, runs CMD with the library in ``LD_PRELOAD``, and exits with CMD's status.
CMD is started through ``sh -c 'exec "$@"'`` so that its own exec goes through the
library like every later one (a tool given as CMD is modelled; a static CMD gets the
shim directory on PATH and a warning). The build directory (for checkout-independent
thunk names) is the directory gg-infer starts in, or ``--root``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

from ir.cli_errors import add_debug_option, run_command, shown_path
from ir.errors import UsageError
from ir.store_root import OUTPUT_LOG, locate_root, log_mark

from .early import EARLY_ENV, FIFO_ENV, EarlyForcing, Placements, early_jobs
from .launcher import make_shim_dir, preload_library, shim_binary
from .listener import Models, ModelServer
from .memo_observer import memo_enabled
from .toolnames import which
from .warm import ServerSettings

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads the name)
if TYPE_CHECKING:
    import argparse

    from .context import ModelContext
    from .warm_client import Handoff

# CMD's own exec happens in a (dynamic, preloaded) shell, so the library decides it too.
EXEC_THROUGH_SHELL = ("/bin/sh", "-c", 'exec "$@"', "gg-infer")


def real_path_of(environ: dict[str, str]) -> str:
    """The PATH the models and real tools use: without any gg-infer shim directory."""
    if environ.get("GG_INFER_REAL_PATH"):
        return environ["GG_INFER_REAL_PATH"]
    return environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")


def build_environment(environ: dict[str, str], real_path: str, socket_path: str, shim: Path, shim_dir: Path,
                      preload: Path) -> dict[str, str]:
    """The environment CMD runs in (the variables are read by preload.c and shim.c).

    PATH is the real PATH: dynamic programs are seen by the preload library, which
    puts the shim directory first on PATH only for static programs."""
    # the user's own entries; an outer gg-infer's library is dropped (its variables are replaced)
    outer = environ.get("GG_INFER_PRELOAD")
    user_preload = ":".join(entry for entry in environ.get("LD_PRELOAD", "").replace(" ", ":").split(":")
                            if entry and entry != outer)
    return {**environ, "PATH": real_path, "GG_INFER_SOCKET": socket_path, "GG_INFER_REAL_PATH": real_path,
            "GG_INFER_SHIM": str(shim), "GG_INFER_SHIM_DIR": str(shim_dir), "GG_INFER_PRELOAD": str(preload),
            "LD_PRELOAD": f"{preload}:{user_preload}" if user_preload else str(preload)}


def _found(program: str, path: str) -> bool:
    if "/" in program:
        return os.path.isfile(program) and os.access(program, os.X_OK)
    return which(program, path) is not None


def run_infer(command: list[str], root: Path | None = None, no_server: bool = False,
              early: str | None = None) -> int:
    """``early``: ``--early``'s value (else ``GG_INFER_EARLY`` decides; see early.py)."""
    store_root, _ = locate_root(create=True)
    assert store_root is not None  # with create, there always is one
    environ = {k: v for k, v in os.environ.items() if k not in ("GG_INFER_EXEC", FIFO_ENV)}
    if early is not None:
        environ[EARLY_ENV] = early
    early_jobs_wanted = early_jobs(environ)
    settings = ServerSettings.from_environ(environ, disabled=no_server)
    memo = memo_enabled(environ)
    real_path = real_path_of(environ)
    infer_dir = store_root / "infer"
    shim = shim_binary(infer_dir, real_path)
    shim_dir = make_shim_dir(infer_dir / "bin", shim, real_path)
    preload = preload_library(infer_dir, real_path)
    if not _found(command[0], real_path):
        print(f"gg-infer: {command[0]}: command not found", file=sys.stderr)
        return 127
    build_root = str(root or os.getcwd())
    output_mark = log_mark(str(store_root / OUTPUT_LOG))  # one stat: see _forced_output

    def load() -> ModelContext:
        # on the first request only: a build with no tool calls never pays for the models
        # (nor for the store's own code: the directory is all the start needs)
        from ir.store import LocalStore

        from .context import ModelContext

        return ModelContext.create(LocalStore.init(store_root), build_root, real_path, memo=memo,
                                   placements=Placements.from_environ(environ))

    models = Models(load)
    sock_dir = _private_directory()
    forcing: EarlyForcing | None = None
    try:
        if early_jobs_wanted:
            forcing = EarlyForcing(sock_dir, store_root, build_root, environ, early_jobs_wanted)
            environ.update(forcing.environment())  # for the models, here or in the server's worker
        handoff = _handoff(store_root, build_root, real_path, environ, settings)
        socket_path = os.path.join(sock_dir, "models.sock")
        try:
            with ModelServer(models, socket_path) as server:
                env = build_environment(environ, real_path, socket_path, shim, shim_dir, preload)
                statics: list[str] = []
                status: int | None = None  # None: interrupted
                try:
                    status = _run([*EXEC_THROUGH_SHELL, *command], env, server, handoff)
                except KeyboardInterrupt:
                    return 130
                finally:
                    lines, statics = handoff.finish() if handoff is not None else ([], [])
                    ctx = models.loaded
                    lines += local_run_lines(ctx) if ctx is not None else []
                    if handoff is not None and handoff.note:
                        lines.append(f"gg-infer: note: {handoff.note}")
                    if forcing is not None and ctx is not None and ctx.placements is not None:
                        ctx.placements.close()  # every placeholder is written: the models are done
                    if forcing is not None:
                        if status == 0:
                            lines += [line for line in [forcing.finish()] if line]
                        else:  # a failed or interrupted build: no waiting for its outputs
                            forcing.stop()
                            if status is not None:
                                lines.append("gg-infer: the build failed: early forcing stopped "
                                             "(what it finished is kept)")
                        forcing = None
                    _show(_forced_output(store_root, output_mark, build_root))
                    for line in lines:
                        print(line, file=sys.stderr)
                for program in dict.fromkeys([*statics, *server.notes.static_programs]):
                    print(f"gg-infer: warning: static program {program} ran; tools it runs by absolute path "
                          f"are not seen (see .gg/infer/log)", file=sys.stderr)
                return status
        finally:
            ctx = models.loaded
            if ctx is not None:
                ctx.close()
    finally:
        if forcing is not None:  # stopped before the build ran
            forcing.stop()
        try:
            os.rmdir(sock_dir)  # empty: the server removed its socket
        except OSError:
            pass


def _forced_output(store_root: Path, mark: tuple[int, int, int] | None, build_root: str) -> bytes:
    """What thunks forced during the build printed (early forcing, a fallback's inputs:
    their gg-force has no terminal; model_sub/replay.py), shown at its end. One ``stat``
    when nothing was kept meanwhile, the common case."""
    if log_mark(str(store_root / OUTPUT_LOG)) == mark:
        return b""
    from ir.store import LocalStore

    from .paths import PathMap
    from .replay import forced_during

    return forced_during(LocalStore(store_root), mark, PathMap.for_root(build_root), os.getcwd())


def _show(output: bytes) -> None:
    if output:
        sys.stderr.flush()
        sys.stderr.buffer.write(output)
        sys.stderr.buffer.flush()


def _handoff(store_root: Path, build_root: str, real_path: str, environ: dict[str, str],
             settings: ServerSettings) -> Handoff | None:
    """The warm server's hand-off for this run (None: models in this process, as asked)."""
    if not settings.enabled:
        return None
    from .warm_client import Handoff  # small; the server itself is contacted on the first tool call

    return Handoff(store_root, build_root, real_path, environ, settings)


def _private_directory() -> str:
    """A new directory only this user can enter, for the socket: in ``$TMPDIR`` (else
    /tmp), whose short path keeps the socket's name within the 108 bytes a unix socket
    name may have. (``tempfile.mkdtemp`` does the same, but importing ``tempfile`` costs
    a run that calls no tool as much as the rest of its start.)"""
    for base in dict.fromkeys((os.environ.get("TMPDIR") or "/tmp", "/tmp")):
        for _ in range(100):
            path = os.path.join(base, f"gg-infer-{os.urandom(6).hex()}")
            try:
                os.mkdir(path, 0o700)
                return path
            except FileExistsError:
                continue
            except OSError:
                break  # not a usable directory: try the next
    raise OSError(f"gg-infer: cannot create a directory for its socket in {os.environ.get('TMPDIR') or '/tmp'}")


# What subprocess resets in a child and posix_spawn does not: Python ignores SIGPIPE
# (and SIGXFSZ), and the build must see them at their defaults, as from a shell.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


def _run(argv: list[str], env: dict[str, str], server: ModelServer, handoff: Handoff | None = None) -> int:
    """Run ``argv``, serving model requests until it exits; its exit status, as a
    shell reports it (128 + signal).

    ``os.posix_spawn``, not ``subprocess``: one spawn, and no import of ``subprocess``
    (with ``selectors`` behind it) in a start that calls no tool. On ^C the child gets
    it too (same process group); it is given a moment to exit, then killed, as
    ``subprocess.run`` does."""
    pid = os.posix_spawn(argv[0], argv, env, setsigdef=_DEFAULT_SIGNALS)
    try:
        status = server.serve_until_exit(pid, handoff)
    except BaseException:
        _stop_child(pid)
        raise
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _stop_child(pid: int, grace: float = 0.25) -> None:
    import time

    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.01)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def local_run_lines(ctx: ModelContext) -> list[str]:
    """One line saying which calls ran the real tool instead of becoming thunks, one for
    the calls whose output the build read at once (run for real by design), and one for
    the compiles whose debug info names their directory "." and one for those whose
    files name a date macro (both: not as a plain build)."""
    hint = shown_path(ctx.log_path)
    runs = ctx.local_runs
    return [line for line in (runs.summary(hint), runs.read_at_once_summary(hint), runs.debug_dir_summary(),
                                          runs.dated_summary()) if line]


DESCRIPTION = ("Run a build command (e.g. make) with models in place of gcc, g++, cc, ar, ranlib, "
               "strip and friends: they write thunks into .gg/ and placeholders where the outputs "
               "would be; then run gg-force on the targets.")
EPILOG = ("example: gg-infer make -j8 && gg-force my-program. "
          "GG_INFER_MEMO=off models every call, also one whose recorded answer still holds.")


def _parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    import argparse

    parser.add_argument("--root", type=Path, help="build root for checkout-independent names (default: cwd)")
    parser.add_argument("--no-server", action="store_true",
                        help="model in this process, not in the store's warm model server (also GG_INFER_SERVER=off)")
    parser.add_argument("--early", nargs="?", const="on", default=None, metavar="JOBS",
                        help="force each output while the build still runs, with JOBS jobs (default: one per "
                             "core), and wait for it at the end; gg-force then finds it done "
                             "(also GG_INFER_EARLY=on|JOBS)")
    add_debug_option(parser)
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD...", help="the build command, e.g. make")
    return parser


def _infer(args: argparse.Namespace | SimpleNamespace) -> int:
    if not args.command:
        raise UsageError("no command given (e.g. gg-infer make)")
    return run_infer(args.command, args.root, no_server=args.no_server, early=args.early)


def add(subparsers) -> None:
    """The ``gg infer`` subcommand."""
    parser = subparsers.add_parser("infer", help="run a build with models writing thunks and placeholders",
                                   description=DESCRIPTION, epilog=EPILOG)
    _parser(parser).set_defaults(handler=_infer)


def build_parser() -> argparse.ArgumentParser:
    import argparse

    return _parser(argparse.ArgumentParser(prog="gg-infer", description=DESCRIPTION, epilog=EPILOG))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args: argparse.Namespace | SimpleNamespace
    if argv and not argv[0].startswith("-"):
        # `gg-infer CMD...`, the usual form: exactly what the parser returns for it (CMD
        # is a remainder), without importing argparse, which brings shutil, gettext and
        # locale with it: ~6 ms of a start that should take ~50. Options: the parser.
        args = SimpleNamespace(command=argv, root=None, no_server=False, early=None)
    else:
        args = build_parser().parse_args(argv)
    return run_command("gg-infer", lambda: _infer(args), args)


if __name__ == "__main__":
    sys.exit(main())
