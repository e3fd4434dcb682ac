"""A reused work directory keeps the previous thunk's layout only where it is provably
the next thunk's very input (executor/layout.py); everything else is removed, never
through a link, and a thunk never sees what an earlier one left."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from executor.execution import ExecutionFailed, execute
from executor.layout import DIR_MODE, WorkLayout, plan
from executor.rundirs import RunDirs
from ir.store import DroppedCorruptBlob, VerifiedBlobs
from ir.thunk import Input, Link, Thunk

LIST = "{ find . | LC_ALL=C sort; } > out; echo -- >> out; cat $(find . -type f ! -name out | LC_ALL=C sort) >> out"


@pytest.fixture
def rundirs(store):
    pool = RunDirs(store.root / "work", limit=1)  # one directory: every thunk reuses it
    yield pool
    pool.close()


def _run(store, rundirs, ident):
    result = asyncio.run(execute(ident, store.load_thunk(ident), store, rundirs=rundirs))
    return store.read_bytes(result.outputs[0].id).decode()


def _headers(**names: str) -> dict[str, str]:
    return {name.replace("__", "/"): text for name, text in names.items()}


def _the_work_dir(store) -> Path:
    (run,) = (store.root / "work").glob("run-*")
    return run / "w"


def test_what_the_function_left_in_a_kept_directory_is_gone_and_the_outside_untouched(store, sh, rundirs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep\n")
    inputs = _headers(inc__a__x_h="x\n", inc__y_h="y\n", src_c="c\n")
    messy = sh.thunk(f"echo junk > inc/extra; ln -s {outside} inc/a/lnk; ln -s {outside}/keep inc/keep; "
                     "mkdir -p inc/a/ro/deep; echo z > inc/a/ro/deep/z; chmod 500 inc/a/ro/deep inc/a/ro; "
                     "mkdir tmpdir; echo t > tmpdir/t; chmod 000 tmpdir; ln inc/y_h inc/hard; echo > out",
                     values=inputs)
    look = sh.thunk(LIST, values=inputs)
    _run(store, rundirs, messy)
    assert _run(store, rundirs, look).splitlines() == [".", "./inc", "./inc/a", "./inc/a/x_h", "./inc/y_h", "./out",
                                                        "./src_c", "--", "x", "y", "c"]
    assert sorted(p.name for p in outside.iterdir()) == ["keep"] and (outside / "keep").read_text() == "keep\n"


def test_a_kept_directory_changed_by_the_function_is_made_again(store, sh, rundirs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    inputs = _headers(inc__a__x_h="x\n", lib__l="l\n")
    changes = sh.thunk(f"chmod 700 inc; mv lib lib2 && ln -s {outside} lib; echo > out", values=inputs)
    look = sh.thunk('stat -c "%n %a %F" inc inc/a lib > out; cat inc/a/x_h lib/l >> out', values=inputs)
    _run(store, rundirs, changes)
    assert _run(store, rundirs, look) == ("inc 755 directory\ninc/a 755 directory\nlib 755 directory\n"
                                          "x\nl\n")
    kept = _the_work_dir(store) / "inc" / "a"
    os.setxattr(kept, "user.planted", b"1")  # an extended attribute (an ACL is one too)
    _run(store, rundirs, sh.thunk("cat inc/a/x_h > out", values=inputs))
    assert os.listxattr(_the_work_dir(store) / "inc" / "a") == []
    assert list(outside.iterdir()) == []  # nothing was laid out through the planted link


def test_a_kept_input_modified_through_its_link_is_never_used_again(store, sh, rundirs):
    header = store.put_bytes(b"original\n")
    use = sh.thunk("cat h > out", values={"h": "original\n"})
    assert _run(store, rundirs, use) == "original\n"
    # Between two thunks something rewrites the input kept in the idle work directory
    # (the blob's own inode), and sets its mtime back.
    kept = _the_work_dir(store) / "h"
    before = kept.stat()
    os.chmod(kept, 0o644)
    kept.write_bytes(b"evil!!!!!\n"[: before.st_size])
    os.utime(kept, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.chmod(kept, before.st_mode)
    with pytest.raises(DroppedCorruptBlob, match="'h'"):
        _run(store, rundirs, sh.thunk("cat h > out; echo again >> out", values={"h": "original\n"}))
    assert not store.has(header)
    assert store.put_bytes(b"original\n") == header  # stored again: a new inode
    assert _run(store, rundirs, sh.thunk("cat h > out; echo 3 >> out", values={"h": "original\n"})) == \
        "original\n3\n"


def test_an_input_the_function_replaced_or_rewrote_is_laid_out_again(store, sh, rundirs):
    inputs = {"h": "original\n", "g": "gee\n"}
    replaces = sh.thunk("rm -f h; echo replaced > h; echo > out", values=inputs)
    _run(store, rundirs, replaces)
    assert _run(store, rundirs, sh.thunk("cat h g > out", values=inputs)) == "original\ngee\n"
    rewrites = sh.thunk("chmod u+w g; echo rewritten > g; echo > out", values=inputs)
    with pytest.raises(ExecutionFailed, match="modified in the store while the function ran"):
        _run(store, rundirs, rewrites)
    store.put_bytes(b"gee\n")
    assert _run(store, rundirs, sh.thunk("cat h g > out; echo 2 >> out", values=inputs)) == "original\ngee\n2\n"


def test_one_name_laid_out_as_different_blobs_links_and_directories(store, sh, rundirs):
    one = sh.thunk("cat x > out", values={"x": "one\n"})
    two = sh.thunk("cat x > out; echo b >> out", values={"x": "two\n"})
    link = sh.thunk("readlink x > out", values={"y": "y\n"}, links=(Link("x", "y"),))
    other_link = sh.thunk("readlink x > out; cat x >> out", values={"z": "z\n"}, links=(Link("x", "z"),))
    directory = sh.thunk("cat x/y > out", values={"x/y": "in a directory\n"})
    assert _run(store, rundirs, one) == "one\n"
    assert _run(store, rundirs, two) == "two\nb\n"
    assert _run(store, rundirs, link) == "y\n"
    assert _run(store, rundirs, other_link) == "z\nz\n"
    assert _run(store, rundirs, directory) == "in a directory\n"
    assert _run(store, rundirs, one) == "one\n"


def test_an_input_that_is_also_an_output_is_a_private_copy_every_time(store, sh, rundirs):
    appends = sh.thunk("echo more >> f; cp f out", values={"f": "start\n"}, outputs=("out", "f"))
    assert _run(store, rundirs, appends) == "start\nmore\n"
    assert _run(store, rundirs, appends) == "start\nmore\n"
    assert store.read_bytes(store.put_bytes(b"start\n")) == b"start\n"


def test_shared_inputs_are_kept_and_stay_verified(store, sh):
    """A compile after a compile: the toolchain and the headers stay, only the rest changes."""
    store.verified = VerifiedBlobs(racy_window_ns=0)  # the blobs were written just now
    shell = sh.shell
    headers = {f"inc/d{i % 3}/h{i}.h": store.put_bytes(f"header {i}\n".encode()) for i in range(12)}

    def thunk(source: str) -> Thunk:
        values = [Input(ident, name) for name, ident in headers.items()]
        values.append(Input(store.put_bytes(source.encode()), "src/file.c"))
        return Thunk(shell, ("sh", "-c", "true"), ("out",), values=tuple(values), executables=(Input(shell, "bin/sh"),))

    first, second = thunk("one\n"), thunk("two\n")
    work_fd = os.open(store.root, os.O_RDONLY | os.O_DIRECTORY)
    os.mkdir("w", 0o700, dir_fd=work_fd)
    w_fd = os.open("w", os.O_RDONLY | os.O_DIRECTORY, dir_fd=work_fd)
    try:
        state = WorkLayout.of(w_fd)
        checked = {i.id: store.verify_for_use(i.id) for i in (*first.values, *first.executables)}
        assert state.apply(plan(first), store, checked).created == 14 + 6  # files, directories
        checked = {i.id: store.verify_for_use(i.id) for i in (*second.values, *second.executables)}
        counts = state.apply(plan(second), store, checked)
        assert (counts.kept, counts.removed, counts.created) == (12 + 1, 1, 1)  # the headers and bin/sh; src/file.c
        for name, ident in headers.items():
            blob = os.lstat(store.blob_path(ident))
            assert store.verified.trusts(ident, blob)  # carried over our own links
            assert os.lstat(store.root / "w" / name).st_ino == blob.st_ino
        assert oct(os.stat(store.root / "w" / "inc").st_mode & 0o777) == oct(DIR_MODE)
        counts = state.clear(store)
        assert os.listdir(store.root / "w") == []
        assert all(store.verified.trusts(i, os.lstat(store.blob_path(i))) for i in headers.values())
    finally:
        os.close(w_fd)
        os.close(work_fd)


def test_the_pool_hands_out_the_closest_layout(store, sh):
    rundirs = RunDirs(store.root / "work", limit=2)
    a = frozenset({("x", "1"), ("y", "2"), ("z", "3"), ("w", "4"), ("v", "5")})
    b = frozenset({("as", "9")})
    try:
        first = rundirs.take(a)
        first.layout.inputs = a
        rundirs.give_back(first)
        second = rundirs.take(b)  # nothing in common, five stale: a new directory
        assert second is not first
        second.layout.inputs = b
        rundirs.give_back(second)
        again = rundirs.take(a | {("u", "6")})
        assert again is first
        assert rundirs.take(b) is second
        rundirs.give_back(first)
        rundirs.give_back(second)
    finally:
        rundirs.close()


def test_clearing_the_free_directories_lets_go_of_every_blob(store, sh, rundirs):
    """A Lambda worker trims its cache: an evicted blob must not live on in an idle layout."""
    ident = store.put_bytes(b"big input\n")
    _run(store, rundirs, sh.thunk("cat inc/h > out", values={"inc/h": "big input\n"}))
    assert os.lstat(store.blob_path(ident)).st_nlink == 2  # kept in the idle work directory
    rundirs.clear_free(store)
    assert os.listdir(_the_work_dir(store)) == []
    assert os.lstat(store.blob_path(ident)).st_nlink == 1


def test_an_impossible_layout_fails_the_thunk_in_one_line(store, sh, rundirs):
    cases = {
        r"two inputs are both laid out at 'd/(\./)?x'": {"d/x": "one\n", "d/./x": "two\n"},
        r"'d' is not a directory|two inputs are both laid out at 'd'": {"d": "file\n", "d/x": "below a file\n"},
        "a component is longer than 255 bytes": {"d/" + "n" * 256: "long\n"},
    }
    for message, values in cases.items():
        with pytest.raises(ExecutionFailed, match=message):
            _run(store, rundirs, sh.thunk("echo > out", values=values))
    assert _run(store, rundirs, sh.thunk("ls -A > out")) == "out\n"


def test_a_work_directory_or_gg_dir_given_an_attribute_is_not_reused(store, sh, rundirs):
    """A default ACL (an extended attribute) on w or GG_DIR would decide the modes of what
    the next function creates there: a run directory whose function set one is replaced."""
    for where in ("'.'", "os.environ['GG_DIR']"):
        plant = f"{sys.executable} -c \"import os; os.setxattr({where}, 'user.planted', b'1')\""
        _run(store, rundirs, sh.thunk(f"{plant} && echo > out"))
        assert not list((store.root / "work").glob("run-*"))  # removed when it was given back
        _run(store, rundirs, sh.thunk("echo look > out"))
        after = _the_work_dir(store).parent
        assert os.listxattr(after / "w") == [] and os.listxattr(after / "gg") == []
