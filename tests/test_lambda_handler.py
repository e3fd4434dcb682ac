"""The Lambda handler, called in-process against a real moto_server (S3)."""

from __future__ import annotations

import asyncio
import base64

import pytest

from executor import worker_cache as cache
from ir.storage.s3 import S3Storage
from ir.storage.uri import parse_s3_uri
from ir.store import LocalStore
from lambda_handler import handler
from lambda_handler.handler import handle
from tests.forcing import ShellThunks

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def client_store(tmp_path) -> LocalStore:
    return LocalStore.init(tmp_path / "client" / ".gg")


@pytest.fixture
def lambda_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GG_CACHE_DIR", str(tmp_path / "lambda-tmp"))
    monkeypatch.delenv("GG_STORAGE_URI", raising=False)
    yield LocalStore(tmp_path / "lambda-tmp")
    handler.shutdown()  # the warm state (S3 clients) would otherwise outlive the test


def upload_inputs(uri: str, store: LocalStore, thunk_ids: list[str]) -> None:
    async def run():
        storage = S3Storage(parse_s3_uri(uri))
        try:
            for tid in thunk_ids:
                thunk = store.load_thunk(tid)
                for item in (*thunk.values, *thunk.executables):
                    await storage.upload(store, item.id)
        finally:
            await storage.close()

    asyncio.run(run())


def event_for(uri: str | None, store: LocalStore, thunk_ids: list[str]) -> dict:
    event = {"version": 1, "thunks": [
        {"id": t, "data": base64.b64encode(store.read_bytes(t)).decode()} for t in thunk_ids]}
    if uri:
        event["storage"] = uri
    return event


def test_batch_of_thunks_ok_failed_and_tail_call(s3_uri, client_store, lambda_env, boto3_s3):
    sh = ShellThunks(client_store)
    ok = sh.thunk("cat a b > out", values={"a": "hello ", "b": "world"})
    failing = sh.thunk("echo broken >&2; exit 3")
    inner = sh.thunk("echo inner > out")
    tail = sh.returning(inner)
    thunks = [ok, failing, tail]
    upload_inputs(s3_uri, client_store, thunks)
    answer = handle(event_for(s3_uri, client_store, thunks), None)
    assert answer["version"] == 1
    results = {r["id"]: r for r in answer["results"]}
    assert results[ok]["status"] == "ok"
    out = results[ok]["outputs"][0]
    assert out["tag"] == "out" and "data" not in out  # values are not inline
    config = parse_s3_uri(s3_uri)
    body = boto3_s3.get_object(Bucket=config.bucket, Key=config.key(out["id"]))["Body"].read()
    assert body == b"hello world"
    assert results[failing]["status"] == "execution_failed"
    assert "exit status 3" in results[failing]["error"] and "broken" in results[failing]["stderr_tail"]
    tail_out = results[tail]["outputs"][0]
    assert tail_out["id"] == inner and base64.b64decode(tail_out["data"]) == client_store.read_bytes(inner)


def test_missing_input_is_reported_with_its_id(s3_uri, client_store, lambda_env):
    sh = ShellThunks(client_store)
    tid = sh.thunk("cat a > out", values={"a": "never uploaded"})
    answer = handle(event_for(s3_uri, client_store, [tid]), None)
    result = answer["results"][0]
    assert result["status"] == "missing_input"
    assert client_store.put_bytes(b"never uploaded") in result["missing"]


def test_storage_from_environment(s3_uri, client_store, lambda_env, monkeypatch):
    sh = ShellThunks(client_store)
    tid = sh.thunk("echo env > out")
    upload_inputs(s3_uri, client_store, [tid])
    monkeypatch.setenv("GG_STORAGE_URI", s3_uri)
    assert handle(event_for(None, client_store, [tid]), None)["results"][0]["status"] == "ok"


@pytest.mark.parametrize("event, status, error", [
    (None, "", "a JSON object expected"),
    ({}, "", "protocol version None"),
    ({"version": 2, "thunks": [{"id": "x"}]}, "config_error", "protocol version 2; this side speaks 1"),
    ({"version": 1, "thunks": [{"id": "Tnope", "data": "!"}]}, "infrastructure_error", "bad thunk in request"),
    ({"version": 1, "thunks": [{"id": "Tnope"}], "colour": "red"}, "infrastructure_error",
     'no field named "colour"'),
    ({"version": 1, "thunks": [{"id": "Tnope", "timeout": "soon"}]}, "infrastructure_error",
     "thunks[0].timeout"),
])
def test_bad_events_get_an_answer(event, status, error, lambda_env, monkeypatch):
    monkeypatch.setenv("GG_STORAGE_URI", "s3://some-bucket")
    answer = handle(event, None)
    assert answer["version"] == 1
    assert len(answer["results"]) == len((event or {}).get("thunks", []))
    assert error in answer["error"] or all(error in r["error"] for r in answer["results"]), answer
    for result in answer["results"]:
        assert result["status"] == status and "\n" not in result["error"]


