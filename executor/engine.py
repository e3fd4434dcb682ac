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
from typing import Protocol

from ir.thunk import Thunk

from .execution import ExecutionResult


@dataclass(frozen=True)
class Job:
    thunk_id: str
    thunk: Thunk
    attempt: int = 1


class Engine(Protocol):
    name: str
    slots: int

    def refuses(self, job: Job) -> str | None:
        """None if this engine can take ``job``; otherwise why not (one line)."""
        ...

    async def run(self, job: Job) -> ExecutionResult:
        """Run ``job`` once. Raise ExecutionFailed or InfrastructureError on failure."""
        ...

    async def close(self) -> None:
        ...
