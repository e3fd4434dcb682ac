"""Reductions shared through the remote store (issue 12, items 1 and 2).

Each user is a fresh ``.gg`` store (a fresh checkout) pointed at one shared storage:
moto_server S3 and a file:// directory, with the local engine (which then fetches the
values remote records name), and the local Lambda endpoint. Counts are of thunks that
actually ran (the trace's ``started`` events and the run's executions), not of claims.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from executor.force import force
from executor.remote_results import RemoteResultsMode, parse_mode, resolve_mode
from ir.errors import UsageError
from ir.ids import Kind, id_of_bytes
from ir.storage import open_storage
from ir.storage.uri import parse_file_uri, parse_s3_uri
from ir.store import LocalStore

from .forcing import ShellThunks, gg_force

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Shared:
    """One shared storage: its URI, and raw access to its objects (for tampering)."""

    def __init__(self, uri: str, boto3_s3=None):
        self.uri = uri
        self.boto3_s3 = boto3_s3

    def _s3(self):
        return parse_s3_uri(self.uri)

    def keys(self) -> list[str]:
        """Every object name under the storage, relative to its prefix/root."""
        if self.boto3_s3 is None:
            root = Path(parse_file_uri(self.uri).root)
            return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        config = self._s3()
        listed = self.boto3_s3.list_objects_v2(Bucket=config.bucket)
        prefix = f"{config.prefix}/" if config.prefix else ""
        return sorted(item["Key"][len(prefix):] for item in listed.get("Contents", []))

    def put_raw(self, name: str, data: bytes) -> None:
        if self.boto3_s3 is None:
            path = Path(parse_file_uri(self.uri).root) / name
            path.unlink(missing_ok=True)
            path.write_bytes(data)
        else:
            self.boto3_s3.put_object(Bucket=self._s3().bucket, Key=self._s3().key(name), Body=data)

    def delete(self, name: str) -> None:
        if self.boto3_s3 is None:
            (Path(parse_file_uri(self.uri).root) / name).unlink()
        else:
            self.boto3_s3.delete_object(Bucket=self._s3().bucket, Key=self._s3().key(name))


@pytest.fixture(params=["file", "s3"])
def shared(request, tmp_path) -> Shared:
    if request.param == "s3":
        return Shared(request.getfixturevalue("s3_uri"), request.getfixturevalue("boto3_s3"))
    return Shared(request.getfixturevalue("file_storage_uri"))


def graph(store: LocalStore) -> tuple[str, bytes]:
    """Two leaves and a thunk that combines them (the same IDs in every fresh store)."""
    sh = ShellThunks(store)
    left = sh.thunk("echo left > out; echo more > extra", outputs=("out", "extra"))
    right = sh.thunk("cat v > out; echo right >> out", values={"v": "value "})
    top = sh.thunk("cat l r > out", thunks={"l": left, "r": right})
    return top, b"left\nvalue right\n"


def user(tmp_path: Path, name: str) -> LocalStore:
    return LocalStore.init(tmp_path / name / ".gg")


def run(store: LocalStore, target: str, uri: str, mode: RemoteResultsMode = RemoteResultsMode.READ_WRITE,
        trace: Path | None = None):
    environ = {**os.environ, "GG_STORAGE_URI": uri}
    return force([target], ("local",), store=store, environ=environ, remote_results=mode, trace=trace)


def test_a_second_user_runs_nothing_and_gets_the_same_bytes(tmp_path, shared):
    alice = user(tmp_path, "alice")
    top, expected = graph(alice)
    first = run(alice, top, shared.uri)
    assert first.executed == 3 and first.shared == 4  # each leaf, the top under both of its IDs
    assert any(k.startswith("reductions/") for k in shared.keys())

    bob = user(tmp_path, "bob")
    assert graph(bob)[0] == top
    trace = tmp_path / "bob.jsonl"
    second = run(bob, top, shared.uri, trace=trace)
    assert second.executed == 0 and second.remote_hits == 1
    assert bob.read_bytes(second.results[top], verify=True) == expected
    started = [json.loads(line) for line in trace.read_text().splitlines() if '"started"' in line]
    assert started == []
    assert not any(bob.reductions.iterdir())  # a claim is not copied into the local store


def test_deleting_local_reductions_runs_nothing_again(tmp_path, shared):
    alice = user(tmp_path, "alice")
    top, expected = graph(alice)
    assert run(alice, top, shared.uri).executed == 3
    for record in alice.reductions.iterdir():
        record.unlink()
    again = run(alice, top, shared.uri)
    assert again.executed == 0 and alice.read_bytes(again.results[top]) == expected


def test_a_remote_record_whose_value_is_gone_is_dropped_and_the_thunk_rerun(tmp_path, shared):
    alice = user(tmp_path, "alice")
    top, expected = graph(alice)
    value = run(alice, top, shared.uri).results[top]
    shared.delete(value)

    bob = user(tmp_path, "bob")
    graph(bob)
    second = run(bob, top, shared.uri)
    assert second.executed == 1  # the top ran again (its leaves were remote hits)
    assert bob.read_bytes(second.results[top], verify=True) == expected
    assert value in shared.keys()  # ... and its value is in the store again


def test_a_corrupt_remote_value_is_never_used(tmp_path, shared):
    alice = user(tmp_path, "alice")
    top, expected = graph(alice)
    value = run(alice, top, shared.uri).results[top]
    shared.put_raw(value, b"X" * len(expected))  # same size, wrong bytes: a forged value

    bob = user(tmp_path, "bob")
    graph(bob)
    second = run(bob, top, shared.uri)
    assert second.executed == 1
    assert bob.read_bytes(second.results[top], verify=True) == expected
    carol = user(tmp_path, "carol")  # the rerun replaced the bad object: a hit again
    graph(carol)
    third = run(carol, top, shared.uri)
    assert third.executed == 0 and carol.read_bytes(third.results[top], verify=True) == expected


def test_a_forged_or_unverified_record_is_not_trusted(tmp_path, shared):
    alice = user(tmp_path, "alice")
    top, expected = graph(alice)
    assert run(alice, top, shared.uri).executed == 3
    other = id_of_bytes(b"not the output\n", Kind.VALUE)
    shared.put_raw(f"reductions/{top}", f"{other}\n".encode())  # no verified-inputs mark
    bob = user(tmp_path, "bob")
    graph(bob)
    second = run(bob, top, shared.uri)
    # The record under the top's own ID is ignored; its leaves' and its rewritten ID's are fine.
    assert second.results[top] != other and bob.read_bytes(second.results[top], verify=True) == expected
    assert second.executed == 0 and second.remote_hits == 3


def test_read_only_writes_nothing(tmp_path, shared):
    alice = user(tmp_path, "alice")
    top, expected = graph(alice)
    summary = run(alice, top, shared.uri, RemoteResultsMode.READ_ONLY)
    assert summary.executed == 3 and summary.shared == 0
    assert shared.keys() == []

    writer = user(tmp_path, "writer")  # a trusted writer runs it and shares the results ...
    graph(writer)
    assert run(writer, top, shared.uri).shared == 4
    bob = user(tmp_path, "bob")
    graph(bob)
    before = shared.keys()
    read_only = run(bob, top, shared.uri, RemoteResultsMode.READ_ONLY)  # ... a read-only user uses it
    assert read_only.executed == 0 and bob.read_bytes(read_only.results[top]) == expected
    assert shared.keys() == before


def test_off_ignores_remote_results(tmp_path, shared):
    alice = user(tmp_path, "alice")
    top, _ = graph(alice)
    run(alice, top, shared.uri)
    bob = user(tmp_path, "bob")
    graph(bob)
    before = shared.keys()
    assert run(bob, top, shared.uri, RemoteResultsMode.OFF).executed == 3
    assert shared.keys() == before


async def test_storage_reductions_round_trip_in_one_batch(shared):
    storage = open_storage(shared.uri)
    try:
        thunk = id_of_bytes(b"\0thunk", Kind.THUNK)
        other = id_of_bytes(b"\0other", Kind.THUNK)
        value = id_of_bytes(b"v", Kind.VALUE)
        assert await storage.get_reductions([thunk]) == {}
        await storage.put_reduction(thunk, value)
        await storage.put_reduction(f"{thunk}#a/b", other)
        found = await storage.get_reductions([thunk, f"{thunk}#a/b", other])
        assert found == {thunk: value, f"{thunk}#a/b": other}
        assert "reductions/" + thunk in shared.keys() and f"reductions/{thunk}#a%2Fb" in shared.keys()
    finally:
        await storage.close()


# -- configuration ----------------------------------------------------------------------------

def test_mode_resolution_and_errors():
    assert resolve_mode(None, environ={}) is RemoteResultsMode.READ_WRITE
    assert resolve_mode(None, environ={"GG_REMOTE_RESULTS": "read-only"}) is RemoteResultsMode.READ_ONLY
    assert resolve_mode("off", environ={"GG_REMOTE_RESULTS": "read-only"}) is RemoteResultsMode.OFF
    assert resolve_mode(None, True, environ={"GG_REMOTE_RESULTS": "read-write"}) is RemoteResultsMode.OFF
    with pytest.raises(UsageError, match="GG_REMOTE_RESULTS='rw' is not a remote-results mode"):
        resolve_mode(None, environ={"GG_REMOTE_RESULTS": "rw"})
    with pytest.raises(UsageError, match="contradicts"):
        resolve_mode("read-write", True, environ={})
    assert parse_mode("read-only").reads and not parse_mode("read-only").writes


def test_cli_flags_and_environment(tmp_path, file_storage_uri, monkeypatch):
    monkeypatch.setenv("GG_STORAGE_URI", file_storage_uri)
    alice = user(tmp_path, "alice")
    top, _ = graph(alice)
    monkeypatch.setenv("GG_REMOTE_RESULTS", "sometimes")
    bad = gg_force(alice.root, top)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "GG_REMOTE_RESULTS='sometimes' is not a remote-results mode" in bad.stderr
    monkeypatch.setenv("GG_REMOTE_RESULTS", "read-write")
    first = gg_force(alice.root, top)
    assert first.returncode == 0 and "3 thunk(s) run" in first.stderr, first.stderr
    bob = user(tmp_path, "bob")
    graph(bob)
    ignored = gg_force(bob.root, "--no-remote-results", top)
    assert ignored.returncode == 0 and "3 thunk(s) run" in ignored.stderr, ignored.stderr
    for record in bob.reductions.iterdir():
        record.unlink()
    used = gg_force(bob.root, "--remote-results", "read-only", top)
    assert used.returncode == 0 and "0 thunk(s) run, 1 from remote results" in used.stderr, used.stderr


# -- the Lambda engine (moto S3 and the local Lambda endpoint) ---------------------------------

@pytest.mark.slow
def test_a_second_user_on_lambda_runs_nothing(tmp_path, s3_uri, boto3_s3, lambda_endpoint):
    from .test_lambda_force import make_client, of_kind

    alice = make_client(tmp_path / "alice", s3_uri, lambda_endpoint.url)
    top, expected = graph(alice.store)
    trace = tmp_path / "alice.jsonl"
    first = alice.force("--print", top, trace=trace)
    assert first.returncode == 0, first.stderr + lambda_endpoint.log()[-3000:]
    assert alice.value(first, top) == expected and len(of_kind(trace, "started")) == 3
    assert [e["engine"] for e in of_kind(trace, "started")] == ["lambda"] * 3
    assert any(k.startswith("reductions/") for k in Shared(s3_uri, boto3_s3).keys())

    bob = make_client(tmp_path / "bob", s3_uri, lambda_endpoint.url)
    assert graph(bob.store)[0] == top
    trace = tmp_path / "bob.jsonl"
    second = bob.force("--print", top, trace=trace)
    assert second.returncode == 0, second.stderr
    assert bob.value(second, top) == expected
    assert of_kind(trace, "started") == [] and [e.get("remote") for e in of_kind(trace, "cached")] == [True]

    carol = make_client(tmp_path / "carol", s3_uri, lambda_endpoint.url, GG_REMOTE_RESULTS="off")
    graph(carol.store)
    trace = tmp_path / "carol.jsonl"
    third = carol.force("--print", top, trace=trace)
    assert third.returncode == 0 and len(of_kind(trace, "started")) == 3, third.stderr


@pytest.mark.parametrize("mode", ["read-write", "read-only"])
def test_a_wrong_storage_uri_is_one_line_before_anything_runs(tmp_path, mode, monkeypatch):
    alice = user(tmp_path, "alice")
    top, _ = graph(alice)
    monkeypatch.setenv("GG_STORAGE_URI", f"file://{tmp_path}/no/such/dir")
    monkeypatch.setenv("GG_REMOTE_RESULTS", mode)
    result = gg_force(alice.root, "-q", top)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "does not exist (GG_STORAGE_URI=" in result.stderr
    assert not any(alice.reductions.iterdir())  # nothing ran
