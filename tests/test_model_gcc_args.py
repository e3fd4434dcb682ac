"""The gcc command-line parser, path mapping and dependency-file parsing."""

from __future__ import annotations

import pytest

from model_sub.deps import parse_make_deps
from model_sub.driver import parse_hash_hash_hash, split_hash_line
from model_sub.gcc_args import RunReal, Unmodelled, default_depfile, default_output, parse
from model_sub.paths import PathMap


def _touch(tmp_path, *names):
    for name in names:
        (tmp_path / name).write_text("")


def test_compile_with_separate_and_joined_arguments(tmp_path):
    call = parse(["gcc", "-I", "inc", "-Iother", "-DX=1", "-D", "Y", "-c", "a.c", "-o", "out/a.o",
                  "-MMD", "-MF", "a.d", "-MT", "tgt", "--weird-new-flag", "-plugin", "-Wp,-DZ"], str(tmp_path))
    assert call.mode == "compile"
    assert call.output == "out/a.o"
    assert [s.path for s in call.sources] == ["a.c"]
    assert call.dep_flags == ["-MMD"] and call.dep_file == "a.d" and call.dep_targets == [("-MT", "tgt")]
    paths = [(i.words, i.path) for i in call.items if i.path and i.kind == "opt"]
    assert paths == [(["-I", "inc"], "inc"), (["-Iother"], "other")]
    assert ["--weird-new-flag"] in [i.words for i in call.items]  # unknown options are carried
    assert ["-plugin"] in [i.words for i in call.items]


def test_path_options_with_their_path_joined(tmp_path):
    """gcc takes -includeFILE, -imacrosFILE, -isystemDIR, -iquoteDIR, -idirafterDIR and
    -isysrootDIR as one word: each names a path to map (carried verbatim, the file was
    missing from the thunk); the option alone still takes the next word."""
    call = parse(["gcc", "-includeconfig.h", "-imacrosm.h", "-isystem/opt/x/include", "-iquoteq", "-idirafterd",
                  "-isysroot/sr", "-include", "sep.h", "-imultiarch", "x86_64-linux-gnu", "-c", "a.c"],
                 str(tmp_path))
    joined = [(item.option, item.path, item.joined) for item in call.items if item.path and item.kind == "opt"]
    assert joined == [("-include", "config.h", True), ("-imacros", "m.h", True), ("-isystem", "/opt/x/include", True),
                      ("-iquote", "q", True), ("-idirafter", "d", True), ("-isysroot", "/sr", True),
                      ("-include", "sep.h", False)]
    assert ["-imultiarch", "x86_64-linux-gnu"] in [item.words for item in call.items]


def test_link_items_keep_their_order_and_response_files_expand(tmp_path):
    (tmp_path / "args.rsp").write_text('main.o "-L lib dir" -lm\n-Wl,--as-needed\n')
    call = parse(["g++", "-o", "prog", "@args.rsp", "-Xlinker", "-z", "-Xlinker", "now", "x.cpp"], str(tmp_path))
    assert call.mode == "link"
    words = [i.words for i in call.items]
    assert words == [["main.o"], ["-L lib dir"], ["-lm"], ["-Wl,--as-needed"], ["-Xlinker", "-z"],
                     ["-Xlinker", "now"], ["x.cpp"]]
    assert [s.path for s in call.sources] == ["x.cpp"]
    assert [i.path for i in call.linker_inputs] == ["main.o"]


def test_x_language_applies_to_following_inputs(tmp_path):
    call = parse(["gcc", "-c", "-x", "c", "code.txt", "-x", "none", "b.c"], str(tmp_path))
    assert [(s.path, s.lang) for s in call.sources] == [("code.txt", "c"), ("b.c", "none")]
    assert [default_output(call, s) for s in call.sources] == ["code.o", "b.o"]


