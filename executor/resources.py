"""Admission control for local work: never start more than free cores and memory allow.

A thunk with a resource hint claims ``cpus`` cores (default 1) and ``memory_mib``
(default 0); it waits until the claim fits. A claim larger than the whole machine is
clamped to the machine, so it runs alone instead of waiting forever; that is the
difference between "waits rather than pushing the machine into swap" and deadlock.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass


def available_memory_mib() -> int:
    """MemAvailable from /proc/meminfo (what can be used without swapping)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 1 << 20


@dataclass(frozen=True)
class Capacity:
    cpus: int
    memory_mib: int

    @classmethod
    def of_this_machine(cls) -> Capacity:
        return cls(os.cpu_count() or 1, available_memory_mib())


class ResourceGate:
    def __init__(self, capacity: Capacity):
        self.capacity = capacity
        self._free_cpus = capacity.cpus
        self._free_memory = capacity.memory_mib
        self._changed = asyncio.Condition()

    def _clamp(self, cpus: int, memory_mib: int) -> tuple[int, int]:
        return min(max(cpus, 1), self.capacity.cpus), min(max(memory_mib, 0), self.capacity.memory_mib)

    @asynccontextmanager
    async def claim(self, cpus: int, memory_mib: int):
        cpus, memory_mib = self._clamp(cpus, memory_mib)
        async with self._changed:
            await self._changed.wait_for(lambda: cpus <= self._free_cpus and memory_mib <= self._free_memory)
            self._free_cpus -= cpus
            self._free_memory -= memory_mib
        try:
            yield
        finally:
            async with self._changed:
                self._free_cpus += cpus
                self._free_memory += memory_mib
                self._changed.notify_all()
