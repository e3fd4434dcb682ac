"""Calls the models do not model run the real tool, correctly, and are counted in one summary line."""

from __future__ import annotations

import subprocess

from ir.placeholder import read_placeholder
from tests.test_infer_support import gg_infer

SCRIPT = r"""
set -e
printf '#define A 5\nvalue A\n' | gcc -E -P -
gcc -E -P x.c
gcc -dumpmachine
gcc -print-file-name=libc.so
cc -c x.c -o x.o
ar t libnothing.a 2>/dev/null || echo "no archive"
exit 3
"""


def test_unmodelled_calls_behave_like_the_real_tools(tmp_path):
    (tmp_path / "x.c").write_text("#define B 7\nint b = B;\n")
    plain = subprocess.run(["sh", "-c", SCRIPT], cwd=tmp_path, capture_output=True, text=True)
    (tmp_path / "x.o").unlink()
    inferred = gg_infer(tmp_path, "sh", "-c", SCRIPT)
    assert inferred.returncode == plain.returncode == 3  # gg-infer exits with the command's status
    assert inferred.stdout == plain.stdout
    summary = "gg-infer: 3 commands ran locally, not as thunks: gcc -E x2, ar t x1 (see .gg/infer/log)\n"
    assert inferred.stderr == plain.stderr + summary  # queries (-dumpmachine, -print-*) are not counted
    assert read_placeholder(tmp_path / "x.o") is not None  # the modelled call left a placeholder
    log = (tmp_path / ".gg" / "infer" / "log").read_text()
    assert "real\tgcc\toption -E" in log and "model\tcc" in log


LISTING_SCRIPT = """
set -e
gcc -O2 -c -Wa,--noexecstack,-adhln=x.lst x.c -o x.o
gcc -O2 -c -Xassembler -aln=y.lst x.c -o y.o
gcc -O2 -c -Wa,--noexecstack x.c -o z.o
"""


def test_assembler_options_that_write_a_listing_run_locally(tmp_path):
    """``-Wa,...,-adhln=FILE`` and ``-Xassembler -aln=FILE`` make ``as`` write a listing
    besides the object; as a thunk (one output) the listing was silently missing. Such a
    call runs locally, said in the summary line; ``-Wa,--noexecstack`` alone stays a thunk."""
    (tmp_path / "x.c").write_text("int f(int x) { return x * 3; }\n")
    subprocess.run(["sh", "-c", LISTING_SCRIPT], cwd=tmp_path, check=True)
    plain = {name: (tmp_path / name).read_bytes() for name in ("x.lst", "y.lst", "x.o", "y.o")}
    for name in plain:
        (tmp_path / name).unlink()
    inferred = gg_infer(tmp_path, "sh", "-c", LISTING_SCRIPT)
    assert inferred.returncode == 0, inferred.stderr
    assert {name: (tmp_path / name).read_bytes() for name in plain} == plain
    assert read_placeholder(tmp_path / "z.o") is not None
    assert "gg-infer: 2 commands ran locally, not as thunks: " in inferred.stderr
