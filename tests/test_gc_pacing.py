"""The scheduler's collection pacing is scoped to a run: thresholds come back afterwards,
also when two runs overlap and end in either order."""

from __future__ import annotations

import gc

from executor.gc_pacing import fewer_collections


def test_threshold_raised_for_the_block_and_restored() -> None:
    before = gc.get_threshold()
    with fewer_collections(young=before[0] + 1000):
        assert gc.get_threshold() == (before[0] + 1000, *before[1:])
    assert gc.get_threshold() == before


def test_overlapping_runs_leave_the_original_thresholds() -> None:
    before = gc.get_threshold()
    first, second = fewer_collections(young=before[0] + 1000), fewer_collections(young=before[0] + 1000)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first run ends while the second still runs
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before


def test_a_larger_threshold_is_kept() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(before[0] + 5000, *before[1:])
        with fewer_collections(young=before[0] + 1):
            assert gc.get_threshold()[0] == before[0] + 5000
    finally:
        gc.set_threshold(*before)
