"""S3 (and S3-compatible) remote storage for blobs, over aiobotocore (scheme ``s3``).

What it guarantees, and why (each point is a way gg hurt its users):

* **Content-addressed keys** ``<prefix>/<ID>``: an upload is idempotent, so a retry or
  two clients uploading the same blob can never conflict.
* **Never a stale "already uploaded" belief.** The only memory of what the bucket
  holds is an in-process set filled by this run's own HEADs and uploads; nothing is
  written to disk. A caller that learns an object is gone (the Lambda handler reports
  it missing) calls :meth:`S3Storage.forget`, and the next :meth:`upload` sends it
  again. (gg kept markers outside ``.gg`` and looped forever on an emptied bucket.)
* **Every download is verified** against its ID while it streams in; a mismatch is
  discarded (never installed), fetched once more, then reported as one
  :class:`~ir.store.CorruptBlob` line naming bucket and key.
* **Bounded everything**: a semaphore caps requests in flight; each request has a
  connect and a read timeout; each operation has an overall deadline; throttling,
  5xx and connection errors are retried here with capped exponential back-off and
  full jitter (botocore's own retries are off, so there is one retry policy).
* **zstd where it pays**: the object metadata ``gg-encoding`` says ``zstd`` or
  ``identity``; incompressible data (a sample compresses to more than 90 %) is sent
  as is.
* **Reductions** are small objects ``<prefix>/reductions/<THUNK[#tag]>`` holding the
  local store's record (``RESULT verified-inputs``); a batch of lookups is concurrent
  GETs under the same request semaphore (a ListObjectsV2 would read every record the
  team ever wrote under the prefix, a GET per thunk of this graph is bounded by it).
* **Large objects stream**: multipart upload read from the file part by part, and
  downloads written chunk by chunk, so a large blob is never held in memory.
"""

from __future__ import annotations

import asyncio
import io
import os
import stat
import time
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

import zstandard

from ..atomic import unlink_quietly
from ..ids import MAGIC, Kind, id_of_blob, id_of_bytes, kind_of, make_id, new_hasher, parse_id
from ..retry import backoff_delay
from ..store import CorruptBlob, LocalStore, MissingBlob, StoreError, decode_reduction, encode_reduction, reduction_name
from .aws_client import AwsFault, LazyClient, classify
from .lease import LEASES, MAX_LEASE, Lease, decode_lease, encode_lease
from .protocol import StorageConfigError, StorageContext, StorageError
from .shared import SharedTransfers
from .traffic import Traffic
from .uri import S3Config, parse_s3_uri

T = TypeVar("T")

CHUNK = 1 << 20
SLOW_WRITE = 0.1  # s: a download one of whose writes took longer writes the rest in a thread
SMALL_DOWNLOAD = CHUNK  # objects up to this size are downloaded into memory
SAMPLE = 1 << 20
ZSTD_LEVEL = 3
WORTH_IT = 0.9  # compress only if the result is at most this fraction of the input
MIN_COMPRESS = 128  # below this, a zstd frame header is not worth it
PUT_WITHOUT_HEAD = 1 << 20  # smaller uploads skip the HEAD: a PUT costs about the same
PARTS_IN_FLIGHT = 4  # per multipart upload, on top of the global semaphore
ENCODING = "gg-encoding"
EXECUTABLE = "gg-executable"  # "1": some producer had the execute bit on it
PROBE_DATA = b"gg storage probe\n"  # the blob S3Storage.probe() writes and reads back
_LOST_CONDITION_CODES = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")
REDUCTIONS = "reductions"  # key namespace of reduction records, next to the blobs
MAX_REDUCTION = 512  # a record is one ID and the mark; anything longer is not one



class S3Error(StorageError):
    """An S3 operation that failed for good; the message is one line: what, where, why."""


class S3ConfigError(S3Error, StorageConfigError):
    """S3 refused because a setting is wrong (bucket, credentials, permissions, TLS):
    never retried; the run stops with this line."""


