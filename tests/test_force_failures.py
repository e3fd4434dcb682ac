"""Failures are reported clearly, retried when they are infrastructure, and never poison."""

from __future__ import annotations

import json
import time

import pytest

from executor.execution import InfrastructureError
from executor.local_engine import LocalEngine
from executor.scheduler import ForceFailed
from tests.forcing import force


def test_execution_failure_names_thunk_command_status_and_stderr(store, sh):
    bad = sh.thunk("echo about to fail >&2; echo details >&2; exit 3")
    with pytest.raises(ForceFailed) as caught:
        force(store, [bad])
    failure = caught.value.failures[0]
    assert failure.thunk_id == bad
    assert bad in str(failure) and "exit status 3" in str(failure)
    assert "command: sh -c echo about to fail" in failure.report
    assert "details" in failure.report
    assert store.get_reduction(bad) is None


def test_missing_output_is_an_execution_failure(store, sh):
    bad = sh.thunk("echo oops > wrong-name")
    with pytest.raises(ForceFailed, match="output 'out' was not produced"):
        force(store, [bad])


def test_without_keep_going_the_first_failure_stops_the_run(store, sh, tmp_path):
    bad = sh.thunk("exit 1")
    slow = sh.thunk("sleep 30; echo done > out")
    trace = tmp_path / "t.jsonl"
    started = time.monotonic()
    with pytest.raises(ForceFailed):
        force(store, [bad, slow], trace=trace)
    assert time.monotonic() - started < 25  # the sleeper was killed, not waited for
    assert store.get_reduction(slow) is None


def test_keep_going_finishes_independent_branches(store, sh):
    bad = sh.thunk("exit 1")
    depends_on_bad = sh.thunk("cat x > out", thunks={"x": bad})
    good_leaf = sh.thunk("echo good > out")
    good = sh.thunk("cat x > out", thunks={"x": good_leaf})
    with pytest.raises(ForceFailed) as caught:
        force(store, [depends_on_bad, good], keep_going=True)
    assert [f.thunk_id for f in caught.value.failures] == [bad]  # the root cause only
    assert store.read_bytes(caught.value.results[good]) == b"good\n"
    assert depends_on_bad not in caught.value.results


def test_thunk_timeout_kills_the_process_group(store, sh, tmp_path):
    pid_file = tmp_path / "child.pid"
    slow = sh.thunk(f"sleep 60 & echo $! > {pid_file}; wait", timeout_ms=500)
    with pytest.raises(ForceFailed, match="timed out after 0.5 s"):
        force(store, [slow])
    pid = int(pid_file.read_text())
    for _ in range(50):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                state = handle.read().split()[2]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail("the timed-out thunk's child is still running")


def test_malformed_thunk_is_a_one_line_error(store, sh):
    good = sh.thunk("echo x > out")
    data = bytearray(store.read_bytes(good))
    path = store.blob_path(good)
    path.chmod(0o644)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ForceFailed) as caught:
        force(store, [good])
    message = str(caught.value.failures[0])
    assert good in message and "\n" not in message


class FlakyEngine(LocalEngine):
    """A real local engine that fails its first ``failures`` runs for infrastructure reasons."""

    name = "flaky"

    def __init__(self, store, failures: int):
        super().__init__(store, 2)
        self.failures_left = failures
        self.calls = 0

    async def run(self, job):
        self.calls += 1
        if self.failures_left > 0:
            self.failures_left -= 1
            raise InfrastructureError("injected: worker vanished")
        return await super().run(job)


def test_flaky_engine_is_retried_with_back_off(store, sh, tmp_path):
    ident = sh.thunk("echo eventually > out")
    engine = FlakyEngine(store, failures=2)
    trace = tmp_path / "t.jsonl"
    results, _ = force(store, [ident], engines=[engine], trace=trace, backoff_initial=0.01)
    assert store.read_bytes(results[ident]) == b"eventually\n"
    assert engine.calls == 3
    retries = [json.loads(line) for line in trace.read_text().splitlines() if '"retried"' in line]
    assert [r["attempt"] for r in retries] == [1, 2] and all("worker vanished" in r["error"] for r in retries)


def test_permanently_broken_engine_gives_up_with_a_clear_error(store, sh):
    ident = sh.thunk("echo never > out")
    engine = FlakyEngine(store, failures=10**6)
    with pytest.raises(ForceFailed) as caught:
        force(store, [ident], engines=[engine], backoff_initial=0.01, max_attempts=3)
    assert engine.calls == 3
    message = str(caught.value.failures[0])
    assert "gave up after 3 attempts on flaky" in message and "worker vanished" in message
    assert store.get_reduction(ident) is None


def test_broken_engine_falls_back_to_the_fallback_engine(store, sh, tmp_path):
    ident = sh.thunk("echo rescued > out")
    broken = FlakyEngine(store, failures=10**6)
    trace = tmp_path / "t.jsonl"
    results, _ = force(store, [ident], engines=[broken], fallback=LocalEngine(store, 1), trace=trace,
                       backoff_initial=0.01, max_attempts=2)
    assert store.read_bytes(results[ident]) == b"rescued\n"
    fallbacks = [json.loads(line) for line in trace.read_text().splitlines() if '"fallback"' in line]
    assert fallbacks and fallbacks[0]["from"] == "flaky" and fallbacks[0]["to"] == "local"


def test_straggler_is_speculatively_rerun_and_first_result_wins(store, sh, tmp_path):
    marker = tmp_path / "first-attempt-started"
    # The first attempt hangs; any later attempt finishes at once.
    ident = sh.thunk(f"if [ ! -e {marker} ]; then touch {marker}; sleep 60; fi; echo fast > out")
    trace = tmp_path / "t.jsonl"
    started = time.monotonic()
    results, _ = force(store, [ident], trace=trace, speculate_initial=0.5, speculate_min=0.5)
    assert time.monotonic() - started < 30
    assert store.read_bytes(results[ident]) == b"fast\n"
    assert '"speculated"' in trace.read_text()


