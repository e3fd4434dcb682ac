"""gg-py as users install it: from the built wheel, into a fresh venv outside the checkout.

Only editable installs used to be tested, and the wheel silently left out
``executor.lambda_local`` and ``model_sub/shim.c``. This builds the sdist and, from it,
the wheel (so a file missing from the sdist fails too), installs the wheel into a new
virtual environment in a temporary directory, and uses the installed commands on a
small C project with nothing from the checkout on the path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

RUNTIME_FILES = ("model_sub/shim.c", "ir/thunk.proto", "ir/execution.proto", "executor/lambda_local/server.py",
                 "executor/lambda_local/__main__.py", "lambda_handler/handler.py")

MAKEFILE = """\
CC ?= cc
all: greet
greet: main.o libwords.a
\t$(CC) -o $@ main.o -L. -lwords
libwords.a: words.o
\tar rcs $@ $^
%.o: %.c words.h
\t$(CC) -O2 -c $< -o $@
"""
WORDS_H = "const char *word(int i);\n"
WORDS_C = '#include "words.h"\nconst char *word(int i) { return i ? "wheel" : "hello"; }\n'
MAIN_C = '#include <stdio.h>\n#include "words.h"\nint main(void) { printf("%s %s\\n", word(0), word(1)); return 0; }\n'


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)])
    return out


def _only(paths) -> Path:
    found = list(paths)
    assert len(found) == 1, found
    return found[0]


def test_sdist_and_wheel_carry_every_runtime_file(dist):
    with tarfile.open(_only(dist.glob("*.tar.gz"))) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    with zipfile.ZipFile(_only(dist.glob("*.whl"))) as wheel:
        wheel_names = set(wheel.namelist())
    for path in RUNTIME_FILES:
        assert path in names, f"{path} missing from the sdist"
        assert path in wheel_names, f"{path} missing from the wheel"
    assert not any(name.startswith(("tests/", "bench/")) for name in wheel_names)


def test_installed_wheel_builds_a_c_project(dist, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          str(_only(dist.glob("*.whl")))])
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "GG_DIR", "VIRTUAL_ENV", "GG_INFER_SOCKET", "GG_INFER_REAL_PATH")}
    env["PATH"] = f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    project = tmp_path / "project"
    project.mkdir()
    for name, text in (("Makefile", MAKEFILE), ("words.h", WORDS_H), ("words.c", WORDS_C), ("main.c", MAIN_C)):
        (project / name).write_text(text)

    assert "usage: gg" in _run(["gg", "--help"], cwd=project, env=env).stdout
    hashed = _run(["gg", "hash", "main.c"], cwd=project, env=env).stdout.strip()
    assert hashed.startswith("V")
    imported = _run([str(venv / "bin" / "python"), "-c", "import executor.lambda_local, model_sub; "
                     "print(model_sub.__file__)"], cwd=project, env=env).stdout
    assert str(venv) in imported and str(REPO) not in imported

    _run(["gg-infer", "make", "-j2"], cwd=project, env=env)
    assert (project / "greet").read_bytes().startswith(b"#!/usr/bin/env gg-force-and-run")
    _run(["gg-force", "-q", "greet"], cwd=project, env=env)
    assert _run(["./greet"], cwd=project, env=env).stdout == "hello wheel\n"
