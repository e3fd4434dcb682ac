"""gg-infer's start: a build that calls no tool loads none of the models' machinery.

Not a timing test (bench/bench_infer_start.py measures the time): it checks *what* a
run with no tool call imports, which is what the start time is made of, and that the
build's exit status comes back as a shell would report it.
"""

from __future__ import annotations

import subprocess
import sys

from tests.forcing import gg_env

# Modules that cost a no-tool run most of its start before they were deferred
# (docs/performance.md, "gg-infer start"); each is needed only once a tool is called.
DEFERRED = ("ir.store", "ir.ids", "ir.thunk", "google.protobuf", "asyncio", "subprocess", "socketserver", "argparse",
            "shutil", "dataclasses", "tempfile", "model_sub.server", "model_sub.context")

PROBE = ("import sys\nfrom model_sub.infer import main\nstatus = main(sys.argv[1:])\n"
         f"print(' '.join(m for m in {DEFERRED!r} if m in sys.modules))\n"
         "sys.exit(status)\n")


def infer(tmp_path, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, *command], cwd=tmp_path, env=gg_env(tmp_path / ".gg"),
                          capture_output=True, text=True)


def test_a_build_that_calls_no_tool_imports_no_model_machinery(tmp_path):
    infer(tmp_path, "true")  # the first run compiles the shim and the preload library
    result = infer(tmp_path, "true")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported at start: {result.stdout}"
    assert (tmp_path / ".gg" / "infer").is_dir()


def test_the_builds_exit_status_is_returned_as_a_shell_reports_it(tmp_path):
    assert infer(tmp_path, "sh", "-c", "exit 3").returncode == 3
    assert infer(tmp_path, "sh", "-c", "kill -TERM $$").returncode == 128 + 15
    missing = infer(tmp_path, "no-such-command-here")
    assert missing.returncode == 127 and "command not found" in missing.stderr


def test_the_build_sees_sigpipe_at_its_default(tmp_path):
    """Python ignores SIGPIPE; a build started from gg-infer must not inherit that
    (``yes | head -1`` would never end, or print errors, if it did)."""
    result = infer(tmp_path, "sh", "-c", "grep SigIgn /proc/self/status")
    ignored = int(result.stdout.split()[1], 16)
    assert not ignored & (1 << (13 - 1)), result.stdout  # SIGPIPE is 13
