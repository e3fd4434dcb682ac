"""The local store's reduction log (ir/reduction_log.py): groups, torn tails, tombstones,
concurrent writers and readers, compaction racing appends, kill -9, older stores."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ir import reduction_log
from ir.ids import Kind, id_of_bytes
from ir.reduction_log import LogCheck, check_log, encode_line
from ir.store import LocalStore

REPO = Path(__file__).resolve().parents[1]


def thunk_id(n: int) -> str:
    """A syntactically valid thunk ID (the log never loads thunks)."""
    return id_of_bytes(f"thunk {n}".encode(), Kind.THUNK)


def value_id(n: int) -> str:
    return id_of_bytes(f"value {n}".encode(), Kind.VALUE)


def group(n: int, value: int) -> list[tuple[str, str]]:
    """A thunk's records as the scheduler writes them: every tag, the bare ID last."""
    t = thunk_id(n)
    return [(f"{t}#a", value_id(value)), (f"{t}#lib/b.o", value_id(value + 1)), (t, value_id(value))]


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore.init(tmp_path / ".gg")


def log_bytes(store: LocalStore) -> bytes:
    return Path(store.reduction_log.path).read_bytes()


def test_a_group_is_one_append_and_later_lines_win(store):
    store.put_reductions(group(1, 10))
    assert log_bytes(store).count(b"\n") == 4  # the leading newline and three lines
    store.put_reductions(group(1, 20))
    fresh = LocalStore(store.root)
    assert fresh.get_reduction(thunk_id(1)) == value_id(20)
    assert fresh.get_reduction(f"{thunk_id(1)}#lib/b.o") == value_id(21)
    assert fresh.reduction_records() == dict(group(1, 20))


