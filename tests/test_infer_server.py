"""gg-infer's warm model server (model_sub/warm_*.py): reused, restarted, recovered, never wrong.

Real processes throughout: gg-infer runs a real make/cc build, the server is the real
detached process, killed with real signals. Every subprocess has a timeout: a server
that held the build's stdout or stderr open would make ``capture_output`` hang.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ir.placeholder import read_placeholder
from tests.test_infer_support import REPO, VENV_BIN, tool_env

TIMEOUT = 120


def _env(**extra: str) -> dict[str, str]:
    env = tool_env()
    env.pop("GG_INFER_SERVER", None)
    env.update(extra)
    return env


def infer(cwd: Path, *command: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model_sub.infer", *command], cwd=cwd, env=_env(**extra),
                          capture_output=True, text=True, timeout=TIMEOUT)


def status(cwd: Path) -> dict[str, str] | None:
    """The server's raw status fields, or None if no server runs for the store at ``cwd``."""
    from model_sub.warm_client import query

    answer = query(cwd / ".gg", "status")
    if answer is None:
        return None
    return dict(line.split(" ", 1) for line in answer.splitlines() if " " in line)


def project(tmp_path: Path, name: str = "p") -> Path:
    """A small C project: two compiles and a link, through make."""
    root = tmp_path / name
    root.mkdir()
    (root / "a.c").write_text('#include <stdio.h>\nint b(void);\nint main(void) { printf("%d\\n", b()); }\n')
    (root / "b.c").write_text("int b(void) { return 42; }\n")
    (root / "Makefile").write_text("app: a.o b.o\n\tcc -o app a.o b.o\n%.o: %.c\n\tcc -c $< -o $@\n"
                                   "clean:\n\trm -f app *.o\n")
    return root


def stop(cwd: Path) -> None:
    from model_sub.warm_client import query

    info = status(cwd)
    query(cwd / ".gg", "stop")
    if info is not None:
        _wait_gone(int(info["pid"]))


