"""gcc command forms builds use, through gg-infer + gg-force (toolchain hidden), byte for
byte against the real gcc: shared libraries with soname/rpath/version scripts, -x,
response files, every -MD/-MMD/-MF/-MT/-MQ/-Wp,-MD form, -pthread, -static, outputs in
other directories."""

from __future__ import annotations

import subprocess

import pytest

from ir.placeholder import read_placeholder
from tests.script_builds import force_and_compare, run_both
from tests.test_infer_support import gg_force, gg_infer, hidden_ok

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
gcc -c -includesrc/foo.h -imacrossrc/foo.h -isystemsrc -iquotesrc -idirafterout main.c -o out/obj/main7.o
"""
OUTPUTS = ["out/libfoo.so.1.0.0", "out/libfoo2.so", "prog", "prog-static", "out/obj/foo.o", "out/obj/main.o",
           "out/obj/main2.o", "out/obj/main3.o", "out/obj/main4.o", "out/obj/main5.o", "out/obj/main6.o",
           "out/obj/noext.o", "out/obj/asm.o", "out/obj/asm2.o", "out/obj/main-cxx.o", "out/obj/main7.o"]
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


def test_absolute_paths_as_cmake_writes_them(tmp_path):
    """CMake names sources and include directories by absolute paths, so gcc prints
    them absolute (``__FILE__`` in an assert, in a header too): the thunk maps its
    names back to the same absolute paths. Built twice in the same directory (the
    bytes hold it), plainly and through gg-infer."""
    tree = tmp_path / "proj"
    (tree / "include").mkdir(parents=True)
    (tree / "src").mkdir()
    (tree / "build").mkdir()
    (tree / "include" / "check.h").write_text(
        "#include <assert.h>\nstatic inline int check(int x) { assert(x > 0); return x; }\n")
    (tree / "src" / "a.c").write_text('#include "check.h"\nint a(int x) { assert(x); return check(x); }\n')
    script = (f"cd build && gcc -O2 -I{tree}/include -MD -MT a.o -MF a.o.d -o a.o -c {tree}/src/a.c\n"
              f"cd {tree}/build && gcc -O2 -I../include -c ../src/a.c -o rel.o\n")
    (tree / "build.sh").write_text(script)
    plain = subprocess.run(["sh", "-e", "build.sh"], cwd=tree, capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr
    expected = {name: (tree / "build" / name).read_bytes() for name in ("a.o", "a.o.d", "rel.o")}
    assert str(tree).encode() + b"/src/a.c" in expected["a.o"]
    for name in expected:
        (tree / "build" / name).unlink()
    inferred = gg_infer(tree, "sh", "-e", "build.sh")
    assert inferred.returncode == 0, inferred.stderr
    assert "ran locally" not in inferred.stderr
    forced = gg_force(tree, ["build/a.o", "build/rel.o"], tmp_path / "trace.jsonl")
    assert forced.returncode == 0, forced.stderr
    for name, data in expected.items():
        assert (tree / "build" / name).read_bytes() == data, name


def test_mixed_path_styles_run_locally(tmp_path):
    """-I by absolute path with a relative source: gcc prints each file as it found it,
    which one thunk cannot reproduce; the call runs locally and says so."""
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "h.h").write_text('static const char *where = __FILE__;\n')
    (tmp_path / "a.c").write_text('#include "h.h"\nconst char *w(void) { return where; }\n')
    result = gg_infer(tmp_path, "gcc", "-c", f"-I{tmp_path}/inc", "a.c")
    assert result.returncode == 0, result.stderr
    assert "1 command ran locally, not as thunks: gcc (absolute and relative paths mixed) x1" in result.stderr
    assert read_placeholder(tmp_path / "a.o") is None
    assert f"{tmp_path}/inc/h.h".encode() in (tmp_path / "a.o").read_bytes()


def test_joined_and_long_output_options(tmp_path):
    """``-oFILE``, ``--output=FILE`` and ``--output FILE`` become thunks whose objects are
    the real gcc's (they ran locally before)."""
    files = {"a.c": "int f(void) { return 1; }\n"}
    script = "gcc -c a.c -oa1.o\ngcc -c a.c --output=a2.o\ngcc -O2 -c a.c --output a3.o\n"
    run = run_both(tmp_path, files, script)
    assert run.summary() == "", run.summary()
    force_and_compare(tmp_path, run, ["a1.o", "a2.o", "a3.o"])


def test_the_builds_source_date_epoch_reaches_the_compile(tmp_path, monkeypatch):
    """A build that sets ``SOURCE_DATE_EPOCH`` (reproducible builds) gets its date in
    ``__DATE__``/``__TIME__`` from the thunk too (it got the thunks' fixed 0, 1970)."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    files = {"a.c": 'const char *when = __DATE__ " " __TIME__;\n'}
    run = run_both(tmp_path, files, "gcc -c a.c -o a.o\n")
    assert b"Nov 14 2023" in (run.plain / "a.o").read_bytes()
    force_and_compare(tmp_path, run, ["a.o"])


def test_the_builds_ld_run_path_reaches_the_link(tmp_path, monkeypatch):
    """ld writes ``LD_RUN_PATH`` as the RUNPATH of a program linked without ``-rpath``;
    the link thunk does the same (its program had no RUNPATH)."""
    monkeypatch.setenv("LD_RUN_PATH", "/opt/gg-run-path")
    files = {"m.c": "int main(void) { return 0; }\n"}
    run = run_both(tmp_path, files, "gcc m.c -o prog\n")
    assert b"/opt/gg-run-path" in (run.plain / "prog").read_bytes()
    force_and_compare(tmp_path, run, ["prog"])


def test_a_dependency_file_that_is_a_device_is_written_into(tmp_path):
    """``-MF /dev/null``: gg-infer wrote the dependency file by an atomic rename, which
    put a regular file in place of the device (as root, ``/dev/null`` itself). Tested
    through a link to ``/dev/null`` in the tree, which must stay that link."""
    (tmp_path / "a.c").write_text("int f(void) { return 1; }\n")
    (tmp_path / "devnull").symlink_to("/dev/null")
    result = gg_infer(tmp_path, "gcc", "-c", "a.c", "-o", "a.o", "-MMD", "-MF", "devnull")
    assert result.returncode == 0, result.stderr
    assert read_placeholder(tmp_path / "a.o") is not None
    assert (tmp_path / "devnull").is_symlink() and str((tmp_path / "devnull").readlink()) == "/dev/null"
