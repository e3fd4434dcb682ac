"""A successful thunk's output (a compile's warnings) is shown by gg-force and kept.

Like ccache and a plain build: the output of a run that succeeded is shown once, with
one line naming the thunk, and kept in the store with the reduction (a blob and a
record per thunk), so that gg-infer can replay it on a warm build.
"""

from __future__ import annotations

import os

import pytest

from executor.execution import KEPT_OUTPUT, kept_output
from executor.scheduler import ForceFailed
from ir.store import CorruptBlob, LocalStore, MissingBlob
from tests.forcing import force


def test_a_successful_thunks_output_is_shown_once_and_kept(store, sh, capsys):
    noisy = sh.thunk("echo 'x.c:3:7: warning: unused variable' >&2; echo to-stdout; echo ok > out")
    force(store, [noisy])
    err = capsys.readouterr().err
    assert err.count(f"gg-force: thunk {noisy} (sh) succeeded with output:\n") == 1
    assert "x.c:3:7: warning: unused variable\nto-stdout\n" in err
    assert store.kept_output(noisy) == b"x.c:3:7: warning: unused variable\nto-stdout\n"
    force(store, [noisy])  # reduced already: nothing is run, nothing printed
    assert capsys.readouterr().err == ""


def test_a_silent_thunk_prints_nothing_and_keeps_nothing(store, sh, capsys):
    quiet = sh.thunk("echo ok > out")
    force(store, [quiet])
    assert capsys.readouterr().err == ""
    assert store.kept_output(quiet) is None
    assert not os.path.exists(store.output_log.path)  # no record, no blob: no cost


def test_output_of_a_dependency_and_of_its_parent_both_shown(store, sh, capsys):
    leaf = sh.thunk("echo leaf-warning >&2; echo v > out")
    parent = sh.thunk("echo parent-warning >&2; cat x > out", thunks={"x": leaf})
    force(store, [parent])
    err = capsys.readouterr().err
    assert err.count("output:\nleaf-warning\n") == 1 and err.count("output:\nparent-warning\n") == 1
    assert err.index("\nleaf-warning") < err.index("\nparent-warning")
    assert store.kept_output(leaf) == b"leaf-warning\n"
    # The parent ran rewritten (its input is a value now); kept under both IDs, as its
    # reduction is: gg-infer knows the thunk by the ID it wrote.
    assert store.kept_output(parent) == b"parent-warning\n"


def test_a_failing_thunks_report_is_unchanged_and_nothing_is_kept(store, sh, capsys):
    bad = sh.thunk("echo about to fail >&2; exit 3")
    with pytest.raises(ForceFailed) as caught:
        force(store, [bad])
    report = caught.value.failures[0].report
    assert report.splitlines()[0] == f"thunk {bad} failed: exit status 3"
    assert "  output (tail of stdout and stderr):\n    about to fail" in report
    assert "succeeded with output" not in capsys.readouterr().err
    assert store.kept_output(bad) is None


def test_output_is_capped_and_says_so(store, sh, capsys):
    flood = sh.thunk(f"head -c {KEPT_OUTPUT + 5000} /dev/zero | tr '\\0' x; echo ok > out")
    force(store, [flood])
    kept = store.kept_output(flood)
    assert kept is not None and kept.startswith(b"x" * 100)
    assert kept.endswith(f"(output truncated: {KEPT_OUTPUT + 5000} bytes in all, the first {KEPT_OUTPUT} kept)\n"
                         .encode())
    assert len(kept) < KEPT_OUTPUT + 100
    assert "(output truncated" in capsys.readouterr().err


def test_kept_output_helper():
    assert kept_output(b"", 0) == b""
    assert kept_output(b"abc\n", 4) == b"abc\n"
    assert kept_output(b"ab", 10) == b"ab\n(output truncated: 10 bytes in all, the first 2 kept)\n"


def test_a_missing_or_corrupt_output_blob_is_an_error_never_no_output(store, sh, capsys):
    noisy = sh.thunk("echo warned >&2; echo ok > out")
    force(store, [noisy])
    blob = store.output_log.get(noisy)
    assert blob is not None
    path = store.blobs / blob
    os.chmod(path, 0o644)
    path.write_bytes(b"other\n")
    with pytest.raises(CorruptBlob):
        store.kept_output(noisy)
    assert not path.exists()  # dropped
    with pytest.raises(MissingBlob):
        store.kept_output(noisy)


def test_forgetting_a_reduction_forgets_its_kept_output(store, sh, capsys):
    noisy = sh.thunk("echo warned >&2; echo ok > out")
    force(store, [noisy])
    store.forget_reduction(noisy)
    assert store.kept_output(noisy) is None
    force(store, [noisy])  # runs again, shows and keeps it again
    assert capsys.readouterr().err.count("output:\nwarned\n") == 2
    assert store.kept_output(noisy) == b"warned\n"


def test_a_store_without_output_records_still_works(tmp_path, sh, store, capsys):
    noisy = sh.thunk("echo warned >&2; echo ok > out")
    force(store, [noisy])
    os.unlink(store.output_log.path)  # a store from before output was kept
    fresh = LocalStore.locate(tmp_path, {"GG_DIR": str(store.root)})
    assert fresh.kept_output(noisy) is None
    assert fresh.resolve(noisy) is not None
    results, _ = force(fresh, [noisy])
    assert fresh.read_bytes(results[noisy]) == b"ok\n"
    assert capsys.readouterr().err.count("output:\nwarned\n") == 1  # the first run's only


def test_the_output_header_names_the_program_and_its_input_files_not_the_whole_command():
    """A compile's command is a hundred words behind the toolchain's loader: the line
    above its warnings names the program and the files it was given."""
    from executor.execution import short_command
    from ir.thunk import Input, Thunk

    blob = "V" + "0" * 32 + "_10"
    thunk = Thunk(function_hash=blob, outputs=("out",),
                  args=("gg/ld-linux-x86-64.so.2", "--library-path", "gg/lib", "gg/bin/cc1", "-quiet",
                        "-isystem", "a/usr/include", "r/main.c", "-O2", "-o", "gg-tmp0.s"),
                  values=(Input(blob, "r/main.c"), Input(blob, "r/main.h")))
    assert short_command(thunk) == "cc1 r/main.c"
    objects = tuple(f"r/{n}.o" for n in "abcde")
    link = Thunk(function_hash=blob, outputs=("out",), args=("ld", "-o", "prog", *objects),
                 values=tuple(Input(blob, name) for name in objects))
    assert short_command(link) == "ld r/a.o r/b.o r/c.o and 2 more"
