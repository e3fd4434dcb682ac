"""The ar / strip / objcopy / ranlib grammars: which calls become thunks, and why not."""

from __future__ import annotations

import pytest

from ir.archives import thin_member_names
from model_sub.binutils_args import binutils_name, check_ar_modelled, parse_ar, parse_objtool
from model_sub.fallback import LocalRuns, candidate_inputs, probe_reason
from model_sub.reasons import RunReal, Unmodelled


@pytest.mark.parametrize(("argv", "operation", "modifiers", "archive", "members"), [
    (["ar", "rcs", "l.a", "a.o", "b.o"], "r", "cs", "l.a", ["a.o", "b.o"]),
    (["ar", "-src", "l.a", "a.o"], "r", "cs", "l.a", ["a.o"]),
    (["ar", "cru", "l.a", "a.o"], "r", "cu", "l.a", ["a.o"]),
    (["ar", "Dcr", "l.a", "a.o"], "r", "cD", "l.a", ["a.o"]),
    (["ar", "qc", "l.a", "a.o"], "q", "c", "l.a", ["a.o"]),
    (["ar", "-rcs", "l.a", "a.o"], "r", "cs", "l.a", ["a.o"]),
    (["ar", "rvs", "l.a", "a.o"], "r", "vs", "l.a", ["a.o"]),
    (["ar", "-r", "-c", "-s", "l.a", "a.o"], "r", "cs", "l.a", ["a.o"]),
    (["ar", "-D", "-rc", "l.a", "a.o"], "r", "cD", "l.a", ["a.o"]),
    (["ar", "--thin", "rc", "l.a", "a.o"], "r", "c", "l.a", ["a.o"]),
    (["ar", "rcs", "l.a"], "r", "cs", "l.a", []),
    (["ar", "--plugin", "p.so", "rcs", "l.a", "a.o"], "r", "cs", "l.a", ["a.o"]),
    (["ar", "rcs", "--plugin", "p.so", "l.a", "a.o"], "r", "cs", "l.a", ["a.o"]),
    (["ar", "--target=elf64-x86-64", "rc", "l.a"], "r", "c", "l.a", []),
    (["ar", "rb", "a.o", "l.a", "m.o"], "r", "b", "l.a", ["m.o"]),
    (["ar", "xN", "2", "l.a", "a.o"], "x", "N", "l.a", ["a.o"]),
    (["ar", "t", "l.a"], "t", "", "l.a", []),
    (["ar", "s", "l.a"], "s", "", "l.a", []),
    (["ar", "-s", "l.a"], "s", "", "l.a", []),
])
def test_ar_parse(argv, operation, modifiers, archive, members):
    call = parse_ar(argv, "/nonexistent")
    assert (call.operation, call.modifiers, call.archive, call.members) == (operation, set(modifiers), archive,
                                                                            members)


@pytest.mark.parametrize(("argv", "label"), [
    (["ar", "rcs", "l.a", "a.o"], None), (["ar", "cru", "l.a", "a.o"], None), (["ar", "rvs", "l.a"], None),
    (["ar", "s", "l.a"], None), (["ar", "rcSf", "l.a", "a.o"], None), (["ar", "rcs", "--target", "x", "l.a"], None),
    (["ar", "rcT", "l.a", "a.o"], "(thin archive)"), (["ar", "--thin", "rc", "l.a", "a.o"], "(thin archive)"),
    (["ar", "t", "l.a"], "t"), (["ar", "x", "l.a"], "x"), (["ar", "d", "l.a", "a.o"], "d"),
    (["ar", "p", "l.a"], "p"), (["ar", "m", "l.a", "a.o"], "m"), (["ar", "rcU", "l.a", "a.o"], "rU"),
    (["ar", "rcP", "l.a", "a.o"], "rP"), (["ar", "--plugin", "p", "rc", "l.a"], "--plugin"),
    (["ar", "rcuD", "l.a", "a.o"], "uD"), (["ar", "rc", "l.a", "-v", "a.o"], "(option after the archive)"),
    (["ar", "rz", "l.a"], "(bad key)"), (["ar", "rt", "l.a"], "(bad key)"), (["ar", "c", "l.a"], "(bad key)"),
    (["ar", "rc"], "(no archive)"),
])
def test_ar_modelled_or_why_not(argv, label):
    if label is None:
        check_ar_modelled(parse_ar(argv, "/nonexistent"))
        return
    with pytest.raises(Unmodelled) as caught:
        check_ar_modelled(parse_ar(argv, "/nonexistent"))
    assert caught.value.label == label
    assert not isinstance(caught.value, RunReal)


@pytest.mark.parametrize("argv", [["ar", "--version"], ["ar", "V"], ["strip", "--version"], ["objcopy", "--help"]])
def test_binutils_queries_are_run_real(argv):
    with pytest.raises(RunReal):
        if argv[0] == "ar":
            parse_ar(argv, "/nonexistent")
        else:
            parse_objtool(argv[0], argv, "/nonexistent")


@pytest.mark.parametrize(("argv", "options", "files", "output"), [
    (["strip", "prog"], [], ["prog"], None),
    (["strip", "--strip-unneeded", "-o", "out", "in"], [("--strip-unneeded",)], ["in"], "out"),
    (["strip", "-gx", "-R", ".comment", "-K", "main", "a", "b"], [("-gx",), ("-R", ".comment"), ("-K", "main")],
     ["a", "b"], None),
    (["strip", "--remove-section=.note", "-oout", "in"], [("--remove-section=.note",)], ["in"], "out"),
    (["objcopy", "--only-keep-debug", "p", "p.debug"], [("--only-keep-debug",)], ["p", "p.debug"], None),
    (["objcopy", "-O", "binary", "-j", ".text", "a.o", "a.bin"], [("-O", "binary"), ("-j", ".text")],
     ["a.o", "a.bin"], None),
    (["objcopy", "--rename-section", ".a=.b", "x.o"], [("--rename-section", ".a=.b")], ["x.o"], None),
    (["ranlib", "-D", "l.a"], [("-D",)], ["l.a"], None),
])
def test_objtool_parse(argv, options, files, output):
    call = parse_objtool(argv[0], argv, "/nonexistent")
    assert (call.options, call.files, call.output) == (options, files, output)


