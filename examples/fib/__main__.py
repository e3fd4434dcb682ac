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

from ..forcing import add_force_options, force
from .fib import fib


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.fib", description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="which fibonacci number (fib(70) = 190392490709135)")
    add_force_options(parser, "the result")
    args = parser.parse_args(argv)
    if args.n < 0:
        parser.error("N must be >= 0")
    store = LocalStore.locate(create=True)
    ref = sdk.save(fib(args.n), store, args.placeholder)
    if not args.force:
        print(ref)
        return 0
    status = force(ref, args, parser.prog)
    if status == 0:
        print(f"fib({args.n}) = {sdk.read_result(store, ref, int)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
