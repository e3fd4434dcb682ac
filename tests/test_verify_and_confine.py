"""Verify on use and confinement on the local engine (issue 10, cases 7, 9 and 10).

A blob is verified against its ID before every use and again after the function ran;
a corrupt one is never executed. Paths in the work directory are resolved beneath it
without following links, so a thunk can neither make the engine move a file from
outside (case 9) nor create one there (case 10).
"""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from executor import confine
from executor.execution import ExecutionFailed, execute
from ir.hashing import hash_file
from ir.store import LocalStore, VerifiedBlobs
from ir.thunk import MAGIC, Input, Link, Thunk
from tests.forcing import VENV_BIN, gg_env, gg_force


def corrupt_in_place(store: LocalStore, ident: str, data: bytes) -> None:
    """Rewrite a blob as a same-user thunk could: chmod, write, restore mode and mtime."""
    path = store.blob_path(ident)
    before = os.stat(path)
    path.chmod(0o644)
    path.write_bytes(data)
    path.chmod(before.st_mode & 0o7777)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # only the ctime betrays it


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("gg-force: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- case 7: a corrupt source blob is never executed ----------------------------------------


def test_corrupt_source_blob_is_never_executed_and_repair_rebuilds(store, sh, tmp_path):
    source = b"int answer(void) { return 42; }\n"
    marker = tmp_path / "ran"
    ident = sh.thunk(f"touch {marker}; cat src.c > out", values={"src.c": source.decode()})
    source_id = hash_file_bytes(store, source)
    corrupt_in_place(store, source_id, b"int answer(void) { return 13; }\n")

    broken = gg_force(store.root, "--print", ident)
    line = one_error_line(broken)
    assert "'src.c'" in line and source_id in line and "gg collect" in line
    assert not marker.exists()  # the function never ran on the corrupt bytes
    assert not store.has(source_id)  # dropped, so it can be stored again
    assert store.get_reduction(ident) is None  # and nothing was derived from it

    store.put_bytes(source)  # the repair: 'gg collect' stores the file again
    fixed = gg_force(store.root, "--print", ident)
    assert fixed.returncode == 0, fixed.stderr
    assert store.read_bytes(store.resolve(ident)) == source


def test_a_result_cached_before_inputs_were_verified_is_not_trusted(store, sh):
    """Case 7 as the issue saw it: an older gg-force compiled the corrupt blob and cached
    the wrong result. Such a record (no 'verified-inputs' mark) is not a cache hit: after
    the repair the thunk runs again and the right result replaces the wrong one."""
    ident = sh.thunk("cat src.c > out", values={"src.c": "int answer = 42;\n"})
    wrong = store.put_bytes(b"int answer = 13;\n")
    legacy = store.root / "reductions"  # an older store's record files, imported by the next run
    legacy.mkdir(parents=True, exist_ok=True)
    (legacy / ident).write_text(wrong + "\n")  # the record format before verify-on-use
    (legacy / f"{ident}#out").write_text(wrong + "\n")
    result = gg_force(store.root, "--print", ident)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [ident, store.put_bytes(b"int answer = 42;\n")]
    assert store.get_reduction(ident) != wrong


def hash_file_bytes(store: LocalStore, data: bytes) -> str:
    return store.put_bytes(data)


def test_verified_blob_rewritten_later_is_caught_by_its_ctime(store, sh):
    """Within one run (or a warm worker) a verified blob is trusted by its stat only; a
    rewrite that keeps size, mode and mtime still moves the ctime and is caught."""
    store.verified = VerifiedBlobs(racy_window_ns=0)  # trust at once, to test the memo itself
    first = sh.thunk("cat in > out", values={"in": "genuine\n"})
    second = sh.thunk("cat in in > out", values={"in": "genuine\n"})
    value = store.put_bytes(b"genuine\n")

    async def run(ident):
        return await execute(ident, store.load_thunk(ident), store)

    result = asyncio.run(run(first))
    assert store.read_bytes(result.outputs[0].id) == b"genuine\n"
    assert store.verified.trusts(value, os.lstat(store.blob_path(value)))  # kept across link/unlink
    corrupt_in_place(store, value, b"poison!\n")
    with pytest.raises(Exception, match="is corrupt in") as caught:
        asyncio.run(run(second))
    assert type(caught.value).__name__ == "DroppedCorruptBlob"
    assert not store.has(value)


def test_function_that_rewrites_its_input_in_the_store_fails_and_the_blob_is_dropped(store, sh):
    ident = sh.thunk("chmod u+w in; echo changed > in; cat in > out", values={"in": "original\n"})
    value = store.put_bytes(b"original\n")

    async def run():
        return await execute(ident, store.load_thunk(ident), store)

    with pytest.raises(ExecutionFailed, match="'in'.*was modified in the store while the function ran"):
        asyncio.run(run())
    assert not store.has(value)


def test_a_reference_to_a_blob_that_is_not_an_input_is_refused(store, sh):
    other = store.put_bytes(b"not declared\n")
    ident = sh.thunk(f"cat @{{GGHASH:{other}}} > out")

    async def run():
        return await execute(ident, store.load_thunk(ident), store)

    with pytest.raises(ExecutionFailed, match="names a blob that is not an input"):
        asyncio.run(run())


# -- case 9: an output behind a directory link ----------------------------------------------


@pytest.fixture
def outside(tmp_path):
    """A directory that belongs to someone else, with a file in it."""
    directory = tmp_path / "some" / "dir"
    directory.mkdir(parents=True)
    (directory / "secret.txt").write_text("do not move me\n")
    return directory


def gg_cli(store: LocalStore, *args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "gg"), *args], env=gg_env(store.root), cwd=cwd,
                          capture_output=True, text=True)


