"""``gg-force libq.so`` where ``libq.so`` is a symbolic link (``ln -sf libq.so.1.0 libq.so``,
as zstd's and expat's builds make): the library it names is built and the links stay
links, as in a plain build. (Replacing the link with a copy left ``libq.so.1.0`` a
placeholder and the tree unlike a plain build's.) Real gcc, toolchain hidden."""

from __future__ import annotations

import os
import subprocess

import pytest

from ir.placeholder import read_placeholder
from tests.test_infer_support import VENV_BIN, gg_force, gg_infer, hidden_ok, tool_env

pytestmark = pytest.mark.skipif(not hidden_ok(), reason="needs root and unshare -m for the hidden toolchain")

SCRIPT = """\
gcc -shared -fPIC -o libq.so.1.0 -Wl,-soname,libq.so.1 q.c
ln -sf libq.so.1.0 libq.so.1
ln -sf libq.so.1 libq.so
gcc -o prog p.c -L. -lq
"""


def test_forcing_a_link_writes_the_library_and_keeps_the_link(tmp_path):
    (tmp_path / "q.c").write_text("int q(void) { return 3; }\n")
    (tmp_path / "p.c").write_text("int q(void);\nint main(void) { return q(); }\n")
    (tmp_path / "build.sh").write_text(SCRIPT)
    inferred = gg_infer(tmp_path, "sh", "-e", "build.sh")
    assert inferred.returncode == 0, inferred.stderr
    assert read_placeholder(tmp_path / "libq.so.1.0") is not None
    forced = gg_force(tmp_path, ["libq.so", "prog"], tmp_path / "trace.jsonl")
    assert forced.returncode == 0, forced.stderr
    assert os.readlink(tmp_path / "libq.so") == "libq.so.1"
    assert os.readlink(tmp_path / "libq.so.1") == "libq.so.1.0"
    assert read_placeholder(tmp_path / "libq.so.1.0") is None
    ran = subprocess.run(["./prog"], cwd=tmp_path, env={**os.environ, "LD_LIBRARY_PATH": str(tmp_path)})
    assert ran.returncode == 3


def test_a_file_named_twice_is_one_target(tmp_path):
    """``gg-force libq.so libq.so.1 libq.so.1.0`` names one file three times: it is
    forced and counted once (it was "3 target(s), 1 written")."""
    (tmp_path / "q.c").write_text("int q(void) { return 3; }\n")
    (tmp_path / "p.c").write_text("int q(void);\nint main(void) { return q(); }\n")
    (tmp_path / "build.sh").write_text(SCRIPT)
    assert gg_infer(tmp_path, "sh", "-e", "build.sh").returncode == 0
    forced = subprocess.run([str(VENV_BIN / "gg-force"), "libq.so", "libq.so.1", "libq.so.1.0"], cwd=tmp_path,
                            env=tool_env(), capture_output=True, text=True)
    assert forced.returncode == 0, forced.stderr
    assert "gg-force: 1 target(s), 1 written" in forced.stderr, forced.stderr
    assert os.path.islink(tmp_path / "libq.so") and read_placeholder(tmp_path / "libq.so.1.0") is None