@pytest.mark.parametrize("argv", [
    ["gcc", "-E", "a.c"], ["gcc", "--version"], ["gcc", "-print-file-name=libc.so"], ["gcc", "-dumpmachine"],
    ["gcc", "-v"], ["gcc", "-c", "-"], ["gcc"], ["gcc", "-M", "a.c"], ["gcc", "-c", "a.c", "b.c", "-o", "x.o"],
    ["gcc", "conftest.c", "-o", "conftest"], ["gcc", "-c", "a.h"], ["gcc", "-flto", "-c", "a.c"],
])
def test_calls_that_run_the_real_tool(tmp_path, argv):
    with pytest.raises(Unmodelled):
        parse(argv, str(tmp_path))


def test_default_names(tmp_path):
    call = parse(["gcc", "-S", "dir/a.c"], str(tmp_path))
    assert default_output(call, call.sources[0]) == "a.s"
    call = parse(["gcc", "-c", "-MD", "src/a.c", "-o", "obj/a.o"], str(tmp_path))
    assert default_depfile(call, "obj/a.o", call.sources[0]) == "obj/a.d"


def test_path_map_is_checkout_independent():
    one, two = PathMap.for_root("/home/u/proj"), PathMap.for_root("/tmp/x/proj")
    assert one.to_thunk("../inc/a.h", "/home/u/proj/src") == "r/inc/a.h"
    assert two.to_thunk("../inc/a.h", "/tmp/x/proj/src") == "r/inc/a.h"
    assert one.to_thunk("/usr/include/stdio.h", "/") == "a/usr/include/stdio.h"
    assert one.to_host("r/inc/a.h") == "/home/u/proj/inc/a.h"
    assert one.prefix_maps("/home/u/proj/src") == two.prefix_maps("/tmp/x/proj/src") == [
        "-fdebug-prefix-map=/proc/self/cwd=.",
        "-ffile-prefix-map=a/=/", "-ffile-prefix-map=r/=../", "-ffile-prefix-map=r/src/="]


def test_dependency_file_parsing():
    text = "a.o: a.c /usr/include/stdio.h \\\n inc/my\\ file.h x.h\n\nx.h:\n"
    assert parse_make_deps(text) == ["a.c", "/usr/include/stdio.h", "inc/my file.h", "x.h"]


def test_hash_hash_hash_temps_get_stable_names():
    stderr = ('Target: x\n /usr/lib/gcc/x/12/cc1 -quiet r/a.c -o /tmp/ccAbC123.s\n'
              ' as --64 -o a.o /tmp/ccAbC123.s\nCOLLECT_GCC_OPTIONS=...\n')
    stages = parse_hash_hash_hash(stderr)
    assert [s.argv for s in stages] == [("/usr/lib/gcc/x/12/cc1", "-quiet", "r/a.c", "-o", "gg-tmp0.s"),
                                        ("as", "--64", "-o", "a.o", "gg-tmp0.s")]
    assert stages[1].output == "a.o"


@pytest.mark.parametrize(("argv", "probe"), [
    (["gcc", "--version"], True), (["gcc", "-print-search-dirs"], True), (["gcc", "-dumpmachine"], True),
    (["gcc", "-v"], True), (["gcc", "-###", "-c", "a.c"], True), (["gcc"], True),
    (["gcc", "conftest.c", "-o", "conftest"], True), (["gcc", "-c", "a.c", "-o", "/dev/null"], True),
    (["gcc", "-E", "a.c"], False), (["gcc", "-v", "-c", "a.c"], False), (["gcc", "-flto", "-c", "a.c"], False),
    (["gcc", "-c", "a.h"], False),
])
def test_probes_and_queries_run_real_without_counting(tmp_path, argv, probe):
    """RunReal (configure probe, query) vs Unmodelled (forced inputs, counted)."""
    with pytest.raises(Unmodelled) as caught:
        parse(argv, str(tmp_path))
    assert isinstance(caught.value, RunReal) is probe


