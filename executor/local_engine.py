"""The local engine: runs thunks as child processes through the execution core.

``slots`` is ``-j``; on top of that each job passes the :class:`ResourceGate`, so
thunks with large resource hints wait instead of over-committing the machine. When a
remote store is configured (the Lambda engine's S3), inputs that are not in the local
store are fetched from it first — that is what makes the local engine a fallback for
work whose inputs were produced remotely.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from ir.storage import RemoteStorage
from ir.store import LocalStore, StoreError

from .engine import Job
from .execution import ExecutionResult, InfrastructureError, execute, sweep_stale_runs
from .resources import Capacity, ResourceGate


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

    def refuses(self, job: Job) -> str | None:
        return None

    async def _fetch_missing(self, job: Job) -> None:
        missing = [i.id for i in (*job.thunk.values, *job.thunk.executables) if not self.store.has(i.id)]
        if not missing or self.remote is None:
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
                                     default_timeout=job.timeout, runtime_env=self.runtime_env)
            except OSError as exc:
                raise InfrastructureError(f"local engine: {exc}") from exc

    async def close(self) -> None:
        return None
