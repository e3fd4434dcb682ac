"""gcc command forms builds use, through gg-infer + gg-force (toolchain hidden), byte for
byte against the real gcc: shared libraries with soname/rpath/version scripts, -x,
response files, every -MD/-MMD/-MF/-MT/-MQ/-Wp,-MD form, -pthread, -static, outputs in
other directories."""

from __future__ import annotations

import pytest

from ir.placeholder import read_placeholder
from tests.script_builds import force_and_compare, run_both
from tests.test_infer_support import hidden_ok

pytestmark = pytest.mark.skipif(not hidden_ok(), reason="needs root and unshare -m for the hidden toolchain")

FILES = {
    "src/foo.c": '#include "foo.h"\nint foo_value(void) { return FOO + 1; }\nint foo_hidden(void) { return 7; }\n',
    "src/foo.h": "#define FOO 41\n",
    "main.c": '#include <stdio.h>\nint foo_value(void);\nint main(void) { printf("%d\\n", foo_value()); }\n',
    "asm.S": "#define VALUE 3\n.globl asm_value\nasm_value: movl $VALUE, %eax\nret\n",
    "foo.map": "FOO_1 { global: foo_value; local: *; };\n",
    "noext": "int noext(void) { return 5; }\n",
}

SCRIPT = """\
mkdir -p out/obj
gcc -fPIC -c src/foo.c -o out/obj/foo.o -MD -MF out/obj/foo.d
gcc -shared -fPIC out/obj/foo.o -Wl,-soname,libfoo.so.1 -Wl,--version-script=foo.map -o out/libfoo.so.1.0.0
gcc -shared -fPIC -DPIC src/foo.c -Wl,-soname -Wl,libfoo2.so.1 -o out/libfoo2.so
ln -sf libfoo.so.1.0.0 out/libfoo.so
gcc -x c main.c -x none -Lout -lfoo -Wl,-rpath,'$ORIGIN/out' -o prog
gcc -pthread -c main.c -MMD -o out/obj/main.o
gcc -c -Wp,-MD,out/obj/.main2.d main.c -o out/obj/main2.o
gcc -c -Wp,-MMD,out/obj/.main5.d -Isrc main.c -o out/obj/main5.o
gcc -c main.c -MD -MT foo -MQ 'b$r' -MP -o out/obj/main3.o
gcc -c main.c -MMD -MF out/main6.dep -MT 'x y' -o out/obj/main6.o
echo 'main.c -o out/obj/main4.o' > rsp; echo '-c @rsp' > rsp2; gcc @rsp2
gcc -c -x c noext -o out/obj/noext.o
gcc -c asm.S -o out/obj/asm.o -MD
gcc -c -x assembler-with-cpp asm.S -o out/obj/asm2.o
gcc -static -pthread out/obj/main.o out/obj/foo.o -o prog-static
g++ -x c++ -c main.c -o out/obj/main-cxx.o
"""
OUTPUTS = ["out/libfoo.so.1.0.0", "out/libfoo2.so", "prog", "prog-static", "out/obj/foo.o", "out/obj/main.o",
           "out/obj/main2.o", "out/obj/main3.o", "out/obj/main4.o", "out/obj/main5.o", "out/obj/main6.o",
           "out/obj/noext.o", "out/obj/asm.o", "out/obj/asm2.o", "out/obj/main-cxx.o"]
DEPFILES = ["out/obj/foo.d", "out/obj/main.d", "out/obj/.main2.d", "out/obj/.main5.d", "out/obj/main3.d",
            "out/main6.dep", "out/obj/asm.d"]


def test_gcc_forms_match_the_real_gcc(tmp_path):
    run = run_both(tmp_path, FILES, SCRIPT)
    assert "real\tg" not in run.log(), run.log()
    assert run.summary() == ""
    for name in OUTPUTS:
        assert read_placeholder(run.gg / name) is not None, name
    for name in DEPFILES:
        assert (run.gg / name).read_bytes() == (run.plain / name).read_bytes(), name
    force_and_compare(tmp_path, run, OUTPUTS)
