"""The per-call memo (model_sub/memo.py): a replayed call writes exactly what the model
would, and nothing the model's answer depends on can change without a miss.

Real gg-infer runs of a small make project (a compile with a header and -MMD, an
archive made by ar and ranlib, a link that searches two -L directories), with the real
gcc and binutils. Each check compares a memo hit, or a miss after a change, with what
a run with GG_INFER_MEMO=off writes for the same tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ir.placeholder import read_placeholder
from ir.store import LocalStore
from tests.test_infer_support import tool_env

TIMEOUT = 120
OUTPUTS = ("main.o", "main.d", "x.o", "libx.a", "app")
CALLS = ("main.c", "x.c", "ar ", "ranlib", "-o app")


def _env(**extra: str) -> dict[str, str]:
    env = tool_env()
    env.pop("GG_INFER_MEMO", None)
    env.setdefault("GG_INFER_SERVER", "off")
    env.update(extra)
    return env


def infer(root: Path, *command: str, **extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "model_sub.infer", *command], cwd=root, env=_env(**extra),
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    return result


def build(root: Path, *make_args: str, **extra: str) -> dict[str, str]:
    """``make clean`` then ``gg-infer make``: for each call (by a word of its command
    line), how it was answered: ``memo``, ``model`` or the log line's first field."""
    subprocess.run(["make", "-s", "clean"], cwd=root, check=True, capture_output=True)
    log = root / ".gg" / "infer" / "log"
    log.unlink(missing_ok=True)
    infer(root, "make", "-s", *make_args, **extra)
    answers: dict[str, str] = {}
    for line in log.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 4:
            continue
        how = "memo" if fields[0] == "model" and fields[2].endswith(" memo") else fields[0]
        for call in CALLS:
            if call in fields[3]:
                answers[call] = how
    return answers


def outputs(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in OUTPUTS}


def ref(root: Path, name: str) -> str:
    placeholder = read_placeholder(root / name)
    assert placeholder is not None, f"{name} is not a placeholder"
    return placeholder.ref


def fresh_model(root: Path, *make_args: str, **extra: str) -> dict[str, bytes]:
    """What the models write for the tree as it is now, without the memo."""
    answers = build(root, *make_args, GG_INFER_MEMO="off", **extra)
    assert "memo" not in answers.values(), answers
    return outputs(root)


def _archive(directory: Path, value: int) -> None:
    """A real libfoo.a whose foo() returns ``value``."""
    directory.mkdir(exist_ok=True)
    (directory / "foo.c").write_text(f"int foo(void) {{ return {value}; }}\n")
    subprocess.run(["gcc", "-c", "foo.c", "-o", "foo.o"], cwd=directory, check=True)
    subprocess.run(["ar", "rcD", "libfoo.a", "foo.o"], cwd=directory, check=True)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "p"
    root.mkdir()
    (root / "h.h").write_text("#define V 1\n")
    (root / "main.c").write_text('#include <stdio.h>\n#include "h.h"\nint x(void);\nint foo(void);\n'
                                 'int main(void) { printf("%d\\n", V + x() + foo()); return 0; }\n')
    (root / "x.c").write_text("int x(void) { return 2; }\n")
    _archive(root / "lib2", 40)
    (root / "Makefile").write_text(
        "CFLAGS = -O2\n"
        "app: main.o libx.a\n\tcc -o app main.o libx.a -Llib1 -Llib2 -lfoo\n"
        "main.o: main.c h.h\n\tcc $(CFLAGS) -MMD -c main.c -o main.o\n"
        "x.o: x.c\n\tcc $(CFLAGS) -c x.c -o x.o\n"
        "libx.a: x.o\n\tar rc libx.a x.o\n\tranlib libx.a\n"
        "clean:\n\trm -f app *.o *.a *.d\n")
    return root


@pytest.mark.parametrize("server", ["on", "off"])
def test_a_replayed_build_writes_what_the_models_write(tree, server):
    first = build(tree, GG_INFER_SERVER=server)
    assert set(first.values()) == {"model"} and len(first) == len(CALLS), first
    replayed = build(tree, GG_INFER_SERVER=server)
    assert replayed == dict.fromkeys(CALLS, "memo"), replayed
    memo_bytes = outputs(tree)
    assert (tree / "main.d").read_text().startswith("main.o: main.c h.h")
    store = LocalStore(tree / ".gg")
    for name in ("main.o", "x.o", "libx.a", "app"):
        assert store.has(ref(tree, name))
    assert fresh_model(tree) == memo_bytes
    if server == "on":
        from tests.test_infer_server import stop

        stop(tree)


def test_the_server_hands_the_records_to_the_next_run(tree):
    """Records reach the next run through the warm server, not only through the disk."""
    from tests.test_infer_server import stop

    try:
        build(tree, GG_INFER_SERVER="on")
        shutil.rmtree(tree / ".gg" / "infer" / "memo")
        assert build(tree, GG_INFER_SERVER="on") == dict.fromkeys(CALLS, "memo")
    finally:
        stop(tree)


def test_a_changed_header_flag_or_environment_misses(tree):
    build(tree)
    before = outputs(tree)
    (tree / "h.h").write_text("#define V 7\n")  # the same size, other content
    answers = build(tree)
    assert answers["main.c"] == "model" and answers["x.c"] == "memo", answers
    after = outputs(tree)
    assert after["main.o"] != before["main.o"]
    assert after == fresh_model(tree)

    assert build(tree, "CFLAGS=-O1")["main.c"] == "model"
    assert outputs(tree) == fresh_model(tree, "CFLAGS=-O1")

    build(tree, SOME_SETTING="1")
    assert build(tree, SOME_SETTING="2")["main.c"] == "model"

    # an environment variable that makes the call unmodellable is never answered from a record
    (tree / "inc").mkdir()
    answers = build(tree, CPATH=str(tree / "inc"))
    assert answers["main.c"] == "real" and read_placeholder(tree / "main.o") is None, answers