def test_objcopy_debuglink_is_a_file_input():
    call = parse_objtool("objcopy", ["objcopy", "--add-gnu-debuglink=d/p.debug", "p", "q"], "/nonexistent")
    assert call.file_options == [("--add-gnu-debuglink", "d/p.debug", "=")]


@pytest.mark.parametrize(("argv", "label"), [
    (["objcopy", "--add-section", ".x=f", "a.o"], "--add-section"),
    (["objcopy", "--update-section", ".x=f", "a.o"], "--update-section"),
    (["objcopy", "--dump-section", ".x=f", "a.o"], "--dump-section"),
    (["objcopy", "--keep-symbols=f", "a.o"], "--keep-symbols"),
    (["strip", "-U", "l.a"], "-U"), (["strip", "-p", "x"], "-p"), (["ranlib", "-t", "l.a"], "-t"),
    (["strip"], "(no input)"), (["strip", "-o"], "(missing argument)"),
])
def test_objtool_unmodelled(argv, label):
    with pytest.raises(Unmodelled) as caught:
        parse_objtool(argv[0], argv, "/nonexistent")
    assert caught.value.label == label


def test_fallback_finds_inputs_in_every_form(tmp_path):
    for name in ["a.o", "b.o", "lib/libz1.a", "lib/libz2.so", "f.map", "s.bin", "r.o", "out.o", "x.o"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / "inner.rsp").write_text("r.o\n")
    (tmp_path / "args.rsp").write_text("@inner.rsp -Lnone\n")
    argv = ["gcc", "a.o", "-o", "out.o", "-Llib", "-lz1", "-lz2", "-Wl,--version-script=f.map", "@args.rsp",
            "--add-section", ".s=s.bin", "-Wl,--whole-archive,x.o"]
    found = [p[len(str(tmp_path)) + 1:] for p in candidate_inputs(argv, str(tmp_path))]
    assert sorted(found) == ["a.o", "f.map", "lib/libz1.a", "lib/libz2.so", "r.o", "s.bin", "x.o"]
    (tmp_path / "envlib").mkdir()
    (tmp_path / "envlib" / "libe.a").write_text("")
    from_env = candidate_inputs(["gcc", "m.o", "-le"], str(tmp_path), {"LIBRARY_PATH": "envlib"})
    assert from_env == [str(tmp_path / "envlib" / "libe.a")]
    # for tools without -o OUTPUT, the word after -o is not skipped
    assert "out.o" in [p.rsplit("/", 1)[-1] for p in candidate_inputs(["objcopy", "-o", "out.o"], str(tmp_path))]


def test_summary_line():
    runs = LocalRuns()
    assert runs.summary("log") is None
    for reason in ["ar (thin archive)", "objcopy --add-section", "ar (thin archive)"]:
        runs.record(reason)
    assert runs.summary(".gg/infer/log") == ("gg-infer: 3 commands ran locally, not as thunks: ar (thin archive) x2, "
                                             "objcopy --add-section x1 (see .gg/infer/log)")


def test_thin_archive_members(tmp_path):
    import subprocess

    (tmp_path / "d").mkdir()
    for name in ["a.o", "d/b.o"]:
        (tmp_path / name).write_bytes(b"\x7fELF not really")
    long_name = "d/" + "x" * 20 + ".o"
    (tmp_path / long_name).write_bytes(b"data")
    subprocess.run(["ar", "rcT", "t.a", "a.o", "d/b.o", long_name, str(tmp_path / "a.o")], cwd=tmp_path, check=True,
                   capture_output=True)
    names = thin_member_names(str(tmp_path / "t.a"))
    assert [stored for stored, _ in names] == ["a.o", "d/b.o", long_name, str(tmp_path / "a.o")]
    assert [host for _, host in names] == [str(tmp_path / n) for n in ["a.o", "d/b.o", long_name, "a.o"]]


@pytest.mark.parametrize(("tool", "name"), [
    ("ar", "ar"), ("x86_64-linux-gnu-ar", "ar"), ("ranlib", "ranlib"), ("x86_64-linux-gnu-strip", "strip"),
    ("objcopy", "objcopy"), ("ar-2.40", "ar"), ("gcc-ar", None), ("nm", None), ("arx", None),
])
def test_binutils_names(tool, name):
    assert binutils_name(tool) == name


@pytest.mark.parametrize(("argv", "cwd", "probe"), [
    (["gcc", "-c", "conftest.c"], "/p", True), (["ar", "cru", "libconftest.a", "@conftest.lst"], "/p", True),
    (["gcc", "-o", "conftest", "conftest.c", "conftstm.o"], "/p", True),
    (["cc", "-o", "CMakeFiles/cmTC_1.dir/src.c.o", "-c", "src.c"], "/b/CMakeFiles/CMakeScratch/TryCompile-x", True),
    (["cc", "-c", "src.c"], "/b/CMakeFiles/CMakeTmp", True),
    (["gcc", "-c", "a.c"], "/p", False), (["ar", "rcs", "libfoo.a", "a.o"], "/b/CMakeFiles/x.dir", False),
])
def test_configure_probes(argv, cwd, probe):
    assert (probe_reason(argv, cwd) is not None) is probe
