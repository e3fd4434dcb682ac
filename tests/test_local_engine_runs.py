"""The local engine's execution core: reused run directories, process groups, large outputs.

Run directories are kept between thunks (executor/rundirs.py) only when they can be
emptied back to exactly as made; a thunk must never see what an earlier one left. The
function runs in its own process group, which is killed on timeout, on cancellation and
— through the record in its run directory — by the next sweep after the executor died.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from executor.execution import ExecutionFailed, _boot_ns, _is_recorded_process, execute, sweep_stale_runs
from executor.rundirs import RunDirs
from ir.hashing import hash_file


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for a reaper counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _run_all(store, rundirs, idents):
    async def run():
        results = []
        for ident in idents:
            results.append(await execute(ident, store.load_thunk(ident), store, rundirs=rundirs))
        return results

    return asyncio.run(run())


def test_a_reused_run_directory_holds_nothing_of_the_previous_thunk(store, sh, tmp_path):
    scratch = store.root / "work"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep\n")
    rundirs = RunDirs(scratch)
    messy = sh.thunk('echo a > out; mkdir -p sub/deeper; echo junk > sub/deeper/f; chmod 500 sub/deeper sub; '
                     f'ln -s {outside} left-link; echo g > "$GG_DIR/junk"; mkdir "$GG_DIR/d"')
    look = sh.thunk('ls -A > out; echo -- >> out; ls -A "$GG_DIR" >> out; echo -- >> out; ls -A "$GG_DIR/.." >> out',
                    values={"in": "input\n"})
    try:
        first, second = _run_all(store, rundirs, [messy, look])
        assert store.read_bytes(first.outputs[0].id) == b"a\n"
        assert store.read_bytes(second.outputs[0].id) == b"in\nout\n--\n--\ngg\nw\n"
        assert len(list(scratch.glob("run-*"))) == 1  # one directory, reused
        assert (outside / "keep").read_text() == "keep\n"  # the link was removed, not followed
    finally:
        rundirs.close()
    assert not list(scratch.glob("run-*"))


def test_a_run_directory_with_something_unexpected_is_replaced(store, sh):
    scratch = store.root / "work"
    rundirs = RunDirs(scratch)
    leaves = sh.thunk('echo x > "$GG_DIR/../extra"; echo > out')
    renames = sh.thunk('cd .. && mv w w2 && mkdir w && echo > w/out')
    look = sh.thunk('ls -A "$GG_DIR/.." > out')
    try:
        asyncio.run(execute(leaves, store.load_thunk(leaves), store, rundirs=rundirs))
        assert not list(scratch.glob("run-*"))  # removed, not pooled
        with pytest.raises(ExecutionFailed, match="'out' was not produced"):
            asyncio.run(execute(renames, store.load_thunk(renames), store, rundirs=rundirs))
        assert not list(scratch.glob("run-*"))
        result = asyncio.run(execute(look, store.load_thunk(look), store, rundirs=rundirs))
        assert store.read_bytes(result.outputs[0].id) == b"gg\nw\n"
    finally:
        rundirs.close()


def test_timeout_kills_the_whole_process_group(store, sh, tmp_path):
    pid_file = tmp_path / "pid"
    ident = sh.thunk(f"sleep 60 & echo $! > {pid_file}; wait", timeout_ms=500)
    with pytest.raises(ExecutionFailed, match="timed out after 0.5 s"):
        asyncio.run(execute(ident, store.load_thunk(ident), store))
    assert _wait_gone(int(pid_file.read_text()))


def test_cancellation_kills_the_whole_process_group(store, sh, tmp_path):
    pid_file = tmp_path / "pid"
    ident = sh.thunk(f"sleep 60 & echo $! > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; wait")

    async def run():
        task = asyncio.ensure_future(execute(ident, store.load_thunk(ident), store))
        deadline = time.monotonic() + 20
        while not pid_file.exists():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert _wait_gone(int(pid_file.read_text()))
    assert not list((store.root / "work").glob("run-*"))


def test_background_children_do_not_outlive_a_successful_function(store, sh, tmp_path):
    pid_file = tmp_path / "pid"
    ident = sh.thunk(f"sleep 60 > /dev/null 2>&1 & echo $! > {pid_file}; echo done > out")
    result = asyncio.run(execute(ident, store.load_thunk(ident), store))
    assert store.read_bytes(result.outputs[0].id) == b"done\n"
    assert _wait_gone(int(pid_file.read_text()))


def test_sweep_kills_what_a_killed_executor_left_running(store, sh, tmp_path):
    """The executor dies by kill -9 mid-thunk: the next sweep kills the function's group."""
    pid_file = tmp_path / "pid"
    ident = sh.thunk(f"sleep 60 & echo $! > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; wait")
    script = textwrap.dedent(f"""
        import asyncio
        from pathlib import Path
        from executor.execution import execute
        from executor.rundirs import RunDirs
        from ir.store import LocalStore
        store = LocalStore(Path({str(store.root)!r}))
        asyncio.run(execute({ident!r}, store.load_thunk({ident!r}), store, rundirs=RunDirs(store.root / "work")))
    """)
    executor = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists():
            assert time.monotonic() < deadline and executor.poll() is None
            time.sleep(0.02)
    finally:
        executor.send_signal(signal.SIGKILL)
        executor.wait()
    orphan = int(pid_file.read_text())
    assert not _gone(orphan)  # nobody killed it yet
    sweep_stale_runs(store.root / "work")
    assert _wait_gone(orphan)
    assert not list((store.root / "work").glob("run-*"))


