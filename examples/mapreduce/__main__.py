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

from ..forcing import add_force_options, force
from .corpus import make_chunks
from .wordcount import word_count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.mapreduce", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, metavar="FILE", help="text files (default: synthetic)")
    parser.add_argument("--chunks", type=int, default=16, metavar="N", help="synthetic chunks (default 16)")
    parser.add_argument("--top", type=int, default=10, metavar="N", help="how many words to list")
    add_force_options(parser, "the top words")
    args = parser.parse_args(argv)
    chunks: list[Path | bytes] = list(args.files) or list(make_chunks(args.chunks))
    store = LocalStore.locate(create=True)
    ref = sdk.save(word_count(chunks, top=args.top)["top"], store, args.placeholder)
    if not args.force:
        print(ref)
        return 0
    status = force(ref, args, parser.prog)
    if status == 0:
        sys.stdout.write(sdk.read_result(store, ref, str))
    return status


if __name__ == "__main__":
    sys.exit(main())
