"""The local store: blobs, modes, verification, reductions, locating, concurrent writers."""

from __future__ import annotations

import multiprocessing
import os
import stat
import zlib
from pathlib import Path

import pytest

from ir.ids import InvalidId, Kind, id_of_bytes
from ir.reduction_log import LogCheck, check_log, encode_line
from ir.store import (
    EXECUTABLE_MODE,
    VALUE_MODE,
    CorruptBlob,
    LocalStore,
    MissingBlob,
    StoreError,
    StoreNotFound,
)
from ir.thunk import Input, MalformedThunk, Thunk

SH = id_of_bytes(b"#!/bin/sh\n", Kind.VALUE)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def a_thunk(n: int = 0, outputs: tuple[str, ...] = ("out",)) -> Thunk:
    return Thunk(
        function_hash=SH,
        args=("sh", "-c", f"echo {n} > out"),
        outputs=outputs,
        executables=(Input(SH, "sh"),),
    )


def leftovers(store: LocalStore) -> list[str]:
    """Temp files anywhere in the store (there must never be any after a write)."""
    found = [p.name for p in store.tmp.iterdir()]
    for directory in (store.blobs, store.hash_cache.directory):
        found += [p.name for p in directory.iterdir() if p.name.startswith(".tmp-")]
    return found


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore.init(tmp_path / ".gg")


def test_init_layout(store):
    for name in ("blobs", "hash_cache", "tmp"):
        assert (store.root / name).is_dir()
    assert not (store.root / "reductions").exists()  # records live in reductions.log, made on the first write
    assert LocalStore.init(store.root).root == store.root  # harmless if it exists


@pytest.mark.parametrize("anonymous_temps", [True, False], ids=["O_TMPFILE", "named temp"])
def test_put_bytes(store, anonymous_temps):
    """Both ways of writing a blob (a nameless temp file linked into place, or a named
    temp where the file system has no O_TMPFILE) give the same blob and leave nothing."""
    store._anonymous_temps = anonymous_temps
    ident = store.put_bytes(b"hello")
    assert ident == id_of_bytes(b"hello", Kind.VALUE)
    path = store.blob_path(ident)
    assert path.read_bytes() == b"hello"
    assert mode(path) == VALUE_MODE == 0o444  # read-only once written
    assert store.has(ident) and store.read_bytes(ident, verify=True) == b"hello"
    assert store.put_bytes(b"hello") == ident
    assert store.put_bytes(b"hello", executable=True) == ident
    assert mode(path) == EXECUTABLE_MODE == 0o555
    assert store.put_bytes(b"hello") == ident and mode(path) == 0o555  # never loses +x
    assert leftovers(store) == []


def test_put_file_copies_and_keeps_execute_bit(store, tmp_path):
    plain, tool = tmp_path / "data", tmp_path / "tool"
    plain.write_bytes(b"data" * 1000)
    tool.write_bytes(b"#!/bin/sh\necho hi\n")
    tool.chmod(0o755)
    a, b = store.put_file(plain), store.put_file(tool)
    assert mode(store.blob_path(a)) == 0o444 and mode(store.blob_path(b)) == 0o555
    assert plain.exists() and store.blob_path(a).read_bytes() == plain.read_bytes()
    assert os.stat(plain).st_ino != os.stat(store.blob_path(a)).st_ino  # a copy
    c = store.put_file(plain, executable=True)
    assert c == a and mode(store.blob_path(a)) == 0o555
    assert leftovers(store) == []


def test_put_file_of_a_thunk_file_gives_a_thunk_id(store, tmp_path):
    path = tmp_path / "t"
    path.write_bytes(a_thunk().serialize())
    assert store.put_file(path) == a_thunk().id


def test_adopt_moves(store, tmp_path):
    out = tmp_path / "out"
    out.write_bytes(b"result")
    inode = os.stat(out).st_ino
    ident = store.adopt(out)
    assert not out.exists()
    assert os.stat(store.blob_path(ident)).st_ino == inode  # moved, not copied
    assert mode(store.blob_path(ident)) == 0o444
    again = tmp_path / "again"
    again.write_bytes(b"result")
    assert store.adopt(again, executable=True) == ident
    assert not again.exists() and mode(store.blob_path(ident)) == 0o555
    assert leftovers(store) == []


def test_thunks_round_trip(store):
    ident = store.put_thunk(a_thunk())
    assert ident == a_thunk().id and ident.startswith("T")
    assert store.load_thunk(ident) == a_thunk()
    with pytest.raises(StoreError, match="is a value, not a thunk"):
        store.load_thunk(store.put_bytes(b"v"))
    with pytest.raises(MissingBlob, match=f"blob {a_thunk(1).id} is not in"):
        store.load_thunk(a_thunk(1).id)