def test_the_group_record_does_not_match_a_process_started_outside_its_window():
    before = _boot_ns()
    process = subprocess.Popen(["sleep", "30"])
    after = _boot_ns()
    try:
        assert _is_recorded_process(process.pid, [str(before), str(after)])
        # The same PID, but the record says it was started a minute earlier: PID reuse.
        assert not _is_recorded_process(process.pid, [str(before - 60 * 10**9), str(after - 60 * 10**9)])
    finally:
        process.kill()
        process.wait()


def test_a_large_output_is_collected_off_the_event_loop_and_stored_intact(store, sh):
    ident = sh.thunk("head -c 3000000 /dev/urandom > out; echo small > b", outputs=("out", "b"))
    result = asyncio.run(execute(ident, store.load_thunk(ident), store))
    big, small = result.outputs
    assert big.id == hash_file(store.blob_path(big.id)) and big.id.endswith(f"_{3000000:x}")
    assert store.read_bytes(small.id) == b"small\n"
    assert not os.stat(store.blob_path(big.id)).st_mode & 0o222  # read-only in the store


def test_without_pidfds_the_exit_is_waited_for_in_a_thread(store, sh, tmp_path, monkeypatch):
    """A kernel before 5.3 (or a seccomp filter) refuses pidfd_open: same results, same kills."""

    def no_pidfds(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfds)
    ok = sh.thunk("echo fine > out; echo said >&2")
    result = asyncio.run(execute(ok, store.load_thunk(ok), store))
    assert store.read_bytes(result.outputs[0].id) == b"fine\n"
    failing = sh.thunk("echo why >&2; exit 3")
    with pytest.raises(ExecutionFailed, match="exit status 3") as caught:
        asyncio.run(execute(failing, store.load_thunk(failing), store))
    assert caught.value.stderr_tail == "why\n"
    pid_file = tmp_path / "pid"
    slow = sh.thunk(f"sleep 60 & echo $! > {pid_file}; wait", timeout_ms=500)
    with pytest.raises(ExecutionFailed, match="timed out"):
        asyncio.run(execute(slow, store.load_thunk(slow), store))
    assert _wait_gone(int(pid_file.read_text()))
