"""Fewer garbage collections while a run is under way.

A run holds one task, one coroutine frame and a few small objects per node at once (a
100,000-thunk graph: millions of tracked objects), and allocates more for every node it
finishes. CPython's default pacing starts a young collection every 700 allocations, and
each older one walks everything that survived: with the default thresholds the null-engine
bench (bench/bench_scheduler.py --null-engine) spent about a fifth of its CPU time in
the collector, which finds almost nothing (the scheduler's objects are freed by
reference counting). A larger first threshold makes collections rarer, not skipped:
cycles are still collected, and the thresholds are put back when the run ends.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

YOUNG_THRESHOLD = 50_000  # allocations between young collections during a run (default 700)


@contextlib.contextmanager
def fewer_collections(young: int = YOUNG_THRESHOLD) -> Iterator[None]:
    """Raise the first collection threshold to at least ``young`` for the block, then
    restore the thresholds that were set before (a caller's own choice is kept if larger).

    Two runs may overlap in one process (tasks on one loop), so the block ends in any
    order: it restores only if the thresholds are still the ones it set, which leaves
    the process with the original ones once the last overlapping run is done."""
    before = gc.get_threshold()
    during = (max(before[0], young), *before[1:])
    gc.set_threshold(*during)
    try:
        yield
    finally:
        if gc.get_threshold() == during:
            gc.set_threshold(*before)
