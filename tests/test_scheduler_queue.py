"""The scheduler's node records and ready queue: a wide graph waits as records, not as
tasks, discovery pauses while the ready queue is full and resumes, and the results are
the ones the graph defines (checked byte for byte, no timing asserted)."""

from __future__ import annotations

import asyncio

import pytest

from executor.local_engine import LocalEngine
from executor.observe import RunObserver
from executor.scheduler import ForceConfig, ForceFailed, Scheduler
from tests.forcing import force

LEAVES = 120
GROUPS = 4


def test_a_wide_graph_waits_as_records_and_discovery_pauses(store, sh):
    leaves = [sh.thunk(f"echo {i} > out") for i in range(LEAVES)]
    groups = [sh.thunk("cat in/* > out", thunks={f"in/{k:03d}": leaf for k, leaf in enumerate(leaves[g::GROUPS])})
              for g in range(GROUPS)]
    root = sh.thunk("cat g/* > out", thunks={f"g/{g}": group for g, group in enumerate(groups)})
    samples: list[tuple[int, int]] = []  # (tasks alive, ready nodes waiting)

    async def run() -> dict[str, str]:
        engine = LocalEngine(store, 1)
        scheduler = Scheduler(store, [engine], None, ForceConfig(speculate=False, ready_queue=8), RunObserver())
        loop = asyncio.get_running_loop()

        def sample() -> None:
            samples.append((len(asyncio.all_tasks()), scheduler._inflight.queued))
            handle[0] = loop.call_later(0.005, sample)

        handle = [loop.call_later(0, sample)]
        try:
            return await scheduler.force([root])
        finally:
            handle[0].cancel()
            await engine.close()

    results = asyncio.run(run())
    expected = b"".join(f"{i}\n".encode() for g in range(GROUPS) for i in range(LEAVES)[g::GROUPS])
    assert store.read_bytes(results[root]) == expected
    assert len(samples) > 10
    # One slot: the forcing task, the running node (and its process' helpers), never a
    # task per waiting thunk (there are 125).
    assert max(tasks for tasks, _ in samples) <= 8
    # Discovery paused at 8 ready nodes (4 per slot is less here) and resumed at half:
    # the queue never held the 120 leaves at once (parents made ready by their last
    # dependency join it whatever discovery does: at most the groups and the root).
    assert 1 < max(queued for _, queued in samples) <= 8 + GROUPS + 1


def test_a_failure_reaches_every_waiting_ancestor_once(store, sh):
    """With keep_going, a failed leaf fails the parents waiting on it, theirs in turn
    (a shared middle node, two targets above it), a node discovered after the failure
    fails at once, and the root cause is reported once; the independent branch finishes."""
    bad = sh.thunk("sleep 0.2; exit 3")
    middle = sh.thunk("cat x > out", thunks={"x": bad})
    tops = [sh.thunk(f"cat m > out; echo {i} >> out", thunks={"m": middle}) for i in range(2)]
    late = sh.thunk("cat m > out; echo late >> out", thunks={"m": middle, "g": sh.thunk("sleep 0.5; echo g > out")})
    good = sh.thunk("echo good > out")
    with pytest.raises(ForceFailed) as caught:
        force(store, [*tops, late, good], keep_going=True)
    assert [f.thunk_id for f in caught.value.failures] == [bad]
    assert store.read_bytes(caught.value.results[good]) == b"good\n"
    assert not {*tops, late} & set(caught.value.results)


def test_a_thunks_lock_is_held_until_its_records_are_written(store, sh, monkeypatch):
    """Records are written in batches: until a thunk's records are in the log, another
    process sees neither them nor the thunk's lock free (it waits, then finds them);
    when the run returns, every record is written and every lock released."""
    from executor import scheduler as scheduler_module
    from ir.store import LocalStore
    from ir.thunk_lock import ThunkLock

    monkeypatch.setattr(scheduler_module, "RECORD_DELAY", 3600.0)  # only the end of the run writes
    monkeypatch.setattr(scheduler_module, "RECORD_BATCH", 1 << 30)
    first = sh.thunk("echo first > out")
    second = sh.thunk("cat x > out; echo second >> out", thunks={"x": first})
    seen: list[tuple[str | None, bool]] = []

    class Watching(LocalEngine):
        async def run(self, job):
            if job.thunk_id != first:  # the second runs after the first is recorded (queued)
                peer = LocalStore(store.root)
                lock = ThunkLock(store.root, first)
                seen.append((peer.get_reduction(first), lock.try_acquire()))
                lock.release()
            return await super().run(job)

    async def run() -> dict[str, str]:
        engine = Watching(store, 1)
        try:
            return await Scheduler(store, [engine], None, ForceConfig(speculate=False), RunObserver()).force([second])
        finally:
            await engine.close()

    results = asyncio.run(run())
    assert store.read_bytes(results[second]) == b"first\nsecond\n"
    assert seen == [(None, False)]
    peer = LocalStore(store.root)
    assert peer.get_reduction(first) is not None and peer.get_reduction(second) == results[second]
    for ident in (first, second):
        with ThunkLock(store.root, ident) as lock:
            assert lock.try_acquire()
