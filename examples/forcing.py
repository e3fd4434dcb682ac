"""What the SDK examples share: the force options they offer, and forcing a ref.

They call :func:`executor.force.force` (the library behind gg-force) instead of
building a gg-force argv, and report errors the way every gg command does.
"""

from __future__ import annotations

import argparse

from ir.cli_errors import add_debug_option, run_command


def add_force_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--placeholder", "-C", metavar="PATH", help=f"also write a placeholder for {what} here")
    parser.add_argument("--force", action="store_true", help=f"force it and print {what}")
    parser.add_argument("-j", "--jobs", type=int, help="concurrent thunks per engine (as gg-force -j)")
    parser.add_argument("--engine", action="append", metavar="NAME",
                        help="where thunks run, repeatable (as gg-force --engine; default local)")
    parser.add_argument("--trace", metavar="FILE", help="append one JSON line per event to FILE")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    add_debug_option(parser)


def force(ref: str, args: argparse.Namespace, prog: str) -> int:
    """Force ``ref`` (and the placeholder, if any) with the chosen options; an exit status."""
    from executor.force import force as force_targets

    targets = [ref, *([args.placeholder] if args.placeholder else [])]

    def body() -> int:
        force_targets(targets, tuple(args.engine or ("local",)), jobs=args.jobs, trace=args.trace,
                      quiet=args.quiet, prog=prog)
        return 0

    return run_command(prog, body, args)