def unchecked_thunk(store: LocalStore, thunk: Thunk) -> str:
    """Store a thunk file that skips validation, as a hostile or old writer would."""
    return store.put_bytes(MAGIC + thunk.to_proto().SerializeToString(deterministic=True))


def test_case_9_link_to_an_outside_directory_is_refused_everywhere(store, sh, tmp_path, outside):
    made = gg_cli(store, "create-thunk", "--link", f"d={outside}", "--output", "d/secret.txt",
                  "/bin/sh", "--", "sh", "-c", "true", cwd=tmp_path)
    assert made.returncode == 1 and len(made.stderr.splitlines()) == 1, made.stderr
    assert "absolute target" in made.stderr or "lies behind link" in made.stderr

    hostile = unchecked_thunk(store, Thunk(sh.shell, ("sh", "-c", "true"), ("d/secret.txt",),
                                           executables=(Input(sh.shell),), links=(Link("d", str(outside)),)))
    line = one_error_line(gg_force(store.root, "--print", hostile))
    assert hostile in line and "link" in line
    assert (outside / "secret.txt").read_text() == "do not move me\n"


def test_case_9_output_behind_a_link_the_function_made_is_not_collected(store, sh, outside):
    ident = sh.thunk(f"ln -s {outside} d", outputs=("d/secret.txt",))
    line = one_error_line(gg_force(store.root, "--print", ident))
    assert "output 'd/secret.txt' was not collected: 'd' is a symbolic link" in line
    assert (outside / "secret.txt").read_text() == "do not move me\n"


def test_output_that_is_a_link_or_a_hard_link_to_an_outside_file_never_moves_it(store, sh, outside):
    secret = outside / "secret.txt"
    as_link = sh.thunk(f"ln -s {secret} out")
    assert "output 'out' is a symbolic link" in one_error_line(gg_force(store.root, "--print", as_link))
    as_hard_link = sh.thunk(f"ln {secret} out")  # same file system: tmp_path
    result = gg_force(store.root, "--print", as_hard_link)
    assert result.returncode == 0, result.stderr
    assert secret.read_text() == "do not move me\n" and os.stat(secret).st_nlink == 1
    value = store.resolve(as_hard_link)
    assert store.read_bytes(value) == b"do not move me\n"
    assert os.stat(store.blob_path(value)).st_ino != os.stat(secret).st_ino  # copied, not moved


def test_gg_dir_blobs_linked_outside_are_not_adopted(store, sh, outside):
    planted = store.put_bytes(b"do not move me\n")  # a name that is a valid ID
    store.blob_path(planted).unlink()
    (outside / planted).write_bytes(b"do not move me\n")
    ident = sh.thunk(f'rmdir "$GG_DIR" 2>/dev/null; ln -s {outside.parent} "$GG_DIR"; '
                     f'ln -s {outside} "$GG_DIR/blobs"; echo x > out')
    line = one_error_line(gg_force(store.root, "--print", ident))
    assert "GG_DIR is not inside the run directory" in line
    assert (outside / planted).read_text() == "do not move me\n"


# -- case 10: a link behind a link --------------------------------------------------------------


def test_case_10_link_behind_a_link_creates_nothing_outside(store, sh, tmp_path, outside):
    made = gg_cli(store, "create-thunk", "--link", f"a={outside}", "--link", "a/planted=x",
                  "--output", "out", "/bin/sh", "--", "sh", "-c", "true", cwd=tmp_path)
    assert made.returncode == 1 and len(made.stderr.splitlines()) == 1, made.stderr

    value = store.put_bytes(b"x\n")
    hostile = unchecked_thunk(store, Thunk(
        sh.shell, ("sh", "-c", "echo > out"), ("out",), values=(Input(value, "x"),),
        executables=(Input(sh.shell),), links=(Link("a", str(outside)), Link("a/planted", "x"))))
    line = one_error_line(gg_force(store.root, "--print", hostile))
    assert hostile in line
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    assert not list((store.root / "work").glob("run-*"))  # and cleanup removed only its own


