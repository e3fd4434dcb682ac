"""``gg-force`` (and ``gg force``, ``gg-force-and-run``): force targets to real files.

Exit status (the one mapping, see :data:`EXIT`): 0 when every target was produced, 1
when a thunk failed, a setting is wrong (one line naming it) or the run was stopped,
2 for a usage error, 130 when interrupted. Errors are one paragraph on stderr, never a
traceback; ``GG_DEBUG=1`` re-raises unexpected errors for developers. Work that ran on
the fallback engine instead of the one asked for is said in one line per reason.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ir.cli import USER_ERRORS, CliError
from ir.errors import ConfigError
from ir.store import LocalStore, MissingBlob

from .engine import DEFAULT_THUNK_TIMEOUT, Engine
from .local_engine import LocalEngine
from .observe import RunObserver
from .progress import ProgressDisplay
from .scheduler import ForceConfig, ForceFailed, Scheduler
from .targets import Target, TargetError, materialize, parse_target, thin_archive_placeholders
from .trace import TraceWriter

ENGINES = ("local", "lambda")
EXIT = {"ok": 0, "failed": 1, "usage": 2, "interrupted": 130}


@dataclass
class Summary:
    targets: int
    written: int
    executed: int
    elapsed: float
    fallback: list[str]


class UsageError(Exception):
    """A bad option or environment variable: one line, exit status 2."""


def resolve_engine(args) -> str:
    """``--engine``, else ``$GG_ENGINE``, else local; both validated the same way."""
    if args.engine is not None:
        return args.engine
    name = os.environ.get("GG_ENGINE") or "local"
    if name not in ENGINES:
        raise UsageError(f"GG_ENGINE={name!r} is not an engine (choose from {', '.join(ENGINES)})")
    return name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("targets", nargs="+", metavar="TARGET", help="placeholder file, thunk ID, or THUNK#tag")
    parser.add_argument("-j", "--jobs", type=int, default=None,
                        help="concurrent thunks per engine (default: cores for local, 64 for lambda)")
    parser.add_argument("--engine", choices=ENGINES, default=None,
                        help="where thunks run (default: $GG_ENGINE or local); lambda falls back to local")
    parser.add_argument("--no-fallback", action="store_true",
                        help="never run on the local engine what was meant for lambda: fail instead")
    parser.add_argument("--default-timeout", type=float, default=DEFAULT_THUNK_TIMEOUT, metavar="SECONDS",
                        help=f"time limit of a thunk that sets none (default {DEFAULT_THUNK_TIMEOUT:g})")
    parser.add_argument("-k", "--keep-going", action="store_true",
                        help="after a failure, finish every branch that does not depend on it")
    parser.add_argument("--trace", type=Path, metavar="FILE", help="append one JSON line per event to FILE")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--progress", choices=("auto", "bar", "lines"), default="auto")
    parser.add_argument("--max-attempts", type=int, default=4, metavar="N",
                        help="attempts per engine for infrastructure failures (default 4)")
    parser.add_argument("--no-speculate", action="store_true", help="never duplicate straggling thunks")
    parser.add_argument("--speculate-after", type=float, default=5.0, metavar="SECONDS",
                        help="earliest time a straggler is duplicated (default 5)")
    parser.add_argument("--print", dest="print_ids", action="store_true",
                        help="print 'TARGET VALUE_ID' for every target")


async def _build_engines(args, store: LocalStore) -> tuple[list[Engine], Engine | None, object | None]:
    """(engines in order of preference, fallback engine, remote storage or None).

    The Lambda engine is checked before anything runs (:meth:`LambdaEngine.preflight`):
    a wrong setting stops the run here with one line, never as a quiet local build.
    """
    local_slots = args.jobs or os.cpu_count() or 1
    if args.engine == "local":
        return [LocalEngine(store, local_slots)], None, None
    from .lambda_engine import build_lambda_engine

    engine, remote = build_lambda_engine(store, args.jobs, os.environ)
    try:
        await engine.preflight()
    except BaseException:
        await engine.close()
        await remote.close()
        raise
    fallback = None if args.no_fallback else LocalEngine(store, os.cpu_count() or 1, remote=remote)
    return [engine], fallback, remote


async def _materialize_or_rebuild(store: LocalStore, scheduler: Scheduler, target: Target, value_id: str,
                                  remote) -> bool:
    """Write a target; a value gone from every store is rebuilt by its producer first
    (a bucket's expiry rule makes that normal), as the scheduler does for inputs."""
    try:
        return await materialize(store, target, value_id, remote)
    except MissingBlob as missing:
        if not await scheduler.rebuild(missing.ident):
            raise
    return await materialize(store, target, value_id, remote)


async def force_targets(args, store: LocalStore) -> Summary:
    started = time.monotonic()
    targets: list[Target] = [parse_target(text) for text in args.targets]
    real = [t for t in targets if t.ref is None]
    for target in real:
        members = thin_archive_placeholders(target)
        targets += members
        if args.quiet:
            continue
        if members:
            print(f"gg-force: {target.text} is a thin archive; forcing its {len(members)} placeholder member(s)",
                  file=sys.stderr)
        else:
            print(f"gg-force: {target.text} is already a real file", file=sys.stderr)
    refs = sorted({t.ref for t in targets if t.ref is not None})
    engines, fallback, remote = await _build_engines(args, store)
    progress = None if args.quiet or not refs else ProgressDisplay(args.progress)
    observer = RunObserver(TraceWriter(args.trace), progress)
    config = ForceConfig(keep_going=args.keep_going, max_attempts=max(1, args.max_attempts),
                         speculate=not args.no_speculate, speculate_min=args.speculate_after,
                         default_timeout=args.default_timeout)
    scheduler = Scheduler(store, engines, fallback, config, observer, results_may_be_remote=remote is not None)
    written = 0
    status = "failed"
    try:
        try:
            results = await scheduler.force(refs)
        except ForceFailed as failed:
            # Targets that did reduce are still written: nothing done is thrown away.
            for target in targets:
                if target.ref in failed.results:
                    await _materialize_or_rebuild(store, scheduler, target, failed.results[target.ref], remote)
            raise
        for target in targets:
            if target.ref is not None:
                written += await _materialize_or_rebuild(store, scheduler, target, results[target.ref], remote)
                if args.print_ids:
                    print(f"{target.text} {results[target.ref]}")
        status = "ok"
    finally:
        fallback_lines = scheduler.fallback_summary()
        for line in fallback_lines:  # said even with --quiet: the result came by another path
            print(f"{args.prog}: {line}", file=sys.stderr)
        observer.event("done", elapsed=round(time.monotonic() - started, 6), status=status,
                       executed=scheduler.executed, ran_on=scheduler.ran_on, fallback=fallback_lines)
        observer.close()
        for engine in {id(e): e for e in [*engines, *([fallback] if fallback else [])]}.values():
            await engine.close()
        if remote is not None:
            await remote.close()
    return Summary(len(targets), written, scheduler.executed, time.monotonic() - started, fallback_lines)


async def _run_cancellable(coro):
    """Run ``coro``; SIGINT/SIGTERM cancel it, which kills every running thunk."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        return await task
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def run_force(args, prog: str = "gg-force") -> int:
    args.prog = prog
    try:
        if not args.default_timeout > 0:
            raise UsageError(f"--default-timeout {args.default_timeout:g} must be a positive number of seconds")
        args.engine = resolve_engine(args)
        store = LocalStore.locate()
        summary = asyncio.run(_run_cancellable(force_targets(args, store)))
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT["usage"]
    except ConfigError as exc:  # before USER_ERRORS: some are StoreErrors too
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT["failed"]
    except ForceFailed as failed:
        for failure in failed.failures:
            print(f"{prog}: error: {failure.report}", file=sys.stderr)
        return EXIT["failed"]
    except asyncio.CancelledError:
        print(f"{prog}: interrupted; finished reductions are kept, run again to resume", file=sys.stderr)
        return EXIT["interrupted"]
    except (TargetError, CliError, *USER_ERRORS) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT["failed"]
    except Exception as exc:  # an internal error: one line, not a traceback
        if os.environ.get("GG_DEBUG"):
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {exc} (set GG_DEBUG=1 for details)",
              file=sys.stderr)
        return EXIT["failed"]
    if not args.quiet:
        print(f"{prog}: {summary.targets} target(s), {summary.written} written, "
              f"{summary.executed} thunk(s) run, {summary.elapsed:.2f}s", file=sys.stderr)
    return EXIT["ok"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gg-force", description=(
        "Force placeholders (or thunk IDs) to their real content: run what is not yet "
        "reduced, locally or on Lambda, and write the results where the placeholders were."))
    add_arguments(parser)
    return run_force(parser.parse_intermixed_args(argv))


def add(sub) -> None:
    """The ``gg force`` subcommand."""
    parser = sub.add_parser("force", help="force placeholders or thunks (same as gg-force)")
    add_arguments(parser)
    parser.set_defaults(handler=lambda args: run_force(args, "gg force"))


def force_and_run_main(argv: list[str] | None = None) -> int:
    """``gg-force-and-run PLACEHOLDER [ARGS...]``: what executing a placeholder does.

    The shebang line of a placeholder runs this with the placeholder's path first: the
    placeholder is forced in place, then the real program replaces this process.
    """
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: gg-force-and-run PLACEHOLDER [ARGS...]", file=sys.stderr)
        return EXIT["usage"]
    path = argv[0]
    parser = argparse.ArgumentParser(prog="gg-force-and-run")
    add_arguments(parser)
    args = parser.parse_args(["--quiet", path])
    status = run_force(args, "gg-force-and-run")
    if status != 0:
        return status
    os.execv(path, [path, *argv[1:]])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
