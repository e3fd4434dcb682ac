"""The RemoteStorage contract, one suite run against every built-in backend.

``s3``: a real moto_server process; ``file``: a real directory. Each backend is
tampered with through its own raw interface (boto3, plain file writes) to check that
corrupt and missing objects are reported as the same error classes. What only one
backend has (S3's compression, multipart, retries; the file backend's URI forms and
atomic rename) is tested in tests/test_s3store.py and at the end of this file.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ir.ids import Kind, make_id
from ir.storage import (
    LeasingStorage,
    RemoteStorage,
    StorageConfigError,
    StorageError,
    StorageUriError,
    open_storage,
)
from ir.storage.file import FileStorage
from ir.storage.uri import parse_file_uri, parse_s3_uri
from ir.store import CorruptBlob, LocalStore, MissingBlob

pytestmark = pytest.mark.timeout(120)


@dataclass
class Backend:
    """A backend under test and raw access to its objects (bypassing the contract)."""

    name: str
    uri: str
    where: Callable[[str], str]  # the location a message names
    put_raw: Callable[[str, bytes], None]
    delete_raw: Callable[[str], None]
    raw_executable: Callable[[str], bool]
    broken_uri: str  # a URI whose probe must fail with a setting to fix

    def open(self) -> RemoteStorage:
        return open_storage(self.uri)


def _s3_backend(s3_uri: str, boto3_s3) -> Backend:
    config = parse_s3_uri(s3_uri)

    def put_raw(ident: str, data: bytes) -> None:
        boto3_s3.put_object(Bucket=config.bucket, Key=config.key(ident), Body=data)

    def raw_executable(ident: str) -> bool:
        head = boto3_s3.head_object(Bucket=config.bucket, Key=config.key(ident))
        return head["Metadata"].get("gg-executable") == "1"

    return Backend(
        "s3", s3_uri, config.where, put_raw,
        lambda ident: boto3_s3.delete_object(Bucket=config.bucket, Key=config.key(ident)),
        raw_executable, s3_uri.replace(config.bucket, "gg-no-such-bucket-y"),
    )


def _file_backend(root: Path) -> Backend:
    root.mkdir()
    config = parse_file_uri(f"file://{root}")

    def put_raw(ident: str, data: bytes) -> None:
        path = root / ident
        path.unlink(missing_ok=True)
        path.write_bytes(data)

    return Backend(
        "file", config.uri, config.where, put_raw, lambda ident: (root / ident).unlink(),
        lambda ident: bool(os.stat(root / ident).st_mode & stat.S_IXUSR), f"file://{root}/no/such/dir",
    )


@pytest.fixture(params=["s3", "file"])
def backend(request, tmp_path) -> Backend:
    if request.param == "s3":
        return _s3_backend(request.getfixturevalue("s3_uri"), request.getfixturevalue("boto3_s3"))
    return _file_backend(tmp_path / "shared")


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore.init(tmp_path / "a" / ".gg")


@pytest.fixture
def other(tmp_path) -> LocalStore:
    return LocalStore.init(tmp_path / "b" / ".gg")


@pytest.fixture
async def storage(backend):
    opened = backend.open()
    yield opened
    await opened.close()


def no_temps(store: LocalStore) -> bool:
    return not store.tmp.exists() or list(store.tmp.iterdir()) == []


async def test_it_is_a_remote_storage_and_its_uri_opens_it_again(backend, storage):
    assert isinstance(storage, RemoteStorage)
    again = open_storage(storage.uri)
    try:
        assert type(again) is type(storage) and again.uri == storage.uri
    finally:
        await again.close()


@pytest.mark.parametrize("size", [0, 1, 50_000, 3 << 20])
async def test_roundtrip(storage, store, other, size):
    data = os.urandom(size) if size > 1 else b"x" * size
    ident = store.put_bytes(data)
    assert not await storage.has(ident)
    await storage.upload(store, ident)
    assert await storage.has(ident)
    await storage.download(other, ident)
    assert other.read_bytes(ident, verify=True) == data
    assert not os.stat(other.blob_path(ident)).st_mode & stat.S_IXUSR
    assert no_temps(other)


async def test_thunk_blobs_roundtrip(storage, store, other, sh):
    thunk_id = sh.thunk("echo hi > out")
    await storage.upload(sh.store, thunk_id)
    await storage.download(other, thunk_id)
    assert other.load_thunk(thunk_id) == sh.store.load_thunk(thunk_id)


async def test_the_execute_bit_travels(backend, storage, store, other, tmp_path):
    program = store.put_bytes(b"#!/bin/sh\necho program\n", executable=True)
    await storage.upload(store, program)
    assert backend.raw_executable(program)
    await storage.download(other, program)
    assert os.stat(other.blob_path(program)).st_mode & stat.S_IXUSR
    # Told by a remote worker that it stored a program: a download is executable even
    # if the object itself says nothing (e.g. written by an older client).
    plain = b"a program someone else stored\n"
    ident = store.put_bytes(plain)
    backend.put_raw(ident, plain)
    storage.remember(ident, executable=True)
    third = LocalStore.init(tmp_path / "c" / ".gg")
    await storage.download(third, ident)
    assert os.stat(third.blob_path(ident)).st_mode & stat.S_IXUSR


async def test_concurrent_uploads_and_downloads_share_one(storage, store, other):
    ident = store.put_bytes(os.urandom(200_000))
    await asyncio.gather(*(storage.upload(store, ident) for _ in range(20)))
    assert await storage.has(ident)
    await asyncio.gather(*(storage.download(other, ident) for _ in range(20)))
    assert other.verify(ident) and no_temps(other)


async def test_corrupt_object_is_detected_and_never_installed(backend, storage, store, other):
    data = b"the real content " * 50
    ident = store.put_bytes(data)
    await storage.upload(store, ident)
    for tampered in (b"tampered " * 94 + b"xx",  # the right size, the wrong content
                     b"short", data + b"longer"):
        backend.put_raw(ident, tampered)
        with pytest.raises(CorruptBlob) as caught:
            await storage.download(other, ident)
        message = str(caught.value)
        assert backend.where(ident) in message and "\n" not in message
        assert not other.has(ident) and no_temps(other)
    # Repaired: the next download works.
    backend.put_raw(ident, data)
    await storage.download(other, ident)
    assert other.verify(ident)


async def test_missing_object_is_a_missing_blob(backend, storage, other):
    ident = "Vx" + "1" * 32 + "_5"
    with pytest.raises(MissingBlob) as caught:
        await storage.download(other, ident)
    assert backend.where(ident) in str(caught.value)
    assert not other.has(ident) and no_temps(other)


async def test_forget_makes_the_next_upload_replace_a_corrupt_copy(backend, storage, store, other):
    data = b"replace me if corrupt " * 10
    ident = store.put_bytes(data)
    await storage.upload(store, ident)
    backend.put_raw(ident, b"x" * len(data))
    await storage.upload(store, ident)  # believed present: not sent again
    with pytest.raises(CorruptBlob):
        await storage.download(other, ident)
    storage.forget(ident)  # e.g. a remote worker reported it corrupt
    await storage.upload(store, ident)
    await storage.download(other, ident)
    assert other.verify(ident)


async def test_overwrite_replaces_what_is_there(backend, storage, store, other):
    data = b"a producer's fresh output " * 10
    ident = store.put_bytes(data)
    backend.put_raw(ident, b"y" * len(data))  # someone left a corrupt copy
    await storage.upload(store, ident, overwrite=True)
    await storage.download(other, ident)
    assert other.verify(ident)


async def test_emptied_storage_is_uploaded_again_by_a_new_run(backend, store):
    ident = store.put_bytes(b"survives an emptied storage")
    first = backend.open()
    try:
        await first.upload(store, ident)
    finally:
        await first.close()
    backend.delete_raw(ident)
    second = backend.open()  # a new run knows nothing from the old one
    try:
        assert not await second.has(ident)
        await second.upload(store, ident)
        assert await second.has(ident)
        backend.delete_raw(ident)  # within one run: reported missing -> forget -> sent again
        second.forget(ident)
        second.forget_all()
        await second.upload(store, ident)
        assert await second.has(ident)
    finally:
        await second.close()


async def test_upload_of_a_blob_not_here(storage, store, other):
    ident = store.put_bytes(b"only the storage has this")
    await storage.upload(store, ident)
    await storage.upload(other, ident)  # not in `other`, but stored already: fine
    absent = "Vx" + "2" * 32 + "_7"
    with pytest.raises(MissingBlob):
        await storage.upload(other, absent)


async def test_a_corrupt_local_blob_is_not_uploaded(storage, store):
    ident = store.put_bytes(b"local content " * 10)
    path = store.blob_path(ident)
    os.chmod(path, 0o644)
    path.write_bytes(b"LOCAL CONTENT " * 10)
    with pytest.raises(CorruptBlob):
        await storage.upload(store, ident, overwrite=True)
    assert not await storage.has(ident)


async def test_probe(backend, storage):
    await storage.probe()
    await storage.connect()
    broken = open_storage(backend.broken_uri)
    try:
        with pytest.raises(StorageConfigError) as caught:
            await broken.probe()
    finally:
        await broken.close()
    message = str(caught.value)
    assert "GG_STORAGE_URI=" in message and "\n" not in message


# -- the file backend's own rules ---------------------------------------------------------------


def test_file_uri_forms():
    assert parse_file_uri("file:///srv/gg//cache/").root == "/srv/gg/cache"
    assert parse_file_uri("file://localhost/srv/gg").root == "/srv/gg"
    assert parse_file_uri("file:///srv/a%20b").root == "/srv/a b"
    config = parse_file_uri("file:///srv/gg?concurrency=4")
    assert config.concurrency == 4 and parse_file_uri(config.uri) == config
    for bad in ("file://server/srv", "file:relative/dir", "file:///x?nope=1", "file:///x?concurrency=0",
                "s3://bucket"):
        with pytest.raises(StorageUriError):
            parse_file_uri(bad)


async def test_file_writes_are_atomic(tmp_path, store):
    """A write that fails half-way leaves neither a short object nor a temp file."""
    root = tmp_path / "shared"
    root.mkdir()
    storage = open_storage(f"file://{root}")
    assert isinstance(storage, FileStorage)
    ident = store.put_bytes(os.urandom(100_000))

    def fail_half_way(sink) -> str:
        sink.write(b"half")
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError):
        storage._write(ident, fail_half_way, False)
    assert list(root.iterdir()) == []
    await storage.upload(store, ident)
    assert [p.name for p in root.iterdir()] == [ident]
    assert stat.S_IMODE(os.stat(root / ident).st_mode) == 0o444


async def test_file_storage_that_is_not_a_directory(tmp_path, store):
    (tmp_path / "plain").write_text("not a directory")
    storage = open_storage(f"file://{tmp_path}/plain")
    with pytest.raises(StorageConfigError, match="is not a directory"):
        await storage.probe()
    ident = store.put_bytes(b"z")
    with pytest.raises(StorageError, match="GG_STORAGE_URI"):
        await storage.upload(store, ident)


def test_a_read_only_file_storage_is_a_setting_to_fix(tmp_path):
    """A real read-only mount (a bind mount remounted ro, in a mount namespace of its own):
    root may write anywhere else, so only the file system can say no."""
    shared = tmp_path / "ro"
    shared.mkdir()
    script = (f"mount --bind {shared} {shared} && mount -o remount,bind,ro {shared} && "
              f"exec {sys.executable} -c \"$0\"")
    probe = ("import asyncio\nfrom ir.storage import open_storage\n"
             f"asyncio.run(open_storage('file://{shared}').probe())\n")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, probe],
                          cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ir.storage.file.FileStorageConfigError: ") and "not writable" in last, done.stderr
    assert f"GG_STORAGE_URI=file://{shared}" in last


# -- leases ----------------------------------------------------------------------------

LEASED = make_id(Kind.THUNK, "0" * 32, 100)


async def test_a_lease_is_exclusive_renewed_and_released(storage):
    assert isinstance(storage, LeasingStorage)
    lease = await storage.try_lease(LEASED, "alice", 30)
    assert lease is not None and lease.owner == "alice" and lease.expiry > lease.start
    assert await storage.try_lease(LEASED, "bob", 30) is None
    seen = await storage.read_lease(LEASED)
    assert seen is not None and (seen.owner, seen.start, seen.expiry) == ("alice", lease.start, lease.expiry)
    renewed = await storage.renew(lease, 60)
    assert renewed is not None and renewed.expiry > lease.expiry and renewed.start == lease.start
    assert await storage.renew(lease, 60) is None  # the old version is no longer the lease
    await storage.release(lease)  # a stale handle releases nothing
    assert await storage.try_lease(LEASED, "bob", 30) is None
    await storage.release(renewed)
    assert await storage.read_lease(LEASED) is None
    bobs = await storage.try_lease(LEASED, "bob", 30)
    assert bobs is not None and bobs.owner == "bob"


async def test_an_expired_lease_is_taken_over_once(storage):
    old = await storage.try_lease(LEASED, "crashed", 1.5)
    assert old is not None
    assert await storage.try_lease(LEASED, "bob", 30) is None
    await asyncio.sleep(1.6)
    takers = await asyncio.gather(*(storage.try_lease(LEASED, f"peer{i}", 30) for i in range(4)))
    winners = [lease for lease in takers if lease is not None]
    assert len(winners) == 1
    current = await storage.read_lease(LEASED)
    assert current is not None and current.owner == winners[0].owner
    assert await storage.renew(old, 30) is None  # the dead owner's handle is void
    await storage.release(old)
    assert (await storage.read_lease(LEASED)) == current


async def test_a_garbage_lease_blocks_nobody(storage, backend):
    first = await storage.try_lease(LEASED, "alice", 30)
    assert first is not None
    await storage.release(first)  # the leases/ namespace now exists on either backend
    backend.put_raw(f"leases/{LEASED}", b"not a lease")
    lease = await storage.try_lease(LEASED, "bob", 30)
    assert lease is not None and lease.owner == "bob"
