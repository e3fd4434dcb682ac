"""Critical-path-first dispatch: the order thunks start in follows their estimated
remaining path (deterministic: one slot, known durations; no timing is asserted)."""

from __future__ import annotations

import asyncio
import json

from executor.critical_path import DEFAULT_ESTIMATE, DurationEstimates, PrioritySlots
from executor.local_engine import LocalEngine
from executor.observe import RunObserver
from executor.scheduler import ForceConfig, Scheduler
from executor.trace import TraceWriter


def _three_branches(sh):
    """root <- G1 <- a, root <- G2 <- b, root <- G3 <- c: the leaves are alike, only the
    groups above them differ, so only the remaining path can order the leaves."""
    leaves = {name: sh.thunk(f"echo {name} > out") for name in "abc"}
    groups = {name: sh.thunk(f"cat in > out; echo {name} >> out", thunks={"in": leaves[name]}) for name in "abc"}
    root = sh.thunk("cat a b c > out", thunks=dict(groups))
    return root, groups, leaves


def _start_order(store, root, estimates, trace):
    async def run():
        scheduler = Scheduler(store, [LocalEngine(store, 1)], None, ForceConfig(speculate=False),
                              RunObserver(TraceWriter(trace)), estimates=estimates)
        try:
            await scheduler.force([root])
        finally:
            scheduler.observer.close()

    asyncio.run(run())
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    return [e["thunk"] for e in events if e["event"] == "started"]


def test_leaves_start_in_order_of_the_path_above_them(store, sh, tmp_path):
    root, groups, leaves = _three_branches(sh)
    function = store.load_thunk(root).function_hash
    for order, seconds in ((("b", "c", "a"), {"a": 1.0, "b": 9.0, "c": 5.0}),
                           (("a", "c", "b"), {"a": 9.0, "b": 1.0, "c": 5.0})):
        for ref in store.reduction_records():  # run everything again, with other estimates
            store.forget_reduction(ref)
        estimates = DurationEstimates()
        for name in "abc":
            estimates.record(groups[name], function, seconds[name])
            estimates.record(leaves[name], function, 0.5)  # own durations equal: only the path differs
        estimates.record(root, function, 0.5)
        started = _start_order(store, root, estimates, tmp_path / f"trace-{''.join(order)}.jsonl")
        leaf_starts = [ident for ident in started if ident in leaves.values()]
        assert leaf_starts == [leaves[name] for name in order]
        assert started[-1] == root and len(started) == 7


def test_estimates_persist_and_guess_by_function(tmp_path):
    path_root = tmp_path / ".gg"
    path_root.mkdir()
    first = DurationEstimates.of_store(path_root)
    assert first.estimate("Tx", "Vcc") == DEFAULT_ESTIMATE  # nothing measured yet
    first.record("T1", "Vcc", 2.0)
    first.record("T2", "Vcc", 4.0)
    first.record("T3", "Vld", 10.0)
    first.save()
    second = DurationEstimates.of_store(path_root)
    assert second.estimate("T3", "Vld") == 10.0  # measured before
    assert second.estimate("Tnew", "Vcc") == 3.0  # a new compile: the median of compiles
    assert second.estimate("Tnew", "Vother") == 4.0  # an unknown function: the median of all
    second.record("T4", "Vcc", 1.0)
    (path_root / "durations").write_text((path_root / "durations").read_text() + "garbage line\n")
    second.save()  # merges with what is on disk now; a bad line is skipped, not fatal
    third = DurationEstimates.of_store(path_root)
    assert [third.estimate(t, "Vcc") for t in ("T1", "T2", "T4")] == [2.0, 4.0, 1.0]


def test_priority_slots_grant_the_highest_waiting_priority_first():
    async def run():
        slots = PrioritySlots(1)
        order = []

        async def job(name, priority):
            await slots.acquire(priority)
            order.append(name)
            await asyncio.sleep(0)
            slots.release()

        cancelled = asyncio.ensure_future(slots.acquire(100.0))  # gives up before its turn
        waiting = [asyncio.ensure_future(job(name, p)) for name, p in (("low", 1.0), ("high", 5.0), ("mid", 3.0),
                                                                      ("mid2", 3.0))]
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(*waiting)
        assert cancelled.cancelled()
        return order

    # all four became ready in the same turn: they start by priority, ties first come first served
    assert asyncio.run(run()) == ["high", "mid", "mid2", "low"]


def test_take_next_hands_the_best_queued_callback_a_free_slot_or_nothing():
    """What a scheduler task finishing a node uses to go on with the next one itself: the
    same choice a grant would make of what is queued now, never ahead of an acquirer."""

    async def run():
        slots = PrioritySlots(1)
        assert slots.try_acquire()
        started = []
        start = started.append
        slots.call_when_free(1.0, start, "low")
        slots.call_when_free(5.0, start, "high")
        assert slots.take_next(start) is None  # no slot free: nothing is taken
        slots.release()
        assert slots.take_next(start) == "high"  # the best, its slot taken
        assert slots.take_next(start) is None  # ... so none is free for "low"
        cancelled = asyncio.ensure_future(slots.acquire(9.0))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        waiter = asyncio.ensure_future(slots.acquire(3.0))
        await asyncio.sleep(0)
        slots.release()
        # "low" is below the waiting acquirer (3.0 > 1.0; the cancelled one is skipped):
        assert slots.take_next(start) is None
        await waiter  # the grant gives it the slot
        slots.release()
        assert slots.take_next(start) == "low"
        assert slots.waiting == 0 and started == []  # taken, not called back
        return True

    assert asyncio.run(run())
