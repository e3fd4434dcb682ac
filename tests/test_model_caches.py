"""The model caches that make warm gg-infer calls cheap must never hide a change.

Each cache added for speed has an invalidation rule; each rule is tested here with
real files, the real gcc and real gg-infer runs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ir.placeholder import read_placeholder
from ir.store import LocalStore
from ir.thunk import Thunk
from model_sub.context import THUNK_ENV, Inputs, ModelContext
from model_sub.deps import DepScanner
from model_sub.driver import Driver
from model_sub.fileids import FileIds
from model_sub.toolchain import Toolchain
from tests.test_infer_support import gg_infer

REAL_PATH = os.environ.get("PATH", "/usr/bin:/bin")


def _ref(path: Path) -> str:
    placeholder = read_placeholder(path)
    assert placeholder is not None, f"{path} is not a placeholder"
    return placeholder.ref


def _compile(tree: Path) -> str:
    result = gg_infer(tree, "gcc", "-O2", "-c", "main.c", "-o", "main.o")
    assert result.returncode == 0, result.stderr
    return _ref(tree / "main.o")


def test_a_header_changed_between_runs_changes_the_thunk(tmp_path):
    (tmp_path / "main.c").write_text('#include "a.h"\nint f(void) { return A; }\n')
    header = tmp_path / "a.h"
    header.write_text("#define A 1\n")
    first = _compile(tmp_path)
    os.utime(tmp_path / "main.o", (0, 0))
    assert _compile(tmp_path) == first  # unchanged: the same thunk, from the caches
    assert os.stat(tmp_path / "main.o").st_mtime > os.stat(tmp_path / "main.c").st_mtime  # make sees it new
    header.write_text("#define A 2\n")  # same size, new content
    changed = _compile(tmp_path)
    assert changed != first
    header.write_text("#define A 1\n")  # back to the first content: the first thunk again
    assert _compile(tmp_path) == first
    log = (tmp_path / ".gg" / "infer" / "log").read_text()
    assert log.count("model\tgcc") == 4


def test_a_file_rewritten_in_the_same_tick_gets_its_new_id(tmp_path):
    """A just-written file is racy: it is hashed again on every check, never remembered."""
    store = LocalStore.init(tmp_path / ".gg")
    ids = FileIds(store)
    path = tmp_path / "h.h"
    path.write_bytes(b"one\n")
    first = ids.stored(str(path))
    st = os.stat(path)
    path.write_bytes(b"two\n")  # same size, very likely within the same timestamp tick
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = ids.stored(str(path))
    assert second != first
    assert store.read_bytes(second) == b"two\n"
    assert not ids.unchanged(str(path), first)


def test_remembered_ids_follow_changes(tmp_path):
    store = LocalStore.init(tmp_path / ".gg")
    store.hash_cache.racy_window_ns = 0  # every entry trusted at once: the memo is used
    ids = FileIds(store)
    path = tmp_path / "h.h"
    path.write_bytes(b"one\n")
    first = ids.stored(str(path))
    assert ids.stored(str(path)) == first
    st = os.stat(path)
    path.write_bytes(b"two\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime; ctime moved
    assert ids.stored(str(path)) != first
    os.unlink(path)
    assert not ids.unchanged(str(path), first)
    with pytest.raises(OSError):
        ids.stored(str(path))


def test_a_rebuilt_program_gets_its_new_library_closure(tmp_path):
    """ldd answers are cached by the program's stat; rebuilding it invalidates them."""
    source = tmp_path / "p.c"
    program = tmp_path / "p"
    source.write_text("#include <math.h>\nint main(int c, char **v) { (void)v; return (int)sqrt((double)c); }\n")
    subprocess.run(["gcc", "-O0", "-o", str(program), str(source), "-lm", "-Wl,--no-as-needed"], check=True)
    store = LocalStore.init(tmp_path / ".gg")
    cache = tmp_path / ".gg" / "infer" / "closure"
    first = Toolchain(FileIds(store), cache, REAL_PATH)
    _, libs = first.closure(str(program))
    assert any("libm.so" in lib for lib in libs)
    source.write_text("int main(void) { return 0; }\n")
    subprocess.run(["gcc", "-O0", "-o", str(program), str(source)], check=True)
    for toolchain in (first, Toolchain(FileIds(store), cache, REAL_PATH)):  # memory, then disk
        _, libs = toolchain.closure(str(program))
        assert not any("libm.so" in lib for lib in libs)
        assert any("libc.so" in lib for lib in libs)


