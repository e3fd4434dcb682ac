"""The ``gg`` command: one entry point whose subcommands come from each layer.

Subcommand modules are imported here, but each keeps its heavy imports (aiobotocore,
the scheduler) inside its handler, so ``gg hash`` starts as fast as Python allows.
"""

from __future__ import annotations

import argparse
import sys

from ir import cli as ir_cli
from ir.cli_errors import add_debug_option, run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gg", description=(
        "gg-py: describe builds as content-addressed thunks (gg infer) and force them locally, "
        "on Lambda or on any registered engine (gg force)."),
        epilog="Every subcommand has --help; errors are one line (--debug or GG_DEBUG=1 adds the traceback).")
    add_debug_option(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in ir_cli.SUBCOMMANDS:
        add(sub)
    for add in _optional_subcommands():
        add(sub)
    for child in sub.choices.values():  # `gg --debug SUB` and `gg SUB --debug` alike
        if "--debug" not in child._option_string_actions:
            add_debug_option(child)
    return parser


def _optional_subcommands():
    """Subcommands of the higher layers, registered by each layer's own module."""
    from . import subcommands

    return subcommands.SUBCOMMANDS


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("gg", lambda: args.handler(args), args)


if __name__ == "__main__":
    sys.exit(main())
