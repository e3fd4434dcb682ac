"""The engine interface the scheduler dispatches to.

An engine runs many jobs at once (``slots``), may refuse a thunk it cannot take
(:meth:`Engine.refuses` — e.g. too large for Lambda), and reports two kinds of
failure differently: :class:`~executor.execution.ExecutionFailed` (the function
failed; it would fail anywhere) and :class:`~executor.execution.InfrastructureError`
(anything else; the scheduler retries with back-off, then falls back or gives up).

Data movement is the engine's job: before it runs a thunk it makes the inputs
available where the thunk will run (a local engine fetches missing blobs from the
remote storage, a Lambda engine uploads missing ones), and it returns output IDs. A
thunk output (tail call) and every thunk the function created must end up in the
local store, because the scheduler reads them there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .engines import DEFAULT_THUNK_TIMEOUT  # defined there (see its comment), part of this interface

if TYPE_CHECKING:  # types only: a run that executes nothing (all cached) never imports these
    from ir.storage import RemoteStorage
    from ir.thunk import Thunk

    from .execution import ExecutionResult

__all__ = ["DEFAULT_THUNK_TIMEOUT", "Engine", "Job"]


@dataclass(frozen=True)
class Job:
    thunk_id: str
    thunk: Thunk
    attempt: int = 1
    # Seconds the thunk may run: its own timeout, else the run's default. None only for
    # callers outside the scheduler (then the thunk's own timeout, if any, applies).
    timeout: float | None = None


class Engine(Protocol):
    name: str
    slots: int
    # The remote storage this engine reads inputs from and may leave results in (the
    # Lambda engine: its S3 bucket), or None if results are always in the local store.
    # A run with such an engine counts a reduction as cached even when its value is
    # only remote, and its fallback engine is opened with this storage to fetch from.
    # Read-only here: engines set it when they are made (a property or an attribute).
    @property
    def remote(self) -> RemoteStorage | None: ...

    def refuses(self, job: Job) -> str | None:
        """None if this engine can take ``job``; otherwise why not (one line)."""
        ...

    async def run(self, job: Job) -> ExecutionResult:
        """Run ``job`` once, within ``job.timeout``. Raise ExecutionFailed (final),
        InfrastructureError (retried; ResourceExhausted: moved to the fallback at once)
        or ConfigError (the run stops) on failure."""
        ...

    async def close(self) -> None:
        ...
