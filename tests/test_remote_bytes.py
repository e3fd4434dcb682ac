"""Bytes up and down (issue 12, item 4): what the storage layer counts, checked against
the server's own log (moto's request recorder) and the files on disk; and that a
Lambda run leaves intermediate values in the store, downloading only what a target or
a local fallback run needs.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from ir.ids import Kind, id_of_bytes
from ir.storage import Metered, Traffic, open_storage
from ir.storage.s3 import PROBE_DATA
from ir.storage.traffic import human_bytes
from ir.storage.uri import parse_s3_uri
from ir.store import LocalStore
from ir.thunk import Resources

from .forcing import ShellThunks

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MIB = 1 << 20


def test_human_bytes_and_the_summary_text():
    assert [human_bytes(n) for n in (0, 999, 1000, 12_345_678, 4 * 10**12)] == [
        "0 B", "999 B", "1.0 kB", "12.3 MB", "4.0 TB"]
    traffic = Traffic()
    traffic.sent(12_300_000)
    traffic.received(400_000)
    assert traffic.describe() == "12.3 MB up, 400.0 kB down"
    assert traffic.as_dict() == {"bytes_up": 12_300_000, "bytes_down": 400_000, "objects_up": 1, "objects_down": 1}


def _blobs(store: LocalStore) -> dict[str, bytes]:
    compressible = b"gg " * (600 * 1024)  # 1.8 MB that zstd shrinks to almost nothing
    incompressible = os.urandom(300 * 1024)
    return {store.put_bytes(data): data for data in (compressible, incompressible)}


async def test_file_storage_counts_what_it_writes_and_reads(tmp_path, file_storage_uri):
    store = LocalStore.init(tmp_path / "a" / ".gg")
    blobs = _blobs(store)
    storage = open_storage(file_storage_uri)
    assert isinstance(storage, Metered)
    for ident in blobs:
        await storage.upload(store, ident)
        await storage.upload(store, ident)  # already there: nothing written
    total = sum(len(d) for d in blobs.values())
    assert (storage.traffic.up, storage.traffic.objects_up, storage.traffic.down) == (total, 2, 0)
    thunk = id_of_bytes(b"\0t", Kind.THUNK)
    await storage.put_reduction(thunk, next(iter(blobs)))
    record = len((Path(file_storage_uri.removeprefix("file://")) / "reductions" / thunk).read_bytes())
    assert storage.traffic.up == total + record

    other = LocalStore.init(tmp_path / "b" / ".gg")
    for ident in blobs:
        await storage.download(other, ident)
        await storage.download(other, ident)  # local now: nothing read
    assert await storage.get_reductions([thunk]) == {thunk: next(iter(blobs))}
    assert (storage.traffic.down, storage.traffic.objects_down) == (total + record, 3)


@pytest.mark.slow
async def test_s3_counts_the_bytes_on_the_wire(tmp_path, s3_uri, s3_bucket, moto_recorder):
    """Compressed PUTs, a multipart upload and compressed GETs: the counts are the bytes
    S3 received and sent (checked against moto's own request log and object sizes),
    not the blobs' sizes."""
    import boto3

    uri = s3_uri + "&multipart_threshold=5242880&part_size=5242880"
    store = LocalStore.init(tmp_path / "a" / ".gg")
    blobs = _blobs(store)
    large = os.urandom(6 * MIB)  # two parts, sent as is (incompressible)
    blobs[store.put_bytes(large)] = large
    storage = open_storage(uri)
    try:
        with moto_recorder.recording(s3_bucket) as requests:
            await storage.probe()
            for ident in blobs:
                await storage.upload(store, ident)
            other = LocalStore.init(tmp_path / "b" / ".gg")
            for ident in blobs:
                await storage.download(other, ident)
        traffic = storage.traffic
    finally:
        await storage.close()

    # Object data travels in PUTs (UploadPart included); the POSTs that start and
    # complete a multipart upload carry only a little XML, not counted.
    assert sum(r.body for r in requests if r.method == "PUT") == traffic.up
    parts = [r for r in requests if r.method == "PUT" and "partNumber=" in r.query]
    assert len(parts) == 2 and sum(r.body for r in parts) == len(large)
    assert traffic.up < sum(len(d) for d in blobs.values()) - MIB  # the compressible one went small

    s3 = boto3.client("s3", endpoint_url=parse_s3_uri(uri).endpoint, region_name="us-east-1")
    stored = {r.key: s3.head_object(Bucket=s3_bucket, Key=r.key)["ContentLength"]
              for r in requests if r.method == "GET"}
    assert len(stored) == len(blobs) + 1  # each blob once, and the probe
    assert traffic.down == sum(stored.values()) and traffic.objects_down == len(blobs) + 1
    assert stored[parse_s3_uri(uri).key(id_of_bytes(PROBE_DATA, Kind.VALUE))] == len(PROBE_DATA)
    for ident, data in blobs.items():
        assert other.read_bytes(ident, verify=True) == data


# -- a Lambda run leaves intermediates in the store ------------------------------------------

SEQ = b"".join(b"%d\n" % n for n in range(1, 400_001))  # what `seq 1 400000` prints: 2.7 MB
FORCER = "gg-forcer-under-test"  # the forcer's S3 requests carry "app/<this>" in their User-Agent


def _lambda_run(tmp_path: Path, s3_uri: str, bucket: str, boto3_s3, lambda_endpoint, moto_recorder,
                build, **env: str):
    """Build a graph with ``build(ShellThunks)`` -> target, force it on Lambda through the
    CLI while moto records; return (client, target, run, trace, value IDs each thunk
    produced, {blob key the forcer downloaded: its stored size})."""
    from .test_lambda_force import BIN, make_client, of_kind

    client = make_client(tmp_path / "user", s3_uri, lambda_endpoint.url, AWS_SDK_UA_APP_ID=FORCER, **env)
    target = build(ShellThunks(client.store))
    trace = tmp_path / "trace.jsonl"
    with moto_recorder.recording(bucket) as requests:
        forced = subprocess.run(
            [str(BIN / "gg-force"), "--engine", "lambda", "--progress", "lines", "--print", "--trace", str(trace),
             target], cwd=tmp_path, env=client.env, capture_output=True, text=True, timeout=240)
    assert forced.returncode == 0, forced.stderr + lambda_endpoint.log()[-3000:]
    produced = {e["thunk"]: e["outputs"][0] for e in of_kind(trace, "finished")}
    downloaded = {}
    for r in requests:
        if (r.method == "GET" and f"app/{FORCER}" in r.agent
                and "/reductions/" not in r.key and "/leases/" not in r.key):  # records, not blobs
            downloaded[r.key] = boto3_s3.head_object(Bucket=bucket, Key=r.key)["ContentLength"]
    return client, target, forced, trace, produced, downloaded


# Besides blobs, the forcer reads back the lease it holds on each thunk it runs (a lease
# is a small JSON record, deleted when the thunk's reduction is written: docs/force.md).
_LEASE_BYTES = 300


def _transfer(trace: Path) -> dict:
    from .test_lambda_force import of_kind

    (event,) = of_kind(trace, "transfer")
    return event


@pytest.mark.slow
def test_lambda_run_downloads_only_the_target(tmp_path, s3_uri, s3_bucket, boto3_s3, lambda_endpoint,
                                              moto_recorder):
    """Two large intermediates (2.7 and 5.4 MB) stay in S3; the forcer downloads the
    target's value (and the storage probe), nothing else."""
    names = {}

    def build(sh: ShellThunks) -> str:
        names["seq"] = sh.thunk("seq 1 400000 > out")
        names["double"] = sh.thunk("cat a a > out", thunks={"a": names["seq"]})
        return sh.thunk("tail -c 300000 d > out", thunks={"d": names["double"]})

    client, target, forced, trace, produced, downloaded = _lambda_run(
        tmp_path, s3_uri, s3_bucket, boto3_s3, lambda_endpoint, moto_recorder, build)
    assert client.value(forced, target) == (SEQ + SEQ)[-300_000:]
    assert set(produced) == {names["seq"], names["double"], target}
    config = parse_s3_uri(s3_uri)
    assert set(downloaded) == {config.key(produced[target]), config.key(id_of_bytes(PROBE_DATA, Kind.VALUE))}
    for name in ("seq", "double"):  # the intermediates never came here
        assert not client.store.has(produced[names[name]])
        assert config.key(produced[names[name]]) in {o["Key"] for o in boto3_s3.list_objects_v2(
            Bucket=s3_bucket)["Contents"]}
    transfer = _transfer(trace)
    assert sum(downloaded.values()) < 300_000 + 100  # zstd may shrink it
    assert 0 <= transfer["bytes_down"] - sum(downloaded.values()) <= _LEASE_BYTES * len(produced)
    assert transfer["storage"] == s3_uri.partition("?")[0]
    line = [x for x in forced.stderr.splitlines() if f" down ({transfer['storage']})" in x]
    assert len(line) == 1 and line[0].startswith("gg-force: ") and " up, " in line[0], forced.stderr
    assert transfer["inline_bytes_down"] < 1000  # no value came back inside an answer either


@pytest.mark.slow
def test_lambda_run_with_a_local_fallback_downloads_what_it_needs(tmp_path, s3_uri, s3_bucket, boto3_s3,
                                                                   lambda_endpoint, moto_recorder):
    """A thunk that asks for more memory than the function has runs locally: its input
    (a 5.4 MB intermediate made on Lambda) comes down, the intermediate before it does
    not, and the result is right."""
    names = {}

    def build(sh: ShellThunks) -> str:
        names["seq"] = sh.thunk("seq 1 400000 > out")
        names["double"] = sh.thunk("cat a a > out", thunks={"a": names["seq"]})
        tail = sh.thunk("tail -c 300000 d > out", thunks={"d": names["double"]})
        names["tail"] = sh.store.put_thunk(replace(sh.store.load_thunk(tail), resources=Resources(memory_mib=1024)))
        return sh.thunk("cat t t > out", thunks={"t": names["tail"]})

    client, target, forced, trace, produced, downloaded = _lambda_run(
        tmp_path, s3_uri, s3_bucket, boto3_s3, lambda_endpoint, moto_recorder, build, GG_LAMBDA_MEMORY_MIB="512")
    from .test_lambda_force import of_kind

    assert {e["thunk"]: e["engine"] for e in of_kind(trace, "started")} == {
        names["seq"]: "lambda", names["double"]: "lambda", names["tail"]: "local", target: "lambda"}
    assert client.value(forced, target) == (SEQ + SEQ)[-300_000:] * 2
    config = parse_s3_uri(s3_uri)
    assert set(downloaded) == {config.key(produced[names["double"]]), config.key(produced[target]),
                               config.key(id_of_bytes(PROBE_DATA, Kind.VALUE))}
    assert client.store.has(produced[names["double"]]) and not client.store.has(produced[names["seq"]])
    assert 0 <= _transfer(trace)["bytes_down"] - sum(downloaded.values()) <= _LEASE_BYTES * len(produced)
    assert "ran locally" in forced.stderr  # the slower path is said


def test_a_run_reports_its_transfers_in_the_summary_and_the_trace(tmp_path, file_storage_uri):
    """Local engine, results shared through file://: what the run wrote there (the
    values and records it shared) is what the summary, the trace and `gg trace` say."""
    from executor.force import force
    from executor.trace_summary import read_trace, render, summarize

    store = LocalStore.init(tmp_path / ".gg")
    sh = ShellThunks(store)
    big = sh.thunk("seq 1 100000 > out")
    top = sh.thunk("wc -l < b > out", thunks={"b": big})
    trace = tmp_path / "trace.jsonl"
    summary = force([top], ("local",), store=store, trace=trace,
                    environ={**os.environ, "GG_STORAGE_URI": file_storage_uri})
    root = Path(file_storage_uri.removeprefix("file://"))
    on_disk = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    # Every byte there, written once; plus one small lease per executed thunk, taken
    # before it ran and deleted after its record was written (docs/force.md).
    assert summary.traffic is not None
    leases = summary.traffic.up - on_disk
    assert 0 < leases <= 300 * summary.executed, (summary.traffic, on_disk)
    assert summary.traffic_line() == f"{summary.traffic.describe()} ({file_storage_uri})"
    report = summarize(read_trace(trace))
    assert report["transfer"]["bytes_up"] == summary.traffic.up and report["transfer"]["storage"] == file_storage_uri
    assert f"remote store {file_storage_uri}: " in render(report, "trace")