@pytest.mark.parametrize(("argv", "flags", "depfile", "targets", "wp"), [
    (["gcc", "-c", "a.c", "-Wp,-MD,.a.o.d"], ["-MD"], ".a.o.d", [], True),
    (["gcc", "-c", "a.c", "-o", "o/a.o", "-Wp,-MMD,o/.a.o.d"], ["-MMD"], "o/.a.o.d", [], True),
    (["gcc", "-c", "a.c", "-MD", "-MF", "x.d", "-o", "o/a.o"], ["-MD"], "x.d", [], False),
    (["gcc", "-c", "a.c", "-MMD"], ["-MMD"], None, [], False),
    (["gcc", "-c", "a.c", "-MD", "-MTx", "-MQ", "y$", "-MP"], ["-MD", "-MP"], None, [("-MT", "x"), ("-MQ", "y$")],
     False),
])
def test_dependency_options(tmp_path, argv, flags, depfile, targets, wp):
    call = parse(argv, str(tmp_path))
    assert (call.dep_flags, call.dep_file, call.dep_targets, call.preprocessor_depfile) == (flags, depfile, targets,
                                                                                          wp)


def test_nested_response_files_and_x_none(tmp_path):
    (tmp_path / "inner.rsp").write_text("-x c noext -x none b.c\n")
    (tmp_path / "outer.rsp").write_text("-c @inner.rsp -DX='a b'\n")
    call = parse(["gcc", "@outer.rsp"], str(tmp_path))
    assert [(s.path, s.lang) for s in call.sources] == [("noext", "c"), ("b.c", "none")]
    assert ["-DX=a b"] in [i.words for i in call.items]


def test_gcc_hash_hash_hash_quoting():
    line = ' /usr/bin/ld "-rpath" "\\$ORIGIN/lib" -o a "x\\"y" "a b" "back\\\\slash"'
    assert split_hash_line(line) == ["/usr/bin/ld", "-rpath", "$ORIGIN/lib", "-o", "a", 'x"y', "a b", "back\\slash"]


@pytest.mark.parametrize(("argv", "label"), [
    (["gcc", "-c", "a.c", "-gsplit-dwarf"], "-gsplit-dwarf"),
    (["gcc", "-c", "a.c", "-aux-info", "x"], "-aux-info"),
    (["gcc", "-c", "a.c", "-fopt-info-vec=x.txt"], "-fopt-info=FILE"),
    (["gcc", "a.o", "-Wl,-Map,x.map"], "-Wl,-Map"),
    (["gcc", "a.o", "-Wl,-Map=x.map"], "-Wl,-Map"),
    (["gcc", "a.o", "-Wl,--as-needed,--print-map"], "-Wl,--print-map"),
    (["gcc", "a.o", "-Xlinker", "--dependency-file=x.d"], "-Xlinker --dependency-file=x.d"),
    (["gcc", "-c", "a.c", "-Wa,-adhln=a.lst"], "-Wa,-adhln"),
    (["gcc", "-c", "a.c", "-Wa,--noexecstack,-adhln=a.lst"], "-Wa,-adhln"),
    (["gcc", "-c", "a.c", "-Wa,--MD,a.d"], "-Wa,--MD"),
    (["gcc", "-c", "a.c", "-Xassembler", "-al=a.lst"], "-Xassembler -al"),
])
def test_options_that_write_other_outputs_run_locally(tmp_path, argv, label):
    """A thunk has one declared output; an option that writes another file (or prints
    a report) would lose it, so the call runs locally."""
    with pytest.raises(Unmodelled) as caught:
        parse(argv, str(tmp_path))
    assert caught.value.label == label and not isinstance(caught.value, RunReal)


@pytest.mark.parametrize("words", [["-oout/a.o"], ["--output=out/a.o"], ["--output", "out/a.o"]])
def test_every_spelling_of_the_output_option(tmp_path, words):
    """gcc takes ``-oFILE``, ``--output=FILE`` and ``--output FILE`` as ``-o FILE``; parsed
    as an unknown flag (or an input), the call could only run locally."""
    call = parse(["gcc", "-c", "a.c", *words], str(tmp_path))
    assert call.output == "out/a.o"
    assert [i.path for i in call.items if i.kind == "input"] == ["a.c"]
    assert not any(w.startswith(("-o", "--output")) for i in call.items for w in i.words)