def _is_not_found(exc: Exception) -> bool:
    return classify(exc).kind == "not_found"


def _maybe_compress(data: bytes) -> tuple[bytes, str]:
    if len(data) < MIN_COMPRESS:
        return data, "identity"
    # Compressing a whole large incompressible blob just to throw the result away costs
    # more than the upload saves: let a sample decide first.
    if len(data) > SAMPLE and _maybe_compress(data[:SAMPLE])[1] != "zstd":
        return data, "identity"
    compressed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    if len(compressed) <= len(data) * WORTH_IT:
        return compressed, "zstd"
    return data, "identity"


def _compress_file_if_worth_it(path: Path, tmpdir: Path) -> Path | None:
    """Compress ``path`` into a temp file if a sample says it pays; None = send raw."""
    with open(path, "rb") as source:
        sample = source.read(SAMPLE)
    if _maybe_compress(sample)[1] != "zstd":
        return None
    fd, temp = _mkstemp(tmpdir, "zs-")
    try:
        with open(path, "rb") as source, os.fdopen(fd, "wb") as sink:
            zstandard.ZstdCompressor(level=ZSTD_LEVEL).copy_stream(source, sink, size=os.path.getsize(path))
        if os.path.getsize(temp) > os.path.getsize(path) * WORTH_IT:
            os.unlink(temp)
            return None
        return Path(temp)
    except BaseException:
        unlink_quietly(temp)
        raise


def _read_for_put(path: Path, ident: str) -> tuple[bytes, str]:
    """The body to PUT for blob ``ident`` stored at ``path`` (checked: a corrupt local
    copy is never uploaded) and its encoding."""
    data = path.read_bytes()
    actual = id_of_blob(data)
    if actual != ident:
        raise CorruptBlob(ident, actual, str(path.parent))
    return _maybe_compress(data)


def _mkstemp(directory: Path, prefix: str) -> tuple[int, str]:
    import tempfile

    directory.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(dir=directory, prefix=prefix)


