"""Helpers shared by the gg-infer end-to-end tests (and bench/bench_infer.py).

Build a project with ``gg-infer make`` and force its targets with ``gg-force`` in the
hidden-toolchain sandbox; read the ``--trace`` file to count thunks that really ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.hidden_toolchain import available, run_hidden

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LUPA_CACHE = Path(os.environ.get("GG_TEST_CACHE", Path.home() / ".cache" / "gg-py")) / "lupa"


def tool_env() -> dict[str, str]:
    """PATH with the venv first, so placeholders find gg-force-and-run."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env.pop("GG_DIR", None)
    return env


def gg_infer(cwd: Path, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model_sub.infer", *command], cwd=cwd, env=tool_env(),
                          capture_output=True, text=True, check=False)


def gg_force(cwd: Path, targets: list[str], trace: Path, jobs: int = 2, hidden: bool = True):
    command = [str(VENV_BIN / "gg-force"), "-q", "-j", str(jobs), "--trace", str(trace), *targets]
    runner = run_hidden if hidden else subprocess.run
    return runner(command, cwd=cwd, env=tool_env(), capture_output=True, text=True)


def started_thunks(trace: Path) -> list[str]:
    """Thunks the scheduler started (executed) in the runs recorded in ``trace``."""
    if not trace.exists():
        return []
    events = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]
    return [e["thunk"] for e in events if e.get("event") == "started"]


def hidden_ok() -> bool:
    return available()


def lupa_sdist() -> Path:
    """The lupa sdist from the package registry, downloaded once into the cache."""
    LUPA_CACHE.mkdir(parents=True, exist_ok=True)
    found = sorted(LUPA_CACHE.glob("lupa-*.tar.gz"))
    if not found:
        # --no-binary lupa, not :all:, so lupa's build requirements (Cython) come as wheels:
        # pip prepares the sdist's metadata, and Cython built from source takes minutes
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", "lupa", "lupa",
                        "-d", str(LUPA_CACHE)], check=True, capture_output=True)
        found = sorted(LUPA_CACHE.glob("lupa-*.tar.gz"))
    return found[-1]


def extract_lua54(target: Path) -> Path:
    """Extract the Lua 5.4 tree of the lupa sdist into ``target`` and return it."""
    with tarfile.open(lupa_sdist()) as archive:
        members = [m for m in archive.getmembers() if "/third-party/lua54/" in m.name and m.isfile()]
        for member in members:
            rel = member.name.split("/third-party/lua54/", 1)[1]
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as source:
                path.write_bytes(source.read())
    (target / "all").unlink(missing_ok=True)  # the makefile's stamp file
    return target
