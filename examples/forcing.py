"""What the SDK examples share: the gg-force options they forward, and forcing a ref."""

from __future__ import annotations

import argparse


def add_force_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--placeholder", "-C", metavar="PATH", help=f"also write a placeholder for {what} here")
    parser.add_argument("--force", action="store_true", help=f"force it with gg-force and print {what}")
    parser.add_argument("-j", "--jobs", type=int, help="gg-force -j")
    parser.add_argument("--engine", choices=("local", "lambda"), help="gg-force --engine")
    parser.add_argument("--trace", metavar="FILE", help="gg-force --trace")
    parser.add_argument("-q", "--quiet", action="store_true", help="gg-force --quiet")


def force(ref: str, args: argparse.Namespace) -> int:
    """Run gg-force on ``ref`` (and the placeholder, if any) with the forwarded options."""
    from executor import force_cli

    options = [ref]
    if args.jobs:
        options += ["-j", str(args.jobs)]
    if args.engine:
        options += ["--engine", args.engine]
    if args.trace:
        options += ["--trace", args.trace]
    if args.quiet:
        options.append("--quiet")
    if args.placeholder:
        options.append(args.placeholder)
    return force_cli.main(options)