def test_a_library_that_appears_earlier_on_the_search_path_misses(tree):
    build(tree)
    before = ref(tree, "app")
    _archive(tree / "lib1", 50)  # -Llib1 comes first: ld would now take this one
    answers = build(tree)
    assert answers["-o app"] == "model" and answers["main.c"] == "memo", answers
    assert ref(tree, "app") != before
    assert outputs(tree) == fresh_model(tree)


def test_a_changed_archive_member_misses_in_ar_and_ranlib(tree):
    build(tree)
    (tree / "x.c").write_text("int x(void) { return 3; }\n")
    answers = build(tree)
    assert {answers[c] for c in ("x.c", "ar ", "ranlib", "-o app")} == {"model"}, answers
    assert outputs(tree) == fresh_model(tree)


def _driver_copy(prefix: Path) -> None:
    """A copy of the real gcc driver in ``prefix/bin``, finding the real gcc's programs
    through ``prefix/lib`` and ``prefix/libexec`` (gcc looks for them next to itself)."""
    real_cc = shutil.which("cc")
    assert real_cc is not None
    (prefix / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy(os.path.realpath(real_cc), prefix / "bin" / "cc")
    for sub in ("lib", "libexec"):
        target = Path("/usr") / sub / "gcc"
        if not target.is_dir():
            continue  # Debian keeps cc1 under lib/
        for machine in target.iterdir():
            for version in machine.iterdir():
                link = prefix / sub / "gcc" / machine.name / version.name
                if not link.exists():
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(version)


def test_a_changed_compiler_driver_misses(tree, tmp_path):
    """The driver's answers (``-###``) are cached by its stat identity: a new copy of
    the driver, even with the same bytes, is not answered from a record."""
    prefix = tmp_path / "toolchain"
    _driver_copy(prefix)
    path = f"{prefix / 'bin'}:{tool_env()['PATH']}"
    objects = ("main.o", "x.o")  # (a link through the copy's lib/ symlinks is not modelled)
    build(tree, *objects, PATH=path)
    assert build(tree, *objects, PATH=path) == {"main.c": "memo", "x.c": "memo"}
    os.unlink(prefix / "bin" / "cc")
    _driver_copy(prefix)
    assert build(tree, *objects, PATH=path) == {"main.c": "model", "x.c": "model"}
    replayed = {name: (tree / name).read_bytes() for name in ("main.o", "main.d", "x.o")}
    build(tree, *objects, PATH=path, GG_INFER_MEMO="off")
    assert replayed == {name: (tree / name).read_bytes() for name in ("main.o", "main.d", "x.o")}


def test_a_recorded_thunk_missing_from_the_store_misses(tree):
    build(tree)
    store = LocalStore(tree / ".gg")
    thunk = ref(tree, "x.o")
    os.unlink(store.blob_path(thunk))
    answers = build(tree)
    assert answers["x.c"] == "model" and answers["main.c"] == "memo", answers
    assert ref(tree, "x.o") == thunk and store.has(thunk)


def test_a_bad_memo_setting_is_one_line(tree):
    result = subprocess.run([sys.executable, "-m", "model_sub.infer", "make", "-s"], cwd=tree,
                            env=_env(GG_INFER_MEMO="sometimes"), capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode != 0
    assert "GG_INFER_MEMO" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_key_leaves_out_only_what_no_model_reads(tmp_path):
    from model_sub.memo import Memo

    memo = Memo(tmp_path, None, lambda: "code", ["store", "root", "/usr/bin:/bin"], {}, {})  # type: ignore[arg-type]
    argv = ["gcc", "-c", "a.c"]
    base = {"HOME": "/root", "MAKEFLAGS": " -j2 --jobserver-auth=3,4", "_": "/usr/bin/make", "SHLVL": "1",
            "PATH": "/usr/bin", "GG_INFER_SOCKET": "/tmp/a.sock"}
    key = memo.key("gcc", "/usr/bin/gcc", "/src", argv, base)
    same = {**base, "MAKEFLAGS": " -j2 --jobserver-auth=fifo:/tmp/GMfifo77", "_": "/usr/bin/strace", "SHLVL": "3",
            "OLDPWD": "/", "PATH": "/x/bin:/usr/bin", "GG_INFER_SOCKET": "/tmp/b.sock"}
    assert memo.key("gcc", "/usr/bin/gcc", "/src", argv, same) == key
    for changed in ({"MAKEFLAGS": " -j4 --jobserver-auth=3,4"}, {"HOME": "/home/x"}, {"LANG": "C.UTF-8"}):
        assert memo.key("gcc", "/usr/bin/gcc", "/src", argv, {**base, **changed}) != key, changed
    assert memo.key("gcc", "/usr/bin/gcc", "/src", [*argv, "-O2"], base) != key
    assert memo.key("gcc", "/usr/bin/gcc", "/other", argv, base) != key
    assert memo.key("gcc", "/usr/bin/cc", "/src", argv, base) != key
    (tmp_path / "args").write_text("-O1\n")
    at_file = memo.key("gcc", "/usr/bin/gcc", str(tmp_path), [*argv, "@args"], base)
    (tmp_path / "args").write_text("-O3\n")
    assert memo.key("gcc", "/usr/bin/gcc", str(tmp_path), [*argv, "@args"], base) != at_file
