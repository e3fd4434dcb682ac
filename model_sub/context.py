"""Everything a model needs for one gg-infer run, passed explicitly (no globals)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ir.placeholder import read_placeholder, write_placeholder
from ir.store import LocalStore
from ir.thunk import Input, Thunk

from .deps import DepScanner
from .driver import Driver
from .paths import PathMap
from .toolchain import Toolchain

# Thunk environment: a fixed epoch makes __DATE__/__TIME__ reproducible (gcc reads
# SOURCE_DATE_EPOCH), and a fixed locale makes diagnostics stable.
THUNK_ENV = ("SOURCE_DATE_EPOCH=0", "LC_ALL=C")


@dataclass
class Inputs:
    """Inputs of one thunk being assembled."""

    values: set[Input] = field(default_factory=set)
    thunks: set[Input] = field(default_factory=set)


@dataclass
class ModelContext:
    store: LocalStore
    paths: PathMap
    real_path: str
    toolchain: Toolchain
    driver: Driver
    scanner: DepScanner
    log_path: Path
    _log_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, store: LocalStore, root: str, real_path: str) -> ModelContext:
        cache = store.root / "infer"
        return cls(
            store=store,
            paths=PathMap.for_root(root),
            real_path=real_path,
            toolchain=Toolchain(store, real_path),
            driver=Driver(cache / "driver", real_path),
            scanner=DepScanner(store, cache / "deps", real_path),
            log_path=cache / "log",
        )

    def log(self, line: str) -> None:
        """Why a call ran the real tool, etc.; one line per event in .gg/infer/log."""
        with self._log_lock:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8", errors="replace") as handle:
                handle.write(line.rstrip("\n") + "\n")

    def add_file(self, inputs: Inputs, host_path: str, name: str) -> None:
        """Add ``host_path`` as input ``name``: a thunk input if it is a placeholder."""
        placeholder = read_placeholder(Path(host_path))
        if placeholder is not None:
            inputs.thunks.add(Input(placeholder.ref, name))
        else:
            inputs.values.add(Input(self.store.put_file(host_path, executable=False), name))

    def is_placeholder(self, host_path: str) -> bool:
        return read_placeholder(Path(host_path)) is not None

    def put(self, function_hash: str, args: list[str], outputs: list[str], inputs: Inputs,
            executables: tuple[Input, ...]) -> str:
        thunk = Thunk(
            function_hash=function_hash,
            args=tuple(args),
            outputs=tuple(outputs),
            envars=THUNK_ENV,
            values=tuple(inputs.values),
            thunks=tuple(inputs.thunks),
            executables=executables,
        )
        return self.store.put_thunk(thunk)

    def place(self, host_path: str, ref: str, executable: bool) -> None:
        """Write the placeholder for an output (mode as the real file would have)."""
        path = Path(host_path)
        if path.is_symlink() or (path.exists() and not path.is_file()):
            os.unlink(path)
        write_placeholder(path, ref, mode=0o755 if executable else 0o644)