def corrupt(store: LocalStore, ident: str, offset: int = -1) -> None:
    path = store.blob_path(ident)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x20
    path.write_bytes(bytes(data))
    path.chmod(0o444)


def test_verify_catches_a_corrupted_blob(store):
    ident = store.put_bytes(b"precious bytes")
    assert store.verify(ident)
    corrupt(store, ident)
    assert not store.verify(ident)
    assert store.read_bytes(ident) == b"precious byteS"  # unverified read: as stored
    with pytest.raises(CorruptBlob, match=f"blob {ident} in .* is corrupt: its content hashes to Vx"):
        store.read_bytes(ident, verify=True)
    store.remove_corrupt(ident)
    assert not store.has(ident) and not store.verify(ident)
    with pytest.raises(MissingBlob):
        store.read_bytes(ident, verify=True)


def test_corrupt_or_truncated_thunk_blob_is_refused(store):
    ident = store.put_thunk(a_thunk(outputs=("out", "log")))
    corrupt(store, ident)
    with pytest.raises(MalformedThunk, match=f"thunk {ident}: content hashes to"):
        store.load_thunk(ident)
    path = store.blob_path(ident)
    path.chmod(0o644)
    path.write_bytes(a_thunk(outputs=("out", "log")).serialize()[:-4])  # cut: still decodes
    with pytest.raises(MalformedThunk, match="truncated thunk file"):
        store.load_thunk(ident)


def test_blob_paths_are_validated(store):
    with pytest.raises(InvalidId):
        store.blob_path("../../etc/passwd")
    assert not store.has("../../etc/passwd")


# -- reductions ---------------------------------------------------------------------------

def test_reductions_and_tags(store):
    t = a_thunk().id
    v, w = id_of_bytes(b"v", Kind.VALUE), id_of_bytes(b"w", Kind.VALUE)
    assert store.get_reduction(t) is None and store.resolve(t) is None
    store.put_reduction(t, v)
    store.put_reduction(f"{t}#log", w)
    store.put_reduction(f"{t}#lib/x.o", w)  # tags may contain '/'
    assert store.get_reduction(t) == v
    assert store.get_reduction(f"{t}#log") == w
    assert store.get_reduction(f"{t}#lib/x.o") == w
    assert store.resolve(f"{t}#log") == w
    assert store.resolve(v) == v  # a value is already resolved
    assert store.reduction_records() == {t: v, f"{t}#log": w, f"{t}#lib/x.o": w}
    assert LocalStore(store.root).reduction_records() == {t: v, f"{t}#log": w, f"{t}#lib/x.o": w}
    assert leftovers(store) == []


def test_tail_call_chains_resolve(store):
    t1, t2, t3 = (a_thunk(n).id for n in (1, 2, 3))
    v = id_of_bytes(b"final", Kind.VALUE)
    store.put_reduction(t1, t2)  # T -> T' (tail call)
    store.put_reduction(t2, t3)
    assert store.resolve(t1) is None  # chain not finished yet
    store.put_reduction(t3, v)
    assert store.resolve(t1) == v
    store.put_reduction(f"{t1}#obj", f"{t2}#obj")  # a named output handed on
    store.put_reduction(f"{t2}#obj", v)
    assert store.resolve(f"{t1}#obj") == v


def test_reduction_cycle_and_bad_records(store):
    t1, t2 = a_thunk(1).id, a_thunk(2).id
    store.put_reduction(t1, t2)
    store.put_reduction(t2, t1)
    with pytest.raises(StoreError, match="reduction cycle"):
        store.resolve(t1)
    with pytest.raises(InvalidId, match="only thunks reduce"):
        store.put_reduction(id_of_bytes(b"v", Kind.VALUE), t1)
    with pytest.raises(InvalidId):
        store.put_reduction(t1, "garbage")
    with open(store.reduction_log.path, "ab") as log:  # well-framed lines that are no records to trust
        log.write(b"\n" + encode_line(t2, "garbage"))
        body = f"{t1} {t2}".encode()  # the record format before verify-on-use: no mark
        log.write(b"%s %08x\n" % (body, zlib.crc32(body)))
    assert store.get_reduction(t2) is None  # an unreadable record is redone, not trusted
    assert store.get_reduction(t1) is None
    assert t1 not in LocalStore(store.root).reduction_records()


# -- locating -----------------------------------------------------------------------------

def test_locate_via_gg_dir(tmp_path):
    root = tmp_path / "elsewhere"
    with pytest.raises(StoreNotFound, match=r"GG_DIR=.* does not exist \(run 'gg init' there\)"):
        LocalStore.locate(tmp_path, environ={"GG_DIR": str(root)})
    store = LocalStore.locate(tmp_path, environ={"GG_DIR": str(root)}, create=True)
    assert store.root == root and store.blobs.is_dir()
    assert LocalStore.locate(tmp_path / "x", environ={"GG_DIR": str(root)}).root == root