def _read_range(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as handle:
        return os.pread(handle.fileno(), size, offset)


def open_s3(uri: str, context: StorageContext) -> S3Storage:
    """The ``s3`` entry of the storage registry."""
    return S3Storage(parse_s3_uri(uri), context.aws_session)


class S3Storage:
    """:class:`ir.storage.RemoteStorage` on S3. Create, use from one event loop, close."""

    def __init__(self, config: S3Config, session: Any = None):
        """``session``: an aiobotocore session to create the client from; sharing one
        (the Lambda handler does) reuses its loaded service model, about 0.1 s per client."""
        self.config = config
        self._client = LazyClient(
            "s3", region=config.region, endpoint_url=config.endpoint, connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout, max_pool_connections=config.concurrency, session=session,
            s3={"addressing_style": "path"} if config.endpoint else None,
        )
        self._slots = asyncio.Semaphore(config.concurrency)
        self._present: set[str] = set()  # this run's knowledge only, never persisted
        # Found missing or corrupt by someone: the next upload PUTs without asking HEAD,
        # which would call a corrupt object "present" forever.
        self._suspect: set[str] = set()
        self._executable: set[str] = set()  # produced with the execute bit in this run
        self._uploading = SharedTransfers()
        self._downloading = SharedTransfers()
        self.traffic = Traffic()  # body bytes sent and received (see ir/storage/traffic.py)

    @classmethod
    def from_uri(cls, uri: str, session: Any = None) -> S3Storage:
        return cls(parse_s3_uri(uri), session)

    def __repr__(self) -> str:
        return f"S3Storage({self.config.uri!r})"

    @property
    def uri(self) -> str:
        return self.config.uri

    # -- the client ------------------------------------------------------------------

    async def _get_client(self) -> Any:
        return await self._client.get()

    async def connect(self) -> None:
        """Create the client now (it connects on first use; this is the costly part)."""
        await self._get_client()

    async def close(self) -> None:
        await self._client.close()

    # -- the retry policy --------------------------------------------------------------

    async def _request(self, what: str, where: str, call: Callable[[Any], Awaitable[T]]) -> T:
        """One request with this store's retry policy; ``call(client)`` is re-run on retry.

        404s are passed through untouched (the caller decides what missing means).
        """
        client = await self._get_client()
        cfg = self.config
        for attempt in range(1, cfg.attempts + 1):
            try:
                async with self._slots:
                    return await call(client)
            except (StoreError, asyncio.CancelledError):
                raise
            except Exception as exc:
                fault = classify(exc)
                if fault.kind in ("not_found", "local"):
                    raise
                if fault.kind == "config":
                    raise self.config_error(fault) from None
                if fault.kind != "transient" or attempt == cfg.attempts:
                    tries = f" after {attempt} attempts" if attempt > 1 else ""
                    raise S3Error(f"S3 {what} {where} failed{tries}: {fault.reason}") from None
            await asyncio.sleep(backoff_delay(attempt, 2 * cfg.backoff_base, cfg.backoff_cap))
        raise AssertionError("unreachable")

    async def _with_deadline(self, what: str, where: str, operation: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.config.deadline):
                return await operation
        except TimeoutError:
            raise S3Error(
                f"S3 {what} {where} failed: did not finish within {self.config.deadline:g} s"
            ) from None

    def config_error(self, fault: AwsFault) -> S3ConfigError:
        """One line naming the setting to fix (the bucket, the credentials, TLS)."""
        cfg = self.config
        setting = f"GG_STORAGE_URI={cfg.uri}"
        if fault.code == "NoSuchBucket":
            return S3ConfigError(f"S3 bucket {cfg.bucket!r} does not exist ({setting})")
        return S3ConfigError(f"S3 s3://{cfg.bucket}/{cfg.prefix}: {fault.reason} (check {fault.setting or setting})")

    async def probe(self) -> None:
        """Pre-flight: PUT and GET one tiny blob, as a run does (the same permissions).

        The probe object is an ordinary content-addressed blob, so writing it twice or
        from many clients is harmless and nothing needs deleting. Raises
        :class:`S3ConfigError` for a setting to fix and :class:`S3Error` otherwise.
        """
        data = PROBE_DATA
        ident = id_of_bytes(data, Kind.VALUE)
        key = self.config.key(ident)
        body, encoding = _maybe_compress(data)

        async def put(client: Any) -> None:
            await client.put_object(Bucket=self.config.bucket, Key=key, Body=body,
                                    Metadata=self._metadata(encoding, ident, False))
            self.traffic.sent(len(body))

        async def get(client: Any) -> None:
            answer = await client.get_object(Bucket=self.config.bucket, Key=key)
            try:
                self.traffic.received(len(await answer["Body"].read(len(data) + 1)))
            finally:
                answer["Body"].close()

        where = self.config.where(ident)
        await self._with_deadline("PUT", where, self._request("PUT", where, put))
        try:
            await self._with_deadline("GET", where, self._request("GET", where, get))
        except Exception as exc:
            if _is_not_found(exc):
                raise S3Error(f"S3 GET {where} failed: the object just written is not there") from None
            raise

    # -- has / forget ------------------------------------------------------------------

    async def has(self, ident: str) -> bool:
        """True if the object exists (a HEAD, unless this run already saw it there)."""
        parse_id(ident)
        if ident in self._present:
            return True
        where = self.config.where(ident)

        async def head(client: Any) -> bool:
            try:
                await client.head_object(Bucket=self.config.bucket, Key=self.config.key(ident))
            except Exception as exc:
                if _is_not_found(exc):
                    return False
                raise
            return True

        found = await self._with_deadline("HEAD", where, self._request("HEAD", where, head))
        if found:
            self._present.add(ident)
        return found

    def forget(self, ident: str) -> None:
        """Drop the belief that ``ident`` is uploaded (someone found it missing or corrupt).

        The next :meth:`upload` of it sends it again even if a HEAD finds an object
        there: existence says nothing about content.
        """
        self._present.discard(ident)
        self._suspect.add(ident)

    def forget_all(self) -> None:
        """Drop everything this store believes is uploaded (e.g. a new warm invocation)."""
        self._present.clear()

    def remember(self, ident: str, executable: bool = False) -> None:
        """Record that ``ident`` is in the bucket (a remote function just uploaded it),
        and whether it is a program (so a later download of it is executable)."""
        self._present.add(ident)
        if executable:
            self._executable.add(ident)
        self._suspect.discard(ident)

    # -- upload -------------------------------------------------------------------------

    async def upload(self, store: LocalStore, ident: str, overwrite: bool = False) -> None:
        """Make sure blob ``ident`` is in the bucket; concurrent calls share one upload.

        ``overwrite``: PUT even if an object is there already (a producer that just made
        the blob uses it, so a corrupt copy left by anyone is replaced, not trusted).
        """
        parse_id(ident)
        if ident in self._present:
            return
        await self._uploading.run(ident, lambda: self._upload(store, ident, overwrite))

    async def _upload(self, store: LocalStore, ident: str, overwrite: bool) -> None:
        where = self.config.where(ident)
        size = parse_id(ident).size
        trust_head = not overwrite and ident not in self._suspect
        if trust_head and size > PUT_WITHOUT_HEAD and await self.has(ident):
            return
        path = store.blob_path(ident)
        if not path.exists():
            # Not here: fine if the bucket has it (e.g. a value an earlier run's function
            # made, which never came back here), whatever its size.
            if not (trust_head and size <= PUT_WITHOUT_HEAD and await self.has(ident)):
                raise MissingBlob(ident, f"{store.blobs} (needed to upload it to {where})")
            return
        executable = bool(os.stat(path).st_mode & stat.S_IXUSR)
        if size > self.config.multipart_threshold:
            await self._with_deadline("upload", where, self._upload_large(store, ident, path, executable))
        else:
            await self._with_deadline("PUT", where, self._upload_small(ident, path, executable))
        self._present.add(ident)
        self._suspect.discard(ident)

    def _metadata(self, encoding: str, ident: str, executable: bool) -> dict[str, str]:
        """Object metadata: how the body is encoded, and whether the blob is a program
        (an ID names content only; without this a linked binary would come back as a
        plain file)."""
        return {ENCODING: encoding, "gg-id": ident, **({EXECUTABLE: "1"} if executable else {})}

    async def _upload_small(self, ident: str, path: Path, executable: bool) -> None:
        # Up to CHUNK bytes the thread hop costs more than the work; above, one hop does
        # the read, the check and the compression.
        if os.path.getsize(path) > CHUNK:
            body, encoding = await asyncio.to_thread(_read_for_put, path, ident)
        else:
            body, encoding = _read_for_put(path, ident)
        await self._put_object(ident, body, encoding, executable)

    async def _put_object(self, ident: str, body: bytes, encoding: str, executable: bool) -> None:
        async def put(client: Any) -> None:
            await client.put_object(
                Bucket=self.config.bucket, Key=self.config.key(ident), Body=body,
                Metadata=self._metadata(encoding, ident, executable),
            )
            self.traffic.sent(len(body))

        await self._request("PUT", self.config.where(ident), put)

    async def _upload_large(self, store: LocalStore, ident: str, path: Path, executable: bool) -> None:
        from ..hashing import hash_file

        actual = await asyncio.to_thread(hash_file, path)
        if actual != ident:
            raise CorruptBlob(ident, actual, str(path.parent))
        compressed = await asyncio.to_thread(_compress_file_if_worth_it, path, store.tmp)
        try:
            source = compressed or path
            encoding = "zstd" if compressed else "identity"
            total = os.path.getsize(source)
            if total <= self.config.multipart_threshold:
                body = await asyncio.to_thread(source.read_bytes)
                await self._put_object(ident, body, encoding, executable)
            else:
                await self._multipart(ident, source, total, encoding, executable)
        finally:
            if compressed:
                unlink_quietly(compressed)

    async def _multipart(self, ident: str, source: Path, total: int, encoding: str, executable: bool) -> None:
        cfg = self.config
        where, key = cfg.where(ident), cfg.key(ident)

        async def create(client: Any) -> str:
            answer = await client.create_multipart_upload(
                Bucket=cfg.bucket, Key=key, Metadata=self._metadata(encoding, ident, executable)
            )
            return answer["UploadId"]

        upload_id = await self._request("CreateMultipartUpload", where, create)
        in_flight = asyncio.Semaphore(PARTS_IN_FLIGHT)

        async def send(number: int, offset: int) -> dict[str, Any]:
            async with in_flight:
                body = await asyncio.to_thread(_read_range, source, offset, min(cfg.part_size, total - offset))

                async def put_part(client: Any) -> str:
                    answer = await client.upload_part(
                        Bucket=cfg.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                    )
                    self.traffic.sent(len(body))
                    return answer["ETag"]

                etag = await self._request(f"UploadPart {number}", where, put_part)
                return {"PartNumber": number, "ETag": etag}

        try:
            offsets = range(0, total, cfg.part_size)
            parts = await asyncio.gather(*(send(n, off) for n, off in enumerate(offsets, start=1)))

            async def complete(client: Any) -> None:
                await client.complete_multipart_upload(
                    Bucket=cfg.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": list(parts)}
                )

            await self._request("CompleteMultipartUpload", where, complete)
        except BaseException:
            await asyncio.shield(self._abort(key, upload_id))
            raise

    async def _abort(self, key: str, upload_id: str) -> None:
        """Best effort: do not leave parts billed in the bucket."""
        try:
            client = await self._get_client()
            async with asyncio.timeout(self.config.read_timeout):
                await client.abort_multipart_upload(Bucket=self.config.bucket, Key=key, UploadId=upload_id)
        except Exception:  # noqa: BLE001 - the original error is the one worth reporting
            pass

    # -- download -------------------------------------------------------------------------

    # -- reductions --------------------------------------------------------------------

    def _reduction_key(self, ref: str) -> str:
        return self.config.key(f"{REDUCTIONS}/{reduction_name(ref)}")

    async def put_reduction(self, ref: str, result: str) -> None:
        body = encode_reduction(result)
        key = self._reduction_key(ref)
        where = f"s3://{self.config.bucket}/{key}"

        async def put(client: Any) -> None:
            await client.put_object(Bucket=self.config.bucket, Key=key, Body=body)
            self.traffic.sent(len(body))

        await self._with_deadline("PUT", where, self._request("PUT", where, put))

    async def _get_small(self, key: str, limit: int) -> tuple[bytes, str] | None:
        """GET a small object (a reduction record, a lease): at most ``limit + 1`` of its
        bytes (so an oversized one shows) and its ETag; None when it is not there."""
        where = f"s3://{self.config.bucket}/{key}"

        async def get(client: Any) -> tuple[bytes, str] | None:
            try:
                answer = await client.get_object(Bucket=self.config.bucket, Key=key)
            except Exception as exc:
                if _is_not_found(exc):
                    return None
                raise
            body = answer["Body"]
            try:
                data = await body.read(limit + 1)
            finally:
                body.close()
            self.traffic.received(len(data))
            return data, str(answer["ETag"])

        return await self._with_deadline("GET", where, self._request("GET", where, get))

    async def get_reductions(self, refs: Collection[str]) -> dict[str, str]:
        async def one(ref: str) -> tuple[str, str | None]:
            got = await self._get_small(self._reduction_key(ref), MAX_REDUCTION)
            if got is None or len(got[0]) > MAX_REDUCTION:
                return ref, None
            return ref, decode_reduction(got[0])

        answers = await asyncio.gather(*(one(ref) for ref in dict.fromkeys(refs)))
        return {ref: result for ref, result in answers if result is not None}

    # -- leases (see ir/storage/lease.py) ---------------------------------------------

    def _lease_key(self, thunk_id: str) -> str:
        parse_id(thunk_id)  # a valid ID is a safe key
        return self.config.key(f"{LEASES}/{thunk_id}")

    async def _put_lease(self, key: str, body: bytes, condition: dict[str, str]) -> str | None:
        """A conditional PUT: the new ETag, or None if the condition failed (someone
        else's lease is there, or the one we expected changed or vanished)."""
        where = f"s3://{self.config.bucket}/{key}"

        async def put(client: Any) -> str | None:
            try:
                answer = await client.put_object(Bucket=self.config.bucket, Key=key, Body=body, **condition)
            except Exception as exc:
                if classify(exc).code in _LOST_CONDITION_CODES:
                    self.traffic.sent(len(body))  # sent, then refused
                    return None
                raise
            self.traffic.sent(len(body))
            return str(answer["ETag"])

        try:
            return await self._with_deadline("PUT", where, self._request("PUT", where, put))
        except S3Error:
            raise
        except Exception as exc:
            if _is_not_found(exc):
                return None  # If-Match on a lease released meanwhile
            raise

    async def read_lease(self, thunk_id: str) -> Lease | None:
        got = await self._get_small(self._lease_key(thunk_id), MAX_LEASE)
        if got is None:
            return None
        data, etag = got
        return decode_lease(thunk_id, data, etag) or Lease(thunk_id, "", 0.0, 0.0, etag)

    async def try_lease(self, thunk_id: str, owner: str, ttl: float) -> Lease | None:
        key = self._lease_key(thunk_id)
        for _ in range(3):
            now = time.time()
            body = encode_lease(owner, now, now + ttl)
            etag = await self._put_lease(key, body, {"IfNoneMatch": "*"})
            if etag is not None:
                return Lease(thunk_id, owner, now, now + ttl, etag)
            current = await self.read_lease(thunk_id)
            if current is None:
                continue  # released meanwhile: race for it again
            if not current.expired(time.time()):
                return None
            # Expired (or unreadable, read as expired): replace exactly that version.
            now = time.time()
            body = encode_lease(owner, now, now + ttl)
            etag = await self._put_lease(key, body, {"IfMatch": current.token})
            return Lease(thunk_id, owner, now, now + ttl, etag) if etag is not None else None
        return None

    async def renew(self, lease: Lease, ttl: float) -> Lease | None:
        now = time.time()
        if lease.expired(now):
            return None  # a peer may be taking it over: do not race it
        body = encode_lease(lease.owner, lease.start, now + ttl)
        etag = await self._put_lease(self._lease_key(lease.thunk_id), body, {"IfMatch": lease.token})
        return Lease(lease.thunk_id, lease.owner, lease.start, now + ttl, etag) if etag is not None else None

    async def release(self, lease: Lease) -> None:
        """Delete the lease if it is still ours (a GET then a DELETE: an unconditional
        DELETE works on every S3-compatible store; the gap can only drop a lease taken
        over in it, which costs at most one extra run, never a wrong result)."""
        current = await self.read_lease(lease.thunk_id)
        if current is None or current.token != lease.token:
            return
        key = self._lease_key(lease.thunk_id)
        where = f"s3://{self.config.bucket}/{key}"

        async def delete(client: Any) -> None:
            await client.delete_object(Bucket=self.config.bucket, Key=key)

        await self._with_deadline("DELETE", where, self._request("DELETE", where, delete))

    async def download(self, store: LocalStore, ident: str) -> None:
        """Fetch blob ``ident`` into ``store``, verified; concurrent calls share one fetch."""
        parse_id(ident)
        if store.has(ident):
            return
        key = (str(store.root), ident)
        await self._downloading.run(key, lambda: self._download(store, ident))

    async def _download(self, store: LocalStore, ident: str) -> None:
        where = self.config.where(ident)
        actual = ""
        for _attempt in range(2):  # a corrupt copy is discarded and fetched once more
            actual = await self._with_deadline("GET", where, self._fetch(store, ident))
            if actual == ident:
                self._present.add(ident)
                return
        self._present.discard(ident)
        self._suspect.add(ident)
        raise CorruptBlob(ident, actual, where)

    async def _fetch(self, store: LocalStore, ident: str) -> str:
        """GET the object, verify it and install it in ``store`` if it is ``ident``;
        return the ID of what arrived (or why it is not a blob).

        Up to SMALL_DOWNLOAD bytes it is read into memory, then checked and stored at
        once (in a thread it cost ~1 ms more CPU per object than the file creation it
        would keep off the event loop); larger ones stream into a temp file, hashed
        (and decompressed) on the fly, so they are never held in memory.
        """
        where = self.config.where(ident)
        parsed = parse_id(ident)

        async def get(client: Any) -> str:
            try:
                answer = await client.get_object(Bucket=self.config.bucket, Key=self.config.key(ident))
            except Exception as exc:
                if _is_not_found(exc):
                    self._present.discard(ident)
                    raise MissingBlob(ident, where) from None
                raise
            metadata = answer.get("Metadata", {})
            encoding = metadata.get(ENCODING, "identity")
            executable = metadata.get(EXECUTABLE) == "1" or ident in self._executable
            if encoding not in ("identity", "zstd"):
                raise S3Error(f"S3 GET {where} failed: unknown {ENCODING} {encoding!r}")
            body = _CountedBody(answer["Body"])  # bytes as they came: compressed or not
            if parsed.size <= SMALL_DOWNLOAD:
                try:
                    data = await _read_at_most(body, parsed.size)
                finally:
                    body.close()
                    self.traffic.received(body.count)
                return _install_small(store, ident, data, encoding, executable)
            fd, temp = _mkstemp(store.tmp, "s3-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    sink = _VerifyingSink(handle, parsed.size, parsed.algorithm)
                    try:
                        actual = await _receive(body, sink, encoding)
                    finally:
                        body.close()
                        self.traffic.received(body.count)
                if actual == ident:
                    store.adopt_hashed(Path(temp), ident, executable)
            finally:
                unlink_quietly(temp)
            return actual

        return await self._request("GET", where, get)


class _CountedBody:
    """A GET response body that counts the bytes read from it (for :class:`Traffic`)."""

    def __init__(self, body: Any):
        self.body = body
        self.count = 0

    async def read(self, size: int = -1) -> bytes:
        data: bytes = await self.body.read(size)
        self.count += len(data)
        return data

    def close(self) -> None:
        self.body.close()


async def _read_at_most(body: Any, size: int) -> bytes:
    """The body's bytes, or its first ``size + 1`` if it is longer (then it is not the
    blob, and reading the rest would only fill memory)."""
    pieces: list[bytes] = []
    got = 0
    while got <= size and (piece := await body.read(size + 1 - got)):
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)


def _install_small(store: LocalStore, ident: str, data: bytes, encoding: str, executable: bool) -> str:
    """Decode and verify a small object; store it if it is ``ident``. The ID of what
    arrived (or why it is not a blob)."""
    size = parse_id(ident).size
    if len(data) > size:  # also for zstd: an object is stored compressed only when that is smaller
        return f"(oversized object, {len(data)}+ bytes)"
    if encoding == "zstd":
        try:  # at most size + 1 bytes out: a small frame may expand to gigabytes
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
            pieces, got = [], 0
            while got <= size and (piece := reader.read(size + 1 - got)):
                pieces.append(piece)
                got += len(piece)
            data = b"".join(pieces)
        except zstandard.ZstdError:
            return f"(undecodable zstd object, {len(data)} bytes)"
    if len(data) > size:
        return f"(oversized object, {len(data)}+ bytes)"
    actual = id_of_blob(data, parse_id(ident).algorithm)
    if actual == ident:
        store.put_bytes(data, executable)
    return actual


class _Oversized(Exception):
    """More bytes than the ID says: stop reading (do not fill the disk with garbage)."""


class _VerifyingSink:
    """Where a download's (decompressed) bytes go: hashed, counted and written at once,
    so the file is read once and never held in memory."""

    def __init__(self, handle: Any, expected_size: int, algorithm: str):
        self.handle = handle
        self.expected_size = expected_size
        self.algorithm = algorithm
        self.hasher = new_hasher(algorithm)
        self.size = 0
        self.head = b""

    def write(self, data: bytes | memoryview) -> int:
        self.size += len(data)
        if self.size > self.expected_size:
            raise _Oversized()
        if len(self.head) < len(MAGIC):
            self.head += bytes(data[: len(MAGIC)])
        self.hasher.update(data)
        self.handle.write(data)
        return len(data)

    def flush(self) -> None:
        """The decompressor's flush() calls this; the file is flushed when closed."""

    def ident(self) -> str:
        return make_id(kind_of(self.head), self.hasher.hexdigest(), self.size, self.algorithm)


async def _receive(body: Any, sink: _VerifyingSink, encoding: str) -> str:
    """Read ``body`` into ``sink`` (decoding zstd); the ID of what arrived, or a
    description of why it is not a blob.

    Each piece is hashed and written as it comes, on the event loop, as a plain client
    writes a download: a write into the page cache costs less than handing the piece
    to a thread (measured: the thread hops, the joins into 1 MiB pieces and the GIL
    handovers cost more client CPU than the writes, on disk and in /dev/shm alike). Once
    one write takes longer than :data:`SLOW_WRITE` (the disk is throttling writers, or
    zstd is expanding much), the rest goes through a thread in pieces of about CHUNK
    bytes, written while the next one is read (two pieces in memory at most), so a slow
    disk never stalls the event loop more than once per download.
    """
    # The sink has the write/flush that stream_writer uses, not the whole IO interface.
    decoder = (zstandard.ZstdDecompressor().stream_writer(sink, write_size=CHUNK,  # type: ignore[arg-type]
                                                          closefd=False)
               if encoding == "zstd" else sink)
    loop = asyncio.get_running_loop()
    writing: asyncio.Future | None = None  # the previous piece, in a thread
    pieces: list[bytes] = []
    buffered = 0
    inline = True
    try:
        while True:
            piece = await body.read(CHUNK - buffered)
            if inline:
                if not piece:
                    break
                started = time.perf_counter()
                decoder.write(piece)
                inline = time.perf_counter() - started < SLOW_WRITE
                continue
            # aiohttp hands out whatever arrived (often a few KiB): gather CHUNK bytes
            # first, so a thread hop carries a large piece.
            if piece:
                pieces.append(piece)
                buffered += len(piece)
            if pieces and (buffered >= CHUNK or not piece):
                data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                pieces, buffered = [], 0
                if writing is not None:
                    await asyncio.shield(writing)
                writing = loop.run_in_executor(None, decoder.write, data)
            if not piece:
                break
        if writing is not None:
            await asyncio.shield(writing)
            writing = None
        if decoder is not sink:
            decoder.flush()
    except _Oversized:
        return f"(oversized object, {sink.size}+ bytes)"
    except zstandard.ZstdError:
        return f"(undecodable zstd object, {sink.size}+ bytes decoded)"
    finally:
        if writing is not None:  # cancelled or failed meanwhile: the thread still uses the file
            await asyncio.wait([writing])
            if not writing.cancelled():
                writing.exception()  # seen: the first error is the one reported
    return sink.ident()
