"""Streaming hashing and the hash cache (including its racy-timestamp rule)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import xxhash

from ir.cache_log import seal
from ir.hashing import CHUNK, RACY_WINDOW_NS, HashCache, hash_file, hash_stream
from ir.ids import Kind, id_of_bytes, parse_id
from ir.thunk import MAGIC


def entry_of(cache: HashCache, path: Path) -> str | None:
    """The entry for ``path`` as it is on disk (read by a fresh cache object)."""
    st = os.stat(path)
    return HashCache(cache.directory)._log.get(f"{st.st_dev:x}-{st.st_ino:x}")


def log_of(cache: HashCache) -> Path:
    return cache.directory / "entries.log"


def make_old(path: Path, seconds: int = 100) -> None:
    """Backdate mtime; ctime still moves to now (it cannot be set), as in real life."""
    old = time.time_ns() - seconds * 10**9
    os.utime(path, ns=(old, old))


def test_hash_stream_matches_bytes_and_copies_to_sink():
    data = os.urandom(3 * CHUNK + 17)
    sink = io.BytesIO()
    assert hash_stream(io.BytesIO(data), sink=sink) == id_of_bytes(data, Kind.VALUE)
    assert sink.getvalue() == data


def test_hash_stream_without_readinto():
    class Reader:
        def __init__(self, data):
            self.stream = io.BytesIO(data)

        def read(self, n):
            return self.stream.read(n)

    data = MAGIC + b"x" * (CHUNK + 1)
    assert hash_stream(Reader(data)) == id_of_bytes(data, Kind.THUNK)


def test_thunk_files_hash_as_thunks(tmp_path):
    (tmp_path / "t").write_bytes(MAGIC + b"rest")
    (tmp_path / "v").write_bytes(b"#" + MAGIC)
    (tmp_path / "short").write_bytes(MAGIC[:5])
    assert hash_file(tmp_path / "t")[0] == "T"
    assert hash_file(tmp_path / "v")[0] == "V"
    assert hash_file(tmp_path / "short")[0] == "V"


def test_cache_hit_for_unchanged_file(tmp_path):
    cache = HashCache(tmp_path / "cache")
    path = tmp_path / "f"
    path.write_bytes(b"content")
    st, observed = cache.stat(path)
    # An entry stamped after the racy window: trusted. To prove the file is not read
    # again, the entry deliberately records a different (well-formed) ID.
    planted = id_of_bytes(b"something else", Kind.VALUE)
    cache.remember(st, planted, max(st.st_mtime_ns, st.st_ctime_ns) + RACY_WINDOW_NS)
    assert cache.lookup(path) == planted
    assert cache.hash(path) == planted
    size = os.stat(log_of(cache)).st_size
    assert cache.hash(path) == planted
    assert HashCache(cache.directory).hash(path) == planted  # another process's view: from the file
    assert os.stat(log_of(cache)).st_size == size  # nothing appended: a hit


def test_changed_file_same_second_same_size_mtime_forced_back(tmp_path):
    cache = HashCache(tmp_path / "cache")
    path = tmp_path / "f"
    path.write_bytes(b"version 1")
    make_old(path)
    before = os.stat(path)
    st, _ = cache.stat(path)
    cache.remember(st, hash_file(path), max(st.st_mtime_ns, st.st_ctime_ns) + RACY_WINDOW_NS)
    assert cache.lookup(path) == id_of_bytes(b"version 1", Kind.VALUE)

    path.write_bytes(b"version 2")  # same size, within the same second
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime forced back
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert cache.lookup(path) is None
    assert cache.hash(path) == id_of_bytes(b"version 2", Kind.VALUE)


def test_changed_file_with_everything_but_inode_equal_is_a_different_entry(tmp_path):
    cache = HashCache(tmp_path / "cache")
    path = tmp_path / "f"
    path.write_bytes(b"aaaa")
    cache.hash(path)
    replacement = tmp_path / "g"
    replacement.write_bytes(b"bbbb")
    os.replace(replacement, path)  # new inode under the same name
    assert cache.hash(path) == id_of_bytes(b"bbbb", Kind.VALUE)


def test_racy_rule(tmp_path):
    """An entry made within the window of the file's timestamps is never trusted."""
    cache = HashCache(tmp_path / "cache")
    path = tmp_path / "f"
    path.write_bytes(b"data")
    st = os.stat(path)
    newest = max(st.st_mtime_ns, st.st_ctime_ns)
    wrong = id_of_bytes(b"stale", Kind.VALUE)
    for observed in (newest - 1, newest, newest + RACY_WINDOW_NS - 1):
        cache.remember(st, wrong, observed)
        assert cache.lookup(path) is None, observed
        assert cache.hash(path) == id_of_bytes(b"data", Kind.VALUE)
    cache.remember(st, wrong)  # no clock reading: never trusted
    assert cache.lookup(path) is None
    cache.remember(st, wrong, newest + RACY_WINDOW_NS)
    assert cache.lookup(path) == wrong


