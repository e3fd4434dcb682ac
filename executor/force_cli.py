"""``gg-force`` (and ``gg force``, ``gg-force-and-run``): the command line over
:func:`executor.force.force`.

Exit status (the one mapping of :mod:`ir.cli_errors`): 0 when every target was
produced, 1 when a thunk failed, a setting is wrong (one line naming it) or the run was
stopped, 2 for a usage error (an unknown ``--engine``/``GG_ENGINE`` among them), 130
when interrupted. Errors are one paragraph on stderr; the traceback only with
``--debug``/``GG_DEBUG=1``. Work that ran on the fallback engine instead of the one
asked for is said in one line per reason.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from ir.cli_errors import EXIT_OK, EXIT_USAGE, add_debug_option, run_command
from ir.errors import UsageError

from .engines import DEFAULT_THUNK_TIMEOUT, ENGINES
from .force import ForceOptions, run, run_arriving
from .remote_results import RemoteResultsMode, resolve_mode

DESCRIPTION = ("Force placeholders (or thunk IDs) to their real content: run what is not yet "
               "reduced, locally, on Lambda or on any registered engine, and write the results "
               "where the placeholders were.")
INTERRUPTED_HINT = "finished reductions are kept, run again to resume"


def resolve_engines(requested: list[str] | None, environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """``--engine`` (repeatable), else ``$GG_ENGINE``, else local; both checked against
    the engine registry the same way (an unknown name is a usage error)."""
    if requested:
        return tuple(ENGINES.check(name, "--engine ") for name in requested)
    name = environ.get("GG_ENGINE") or "local"
    return (ENGINES.check(name, "GG_ENGINE="),)


def add_arguments(parser: argparse.ArgumentParser, targets: bool = True) -> None:
    if targets:
        parser.add_argument("targets", nargs="*", metavar="TARGET", help="placeholder file, thunk ID, or THUNK#tag")
        parser.add_argument("--stdin", dest="from_stdin", action="store_true",
                            help="instead of TARGETs: force thunk IDs read from stdin, one per line, as they "
                                 "arrive, until a line 'end' (end of input without it stops the run); nothing "
                                 "is written (gg-infer's early forcing uses this)")
    parser.add_argument("-j", "--jobs", type=int, default=None,
                        help="concurrent thunks per engine (default: cores for local, 64 for lambda)")
    parser.add_argument("--engine", action="append", default=None, metavar="NAME",
                        help="where thunks run; repeat for engines in order of preference (default: "
                             "$GG_ENGINE or local; built in: local, lambda; packages add more through "
                             "the gg.engines entry points)")
    parser.add_argument("--fallback-engine", default="local", metavar="NAME",
                        help="where work goes that the engines refuse or cannot run (default: local)")
    parser.add_argument("--no-fallback", action="store_true",
                        help="never move work to the fallback engine: fail instead")
    parser.add_argument("--default-timeout", type=float, default=DEFAULT_THUNK_TIMEOUT, metavar="SECONDS",
                        help=f"time limit of a thunk that sets none (default {DEFAULT_THUNK_TIMEOUT:g})")
    parser.add_argument("-k", "--keep-going", action="store_true",
                        help="after a failure, finish every branch that does not depend on it")
    parser.add_argument("--trace", type=Path, metavar="FILE", help="append one JSON line per event to FILE")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--progress", choices=("auto", "bar", "lines"), default="auto",
                        help="progress display: a bar on a terminal, lines otherwise (default auto)")
    parser.add_argument("--max-attempts", type=int, default=4, metavar="N",
                        help="attempts per engine for infrastructure failures (default 4)")
    parser.add_argument("--no-speculate", action="store_true", help="never duplicate straggling thunks")
    parser.add_argument("--speculate-after", type=float, default=5.0, metavar="SECONDS",
                        help="earliest time a straggler is duplicated (default 5)")
    parser.add_argument("--remote-results", default=None, metavar="MODE",
                        choices=[m.value for m in RemoteResultsMode],
                        help="share reductions through the remote store (GG_STORAGE_URI): read-write "
                             "(use and write them), read-only (use, never write: untrusted runners), off "
                             "(default: $GG_REMOTE_RESULTS or read-write)")
    parser.add_argument("--no-remote-results", action="store_true",
                        help="ignore reductions in the remote store and write none (--remote-results off)")
    parser.add_argument("--print", dest="print_ids", action="store_true",
                        help="print 'TARGET VALUE_ID' for every target")
    add_debug_option(parser)


def options_from(args: argparse.Namespace, prog: str) -> ForceOptions:
    return ForceOptions(
        engines=resolve_engines(args.engine), fallback=None if args.no_fallback else args.fallback_engine,
        jobs=args.jobs, default_timeout=args.default_timeout, keep_going=args.keep_going, trace=args.trace,
        quiet=args.quiet, progress=args.progress, max_attempts=args.max_attempts,
        speculate=not args.no_speculate, speculate_after=args.speculate_after, prog=prog,
        remote_results=resolve_mode(args.remote_results, args.no_remote_results))


def _force(args: argparse.Namespace, prog: str) -> int:
    if getattr(args, "from_stdin", False):
        if args.targets:
            raise UsageError("TARGETs and --stdin exclude each other")
        summary = run_arriving(sys.stdin.buffer, options_from(args, prog))
    elif not args.targets:
        raise UsageError("no TARGET given (placeholder file, thunk ID, or THUNK#tag)")
    else:
        summary = run(args.targets, options_from(args, prog))
    if args.print_ids:
        for text, value in summary.results.items():
            print(f"{text} {value}")
    if not args.quiet:
        remote = f", {summary.remote_hits} from remote results" if summary.remote_hits else ""
        # A run whose work a concurrent run did must not look like it lost work.
        peer = f", {summary.peer_reduced} reduced by a concurrent run" if summary.peer_reduced else ""
        meanwhile = f" ({summary.written_meanwhile} already by a concurrent run)" if summary.written_meanwhile else ""
        print(f"{prog}: {summary.targets} target(s), {summary.written} written{meanwhile}, "
              f"{summary.executed} thunk(s) run{remote}{peer}, {summary.elapsed:.2f}s", file=sys.stderr)
        if (traffic := summary.traffic_line()) is not None:
            print(f"{prog}: {traffic}", file=sys.stderr)
    return EXIT_OK


def run_force(args: argparse.Namespace, prog: str = "gg-force") -> int:
    return run_command(prog, lambda: _force(args, prog), args, INTERRUPTED_HINT)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gg-force", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_force(build_parser().parse_intermixed_args(argv))


def add(sub) -> None:
    """The ``gg force`` subcommand."""
    parser = sub.add_parser("force", help="force placeholders or thunks (same as gg-force)", description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(handler=lambda args: run_force(args, "gg force"))


def build_force_and_run_parser() -> argparse.ArgumentParser:
    """Only for ``--help`` and usage: the arguments are taken as they come (ARGS may
    start with ``-``), see :func:`force_and_run_main`."""
    parser = argparse.ArgumentParser(
        prog="gg-force-and-run", usage="gg-force-and-run PLACEHOLDER [ARGS...]",
        description=("Force PLACEHOLDER in place, then run it with ARGS. A placeholder's "
                     "shebang line runs this, so running a placeholder runs the real program. "
                     "The engine comes from $GG_ENGINE (default local)."))
    parser.add_argument("placeholder", metavar="PLACEHOLDER", help="the placeholder to force, then run")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="passed to the program")
    return parser


def force_and_run_main(argv: list[str] | None = None) -> int:
    """``gg-force-and-run PLACEHOLDER [ARGS...]``: what executing a placeholder does.

    The shebang line of a placeholder runs this with the placeholder's path first: the
    placeholder is forced in place (quietly, with gg-force's settings from the
    environment), then the real program replaces this process.
    """
    parser = build_force_and_run_parser()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        parser.print_help()
        return EXIT_OK
    if not argv:
        parser.print_usage(sys.stderr)
        return EXIT_USAGE
    path = argv[0]
    force_parser = argparse.ArgumentParser(prog="gg-force-and-run")
    add_arguments(force_parser)
    args = force_parser.parse_args(["--quiet", "--", path])
    status = run_force(args, "gg-force-and-run")
    if status != 0:
        return status
    os.execv(path, [path, *argv[1:]])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