def _wait_gone(pid: int, seconds: float = 20.0) -> bool:
    """Whether ``pid`` exits within ``seconds`` and nothing of ours is left to reap it.

    A zombie whose parent is init (the server detaches) is init's to reap; a zombie with
    any other parent (a worker of a server that did not wait for it) is a leak."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
        except FileNotFoundError:
            return True
        if fields.get("State", "").strip().startswith("Z") and fields.get("PPid", "").strip() == "1":
            return True
        time.sleep(0.05)
    return False


def test_a_second_run_reuses_the_server_and_the_build_is_modelled(tmp_path):
    root = project(tmp_path)
    first = infer(root, "make", "-s")
    assert first.returncode == 0, first.stderr
    assert "note:" not in first.stderr, first.stderr
    assert read_placeholder(root / "app") is not None
    info = status(root)
    assert info is not None and info["runs"] == "1"
    assert (os.stat(root / ".gg/infer/server").st_mode & 0o777) == 0o700

    assert infer(root, "make", "-s", "clean").returncode == 0
    second = infer(root, "make", "-s")
    assert second.returncode == 0 and "note:" not in second.stderr, second.stderr
    again = status(root)
    assert again is not None and again["pid"] == info["pid"] and again["runs"] == "2"
    assert read_placeholder(root / "a.o") is not None
    stop(root)


def test_a_run_that_calls_no_tool_starts_no_server(tmp_path):
    root = project(tmp_path)
    assert infer(root, "true").returncode == 0
    assert status(root) is None


def test_the_bytes_of_a_build_are_the_same_with_and_without_the_server(tmp_path):
    with_server = tmp_path / "on"
    without = tmp_path / "off"
    for target, extra in ((with_server, {}), (without, {"GG_INFER_SERVER": "off"})):
        shutil.copytree(REPO / "examples" / "cproject", target)
        result = infer(target, "make", "-s", **extra)
        assert result.returncode == 0, result.stderr
    assert status(with_server) is not None and status(without) is None

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and ".gg" not in p.parts}

    on, off = files(with_server), files(without)
    assert on.keys() == off.keys()
    differing = [name for name in on if on[name] != off[name]]
    assert differing == []
    assert read_placeholder(with_server / "app") is not None
    stop(with_server)


def test_the_off_switch_and_the_flag_keep_the_models_in_process(tmp_path):
    root = project(tmp_path)
    result = infer(root, "make", "-s", GG_INFER_SERVER="off")
    assert result.returncode == 0, result.stderr
    assert status(root) is None
    assert infer(root, "make", "-s", "clean").returncode == 0
    result = infer(root, "--no-server", "make", "-s")
    assert result.returncode == 0, result.stderr
    assert status(root) is None and read_placeholder(root / "app") is not None
    bad = infer(root, "true", GG_INFER_SERVER_IDLE="soon")
    assert bad.returncode != 0 and "GG_INFER_SERVER_IDLE" in bad.stderr and "Traceback" not in bad.stderr


def test_a_killed_server_is_replaced_by_the_next_run(tmp_path):
    root = project(tmp_path)
    assert infer(root, "make", "-s").returncode == 0
    info = status(root)
    assert info is not None
    os.kill(int(info["pid"]), signal.SIGKILL)
    assert _wait_gone(int(info["pid"]))
    assert (root / ".gg/infer/server").is_dir()  # its socket file is left behind: stale

    assert infer(root, "make", "-s", "clean").returncode == 0
    result = infer(root, "make", "-s")
    assert result.returncode == 0 and "note:" not in result.stderr, result.stderr
    new = status(root)
    assert new is not None and new["pid"] != info["pid"]
    stop(root)


def test_a_worker_killed_during_the_build_is_said_and_the_build_completes(tmp_path):
    root = project(tmp_path)
    (root / "kill.py").write_text(f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
                                  "from tests.test_infer_server import kill_workers\nkill_workers()\n")
    kill = f"{sys.executable} kill.py"
    (root / "Makefile").write_text(f"app: b.o\n\tcc -c a.c -o a.o\n\t{kill}\n\tcc -o app a.o b.o\n"
                                   "%.o: %.c\n\tcc -c $< -o $@\n")
    result = infer(root, "make", "-s")
    assert result.returncode == 0, result.stderr
    assert "worker ended during the build" in result.stderr
    assert "Traceback" not in result.stderr
    for name in ("a.o", "b.o", "app"):
        assert read_placeholder(root / name) is not None, name
    stop(root)


def kill_workers() -> None:
    """Run by a build step: SIGKILL the workers of the store's server (cwd's .gg)."""
    info = status(Path.cwd())
    assert info is not None
    for pid in info["workers"].split():
        os.kill(int(pid), signal.SIGKILL)


def test_other_code_restarts_the_server(tmp_path):
    """A server started by another install (here: a copy of the packages) is never used."""
    other = tmp_path / "other-install"
    for package in ("ir", "model_sub", "executor"):
        shutil.copytree(REPO / package, other / package, ignore=shutil.ignore_patterns("__pycache__"))
    root = project(tmp_path)
    old = infer(root, "make", "-s", PYTHONPATH=str(other))
    assert old.returncode == 0 and "note:" not in old.stderr, old.stderr
    first = status(root)
    assert first is not None

    assert infer(root, "make", "-s", "clean").returncode == 0
    new = infer(root, "make", "-s")
    assert new.returncode == 0 and "note:" not in new.stderr, new.stderr
    second = status(root)
    assert second is not None and second["pid"] != first["pid"] and second["runs"] == "1"
    assert _wait_gone(int(first["pid"]))
    stop(root)


def test_an_idle_server_exits_and_leaves_no_zombie(tmp_path):
    root = project(tmp_path)
    assert infer(root, "make", "-s", GG_INFER_SERVER_IDLE="1").returncode == 0
    info = status(root)
    assert info is not None and info["idle"] == "1"
    assert _wait_gone(int(info["pid"]))
    assert status(root) is None


def test_concurrent_runs_on_one_store_share_one_server(tmp_path):
    roots = [project(tmp_path, f"p{i}") for i in range(3)]
    store = tmp_path / ".gg-shared"
    env = _env(GG_DIR=str(store))
    runs = [subprocess.Popen([sys.executable, "-m", "model_sub.infer", "make", "-s"], cwd=root, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for root in roots]
    for run in runs:
        _, err = run.communicate(timeout=TIMEOUT)
        assert run.returncode == 0 and "note:" not in err, err
    for root in roots:
        assert read_placeholder(root / "app") is not None
    from model_sub.warm_client import query

    answer = query(store, "status")
    assert answer is not None and "runs 3" in answer
    query(store, "stop")


def test_gg_infer_server_status_and_stop(tmp_path):
    root = project(tmp_path)
    gg = [str(VENV_BIN / "gg"), "infer-server"]
    (root / ".gg").mkdir()
    none = subprocess.run([*gg, "status"], cwd=root, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert none.returncode == 1 and "no model server" in none.stdout
    assert infer(root, "make", "-s").returncode == 0
    shown = subprocess.run([*gg, "status"], cwd=root, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert shown.returncode == 0 and "runs 1" in shown.stdout and "code current" in shown.stdout, shown.stdout
    pid = int(status(root)["pid"])  # type: ignore[index]
    stopped = subprocess.run([*gg, "stop"], cwd=root, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert stopped.returncode == 0
    assert _wait_gone(pid)


def test_caches_seeded_from_earlier_runs_never_hide_a_change(tmp_path):
    """The server seeds each worker with earlier runs' file IDs and scans; a header
    changed between runs still gives the thunk a run without the server gives. (Files
    are remembered only once their mtime and ctime are older than the racy window: the
    sleeps make the seeded entries the ones consulted.)"""
    root = project(tmp_path)
    (root / "h.h").write_text("#define V 1\n")
    (root / "b.c").write_text('#include "h.h"\nint b(void) { return V; }\n')
    (root / "Makefile").write_text("app: a.o b.o\n\tcc -o app a.o b.o\n%.o: %.c h.h\n\tcc -c $< -o $@\n"
                                   "clean:\n\trm -f app *.o\n")
    old = time.time() - 3600
    for name in ("a.c", "b.c", "h.h", "Makefile"):
        os.utime(root / name, (old, old))
    time.sleep(2.5)  # ctime, too, must be older than the racy window (2 s)
    for _ in range(2):  # the second run's worker starts from the first run's caches
        assert infer(root, "make", "-s", "clean").returncode == 0
        assert infer(root, "make", "-s").returncode == 0
    before = (root / "b.o").read_bytes()

    (root / "h.h").write_text("#define V 2\n")
    os.utime(root / "h.h", (old + 60, old + 60))
    time.sleep(2.5)
    assert infer(root, "make", "-s", "clean").returncode == 0
    changed = infer(root, "make", "-s")
    assert changed.returncode == 0 and "note:" not in changed.stderr, changed.stderr
    after = (root / "b.o").read_bytes()
    assert after != before

    plain = tmp_path / "plain"
    shutil.copytree(root, plain, ignore=shutil.ignore_patterns(".gg"))
    assert infer(plain, "make", "-s", "clean", GG_INFER_SERVER="off").returncode == 0
    assert infer(plain, "make", "-s", GG_INFER_SERVER="off").returncode == 0
    assert (plain / "b.o").read_bytes() == after
    stop(root)


def test_the_summary_lines_are_the_same_with_and_without_the_server(tmp_path):
    """The worker's count of calls that ran the real tool (and the static programs it
    was told of) reach gg-infer's summary as they would from its own process."""
    results = []
    for name, extra in (("on", {}), ("off", {"GG_INFER_SERVER": "off"})):
        root = project(tmp_path, name)
        (root / "Makefile").write_text("syms.txt: b.o\n\tnm b.o > syms.txt\n%.o: %.c\n\tcc -c $< -o $@\n")
        result = infer(root, "make", "-s", **extra)
        assert result.returncode == 0, result.stderr
        assert "b" in (root / "syms.txt").read_text()
        results.append(result.stderr)
    assert "ran locally" in results[0]
    assert results[0] == results[1]
    stop(tmp_path / "on")


def test_a_server_that_cannot_be_used_is_said_in_one_line_and_the_build_is_modelled(tmp_path):
    root = project(tmp_path)
    (root / ".gg" / "infer").mkdir(parents=True)
    (root / ".gg" / "infer" / "server").write_text("not a directory\n")
    result = infer(root, "make", "-s")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "model server" in line]
    assert len(notes) == 1 and "the models ran in this process" in notes[0], result.stderr
    assert "Traceback" not in result.stderr
    assert read_placeholder(root / "app") is not None