def test_recorded_thunk_ids_equal_the_thunks_own_and_survive_a_lost_blob(tmp_path):
    store = LocalStore.init(tmp_path / ".gg")
    (tmp_path / "x.c").write_text("int x;\n")
    ctx = ModelContext.create(store, str(tmp_path), REAL_PATH)
    program = ctx.toolchain.program("true")
    inputs = Inputs()
    ctx.add_file(inputs, str(tmp_path / "x.c"), "r/x.c")
    args = [*program.argv_prefix, "x"]
    ident = ctx.put(program.function_hash, args, ["out"], inputs, program.executables)
    expected = Thunk(function_hash=program.function_hash, args=tuple(args), outputs=("out",), envars=THUNK_ENV,
                     values=tuple(inputs.values), executables=program.executables).id
    assert ident == expected
    again = ModelContext.create(store, str(tmp_path), REAL_PATH)
    assert again.put(program.function_hash, args, ["out"], inputs, program.executables) == ident
    again.close()
    with open(tmp_path / ".gg" / "infer" / "thunk-ids", "a") as records:
        records.write("torn line without an id\n" + "0" * 32 + " Vnot-an-id\n")  # ignored or not stored
    store.blob_path(ident).unlink()  # a recorded ID whose blob is gone is not trusted
    third = ModelContext.create(store, str(tmp_path), REAL_PATH)
    assert third.put(program.function_hash, args, ["out"], inputs, program.executables) == ident
    assert store.load_thunk(ident).values == tuple(sorted(inputs.values))


@pytest.mark.parametrize(("args", "source", "output"), [
    (["-O2", "-c", "r/lapi.c", "-o", "lapi.o"], "r/lapi.c", "lapi.o"),
    (["-O2", "-frandom-seed=r/sub/a-b.c", "-c", "r/sub/a-b.c", "-o", "x.o"], "r/sub/a-b.c", "x.o"),
    (["-x", "c++", "-std=c++17", "-c", "r/shapes.cpp", "-o", "shapes.o"], "r/shapes.cpp", "shapes.o"),
    (["-g", "-S", "r/lua.tab.c", "-o", "lua.tab.s"], "r/lua.tab.c", "lua.tab.s"),
    (["-c", "r/main.c", "-o", "gg-tmp-obj3-main.o"], "r/main.c", "gg-tmp-obj3-main.o"),
])
def test_shared_driver_answers_equal_the_direct_ones(tmp_path, args, source, output):
    gcc = os.path.realpath(subprocess.run(["sh", "-c", "command -v gcc"], capture_output=True, text=True,
                                          check=True).stdout.strip())
    env = {"PATH": REAL_PATH}
    for driver in (Driver(tmp_path / "driver", REAL_PATH), Driver(tmp_path / "driver", REAL_PATH)):
        shared = driver.compile_stages(gcc, args, source, output, env)
        direct = Driver(tmp_path / "direct", REAL_PATH).stages(gcc, args, env)
        assert shared == direct
        driver.close()
    # a second source with the same flags is answered from the shared question
    other = [a.replace(source, "r/zz9.c") for a in args]
    assert (Driver(tmp_path / "driver", REAL_PATH).compile_stages(gcc, other, "r/zz9.c", output, env)
            == Driver(tmp_path / "direct2", REAL_PATH).stages(gcc, other, env))


@pytest.mark.parametrize("dep_args", [[], ["-MD"], ["-MMD", "-MP"], ["-MD", "-MQ", "out/x.o", "-MT", "x$y"]])
def test_scans_without_the_driver_give_the_drivers_dependency_files(tmp_path, dep_args):
    """The scan runs cc1 directly once checked against the driver; results must be equal."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.c").write_text('#include <stdio.h>\n#include "x.h"\nint x = X;\n')
    (tmp_path / "sub" / "x.h").write_text("#define X 3\n")
    gcc = os.path.realpath(subprocess.run(["sh", "-c", "command -v gcc"], capture_output=True, text=True,
                                          check=True).stdout.strip())
    env = {"PATH": REAL_PATH}
    store = LocalStore.init(tmp_path / ".gg")
    results = []
    for use_driver_answer in (False, True, True):  # plain, first use (checked), then shared
        (tmp_path / "out.d").unlink(missing_ok=True)
        driver = Driver(tmp_path / "driver", REAL_PATH) if use_driver_answer else None
        scanner = DepScanner(FileIds(store), tmp_path / f"deps{len(results)}", REAL_PATH, driver)
        depfile = "out.d" if dep_args else None
        result = scanner.scan([gcc, "-O2", "-Isub"], str(tmp_path), "sub/x.c", env, depfile, dep_args,
                              full_deps_in_user_file="-MD" in dep_args)
        text = (tmp_path / "out.d").read_text() if depfile else None
        results.append((result, text))
    assert results[0] == results[1] == results[2]
    assert any(path.endswith("/stdio.h") for path, _ in results[0][0].files)
