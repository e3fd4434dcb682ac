"""gg-force as a user runs it: placeholders, modes, signals, kill -9, concurrent runs."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from ir.placeholder import read_placeholder, write_placeholder
from ir.reduction_log import check_log
from ir.store import LocalStore
from tests.forcing import VENV_BIN, gg_env, gg_force


def test_placeholders_are_replaced_with_the_right_modes(store, sh, tmp_path):
    program = sh.thunk("printf '#!/bin/sh\\necho built tool says $1\\n' > out; chmod +x out")
    data = sh.thunk("echo data > out")
    write_placeholder(tmp_path / "tool", program)
    write_placeholder(tmp_path / "lib.o", data)
    assert read_placeholder(tmp_path / "lib.o").linker_form
    result = gg_force(store.root, "tool", "lib.o", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert os.access(tmp_path / "tool", os.X_OK)
    assert not os.access(tmp_path / "lib.o", os.X_OK)
    assert (tmp_path / "lib.o").read_text() == "data\n"
    assert subprocess.run([tmp_path / "tool", "hi"], capture_output=True, text=True).stdout == "built tool says hi\n"
    assert "2 target(s), 2 written, 2 thunk(s) run" in result.stderr
    again = gg_force(store.root, "tool", cwd=tmp_path)
    assert again.returncode == 0 and "already a real file" in again.stderr


def test_executing_a_placeholder_forces_it_then_runs_it(store, sh, tmp_path):
    program = sh.thunk("printf '#!/bin/sh\\necho running with \"$@\"\\n' > out; chmod +x out")
    tool = tmp_path / "tool"
    write_placeholder(tool, program)
    result = subprocess.run([tool, "a", "b"], env=gg_env(store.root), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "running with a b\n"
    assert read_placeholder(tool) is None


def test_errors_are_one_paragraph_with_exit_status_1(store, sh, tmp_path):
    bad = sh.thunk("echo broken build >&2; exit 2")
    write_placeholder(tmp_path / "x.o", bad)
    result = gg_force(store.root, "--quiet", "x.o", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"gg-force: error: thunk {bad} failed: exit status 2")
    assert "broken build" in result.stderr
    assert read_placeholder(tmp_path / "x.o").ref == bad  # placeholder left as it was
    missing = gg_force(store.root, "no-such-file", cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.strip() == (
        "gg-force: error: no-such-file: no such file, and not a thunk or value ID")
    usage = gg_force(store.root, cwd=tmp_path)
    assert usage.returncode == 2


def test_progress_lines_when_not_a_terminal_and_quiet(store, sh, tmp_path):
    ident = sh.thunk("echo p > out")
    loud = gg_force(store.root, ident)
    assert "gg-force: 1/1 done (1 run, 0 cached, 0 failed)" in loud.stderr
    quiet = gg_force(store.root, "--quiet", "--print", ident)
    assert quiet.stderr == "" and quiet.stdout.split() == [ident, store.resolve(ident)]


def _graph(sh, n: int, seconds: float) -> str:
    leaves = {f"in/{i}": sh.thunk(f"sleep {seconds}; echo {i} > out") for i in range(n)}
    return sh.thunk("cat in/* | sort -n | tr '\\n' ' ' > out", thunks=leaves)


def _expected(n: int) -> str:
    return " ".join(str(i) for i in sorted(range(n))) + " "


def _assert_store_sound(store: LocalStore) -> None:
    for blob in store.blobs.iterdir():
        assert store.verify(blob.name), f"corrupt blob {blob.name}"
    # Every complete line of the reduction log is a valid record (a torn tail is allowed:
    # it is ignored, and the next append starts a line of its own).
    check = check_log(store.reduction_log.path)
    assert check.invalid == 0, check
    for ref, result in LocalStore(store.root).reduction_records().items():
        assert store.has(result), f"reduction {ref} points at missing {result}"


def test_kill_9_mid_run_then_rerun_finishes_correctly(store, sh, tmp_path):
    top = _graph(sh, 24, 0.4)
    target = tmp_path / "result.txt"
    write_placeholder(target, top)
    process = subprocess.Popen([VENV_BIN / "gg-force", "-j", "2", "--quiet", "result.txt"],
                               env=gg_env(store.root), cwd=tmp_path)
    deadline = time.monotonic() + 60
    while len(store.reduction_records()) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert read_placeholder(target).ref == top  # untouched: no half-written output
    done_before = len(store.reduction_records())
    assert 0 < done_before
    _assert_store_sound(store)
    result = gg_force(store.root, "result.txt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert target.read_text() == _expected(24)
    _assert_store_sound(store)
    assert not list((store.root / "work").glob("run-*"))  # stale run directories swept


def test_sigterm_stops_at_once_and_kills_children(store, sh, tmp_path):
    pid_file = tmp_path / "pid"
    slow = sh.thunk(f"echo $$ > {pid_file}; sleep 60; echo > out")
    write_placeholder(tmp_path / "out.txt", slow)
    process = subprocess.Popen([VENV_BIN / "gg-force", "out.txt"], env=gg_env(store.root), cwd=tmp_path,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 130
    assert "interrupted" in stderr and "Traceback" not in stderr
    child = int(pid_file.read_text())
    assert not Path(f"/proc/{child}").exists() or Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"
    assert read_placeholder(tmp_path / "out.txt").ref == slow
    assert store.get_reduction(slow) is None


def test_two_gg_force_processes_on_one_store(store, sh, tmp_path):
    top = _graph(sh, 16, 0.1)
    for name in ("a.txt", "b.txt"):
        write_placeholder(tmp_path / name, top)
    runs = [subprocess.Popen([VENV_BIN / "gg-force", "-j", "2", "--quiet", name], env=gg_env(store.root),
                             cwd=tmp_path, stderr=subprocess.PIPE, text=True) for name in ("a.txt", "b.txt")]
    for run in runs:
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 0, stderr
    assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text() == _expected(16)
    _assert_store_sound(store)


def test_real_file_keeps_the_placeholders_timestamps(store, sh, tmp_path):
    """make compared the placeholders' times; forcing must not make targets look stale."""
    ident = sh.thunk("echo object > out")
    target = tmp_path / "part.o"
    write_placeholder(target, ident)
    os.utime(target, ns=(1_000_000_000_000_000_000, 1_000_000_000_123_456_789))
    assert gg_force(store.root, "part.o", cwd=tmp_path).returncode == 0
    assert target.read_text() == "object\n"
    assert os.stat(target).st_mtime_ns == 1_000_000_000_123_456_789


def test_corrupt_result_in_the_store_is_reported_then_rebuilt(store, sh, tmp_path):
    ident = sh.thunk("echo precious > out")
    target = tmp_path / "result.txt"
    write_placeholder(target, ident)
    value = gg_force(store.root, "--print", ident).stdout.split()[1]
    blob = store.blob_path(value)
    blob.chmod(0o644)
    blob.write_bytes(b"rotten!!\n")
    broken = gg_force(store.root, "result.txt", cwd=tmp_path)
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert f"blob {value}" in broken.stderr and "corrupt" in broken.stderr
    assert read_placeholder(target).ref == ident  # the user's file was not overwritten
    again = gg_force(store.root, "result.txt", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert target.read_text() == "precious\n" and "1 thunk(s) run" in again.stderr


def test_reduction_whose_blob_vanished_is_not_a_hit(store, sh, tmp_path):
    ident = sh.thunk("echo again > out")
    value = gg_force(store.root, "--print", ident).stdout.split()[1]
    store.blob_path(value).unlink()
    result = gg_force(store.root, "--print", ident)
    assert result.returncode == 0 and "1 thunk(s) run" in result.stderr
    assert store.read_bytes(value) == b"again\n"
