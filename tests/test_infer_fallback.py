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


ASSEMBLER_SCRIPT = """
set -e
gcc -c -Wa,-Iasminc x.S -o x.o
gcc -O2 -c blob.c -o blob.o
gcc -O2 -c plain.c -o plain.o
"""


def test_files_the_assembler_reads_itself_run_the_compile_locally(tmp_path):
    """``.include`` (found through ``-Wa,-I``) and ``.incbin``, in assembly or C's inline
    ``asm``, read files the preprocessor's ``-M`` does not list: as thunks they failed in
    gg-force (``can't open m.s``) where a plain build works. They run locally, said."""
    (tmp_path / "asminc").mkdir()
    (tmp_path / "asminc/m.s").write_text(".macro M\n.long 7\n.endm\n")
    (tmp_path / "blob.bin").write_bytes(b"hello")
    (tmp_path / "x.S").write_text('.include "m.s"\n.section .rodata\nM\n.incbin "blob.bin"\n')
    (tmp_path / "blob.c").write_text('__asm__(".section .rodata\\n.incbin \\"blob.bin\\"\\n.previous");\n')
    (tmp_path / "plain.c").write_text("int f(void) { return 1; }\n")
    subprocess.run(["sh", "-c", ASSEMBLER_SCRIPT], cwd=tmp_path, check=True)
    plain = {name: (tmp_path / name).read_bytes() for name in ("x.o", "blob.o")}
    for name in (*plain, "plain.o"):
        (tmp_path / name).unlink()
    inferred = gg_infer(tmp_path, "sh", "-c", ASSEMBLER_SCRIPT)
    assert inferred.returncode == 0, inferred.stderr
    assert {name: (tmp_path / name).read_bytes() for name in plain} == plain
    assert read_placeholder(tmp_path / "plain.o") is not None
    assert "2 commands ran locally, not as thunks: gcc (assembler .include/.incbin) x2" in inferred.stderr