def test_fresh_file_is_racy_then_trusted_after_the_window(tmp_path):
    cache = HashCache(tmp_path / "cache")
    path = tmp_path / "f"
    path.write_bytes(b"fresh")
    ident = cache.hash(path)
    assert cache.lookup(path) is None  # just written: racy
    time.sleep(RACY_WINDOW_NS / 1e9 + 0.1)
    assert cache.hash(path) == ident  # re-hashed now, with a trustworthy stamp
    assert cache.lookup(path) == ident


def test_stamp_is_taken_before_the_file_is_read(tmp_path):
    """A write that lands while the file is being hashed must not be covered.

    The FIFO makes the order deterministic: the writer can only record its time after
    the hash has opened the file, i.e. after the cache took its stat.
    """
    cache = HashCache(tmp_path / "cache")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    during: list[int] = []

    def writer():
        with open(fifo, "wb") as handle:
            during.append(time.time_ns())
            handle.write(b"streamed")

    thread = threading.Thread(target=writer)
    thread.start()
    assert cache.hash(fifo) == id_of_bytes(b"streamed", Kind.VALUE)
    thread.join()
    entry = entry_of(cache, fifo)
    assert entry is not None
    observed = int(entry.split()[3])
    assert observed <= during[0]


def test_garbage_entries_are_ignored(tmp_path):
    cache = HashCache(tmp_path / "cache")
    path = tmp_path / "f"
    path.write_bytes(b"x")
    cache.directory.mkdir()
    st = os.stat(path)
    key = f"{st.st_dev:x}-{st.st_ino:x}"
    good = f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ctime_ns + RACY_WINDOW_NS} "
    planted = id_of_bytes(b"not x", Kind.VALUE)
    for junk in ("", "1 2 3", "a b c d e", "1 2 3 4 5 6"):
        with open(log_of(cache), "ab") as log:
            log.write(b"\n" + seal(f"{key} {junk}".encode()))
        assert HashCache(cache.directory).lookup(path) is None
    for damaged in (seal(f"{key} {good}{planted}".encode())[:-3] + b"00\n",  # checksum fails
                    f"{key} {good}{planted}\n".encode()):  # no checksum
        with open(log_of(cache), "ab") as log:
            log.write(b"\n" + damaged)
        assert HashCache(cache.directory).lookup(path) is None
    with open(log_of(cache), "ab") as log:
        log.write(b"\n" + seal(f"{key} {good}{planted}".encode()))
    assert HashCache(cache.directory).lookup(path) == planted  # the same line, checked: used
    assert cache.hash(path) == planted


MEASURE = textwrap.dedent(
    """
    import resource, sys
    from ir.hashing import hash_file
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ident = hash_file(sys.argv[1])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(ident, (after - before) * 1024)
    """
)


@pytest.fixture
def sparse_dir(tmp_path) -> Iterator[Path]:
    """Where a sparse file is cheap to read: tmpfs serves holes from the zero page,
    while a disk file system first allocates and zeroes page cache for every block."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(dir=shm, prefix="gg-test-") as directory:
            yield Path(directory)
    else:
        yield tmp_path


def test_streaming_hash_of_a_large_sparse_file(sparse_dir):
    """3 GiB sparse file: hashed in constant memory, same digest as incremental xxhash."""
    size = 3 << 30
    path = sparse_dir / "big"
    with open(path, "wb") as handle:
        handle.truncate(size)
        handle.seek(size - 5)
        handle.write(b"tail!")
    run = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, check=True
    )
    ident, growth = run.stdout.split()
    assert int(growth) < 64 << 20, f"peak RSS grew by {int(growth) >> 20} MiB"
    expected = _zeros_then(size - 5, b"tail!")
    assert ident == f"Vx{expected.hexdigest()}_{size:x}"


def _zeros_then(zeros: int, tail: bytes):
    hasher = xxhash.xxh3_128()
    block = bytes(64 << 20)
    while zeros:
        step = min(zeros, len(block))
        hasher.update(memoryview(block)[:step])
        zeros -= step
    hasher.update(tail)
    return hasher


def test_no_4gib_cap_in_streaming_hash():
    """A stream longer than 4 GiB gets its full size in the ID (gg's %08x capped it)."""
    size = (4 << 30) + 3

    class Zeros:
        def __init__(self):
            self.left = size

        def readinto(self, buffer) -> int:
            step = min(self.left, len(buffer))
            buffer[:step] = bytes(step)
            self.left -= step
            return step

    ident = hash_stream(Zeros())
    assert parse_id(ident).size == size > 2**32
    assert ident == f"Vx{_zeros_then(size, b'').hexdigest()}_{size:x}"
