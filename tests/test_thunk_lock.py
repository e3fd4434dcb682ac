"""The local per-thunk lock: exclusive between processes, released by the kernel when
its holder dies (kill -9), so a crashed forcer never blocks another."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ir.thunk_lock import ThunkLock

THUNK = "T" + "a" * 64


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    first, second = ThunkLock(tmp_path, THUNK), ThunkLock(tmp_path, THUNK)
    assert first.try_acquire() and first.held
    assert not second.try_acquire() and not second.held
    first.release()
    assert not first.held
    with second:
        assert second.try_acquire()
        assert not first.try_acquire()
    assert first.try_acquire()
    first.release()


def test_other_thunks_are_independent(tmp_path: Path) -> None:
    with ThunkLock(tmp_path, THUNK) as one, ThunkLock(tmp_path, "T" + "b" * 64) as two:
        assert one.try_acquire() and two.try_acquire()


def _holder(tmp_path: Path) -> subprocess.Popen[bytes]:
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from ir.thunk_lock import ThunkLock\n"
        f"lock = ThunkLock(Path({str(tmp_path)!r}), {THUNK!r})\n"
        "assert lock.try_acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"held"
    return proc


def test_lock_held_by_another_process_then_freed_by_kill_9(tmp_path: Path) -> None:
    proc = _holder(tmp_path)
    try:
        lock = ThunkLock(tmp_path, THUNK)
        assert not lock.try_acquire()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 2
        while not lock.try_acquire():
            assert time.monotonic() < deadline, "a dead holder's lock was not released"
            time.sleep(0.01)
        lock.release()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_one_lock_file_for_every_thunk(tmp_path: Path) -> None:
    """No file creation per thunk: every lock is a byte of one file."""
    locks = [ThunkLock(tmp_path, f"T{n:064x}") for n in range(200)]
    assert all(lock.try_acquire() for lock in locks)
    assert os.listdir(tmp_path) == ["thunk-locks"]
    assert not any(ThunkLock(tmp_path, f"T{n:064x}").try_acquire() for n in range(200))
    for lock in locks[::2]:
        lock.release()
    again = [ThunkLock(tmp_path, f"T{n:064x}") for n in range(200)]
    assert [lock.try_acquire() for lock in again] == [n % 2 == 0 for n in range(200)]
    for lock in locks + again:
        lock.release()


def test_locks_through_one_lock_file_exclude_each_other_and_other_holders(tmp_path: Path) -> None:
    """A forcer's locks share one open lock file: they still exclude each other (the
    LockFile refuses a byte it holds), a standalone lock and another process."""
    from ir.thunk_lock import LockFile

    shared = LockFile(tmp_path)
    one, again = ThunkLock(tmp_path, THUNK, shared), ThunkLock(tmp_path, THUNK, shared)
    other = ThunkLock(tmp_path, "T" + "b" * 64, shared)
    assert one.try_acquire() and other.try_acquire()
    assert not again.try_acquire()
    assert not ThunkLock(tmp_path, THUNK).try_acquire()  # its own open file description
    other.release()  # releases its byte only
    assert not ThunkLock(tmp_path, THUNK).try_acquire()
    with ThunkLock(tmp_path, "T" + "b" * 64) as standalone:
        assert standalone.try_acquire()
        assert not other.try_acquire()
    one.release()
    assert again.try_acquire()
    shared.close()  # releases every lock it holds
    with ThunkLock(tmp_path, THUNK) as standalone:
        assert standalone.try_acquire()
    assert os.listdir(tmp_path) == ["thunk-locks"]
