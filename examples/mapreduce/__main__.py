"""``python -m examples.mapreduce [FILE...]``: word counts, one map thunk per file.

With no files it uses ``--chunks N`` chunks of a synthetic corpus. It saves the
thunks into the store (``$GG_DIR`` or the nearest ``.gg``, created here if none) and
prints the reduce thunk's ``#top`` reference, ready for ``gg-force``; with ``--force``
it forces it and prints the top words.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ir import sdk
from ir.store import LocalStore

from .corpus import make_chunks
from .wordcount import word_count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.mapreduce", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, metavar="FILE", help="text files (default: synthetic)")
    parser.add_argument("--chunks", type=int, default=16, metavar="N", help="synthetic chunks (default 16)")
    parser.add_argument("--top", type=int, default=10, metavar="N", help="how many words to list")
    parser.add_argument("--placeholder", "-C", metavar="PATH", help="also write a placeholder for the top list")
    parser.add_argument("--force", action="store_true", help="force it with gg-force and print the top words")
    parser.add_argument("-j", "--jobs", type=int, help="gg-force -j")
    parser.add_argument("--engine", choices=("local", "lambda"), help="gg-force --engine")
    parser.add_argument("--trace", metavar="FILE", help="gg-force --trace")
    parser.add_argument("-q", "--quiet", action="store_true", help="gg-force --quiet")
    args = parser.parse_args(argv)
    chunks: list[Path | bytes] = list(args.files) or list(make_chunks(args.chunks))
    store = LocalStore.locate(create=True)
    ref = sdk.save(word_count(chunks, top=args.top)["top"], store, args.placeholder)
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
        sys.stdout.write(sdk.read_result(store, ref, str))
    return status


if __name__ == "__main__":
    sys.exit(main())
