"""ar, ranlib, strip and objcopy through gg-infer: modelled forms give the real tool's
bytes; unmodelled forms run for real on forced inputs and are counted in the summary."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from ir.placeholder import read_placeholder
from tests.script_builds import force_and_compare, run_both
from tests.test_infer_support import VENV_BIN, gg_infer, hidden_ok, tool_env

pytestmark = pytest.mark.skipif(not hidden_ok(), reason="needs root and unshare -m for the hidden toolchain")

SOURCES = {
    "a.c": "int a(void) { return 1; }\n",
    "sub/b.c": "int b(void) { return 2; }\nint b_local(void) { return 3; }\n",
    "main.c": "#include <stdio.h>\nint a(void); int b(void);\nint main(void) { printf(\"%d\\n\", a() + b()); }\n",
}
COMPILE = "gcc -c a.c -o a.o\ngcc -c sub/b.c -o sub/b.o\ngcc -c main.c -o main.o\n"

AR_FORMS = ["-src", "cru", "crs", "Dcr", "rcs", "qc", "-rcs", "rvs", "r", "q", "rcS", "-r -c -s", "rcsD",
            "--target=elf64-x86-64 rcs", "rcs --target elf64-x86-64"]


def test_ar_forms_are_thunks_with_the_real_bytes(tmp_path):
    lines = [COMPILE]
    outputs = []
    for index, form in enumerate(AR_FORMS):
        lines.append(f"ar {form} lib{index}.a a.o sub/b.o")
        outputs.append(f"lib{index}.a")
    # relpos, update of an existing archive, a response file, a member in another directory
    lines += ["ar rc upd.a a.o", "ar rcs upd.a sub/b.o", "ar rb a.o upd.a main.o",
              "echo 'rcs rsp.a a.o sub/b.o' > args.rsp", "ar @args.rsp", "ranlib -D upd.a"]
    outputs += ["upd.a", "rsp.a"]
    run = run_both(tmp_path, SOURCES, "\n".join(lines) + "\n")
    assert "real\tar" not in run.log(), run.log()
    assert run.summary() == ""
    for name in outputs:
        assert read_placeholder(run.gg / name) is not None, name
    # ar's own warnings ("creating", the ignored u) are printed as the real ar prints them
    assert run.gg_result.stderr == run.plain_result.stderr
    force_and_compare(tmp_path, run, outputs)


def test_strip_objcopy_ranlib_forms(tmp_path):
    script = COMPILE + "\n".join([
        "gcc main.o a.o sub/b.o -o prog",
        "cp prog prog-inplace && strip prog-inplace",
        "strip --strip-unneeded -o b-unneeded.o sub/b.o",
        "strip -g -R .comment -o prog-stripped prog",
        "objcopy --only-keep-debug prog prog.debug",
        "objcopy --strip-debug --add-gnu-debuglink=prog.debug prog prog-linked",
        "objcopy -O binary -j .text a.o a.bin",
        "objcopy --rename-section .text=.text2 a.o a-renamed.o",
        "ar rcS noindex.a a.o sub/b.o",
        "ranlib noindex.a",
    ]) + "\n"
    run = run_both(tmp_path, SOURCES, script)
    outputs = ["prog-inplace", "b-unneeded.o", "prog-stripped", "prog.debug", "prog-linked", "a.bin",
               "a-renamed.o", "noindex.a"]
    assert run.summary() == "", run.log()
    for name in outputs:
        assert read_placeholder(run.gg / name) is not None, name
    force_and_compare(tmp_path, run, outputs)


UNMODELLED = COMPILE + """\
ar rcs lib.a a.o sub/b.o
ar t lib.a > members.txt
mkdir -p x && cd x && ar x ../lib.a && cd ..
nm a.o > a.nm
objcopy --add-section .note.extra=members.txt a.o a-extra.o
ar rcT thin.a a.o sub/b.o
gcc main.o thin.a -o prog-thin
ar rcs lib.a main.o
size -A lib.a > lib.size
"""


def test_unmodelled_forms_run_on_forced_inputs(tmp_path):
    run = run_both(tmp_path, SOURCES, UNMODELLED)
    assert run.summary() == ("gg-infer: 6 commands ran locally, not as thunks: ar (thin archive) x1, ar t x1, "
                             "ar x x1, nm x1, objcopy --add-section x1, size x1 (see .gg/infer/log)")
    # what the real tools printed or wrote came from real inputs
    for name in ["members.txt", "a.nm", "x/a.o", "x/b.o", "a-extra.o", "thin.a", "lib.size"]:
        assert (run.gg / name).read_bytes() == (run.plain / name).read_bytes(), name
    # the program linked against the thin archive is a thunk, with the members as inputs
    assert read_placeholder(run.gg / "prog-thin") is not None
    force_and_compare(tmp_path, run, ["prog-thin", "lib.a"])


def test_a_failed_force_fails_the_call_with_one_line(tmp_path):
    (tmp_path / "a.c").write_text("int a(void) { return 1; }\n")
    script = "gcc -c a.c -o a.o && rm -rf .gg/blobs/* && nm a.o"
    result = gg_infer(tmp_path, "sh", "-c", script)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("gg-infer: cannot run nm")]
    assert len(lines) == 1, result.stderr
    assert read_placeholder(tmp_path / "a.o") is not None  # the real nm never read it


def test_gg_force_refuses_a_real_file_made_from_placeholders(tmp_path):
    (tmp_path / "a.c").write_text("int a(void) { return 1; }\n")
    assert gg_infer(tmp_path, "gcc", "-c", "a.c").returncode == 0
    # a real ar outside gg-infer archives the placeholder text
    subprocess.run(["ar", "rcs", "lib.a", "a.o"], cwd=tmp_path, check=True, capture_output=True)
    subprocess.run(["sh", "-c", "(echo header; cat a.o) > copy.txt"], cwd=tmp_path, check=True)
    for name in ("lib.a", "copy.txt"):
        result = subprocess.run([str(VENV_BIN / "gg-force"), name], cwd=tmp_path, env=tool_env(),
                                capture_output=True, text=True)
        assert result.returncode == 1, result.stderr
        assert result.stderr.count("\n") == 1 and "made from placeholders" in result.stderr, result.stderr
        assert "make clean" in result.stderr
    real = subprocess.run([str(VENV_BIN / "gg-force"), "a.c"], cwd=tmp_path, env=tool_env(), capture_output=True,
                          text=True)
    assert real.returncode == 0 and "already a real file" in real.stderr


def test_concurrent_forces_of_one_placeholder(tmp_path):
    """Several build jobs may force the same placeholder at once (separate gg-force runs)."""
    (tmp_path / "a.c").write_text("int a(void) { return 1; }\n")
    assert gg_infer(tmp_path, "gcc", "-c", "a.c").returncode == 0
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.c").write_text("int a(void) { return 1; }\n")
    subprocess.run(["gcc", "-c", "a.c"], cwd=plain, check=True)
    expected = (plain / "a.o").read_bytes()
    results = []

    def force():
        results.append(subprocess.run([sys.executable, "-m", "executor.force_cli", "-q", "a.o"], cwd=tmp_path,
                                      env=tool_env(), capture_output=True, text=True))

    threads = [threading.Thread(target=force) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
    assert (tmp_path / "a.o").read_bytes() == expected


def test_gg_force_on_a_thin_archive_forces_its_members(tmp_path):
    (tmp_path / "a.c").write_text("int a(void) { return 1; }\n")
    assert gg_infer(tmp_path, "gcc", "-c", "a.c").returncode == 0
    subprocess.run(["ar", "rcT", "thin.a", "a.o"], cwd=tmp_path, check=True, capture_output=True)
    result = subprocess.run([str(VENV_BIN / "gg-force"), "thin.a"], cwd=tmp_path, env=tool_env(),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "thin archive; forcing its 1 placeholder member" in result.stderr
    assert read_placeholder(tmp_path / "a.o") is None
    listing = subprocess.run(["nm", "thin.a"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert " T a\n" in listing


def test_parallel_jobs_reading_one_placeholder(tmp_path):
    """make -j4: four unmodelled calls need the same placeholder at once; it is forced
    once (the other calls wait for it) and every call reads the real object."""
    (tmp_path / "a.c").write_text("int a(void) { return 1; }\n")
    rules = "".join(f"n{i}.txt: a.o\n\tnm a.o > n{i}.txt\n" for i in range(4))
    (tmp_path / "Makefile").write_text("all: n0.txt n1.txt n2.txt n3.txt\na.o: a.c\n\tgcc -c a.c\n" + rules)
    result = gg_infer(tmp_path, "make", "-j4")
    assert result.returncode == 0, result.stderr
    assert "gg-infer: 4 commands ran locally, not as thunks: nm x4" in result.stderr
    texts = {(tmp_path / f"n{i}.txt").read_text() for i in range(4)}
    assert texts == {"0000000000000000 T a\n"}
    log = (tmp_path / ".gg" / "infer" / "log").read_text()
    assert log.count("(forced 1 input)") == 1 and log.count("\tnm\t") == 4, log
