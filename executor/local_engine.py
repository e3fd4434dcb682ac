"""The local engine: runs thunks as child processes through the execution core.

``slots`` is ``-j``; on top of that each job passes the :class:`ResourceGate`, so
thunks with large resource hints wait instead of over-committing the machine. When a
remote store is configured (the Lambda engine's S3), inputs that are not in the local
store, or whose local copy fails verification, are fetched from it first — that is
what makes the local engine a fallback for work whose inputs were produced remotely.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

from ir.storage import RemoteStorage
from ir.store import CorruptBlob, LocalStore, StoreError

from .engine import Job
from .execution import ExecutionResult, InfrastructureError, execute, sweep_stale_runs
from .resources import Capacity, ResourceGate
from .rundirs import RunDirs


class LocalEngine:
    name = "local"

    def __init__(
        self,
        store: LocalStore,
        slots: int,
        remote: RemoteStorage | None = None,
        capacity: Capacity | None = None,
        scratch: Path | None = None,
    ):
        self.store = store
        self.slots = max(1, slots)
        self.remote = remote
        self.gate = ResourceGate(capacity or Capacity.of_this_machine())
        self.scratch = scratch or store.root / "work"
        self.runtime_env = {"GG_PYTHON": sys.executable}
        sweep_stale_runs(self.scratch)
        # Reused from one thunk to the next; up to two per slot, so each kind of thunk
        # (compiles, assembler runs) can keep a layout of its own (executor/rundirs.py).
        self.rundirs = RunDirs(self.scratch, limit=2 * self.slots)

    def refuses(self, job: Job) -> str | None:
        return None

    async def _fetch_missing(self, job: Job) -> None:
        if self.remote is None:
            return  # execute() verifies every input and reports a corrupt one
        inputs = {i.id for i in (*job.thunk.values, *job.thunk.executables)}
        for ident in inputs:  # verify first, so a corrupt local copy is fetched again
            if self.store.has(ident):
                with contextlib.suppress(CorruptBlob):  # dropped: fetched below
                    self.store.verify_for_use(ident)
        missing = sorted(i for i in inputs if not self.store.has(i))
        if not missing:
            return
        results = await asyncio.gather(*(self.remote.download(self.store, i) for i in missing),
                                       return_exceptions=True)
        for ident, result in zip(missing, results, strict=True):
            if isinstance(result, asyncio.CancelledError | StoreError):
                raise result  # StoreError: missing or corrupt remotely, the scheduler decides
            if isinstance(result, Exception):  # network and service errors are worth a retry
                raise InfrastructureError(f"fetching {ident}: {result}") from result

    async def run(self, job: Job) -> ExecutionResult:
        await self._fetch_missing(job)
        hint = job.thunk.resources
        async with self.gate.claim(hint.cpus or 1, hint.memory_mib):
            try:
                return await execute(job.thunk_id, job.thunk, self.store, self.scratch,
                                     default_timeout=job.timeout, runtime_env=self.runtime_env,
                                     rundirs=self.rundirs)
            except OSError as exc:
                raise InfrastructureError(f"local engine: {exc}") from exc

    async def close(self) -> None:
        self.rundirs.close()
