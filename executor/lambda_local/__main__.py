"""``python -m executor.lambda_local ...`` = ``gg lambda-local ...`` (no other subcommands)."""

import argparse
import sys

from ir.cli import run_handler

from .cli import add


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gg")
    add(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["lambda-local", *(sys.argv[1:] if argv is None else argv)])
    return run_handler(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