def test_the_walk_never_creates_through_a_link(tmp_path, outside):
    work = tmp_path / "w"
    work.mkdir()
    (work / "a").symlink_to(outside)
    fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(confine.Escape, match="'a' is a symbolic link"):
            confine.open_parent(fd, "a/planted/deeper", create=True)
        with pytest.raises(confine.Escape, match="not a plain relative path"):
            confine.open_parent(fd, "../escape", create=True)
    finally:
        os.close(fd)
    assert sorted(os.listdir(outside)) == ["secret.txt"]


def test_links_to_inputs_are_laid_out_and_work(store, sh):
    value = store.put_bytes(b"through the link\n")
    ident = store.put_thunk(Thunk(
        sh.shell, ("sh", "-c", "cat lib/x.so inc/h > out"), ("out",),
        values=(Input(value, "lib/x.so.1"), Input(value, "src/include/h")),
        executables=(Input(sh.shell),), links=(Link("lib/x.so", "x.so.1"), Link("inc", "src/include"))))
    result = gg_force(store.root, "--print", ident)
    assert result.returncode == 0, result.stderr
    assert store.read_bytes(store.resolve(ident)) == b"through the link\n" * 2
    assert hash_file(store.blob_path(value)) == value


def test_verify_for_use_makes_a_writable_blob_read_only_and_drops_a_link(store, tmp_path):
    from ir.store import CorruptBlob

    ident = store.put_bytes(b"content\n")
    store.blob_path(ident).chmod(0o644)  # a thunk made it writable but did not change it
    store.verify_for_use(ident)
    assert os.stat(store.blob_path(ident)).st_mode & 0o222 == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"other\n")
    linked = store.put_bytes(b"other\n")
    store.blob_path(linked).unlink()
    store.blob_path(linked).symlink_to(elsewhere)  # right bytes, but not a blob of the store
    with pytest.raises(CorruptBlob, match="symbolic link"):
        store.verify_for_use(linked)
    assert not store.blob_path(linked).is_symlink() and elsewhere.read_bytes() == b"other\n"


def test_case_7_corrupt_source_in_a_real_c_build_is_never_compiled(tmp_path):
    """The issue's case as a user meets it: examples/cproject through gg-infer make, then
    util.c's blob in .gg/blobs is corrupted (same size). gg-force must not compile it:
    one line names r/util.c and says to store it again; after that, the library is right."""
    import shutil

    from ir.placeholder import read_placeholder
    from tests.test_infer_support import REPO, gg_infer
    from tests.test_infer_support import gg_force as infer_force

    plain = tmp_path / "plain"
    shutil.copytree(REPO / "examples" / "cproject", plain)
    subprocess.run(["make", "-s", "libutil.a"], cwd=plain, check=True, capture_output=True)
    project = tmp_path / "gg"
    shutil.copytree(REPO / "examples" / "cproject", project)
    assert gg_infer(project, "make", "-s").returncode == 0
    store = LocalStore(project / ".gg")
    source = (project / "util.c").read_bytes()
    source_id = hash_file(project / "util.c")
    corrupt_in_place(store, source_id, source.replace(b"return", b"RETURN", 1))

    broken = infer_force(project, ["libutil.a"], tmp_path / "broken.jsonl", hidden=False)
    line = one_error_line(broken)
    assert "'r/util.c'" in line and "gg collect FILE" in line, line
    assert read_placeholder(project / "libutil.a") is not None  # no wrong library written
    assert not store.has(source_id)

    # The repair the line asks for (make would not run util.c's compile again, so a new
    # gg-infer run alone would not store it).
    collected = gg_cli(store, "collect", "util.c", cwd=project)
    assert collected.returncode == 0 and store.has(source_id), collected.stderr
    fixed = infer_force(project, ["libutil.a"], tmp_path / "fixed.jsonl", hidden=False)
    assert fixed.returncode == 0, fixed.stderr
    assert (project / "libutil.a").read_bytes() == (plain / "libutil.a").read_bytes()


def test_input_names_with_dot_components_are_laid_out_as_before(store, sh):
    value = store.put_bytes(b"dotted\n")
    ident = sh.thunk("cat sub/x > out", values={"./sub//x": "dotted\n"})
    result = gg_force(store.root, "--print", ident)
    assert result.returncode == 0, result.stderr
    assert store.read_bytes(store.resolve(ident)) == b"dotted\n" and store.has(value)