def test_a_torn_tail_is_ignored_and_does_not_swallow_the_next_append(store):
    store.put_reductions(group(1, 10))
    line = encode_line(thunk_id(2), value_id(5))
    with open(store.reduction_log.path, "ab") as log:
        log.write(line[: len(line) // 2])  # a writer killed mid-write
    reader = LocalStore(store.root)
    assert reader.get_reduction(thunk_id(2)) is None
    assert check_log(store.reduction_log.path).tail == len(line) // 2
    LocalStore(store.root).put_reductions(group(3, 30))
    assert reader.get_reduction(thunk_id(3)) == value_id(30)  # the reader read on past the torn line
    assert reader.get_reduction(thunk_id(2)) is None
    assert LocalStore(store.root).reduction_records() == {**dict(group(1, 10)), **dict(group(3, 30))}
    assert check_log(store.reduction_log.path) == LogCheck(valid=6, invalid=1, tail=0)


def test_flipped_bytes_and_garbage_lines_are_ignored(store):
    store.put_reductions(group(1, 10))
    data = bytearray(log_bytes(store))
    at = data.index(value_id(10).encode()) + 5  # in the first line's result
    data[at] ^= 0x01
    Path(store.reduction_log.path).write_bytes(bytes(data) + b"\x00\xffnot a record\n\n")
    fresh = LocalStore(store.root)
    assert fresh.get_reduction(f"{thunk_id(1)}#a") is None  # its checksum fails
    assert fresh.get_reduction(thunk_id(1)) == value_id(10)


def test_forget_appends_a_tombstone(store):
    store.put_reductions(group(1, 10))
    store.forget_reduction(thunk_id(1))
    assert store.get_reduction(thunk_id(1)) is None
    assert LocalStore(store.root).get_reduction(thunk_id(1)) is None
    assert LocalStore(store.root).get_reduction(f"{thunk_id(1)}#a") == value_id(10)
    store.put_reduction(thunk_id(1), value_id(11))
    assert LocalStore(store.root).get_reduction(thunk_id(1)) == value_id(11)


def peer(store: LocalStore, statement: str) -> None:
    """Run ``statement`` (with ``store`` bound) in another process on the same store."""
    script = ("from pathlib import Path\nfrom ir.store import LocalStore\n"
              f"store = LocalStore(Path({str(store.root)!r}))\n")
    subprocess.run([sys.executable, "-c", script + statement], cwd=REPO, check=True)


def test_a_reader_sees_a_peers_records_written_after_it_loaded(store):
    assert store.get_reduction(thunk_id(1)) is None  # index loaded, empty
    peer(store, f"store.put_reductions({group(1, 10)!r})")
    assert store.get_reduction(thunk_id(1)) == value_id(10)
    peer(store, f"store.forget_reduction({thunk_id(1)!r})")
    assert store.get_reduction(thunk_id(1)) is None  # a hit earlier is no reason to miss a peer's tombstone
    store.put_reductions(group(2, 20))  # indexed directly: nothing else was appended meanwhile
    peer(store, f"store.put_reductions({group(3, 30)!r})")
    store.put_reductions(group(4, 40))  # not indexed directly: the peer's records come first
    assert store.reduction_records() == {**dict(group(1, 10)[:2]), **dict(group(2, 20)), **dict(group(3, 30)),
                                         **dict(group(4, 40))}


def test_compaction_keeps_live_records_and_readers_follow_the_new_log(store):
    for value in range(10):
        for n in range(20):
            store.put_reductions(group(n, value * 100 + n))
    store.forget_reduction(thunk_id(0))
    reader = LocalStore(store.root)
    before = reader.reduction_records()
    size = len(log_bytes(store))
    LocalStore(store.root).reduction_log.compact()
    assert len(log_bytes(store)) < size / 9
    assert check_log(store.reduction_log.path) == LogCheck(valid=59, invalid=0, tail=0)
    assert LocalStore(store.root).reduction_records() == before
    store.put_reductions(group(50, 7))  # the writer's descriptor was the old inode: it must follow
    assert reader.get_reduction(thunk_id(50)) == value_id(7)
    assert reader.reduction_records() == {**before, **dict(group(50, 7))}
    assert not os.listdir(store.tmp)


def test_a_mostly_superseded_log_is_compacted_by_the_next_writer(store, monkeypatch):
    for value in range(6):
        for n in range(10):
            store.put_reductions(group(n, value))
    monkeypatch.setattr(reduction_log, "COMPACT_MIN_BYTES", 1000)
    LocalStore(store.root).put_reductions(group(99, 1))
    assert check_log(store.reduction_log.path).valid == 33
    assert LocalStore(store.root).reduction_records() == {
        **{ref: result for n in range(10) for ref, result in group(n, 5)}, **dict(group(99, 1))}


def test_an_older_store_with_record_files_is_imported_once(store):
    t, tagged, stale, untrusted = thunk_id(1), f"{thunk_id(1)}#lib/x.o", thunk_id(2), thunk_id(3)
    store.put_reduction(stale, value_id(99))  # the log's record is newer than the file's
    legacy = store.root / "reductions"
    legacy.mkdir()
    (legacy / t).write_text(f"{value_id(1)} verified-inputs\n")
    (legacy / f"{thunk_id(1)}#lib%2Fx.o").write_text(f"{value_id(2)} verified-inputs\n")
    (legacy / stale).write_text(f"{value_id(3)} verified-inputs\n")
    (legacy / untrusted).write_text(f"{value_id(4)}\n")  # from before verify-on-use
    (legacy / f".tmp-{os.getpid()}-0").write_text("half a record")
    (legacy / "not-an-id").write_text(f"{value_id(5)} verified-inputs\n")
    older = LocalStore(store.root)
    assert older.get_reduction(t) == value_id(1)
    assert older.get_reduction(tagged) == value_id(2)
    assert older.get_reduction(stale) == value_id(99)
    assert older.get_reduction(untrusted) is None
    assert not legacy.exists()
    assert LocalStore(store.root).reduction_records() == {t: value_id(1), tagged: value_id(2), stale: value_id(99)}


# -- several processes --------------------------------------------------------------------

GROUPS = 400


def _appender(root: str, worker: int, barrier) -> None:
    store = LocalStore(Path(root))
    barrier.wait()
    for n in range(GROUPS):
        store.put_reductions(group(worker * GROUPS + n, n))
        if n % 50 == 0:
            store.forget_reduction(thunk_id(worker * GROUPS + n))


def _reader(root: str, barrier, stop, problems) -> None:
    """Checks while the appenders run: a bare record is never seen without its tags."""
    store = LocalStore(Path(root))
    barrier.wait()
    while not stop.is_set():
        records = store.reduction_records()
        for ref, result in records.items():
            if "#" not in ref and (records.get(f"{ref}#a") is None or records.get(f"{ref}#lib/b.o") is None):
                problems.put(f"{ref} -> {result} without its tagged records")
                return


def _compactor(root: str, barrier, stop) -> None:
    store = LocalStore(Path(root))
    barrier.wait()
    while not stop.is_set():
        store.reduction_log.compact()
        time.sleep(0.01)


def _expected(workers: int) -> dict[str, str]:
    expected: dict[str, str] = {}
    for worker in range(workers):
        for n in range(GROUPS):
            records = dict(group(worker * GROUPS + n, n))
            if n % 50 == 0:
                del records[thunk_id(worker * GROUPS + n)]
            expected.update(records)
    return expected


@pytest.mark.parametrize("compacting", [False, True], ids=["appends", "appends-racing-compaction"])
def test_concurrent_appenders_readers_and_compaction(store, compacting):
    context = multiprocessing.get_context("spawn")
    workers = 4
    barrier = context.Barrier(workers + 1 + compacting)
    stop, problems = context.Event(), context.Queue()
    appenders = [context.Process(target=_appender, args=(str(store.root), w, barrier)) for w in range(workers)]
    helpers = [context.Process(target=_reader, args=(str(store.root), barrier, stop, problems))]
    if compacting:
        helpers.append(context.Process(target=_compactor, args=(str(store.root), barrier, stop)))
    for process in appenders + helpers:
        process.start()
    for process in appenders:
        process.join(timeout=120)
        assert process.exitcode == 0
    stop.set()
    for process in helpers:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert problems.empty(), problems.get()
    assert LocalStore(store.root).reduction_records() == _expected(workers)  # no append lost
    check = check_log(store.reduction_log.path)
    assert check.invalid == 0 and check.tail == 0
    if not compacting:
        assert check.valid == workers * GROUPS * 3 + workers * GROUPS // 50


_KILLED_WRITER = """
import sys
from pathlib import Path
from ir.ids import Kind, id_of_bytes
from ir.store import LocalStore
store = LocalStore(Path(sys.argv[1]))
n = 0
while True:
    t = id_of_bytes(f"thunk {n}".encode(), Kind.THUNK)
    v = id_of_bytes(f"value {n}".encode(), Kind.VALUE)
    store.put_reductions([(f"{t}#tag{k}", v) for k in range(40)] + [(t, v)])
    n += 1
    if n == 20:
        print("writing", flush=True)
"""


def test_kill_9_of_a_writer_leaves_only_valid_lines(store):
    for attempt in range(3):
        invalid_before = check_log(store.reduction_log.path).invalid
        writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(store.root)], cwd=REPO,
                                  stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
        time.sleep(0.05 * attempt)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        check = check_log(store.reduction_log.path)
        assert check.invalid == invalid_before and check.valid >= 20 * 41  # at most a torn tail
        records = LocalStore(store.root).reduction_records()
        mine = {thunk_id(10_000 + earlier) for earlier in range(attempt)}
        for ref in records:  # every group complete: a bare record only with all its tags
            if "#" not in ref and ref not in mine:
                assert all(f"{ref}#tag{k}" in records for k in range(40))
        store.put_reduction(thunk_id(10_000 + attempt), value_id(attempt))
        assert LocalStore(store.root).get_reduction(thunk_id(10_000 + attempt)) == value_id(attempt)
        after = check_log(store.reduction_log.path)  # a torn tail became one ignored line of its own
        assert after.invalid == invalid_before + (check.tail > 0) and after.tail == 0


def test_a_dropped_store_object_closes_its_descriptors(store):
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    store.put_reductions(group(1, 10))
    before = open_fds()
    for n in range(50):
        other = LocalStore(store.root)
        other.put_reductions(group(n, n))
        assert other.get_reduction(thunk_id(1)) is not None
    del other
    assert open_fds() <= before


def test_a_truncated_log_is_read_again(store):
    store.put_reductions(group(1, 10))
    assert store.get_reduction(thunk_id(1)) == value_id(10)
    os.truncate(store.reduction_log.path, 0)  # someone emptied it in place (same inode)
    assert store.get_reduction(thunk_id(1)) is None
    store.put_reductions(group(2, 20))
    assert store.reduction_records() == dict(group(2, 20))


def test_queued_records_are_seen_by_their_writer_and_written_in_one_append(store):
    """``defer=True`` queues: this store object sees the records at once, another (a
    peer process's view) only after the flush, which is one append of them all in
    order; a peer's line in between loses to the queued record written after it."""
    peer = LocalStore(store.root)
    store.put_reductions(group(1, 10), defer=True)
    store.put_reductions(group(2, 20), defer=True)
    assert store.get_reduction(thunk_id(1)) == value_id(10)
    assert peer.get_reduction(thunk_id(1)) is None and not Path(store.reduction_log.path).exists()
    peer.put_reductions([(thunk_id(2), value_id(99))])
    assert store.get_reduction(thunk_id(2)) == value_id(20)  # a fresh lookup: the queued one is later
    store.flush_reductions()
    assert log_bytes(store).count(b"\n\n") == 1  # the peer's append, then ours: two appends in all
    assert check_log(store.reduction_log.path) == LogCheck(valid=7, invalid=0, tail=0)
    assert LocalStore(store.root).get_reduction(thunk_id(2)) == value_id(20)
    assert LocalStore(store.root).get_reduction(f"{thunk_id(1)}#lib/b.o") == value_id(11)
    store.flush_reductions()  # nothing queued: nothing written
    assert check_log(store.reduction_log.path).valid == 7


def test_an_append_or_compaction_writes_queued_records_first(store):
    store.put_reductions(group(1, 10), defer=True)
    store.forget_reduction(thunk_id(1))  # the tombstone must come after the queued record
    assert LocalStore(store.root).get_reduction(thunk_id(1)) is None
    assert LocalStore(store.root).get_reduction(f"{thunk_id(1)}#a") == value_id(10)
    store.put_reductions(group(2, 20), defer=True)
    store.reduction_log.compact()
    assert LocalStore(store.root).get_reduction(thunk_id(2)) == value_id(20)
    store.put_reductions(group(3, 30), defer=True)
    store.reduction_log.close()
    assert LocalStore(store.root).get_reduction(thunk_id(3)) == value_id(30)


def test_appended_since_returns_each_append_as_one_group(tmp_path):
    from ir.reduction_log import ReductionLog, appended_since
    from ir.store_root import log_mark

    path = str(tmp_path / "outputs.log")
    log = ReductionLog(path, str(tmp_path / "outputs.lock"), str(tmp_path), None)
    a, b, c = (f"Tx{n:032x}_1" for n in range(3))
    value = "Vx" + "0" * 32 + "_1"
    assert appended_since(path, None) == []
    log.append([(a, value)])
    mark = log_mark(path)
    log.append([(b, value), (c, value)])
    log.append([(a, None)])
    with open(path, "ab") as handle:
        handle.write(b"\ntorn li")  # a write in progress: not a record yet
    assert appended_since(path, mark) == [[(b, value), (c, value)], [(a, None)]]
    assert appended_since(path, None)[0] == [(a, value)]
    log.compact()  # replaced: what is new since the mark cannot be told
    assert appended_since(path, mark) is None