def test_locate_walks_up(tmp_path):
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    with pytest.raises(StoreNotFound, match="no .gg directory in .* or above"):
        LocalStore.locate(deep, environ={})
    LocalStore.init(tmp_path / "a" / ".gg")
    assert LocalStore.locate(deep, environ={}).root == tmp_path / "a" / ".gg"
    LocalStore.init(tmp_path / "a" / "b" / ".gg")
    assert LocalStore.locate(deep, environ={}).root == tmp_path / "a" / "b" / ".gg"  # nearest wins
    assert LocalStore.locate(deep, environ={"GG_DIR": ""}).root == tmp_path / "a" / "b" / ".gg"
    (deep / ".gg").mkdir()  # below the start: must not be found from c/..
    assert LocalStore.locate(deep / "..", environ={}).root == tmp_path / "a" / "b" / ".gg"


def test_locate_create_in_start(tmp_path):
    made = LocalStore.locate(tmp_path, environ={}, create=True)
    assert made.root == tmp_path / ".gg" and made.blobs.is_dir()


# -- concurrent writers -------------------------------------------------------------------

SHARED = [bytes([n]) * (1000 + n) for n in range(20)]
BIG = os.urandom(3 << 20)


def _writer(root: str, worker: int, source: str, barrier, results) -> None:
    """One process hammering the store: shared and private blobs, files, reductions."""
    store = LocalStore(Path(root))
    barrier.wait()
    ids = []
    for round_ in range(5):
        for n, data in enumerate(SHARED):
            ids.append(store.put_bytes(data, executable=(n + worker) % 3 == 0))
        ids.append(store.put_bytes(f"private {worker} {round_}".encode() * 500))
        ids.append(store.put_file(Path(source)))
        ids.append(store.put_thunk(a_thunk(round_)))
        store.put_reduction(a_thunk(round_).id, ids[0])  # same reduction from everyone
        store.put_reduction(f"{a_thunk(round_).id}#w{worker}", ids[-3])
        out = Path(root).parent / f"out-{worker}-{round_}"
        out.write_bytes(SHARED[round_])
        ids.append(store.adopt(out))
    results.put((worker, ids))


def test_concurrent_writers(tmp_path):
    store = LocalStore.init(tmp_path / ".gg")
    source = tmp_path / "big.bin"
    source.write_bytes(BIG)
    context = multiprocessing.get_context("spawn")
    workers = 4
    barrier, results = context.Barrier(workers), context.Queue()
    processes = [
        context.Process(target=_writer, args=(str(store.root), w, str(source), barrier, results))
        for w in range(workers)
    ]
    for process in processes:
        process.start()
    got = dict(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

    assert got[0][: len(SHARED)] == got[1][: len(SHARED)]  # same content, same ID everywhere
    for ident in {i for ids in got.values() for i in ids}:
        assert store.verify(ident), ident
    blobs = {p.name for p in store.blobs.iterdir()}
    assert blobs == {i for ids in got.values() for i in ids}
    for n, data in enumerate(SHARED):  # an executable request is never lost to a race
        wanted = any((n + w) % 3 == 0 for w in range(workers))
        assert mode(store.blob_path(id_of_bytes(data, Kind.VALUE))) == (0o555 if wanted else 0o444)
    assert all(mode(store.blobs / name) in (0o444, 0o555) for name in blobs)
    for round_ in range(5):
        assert store.get_reduction(a_thunk(round_).id) == got[0][0]
        for w in range(workers):
            assert store.get_reduction(f"{a_thunk(round_).id}#w{w}") is not None
    assert check_log(store.reduction_log.path) == LogCheck(valid=5 * 2 * workers, invalid=0, tail=0)
    assert leftovers(store) == []


def test_a_temp_name_left_by_a_killed_writer_is_skipped(store):
    """Temp files are named ``<pid>-<n>`` (no random names): one left behind by a killed
    process that had this pid must not block or corrupt a write."""
    t = a_thunk().id
    v = id_of_bytes(b"v", Kind.VALUE)
    stale = [store.tmp / f".reductions-{os.getpid()}-{n}" for n in range(1, 4)]
    stale += [store.tmp / f"in-{os.getpid()}-{n}" for n in range(3)]
    for path in stale:
        path.write_bytes(b"half a record")
    store.put_reduction(t, v)
    store.reduction_log.compact()
    assert store.get_reduction(t) == v
    ident = store.put_bytes(b"after a crash")
    assert store.verify(ident)
    assert all(path.read_bytes() == b"half a record" for path in stale)  # not reused, not clobbered