def test_thunk_data_must_match_its_id(s3_uri, client_store, lambda_env):
    sh = ShellThunks(client_store)
    a, b = sh.thunk("echo a > out"), sh.thunk("echo b > out")
    event = event_for(s3_uri, client_store, [a])
    event["thunks"][0]["data"] = base64.b64encode(client_store.read_bytes(b)).decode()
    result = handle(event, None)["results"][0]
    assert result["status"] == "infrastructure_error" and "hashes to" in result["error"]


def test_cache_trim_evicts_lru_but_never_protected(tmp_path):
    import os
    import time

    store = LocalStore.init(tmp_path / "c")
    ids = [store.put_bytes(bytes([i]) * 1000) for i in range(5)]
    for n, ident in enumerate(ids):
        os.utime(store.blobs / ident, ns=(time.time_ns(), 1_000_000_000 * (n + 1)))
    freed = cache.trim(store, cap_bytes=2500, protect=frozenset({ids[0]}))
    assert freed == 3000
    assert [store.has(i) for i in ids] == [True, False, False, False, True]


def test_errors_are_classified_where_the_cause_is_known(s3_uri, moto_endpoint, client_store, lambda_env):
    """The event's timeout is the thunk's limit (execution_failed, final); a bucket the
    function cannot use is config_error (the run stops), not a retryable error."""
    sh = ShellThunks(client_store)
    hangs = sh.thunk("echo started; sleep 60; echo x > out")
    upload_inputs(s3_uri, client_store, [hangs])
    event = event_for(s3_uri, client_store, [hangs])
    event["thunks"][0]["timeout"] = 0.5
    result = handle(event, None)["results"][0]
    assert result["status"] == "execution_failed" and "timed out after 0.5 s" in result["error"]
    assert "started" in result["stderr_tail"]

    nowhere = f"s3://gg-no-such-bucket-h/p?endpoint={moto_endpoint}"
    result = handle(event_for(nowhere, client_store, [sh.thunk("cat a > out", values={"a": "x"})]), None)
    assert result["results"][0]["status"] == "config_error", result
    assert "does not exist" in result["results"][0]["error"]

    # a backend the function does not have (a plug-in missing from the zip) is a setting to fix
    unknown = event_for(s3_uri, client_store, [sh.thunk("cat a > out", values={"a": "y"})])
    unknown["storage"] = "nosuch://team/cache"
    result = handle(unknown, None)["results"][0]
    assert result["status"] == "config_error" and "unknown storage scheme" in result["error"], result


def test_the_worker_core_serves_a_request_without_the_handler(s3_uri, client_store, tmp_path):
    """What another remote engine's worker would do: decode a request, serve it with
    executor.worker, encode the answer; no lambda_handler involved."""
    from executor import protocol
    from executor.worker import Worker, WorkerConfig

    sh = ShellThunks(client_store)
    ok = sh.thunk("cat a a > out", values={"a": "twice "})
    upload_inputs(s3_uri, client_store, [ok])
    request = protocol.decode_request(protocol.encode(protocol.ExecutionRequest(
        version=protocol.EVENT_VERSION, storage=s3_uri, inline_values=1024,
        thunks=[protocol.ExecutionRequest.Thunk(id=ok, data=client_store.read_bytes(ok))])))
    config = WorkerConfig(cache_dir=tmp_path / "worker", parallelism=2)

    async def serve():
        storage = S3Storage(parse_s3_uri(s3_uri))
        try:
            return await Worker(config.cache_dir).serve(request, storage, config)
        finally:
            await storage.close()

    answer = protocol.decode_response(protocol.encode(asyncio.run(serve())))
    (result,) = answer.results
    assert result.status == protocol.OK, result
    assert result.outputs[0].data == b"twice twice "  # small value: inline, not uploaded


@pytest.mark.parametrize("variable, value", [("GG_CACHE_MAX_MIB", "lots"), ("GG_THUNK_PARALLELISM", "0")])
def test_a_bad_worker_setting_is_a_config_error_naming_it(variable, value, s3_uri, client_store, lambda_env,
                                                          monkeypatch):
    monkeypatch.setenv(variable, value)
    tid = ShellThunks(client_store).thunk("echo x > out")
    answer = handle(event_for(s3_uri, client_store, [tid]), None)
    (result,) = answer["results"]
    assert result["status"] == "config_error" and f"{variable}={value!r}" in result["error"], answer
