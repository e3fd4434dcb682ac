"""Lint and type check as tests, so that the one test command (and so CI) runs them.

Both tools come from the venv running the tests (the ``test`` extra pins them) and run
from the repository root, where pyproject.toml configures them: ruff checks the whole
tree, mypy the package (``[tool.mypy] files``). mypy keeps its incremental cache in the
repository's ``.mypy_cache``, so a second run takes seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("command", [["ruff", "check", "."], ["mypy"]], ids=["ruff", "mypy"])
def test_static_check_passes(command: list[str]):
    tool = BIN / command[0]
    assert tool.is_file(), f"{tool} is missing: install the test extra (pip install -e '.[test]')"
    result = subprocess.run([str(tool), *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}"