def test_resource_hint_larger_than_the_machine_runs_alone(store, sh, tmp_path):
    from ir.thunk import Resources

    log = tmp_path / "intervals"
    script = f"echo start $(date +%s.%N) >> {log}; sleep 0.3; echo end $(date +%s.%N) >> {log}; echo {{i}} > out"
    hogs = [sh.thunk(script.format(i=i), resources=Resources(memory_mib=10**7, cpus=64)) for i in range(3)]
    small = [sh.thunk(f"echo {i} > out") for i in range(3)]
    force(store, hogs + small, jobs=3)
    running, peak = 0, 0
    events = sorted((float(t), kind) for kind, t in (line.split() for line in log.read_text().splitlines()))
    for _, kind in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert len(events) == 6 and peak == 1  # -j3 would have run them together


def test_resource_gate_admits_what_fits():
    import asyncio

    from executor.resources import Capacity, ResourceGate

    async def scenario():
        gate = ResourceGate(Capacity(cpus=4, memory_mib=1000))
        order = []

        async def job(name, cpus, memory):
            async with gate.claim(cpus, memory):
                order.append(f"+{name}")
                await asyncio.sleep(0.05)
                order.append(f"-{name}")

        await asyncio.gather(job("a", 2, 600), job("b", 2, 600), job("c", 1, 100))
        return order

    order = asyncio.run(scenario())
    # b does not fit next to a (memory), c does.
    assert order.index("+b") > order.index("-a")
    assert order.index("+c") < order.index("-a")


def test_waiting_for_a_slot_is_not_straggling(store, sh, tmp_path):
    thunks = [sh.thunk(f"sleep 0.3; echo {i} > out") for i in range(5)]
    trace = tmp_path / "t.jsonl"
    force(store, thunks, jobs=1, trace=trace, speculate_initial=0.6, speculate_min=0.6)
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    assert not [e for e in events if e["event"] == "speculated"]
    started = {e["thunk"]: e["t"] for e in events if e["event"] == "started"}
    finished = [e for e in events if e["event"] == "finished"]
    assert len(finished) == 5
    for event in finished:  # a duration counts from the slot, not from the queue
        assert event["duration"] <= event["t"] - started[event["thunk"]] + 0.01


def test_lost_intermediate_value_is_rebuilt_by_its_producer(store, sh, tmp_path):
    producer = sh.thunk("echo intermediate > out")
    first = sh.thunk("cat p > out", thunks={"p": producer})
    results, _ = force(store, [first])
    lost = store.resolve(producer)
    store.blob_path(lost).unlink()  # e.g. dropped as corrupt, or a bucket emptied
    second = sh.thunk("cat p p > out", thunks={"p": producer})
    results, scheduler = force(store, [second])
    assert store.read_bytes(results[second]) == b"intermediate\nintermediate\n"
    # The producer's reduction names a blob that is gone: not a hit, so it ran again.
    # (With a remote store the miss shows only at dispatch: tests/test_lambda_force.py.)
    assert scheduler.executed == 2


class RaisingEngine(LocalEngine):
    """A real local engine that raises ``error`` instead of running the thunk named ``victim``."""

    name = "raising"

    def __init__(self, store, victim: str, error: Exception):
        super().__init__(store, 2)
        self.victim, self.error, self.calls = victim, error, 0

    async def run(self, job):
        if job.thunk_id == self.victim:
            self.calls += 1
            raise self.error
        return await super().run(job)


def test_a_wrong_setting_stops_the_run_even_with_keep_going(store, sh, tmp_path):
    """ConfigError is not retried, never falls back, and stops every branch."""
    from ir.errors import ConfigError

    bad = sh.thunk("echo bad > out")
    slow = sh.thunk("sleep 30; echo slow > out")
    engine = RaisingEngine(store, bad, ConfigError("S3 bucket 'x' does not exist (GG_STORAGE_URI=s3://x)"))
    trace = tmp_path / "t.jsonl"
    started = time.monotonic()
    with pytest.raises(ConfigError, match="GG_STORAGE_URI"):
        force(store, [bad, slow], engines=[engine], fallback=LocalEngine(store, 1), trace=trace, keep_going=True)
    assert time.monotonic() - started < 20 and engine.calls == 1
    assert '"fallback"' not in trace.read_text() and '"retried"' not in trace.read_text()


def test_resource_exhaustion_goes_to_the_fallback_at_once(store, sh, tmp_path):
    from executor.execution import ResourceExhausted

    ident = sh.thunk("echo rescued > out")
    engine = RaisingEngine(store, ident, ResourceExhausted("no space left", "last words\n"))
    trace = tmp_path / "t.jsonl"
    results, scheduler = force(store, [ident], engines=[engine], fallback=LocalEngine(store, 1), trace=trace)
    assert store.read_bytes(results[ident]) == b"rescued\n" and engine.calls == 1
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    moved = [e for e in events if e["event"] == "fallback"]
    assert len(moved) == 1 and moved[0]["output"] == "last words\n" and not [
        e for e in events if e["event"] == "retried"]
    assert scheduler.fallback_summary() == [
        "1 of 1 thunks ran locally after running out of resources on raising: no space left"]


def test_default_timeout_applies_on_the_local_engine(store, sh):
    hangs = sh.thunk("sleep 60; echo x > out")
    started = time.monotonic()
    with pytest.raises(ForceFailed, match="timed out after 0.5 s"):
        force(store, [hangs], default_timeout=0.5)
    assert time.monotonic() - started < 10
