"""``python -m examples.fib N``: build the fib(N) thunk; with ``--force``, also run it.

Without ``--force`` it saves the thunk (and everything it needs) into the store
(``$GG_DIR`` or the nearest ``.gg``, created in the current directory if there is
none), writes a placeholder if ``--placeholder`` is given, and prints the thunk ID,
ready for ``gg-force``. With ``--force`` it runs gg-force on it and prints the number.
"""

from __future__ import annotations

import argparse
import sys

from ir import sdk
from ir.store import LocalStore

from .fib import fib


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.fib", description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="which fibonacci number (fib(70) = 190392490709135)")
    parser.add_argument("--placeholder", "-C", metavar="PATH", help="also write a placeholder for the result here")
    parser.add_argument("--force", action="store_true", help="force the thunk with gg-force and print the result")
    parser.add_argument("-j", "--jobs", type=int, help="gg-force -j")
    parser.add_argument("--engine", choices=("local", "lambda"), help="gg-force --engine")
    parser.add_argument("--trace", metavar="FILE", help="gg-force --trace")
    parser.add_argument("-q", "--quiet", action="store_true", help="gg-force --quiet")
    args = parser.parse_args(argv)
    if args.n < 0:
        parser.error("N must be >= 0")
    store = LocalStore.locate(create=True)
    ref = sdk.save(fib(args.n), store, args.placeholder)
    if not args.force:
        print(ref)
        return 0
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
    status = force_cli.main(options)
    if status == 0:
        print(f"fib({args.n}) = {sdk.read_result(store, ref, int)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
