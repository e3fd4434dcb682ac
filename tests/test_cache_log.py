"""ir/cache_log.py: a cache as one append-only file of checksummed lines."""

from __future__ import annotations

import multiprocessing
import os

from ir.cache_log import CacheLog, seal


def _writer(path: str, name: str, count: int) -> None:
    log = CacheLog(path)
    for i in range(count):
        log.put(f"{name}-{i}", f"value of {name} {i} " + "x" * (i % 50))


def test_concurrent_writers_lose_nothing_and_never_mix_lines(tmp_path):
    path = str(tmp_path / "c" / "entries.log")
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_writer, args=(path, f"w{n}", 400)) for n in range(4)]
    for process in writers:
        process.start()
    reader = CacheLog(path)
    seen = 0
    while any(p.is_alive() for p in writers):  # a reader catching up while they write
        seen = max(seen, sum(reader.get(f"w{n}-0", fresh=True) is not None for n in range(4)))
    for process in writers:
        process.join()
        assert process.exitcode == 0
    fresh = CacheLog(path)
    for n in range(4):
        for i in range(400):
            expected = f"value of w{n} {i} " + "x" * (i % 50)
            assert fresh.get(f"w{n}-{i}") == expected
            assert reader.get(f"w{n}-{i}", fresh=True) == expected


def test_later_lines_win_and_damaged_lines_are_ignored(tmp_path):
    path = tmp_path / "entries.log"
    log = CacheLog(str(path))
    log.put("k", "one")
    log.put("k", "two")
    with open(path, "ab") as handle:
        handle.write(b"\n" + seal(b"k three")[:-4] + b"ff\n")  # checksum fails
        handle.write(b"\nk four\n")  # no checksum
        handle.write(b"\n" + seal(b"j torn")[:5])  # a tail torn by a crash
    assert CacheLog(str(path)).get("k") == "two"
    assert CacheLog(str(path)).get("j") is None
    log.put("j", "whole")  # the next append starts on a line of its own
    assert CacheLog(str(path)).get("j") == "whole"


def test_a_reader_sees_another_objects_appends_when_fresh(tmp_path):
    path = str(tmp_path / "entries.log")
    reader, writer = CacheLog(path), CacheLog(path)
    assert reader.get("k") is None
    writer.put("k", "v")
    assert reader.get("k") is None  # from its index: a stale answer is a miss, never wrong
    assert reader.get("k", fresh=True) == "v"


def test_compaction_keeps_the_latest_values_and_readers_follow_it(tmp_path):
    path = str(tmp_path / "entries.log")
    log = CacheLog(path, compact_min_bytes=1)
    for round_ in range(5):
        for i in range(50):
            log.put(f"k{i}", f"r{round_}")
    lines_before = sum(1 for line in open(path, "rb") if line.strip())
    reader = CacheLog(path)
    assert reader.get("k7") == "r4"
    inode = os.stat(path).st_ino
    compactor = CacheLog(path, compact_min_bytes=1)
    compactor.put("k0", "r5")  # the first append considers compaction: 250 lines, 50 live
    assert os.stat(path).st_ino != inode
    assert sum(1 for line in open(path, "rb") if line.strip()) == 51 < lines_before
    assert reader.get("k0", fresh=True) == "r5"  # the reader read the new file from the start
    assert reader.get("k49") == "r4"
    assert CacheLog(path).get("k0") == "r5"


def test_long_values_are_read_from_the_file_when_asked_for(tmp_path):
    """A memo record is ~10 KB: a reader indexes long lines by their place (checked when
    asked for) instead of holding every value; a damaged long line is a miss; a line
    longer than one read is read whole."""
    path = tmp_path / "entries.log"
    writer = CacheLog(str(path))
    values = {f"k{i}": f"v{i}-" + "y" * 2000 for i in range(100)}
    for key, value in values.items():
        writer.put(key, value)
    huge = "z" * (3 << 20)
    writer.put("huge", huge)
    writer.put("small", "s")
    reader = CacheLog(str(path))
    assert reader.get("small") == "s"
    assert all(isinstance(reader._index[key], tuple) for key in values)  # not held in memory
    assert all(reader.get(key) == value for key, value in values.items())
    assert reader.get("huge") == huge
    data = path.read_bytes()
    where = data.index(b"k7 v7-")
    path.write_bytes(data[:where + 10] + b"Y" + data[where + 11:])  # same length, checksum fails
    assert CacheLog(str(path)).get("k7") is None
    assert CacheLog(str(path)).get("k8") == values["k8"]
