"""The README's main job (placeholder until gg-force lands): build a thunk and run it."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from executor.execution import execute
from ir.store import LocalStore
from ir.thunk import Input, Thunk


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore.init(Path(tmp) / ".gg")
        shell = store.put_file(Path("/bin/sh"), executable=True)
        text = store.put_bytes(b"hello from a thunk\n")
        thunk = Thunk(shell, ("sh", "-c", "tr a-z A-Z < in > out"), ("out",),
                      values=(Input(text, "in"),), executables=(Input(shell),))
        ident = store.put_thunk(thunk)
        result = asyncio.run(execute(ident, thunk, store))
        print(f"{ident} -> {result.outputs[0].id}")
        sys.stdout.write(store.read_bytes(result.outputs[0].id).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
