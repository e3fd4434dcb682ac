"""Helpers for tests that build small thunk graphs out of /bin/sh scripts and force them."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from pathlib import Path

from executor.local_engine import LocalEngine
from executor.observe import RunObserver
from executor.scheduler import ForceConfig, Scheduler
from executor.trace import TraceWriter
from ir.store import LocalStore
from ir.thunk import Input, Thunk

VENV_BIN = Path(sys.executable).parent


class ShellThunks:
    """Builds thunks that run ``sh -c SCRIPT`` with named inputs."""

    def __init__(self, store: LocalStore):
        self.store = store
        self.shell = store.put_file(Path("/bin/sh"), executable=True)

    def thunk(self, script: str, values: dict[str, str] | None = None, thunks: dict[str, str] | None = None,
              outputs: tuple[str, ...] = ("out",), timeout_ms: int = 0, **extra) -> str:
        values = {name: self._as_id(v) for name, v in (values or {}).items()}
        thunk = Thunk(
            self.shell, ("sh", "-c", script), outputs,
            values=tuple(Input(ident, name) for name, ident in values.items()),
            thunks=tuple(Input(ref, name) for name, ref in (thunks or {}).items()),
            executables=(Input(self.shell),), timeout_ms=timeout_ms, **extra,
        )
        return self.store.put_thunk(thunk)

    def _as_id(self, value: str | bytes) -> str:
        return self.store.put_bytes(value if isinstance(value, bytes) else value.encode())

    def returning(self, thunk_id: str) -> str:
        """A thunk whose output is the thunk ``thunk_id``: a tail call."""
        encoded = base64.b64encode(self.store.read_bytes(thunk_id)).decode()
        return self.thunk(f"echo {encoded} | base64 -d > out")


def force(store: LocalStore, refs: list[str], jobs: int = 2, trace: Path | None = None,
          engines=None, fallback=None, **config) -> tuple[dict[str, str], Scheduler]:
    async def run():
        scheduler = Scheduler(store, engines or [LocalEngine(store, jobs)], fallback,
                              ForceConfig(**config), RunObserver(TraceWriter(trace)))
        try:
            return await scheduler.force(refs), scheduler
        finally:
            scheduler.observer.close()

    return asyncio.run(run())


def gg_env(store_root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["GG_DIR"] = str(store_root)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    return env


def gg_force(store_root: Path, *args: str, cwd: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "gg-force"), *args], env=gg_env(store_root), cwd=cwd,
                          capture_output=True, text=True, **kwargs)
