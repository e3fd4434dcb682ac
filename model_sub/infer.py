"""``gg-infer CMD...`` (and ``gg infer``): run a build with models in place of the tools.

It finds or creates the ``.gg`` store, builds (once, cached) the C shim, fills a shim
directory with gcc/g++/cc/c++/cpp/as/ld/ar/ranlib/strip links to it, starts the model
server on a unix socket, runs CMD with the shim directory first on PATH, and exits
with CMD's status. The build directory (for checkout-independent thunk names) is the
directory gg-infer starts in, or ``--root``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path

from ir.store import LocalStore, StoreError

from .context import ModelContext
from .launcher import ShimBuildError, make_shim_dir, shim_binary
from .server import ModelServer


def real_path_of(environ: dict[str, str]) -> str:
    """The PATH the models and real tools use: without any gg-infer shim directory."""
    if environ.get("GG_INFER_REAL_PATH"):
        return environ["GG_INFER_REAL_PATH"]
    return environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")


def run_infer(command: list[str], root: Path | None = None) -> int:
    store = LocalStore.locate(create=True)
    environ = dict(os.environ)
    real_path = real_path_of(environ)
    infer_dir = store.root / "infer"
    shim_dir = make_shim_dir(infer_dir / "bin", shim_binary(infer_dir, real_path))
    ctx = ModelContext.create(store, str(root or os.getcwd()), real_path)
    with tempfile.TemporaryDirectory(prefix="gg-infer-") as sock_dir, closing(ctx):
        socket_path = os.path.join(sock_dir, "models.sock")
        with ModelServer(ctx, socket_path):
            env = {**environ, "PATH": f"{shim_dir}:{real_path}", "GG_INFER_SOCKET": socket_path,
                   "GG_INFER_REAL_PATH": real_path}
            try:
                return subprocess.run(command, env=env).returncode
            except FileNotFoundError:
                print(f"gg-infer: {command[0]}: command not found", file=sys.stderr)
                return 127
            except KeyboardInterrupt:
                return 130
            finally:
                _print_local_runs(ctx)


def _print_local_runs(ctx: ModelContext) -> None:
    """One line saying which calls ran the real tool instead of becoming thunks."""
    try:
        hint = os.path.relpath(ctx.log_path)
    except ValueError:
        hint = str(ctx.log_path)
    line = ctx.local_runs.summary(hint if not hint.startswith("../..") else str(ctx.log_path))
    if line:
        print(line, file=sys.stderr)


def _parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--root", type=Path, help="build root for checkout-independent names (default: cwd)")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD...", help="the build command, e.g. make")
    return parser


def _handler(args: argparse.Namespace) -> int:
    if not args.command:
        print("gg-infer: no command given (e.g. gg-infer make)", file=sys.stderr)
        return 2
    try:
        return run_infer(args.command, args.root)
    except (StoreError, ShimBuildError, OSError) as exc:
        print(f"gg-infer: {exc}", file=sys.stderr)
        return 1


def add(subparsers) -> None:
    """The ``gg infer`` subcommand."""
    parser = subparsers.add_parser("infer", help="run a build with models writing thunks and placeholders")
    _parser(parser).set_defaults(handler=_handler)


def main(argv: list[str] | None = None) -> int:
    parser = _parser(argparse.ArgumentParser(prog="gg-infer", description=(
        "Run a build command (e.g. make) with models in place of gcc, g++, cc, ar, ranlib, "
        "strip and friends: they write thunks into .gg/ and placeholders where the outputs "
        "would be; then run gg-force on the targets."),
        epilog="example: gg-infer make -j8 && gg-force my-program"))
    return _handler(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
