"""gg-infer's early forcing (model_sub/early.py) and ``gg-force --stdin`` under it.

The build's outputs are forced while the build runs; gg-force afterwards finds them
reduced and writes the same bytes a forcing after the build would. A thunk that fails
early is not recorded: gg-force runs it again and reports it, and gg-infer says the early
forcing did not finish. ``gg-force --stdin`` stops without ``end`` and refuses anything
but thunk IDs.
"""

from __future__ import annotations

import os
import subprocess
import sys

from ir.placeholder import read_placeholder
from tests.test_infer_support import VENV_BIN, gg_force, started_thunks, tool_env

MAKEFILE = ("all: app\n"
            "app: main.o util.o\n\tgcc -o app main.o util.o\n"
            "%.o: %.c\n\tgcc -O2 -c $< -o $@\n")
SOURCES = {"main.c": "int twice(int);\nint main(void) { return twice(21) == 42 ? 0 : 1; }\n",
           "util.c": "int twice(int x) { return 2 * x; }\n"}


def _tree(path, sources=SOURCES):
    path.mkdir()
    for name, text in sources.items():
        (path / name).write_text(text)
    (path / "Makefile").write_text(MAKEFILE)
    return path


def _infer(cwd, *options, env_extra=None):
    env = {**tool_env(), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "model_sub.infer", *options, "make", "-s"], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False)


def test_early_forcing_leaves_nothing_for_gg_force_and_the_same_bytes(tmp_path):
    early = _tree(tmp_path / "early")
    result = _infer(early, "--early=2")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "early" in line]
    assert lines == ["gg-infer: forced 5 thunk(s) early, while the build ran (GG_INFER_EARLY, -j2); "
                     "gg-force finds them reduced"], result.stderr
    assert read_placeholder(early / "app") is not None  # the placeholders stay until gg-force
    forced = gg_force(early, ["app", "main.o", "util.o"], tmp_path / "early.jsonl", hidden=False)
    assert forced.returncode == 0, forced.stderr
    assert started_thunks(tmp_path / "early.jsonl") == []  # all reduced while the build ran

    late = _tree(tmp_path / "late")
    assert _infer(late).returncode == 0
    forced = gg_force(late, ["app", "main.o", "util.o"], tmp_path / "late.jsonl", hidden=False)
    assert forced.returncode == 0, forced.stderr
    assert len(started_thunks(tmp_path / "late.jsonl")) == 5
    for name in ("app", "main.o", "util.o"):
        assert (early / name).read_bytes() == (late / name).read_bytes()
    assert subprocess.run([str(early / "app")]).returncode == 0


def test_environment_variable_turns_it_on_and_a_bad_value_is_a_usage_error(tmp_path):
    tree = _tree(tmp_path / "t")
    result = _infer(tree, env_extra={"GG_INFER_EARLY": "1"})
    assert result.returncode == 0 and "forced 5 thunk(s) early" in result.stderr, result.stderr
    bad = _infer(_tree(tmp_path / "u"), env_extra={"GG_INFER_EARLY": "lots"})
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "gg-infer: error: GG_INFER_EARLY='lots': expected off, on, or a number of jobs"]


def test_a_thunk_failing_early_is_said_and_left_to_gg_force_to_report(tmp_path):
    # preprocesses (the model's scan passes), fails to compile (the thunk fails)
    tree = _tree(tmp_path / "t", {**SOURCES, "util.c": "int twice(int x) { return 2 * x }\n"})
    result = _infer(tree, "--early=2")
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "early" in line]
    assert len(said) == 1 and said[0].startswith("gg-infer: early forcing did not finish ("), result.stderr
    assert "gg-force runs what is left and reports any failure (see .gg/infer/early.log)" in said[0]
    forced = gg_force(tree, ["app"], tmp_path / "trace.jsonl", hidden=False)
    assert forced.returncode == 1
    assert "expected ';'" in forced.stderr
    assert read_placeholder(tree / "app") is not None  # nothing half-made


def _force_stdin(cwd, text: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "gg-force"), "--stdin", "-q"], cwd=cwd, env=tool_env(), input=text,
                          capture_output=True, text=True, timeout=120)


def test_gg_force_stdin_forces_ids_until_end_and_stops_without_it(tmp_path):
    tree = _tree(tmp_path / "t")
    assert _infer(tree).returncode == 0
    ref = read_placeholder(tree / "util.o").ref
    stopped = _force_stdin(tree, f"{ref}\n")  # no "end": the sender went away
    assert stopped.returncode == 130, stopped.stderr
    done = _force_stdin(tree, f"{ref}\n\nend\n")
    assert done.returncode == 0, done.stderr
    assert read_placeholder(tree / "util.o") is not None  # --stdin writes nothing
    forced = gg_force(tree, ["util.o"], tmp_path / "trace.jsonl", hidden=False)
    assert forced.returncode == 0 and started_thunks(tmp_path / "trace.jsonl") == []

    for bad in ("not-an-id", "Vxfae2dbd8cc1cc6fe7a08018851d14a7a_25"):  # a value is not a thunk to force
        refused = _force_stdin(tree, f"{bad}\nend\n")
        assert refused.returncode == 2
        assert refused.stderr.strip() == f"gg-force: error: --stdin: not a thunk ID: {bad!r}"
    both = subprocess.run([str(VENV_BIN / "gg-force"), "--stdin", "app"], cwd=tree, env=tool_env(),
                          capture_output=True, text=True, input="end\n")
    assert both.returncode == 2 and "exclude each other" in both.stderr


def test_killed_gg_infer_stops_its_early_forcing(tmp_path):
    """gg-infer killed with SIGKILL mid-build: the forcing it started sees its input end
    without "end" and stops instead of running on unattended."""
    tree = _tree(tmp_path / "t")
    (tree / "Makefile").write_text(MAKEFILE.replace("all: app\n", "all: app wait\nwait: app\n\tsleep 60\n"))
    env = tool_env()
    process = subprocess.Popen([sys.executable, "-m", "model_sub.infer", "--early=1", "make", "-s"], cwd=tree,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        forcer = _wait_for_forcer(tree)
        assert forcer is not None, "no early gg-force started"
        _wait_for(lambda: read_placeholder(tree / "app") is not None)
        os.kill(process.pid, 9)
        process.wait()
        assert _wait_for(lambda: not os.path.exists(f"/proc/{forcer}"), 30), "the early forcing went on"
        assert "gg-force: interrupted" in (tree / ".gg" / "infer" / "early.log").read_text()  # stopped, not ended
    finally:
        os.killpg(process.pid, 9)  # make and its sleep


def _wait_for(condition, seconds: float = 60) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _wait_for_forcer(tree) -> int | None:
    found: list[int] = []

    def look() -> bool:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    words = handle.read().split(b"\0")
                if b"--stdin" in words and os.readlink(f"/proc/{pid}/cwd") == str(tree):
                    found.append(int(pid))
                    return True
            except OSError:
                continue
        return False

    _wait_for(look, 30)
    return found[0] if found else None


def test_a_failed_build_stops_its_early_forcing_without_waiting(tmp_path):
    tree = _tree(tmp_path / "t")
    (tree / "Makefile").write_text(MAKEFILE.replace("all: app\n", "all: app broken\nbroken: app\n\tfalse\n"))
    result = _infer(tree, "--early=2")
    assert result.returncode == 2  # make's status, as without early forcing
    assert "gg-infer: the build failed: early forcing stopped (what it finished is kept)" in result.stderr
