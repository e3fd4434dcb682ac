"""What only S3Storage has (compression, multipart, retries, timeouts), against a real
moto_server process and a real fault-injecting proxy. The storage contract every
backend keeps is tests/test_storage.py."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from ir.storage.s3 import ENCODING, S3Error, S3Storage
from ir.storage.uri import MIB, S3Config, StorageUriError, parse_s3_uri
from ir.store import CorruptBlob, LocalStore
from tests.aws_fixtures import FaultProxy

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore.init(tmp_path / "a" / ".gg")


@pytest.fixture
def other(tmp_path) -> LocalStore:
    return LocalStore.init(tmp_path / "b" / ".gg")


@pytest.fixture(params=["writes inline", "writes in a thread"])
def write_path(request, monkeypatch) -> str:
    """Downloads write on the event loop until one write is slow, then in a thread:
    both paths keep every check (a negative threshold makes every write slow)."""
    if request.param == "writes in a thread":
        import ir.storage.s3 as s3_module

        monkeypatch.setattr(s3_module, "SLOW_WRITE", -1.0)
    return request.param


def small_multipart(uri: str) -> S3Config:
    """Multipart from 6 MiB, so tests exercise it without huge files."""
    config = parse_s3_uri(uri)
    from dataclasses import replace

    return replace(config, multipart_threshold=6 * MIB, part_size=5 * MIB)


def test_uri_parsing():
    config = parse_s3_uri("s3://my-bucket/some/prefix?region=eu-west-1&endpoint=http://x:1&attempts=2")
    assert (config.bucket, config.prefix, config.region, config.endpoint, config.attempts) == (
        "my-bucket", "some/prefix", "eu-west-1", "http://x:1", 2)
    assert config.key("Vx" + "0" * 32 + "_1") == "some/prefix/Vx" + "0" * 32 + "_1"
    assert parse_s3_uri(config.uri) == config
    for bad in ("gs://bucket", "s3://", "s3://ab", "s3://bucket?nope=1", "s3://bucket?attempts=x"):
        with pytest.raises(StorageUriError):
            parse_s3_uri(bad)


async def roundtrip(config: S3Config, store: LocalStore, other: LocalStore, data: bytes, boto3_s3) -> str:
    ident = store.put_bytes(data)
    storage = S3Storage(config)
    try:
        assert not await storage.has(ident)
        await storage.upload(store, ident)
        assert await storage.has(ident)
        await storage.download(other, ident)
    finally:
        await storage.close()
    assert other.read_bytes(ident, verify=True) == data
    head = boto3_s3.head_object(Bucket=config.bucket, Key=config.key(ident))
    return head["Metadata"][ENCODING]


async def test_roundtrip_small_compressible(s3_uri, store, other, boto3_s3):
    config = parse_s3_uri(s3_uri)
    data = b"hello gg " * 1000
    assert await roundtrip(config, store, other, data, boto3_s3) == "zstd"
    obj = boto3_s3.get_object(Bucket=config.bucket, Key=config.key(store.put_bytes(data)))
    assert len(obj["Body"].read()) < len(data) // 10


async def test_roundtrip_small_incompressible(s3_uri, store, other, boto3_s3):
    assert await roundtrip(parse_s3_uri(s3_uri), store, other, os.urandom(50_000), boto3_s3) == "identity"


async def test_roundtrip_empty_and_tiny(s3_uri, store, other, boto3_s3):
    config = parse_s3_uri(s3_uri)
    assert await roundtrip(config, store, other, b"", boto3_s3) == "identity"
    assert await roundtrip(config, store, other, b"x", boto3_s3) == "identity"


async def test_roundtrip_large_multipart(s3_uri, store, other, boto3_s3, write_path):
    config = small_multipart(s3_uri)
    random_part = os.urandom(13 * MIB)
    assert await roundtrip(config, store, other, random_part, boto3_s3) == "identity"
    ident = store.put_bytes(random_part)
    obj = boto3_s3.head_object(Bucket=config.bucket, Key=config.key(ident))
    assert "-" in obj["ETag"]  # a multipart ETag: the object went up in parts
    compressible = (b"0123456789abcdef" * 4096 + os.urandom(512)) * 200  # ~13 MiB
    assert await roundtrip(config, store, other, compressible, boto3_s3) == "zstd"


async def test_corrupt_zstd_frames_are_detected(s3_uri, store, other, boto3_s3):
    """The contract suite (tests/test_storage.py) tampers with plain objects; S3 also
    has compressed ones, whose frames can be corrupt."""
    config = parse_s3_uri(s3_uri)
    ident = store.put_bytes(b"the real content " * 50)
    storage = S3Storage(config)
    try:
        await storage.upload(store, ident)
        boto3_s3.put_object(Bucket=config.bucket, Key=config.key(ident), Body=b"\x28\xb5\x2f\xfd garbage",
                            Metadata={ENCODING: "zstd"})
        with pytest.raises(CorruptBlob):
            await storage.download(other, ident)
        assert not other.has(ident)
        assert list(other.tmp.iterdir()) == []
    finally:
        await storage.close()


async def test_oversized_objects_stop_early(s3_uri, store, other, boto3_s3, write_path):
    """An object (plain, or a zstd frame that expands) longer than its ID says is not
    read to the end: corrupt, nothing cached, no temp file left."""
    import zstandard

    config = parse_s3_uri(s3_uri)
    small = store.put_bytes(b"short and true\n")  # read into memory
    large = store.put_bytes(os.urandom(MIB + 1))  # streamed into a file
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (8 * MIB))
    storage = S3Storage(config)
    try:
        for ident in (small, large):
            for body, encoding in ((os.urandom(3 * MIB), "identity"), (bomb, "zstd")):
                boto3_s3.put_object(Bucket=config.bucket, Key=config.key(ident), Body=body,
                                    Metadata={ENCODING: encoding})
                with pytest.raises(CorruptBlob) as caught:
                    await storage.download(other, ident)
                assert "oversized" in str(caught.value)
                assert not other.has(ident)
                assert list(other.tmp.iterdir()) == []
    finally:
        await storage.close()


async def test_throttling_is_retried(s3_uri, moto_endpoint, store, other):
    ident = store.put_bytes(b"throttled " * 300)
    async with FaultProxy(moto_endpoint, fail_first=3) as proxy:
        config = parse_s3_uri(s3_uri.replace(moto_endpoint, proxy.url) + "&attempts=5")
        storage = S3Storage(config)
        try:
            await storage.upload(store, ident)
            assert proxy.failed == 3
            proxy.fail_first += 3
            await storage.download(other, ident)
            assert proxy.failed == 6
        finally:
            await storage.close()
    assert other.verify(ident)


async def test_throttling_beyond_attempts_is_one_line(s3_uri, moto_endpoint, store):
    ident = store.put_bytes(b"always throttled")
    async with FaultProxy(moto_endpoint, fail_first=100) as proxy:
        storage = S3Storage(parse_s3_uri(s3_uri.replace(moto_endpoint, proxy.url) + "&attempts=3"))
        try:
            with pytest.raises(S3Error) as caught:
                await storage.upload(store, ident)
        finally:
            await storage.close()
    message = str(caught.value)
    assert "SlowDown" in message and "after 3 attempts" in message and "s3://" in message
    assert "\n" not in message


async def test_unreachable_endpoint_is_a_clear_error(store):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        uri = f"s3://gg-nowhere/p?endpoint=http://127.0.0.1:{port}&attempts=2&connect_timeout=1"
        storage = S3Storage(parse_s3_uri(uri))
        ident = store.put_bytes(b"x")
        try:
            with pytest.raises(S3Error) as caught:
                await asyncio.wait_for(storage.upload(store, ident), 30)
        finally:
            await storage.close()
    assert "cannot connect" in str(caught.value)


async def test_silent_endpoint_hits_the_deadline(moto_endpoint, store):
    async with FaultProxy(moto_endpoint, hang=True) as proxy:
        uri = f"s3://gg-silent/p?endpoint={proxy.url}&attempts=2&read_timeout=0.5&deadline=20"
        storage = S3Storage(parse_s3_uri(uri))
        try:
            with pytest.raises(S3Error) as caught:
                await asyncio.wait_for(storage.has(store.put_bytes(b"y")), 30)
        finally:
            await storage.close()
    assert "timed out" in str(caught.value)
