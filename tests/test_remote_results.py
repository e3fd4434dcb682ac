"""Reductions shared through the remote store (issue 12, items 1 and 2).

Each user is a fresh ``.gg`` store (a fresh checkout) pointed at one shared storage:
moto_server S3 and a file:// directory, with the local engine (which then fetches the
values remote records name), and the local Lambda endpoint. Counts are of thunks that
actually ran, taken where they ran: every thunk appends its name to a witness file
(on the Lambda workers too), besides the trace's ``started`` events and the summary.
What a read-only run writes is checked on the storage side: moto's own request log,
and the shared directory's tree (names, sizes and modification times).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from executor.force import force
from executor.remote_results import RemoteResultsMode, parse_mode, resolve_mode
from ir.errors import UsageError
from ir.ids import Kind, id_of_bytes
from ir.storage import open_storage
from ir.storage.uri import parse_file_uri, parse_s3_uri
from ir.store import LocalStore, decode_reduction, encode_reduction

from .forcing import ShellThunks, gg_force

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Shared:
    """One shared storage: its URI, and raw access to its objects (for tampering)."""

    def __init__(self, uri: str, boto3_s3=None, recorder=None):
        self.uri = uri
        self.boto3_s3 = boto3_s3
        self.recorder = recorder  # moto's request log (S3 only)

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

    def get_raw(self, name: str) -> bytes:
        if self.boto3_s3 is None:
            return (Path(parse_file_uri(self.uri).root) / name).read_bytes()
        return self.boto3_s3.get_object(Bucket=self._s3().bucket, Key=self._s3().key(name))["Body"].read()

    def records_naming(self, value: str) -> list[str]:
        """The refs whose reduction record in the storage names ``value``."""
        return [k.removeprefix("reductions/") for k in self.keys()
                if k.startswith("reductions/") and decode_reduction(self.get_raw(k)) == value]

    def _tree(self) -> dict[str, tuple[int, int]]:
        """Every file and directory under the shared root: name -> (size, mtime in ns). A
        file created and removed again (a temp file, a lease) still changes its directory's."""
        root = Path(parse_file_uri(self.uri).root)
        return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
                for p in [root, *root.rglob("*")]}

    @contextlib.contextmanager
    def writes(self) -> Iterator[list[str]]:
        """What was written to the storage while the block ran, seen from the storage's
        side (filled when the block ends): moto's log of requests other than GET and
        HEAD, or the shared directory's entries that appeared, vanished or changed."""
        found: list[str] = []
        if self.boto3_s3 is None:
            before = self._tree()
            yield found
            after = self._tree()
            found += sorted(name for name in {*before, *after} if before.get(name) != after.get(name))
            return
        with self.recorder.recording(self._s3().bucket) as requests:
            yield found
        assert any(r.method == "GET" for r in requests), "the recorder saw nothing: is it recording?"
        found += [f"{r.method} {r.key}?{r.query}" for r in requests if r.method not in ("GET", "HEAD")]

    def delete(self, name: str) -> None:
        if self.boto3_s3 is None:
            (Path(parse_file_uri(self.uri).root) / name).unlink()
        else:
            self.boto3_s3.delete_object(Bucket=self._s3().bucket, Key=self._s3().key(name))


@pytest.fixture(params=["file", "s3"])
def shared(request, tmp_path) -> Shared:
    if request.param == "s3":
        return Shared(request.getfixturevalue("s3_uri"), request.getfixturevalue("boto3_s3"),
                      request.getfixturevalue("moto_recorder"))
    return Shared(request.getfixturevalue("file_storage_uri"))


def graph(store: LocalStore, witness: Path | None = None) -> tuple[str, bytes]:
    """Two leaves and a thunk that combines them (the same IDs in every fresh store).
    With ``witness``, each thunk that runs appends its name to that file, wherever it runs."""

    def note(name: str) -> str:
        return f"echo {name} >> {witness}; " if witness else ""

    sh = ShellThunks(store)
    left = sh.thunk(note("left") + "echo left > out; echo more > extra", outputs=("out", "extra"))
    right = sh.thunk(note("right") + "cat v > out; echo right >> out", values={"v": "value "})
    top = sh.thunk(note("top") + "cat l r > out", thunks={"l": left, "r": right})
    return top, b"left\nvalue right\n"


def ran(witness: Path) -> list[str]:
    """The thunks that ran so far, in order, as they wrote it themselves."""
    return witness.read_text().split() if witness.exists() else []


def leaf_values(store: LocalStore, top: str) -> set[str]:
    """The values the leaves of ``top`` reduced to, by the records in ``store``."""
    found = set()
    for item in store.load_thunk(top).thunks:
        thunk = store.load_thunk(item.id)
        found |= {store.get_reduction(f"{item.id}#{tag}") for tag in thunk.outputs}
    return found


def user(tmp_path: Path, name: str) -> LocalStore:
    return LocalStore.init(tmp_path / name / ".gg")


def run(store: LocalStore, target: str, uri: str, mode: RemoteResultsMode = RemoteResultsMode.READ_WRITE,
        trace: Path | None = None):
    environ = {**os.environ, "GG_STORAGE_URI": uri}
    return force([target], ("local",), store=store, environ=environ, remote_results=mode, trace=trace)


def test_a_second_user_runs_nothing_and_gets_the_same_bytes(tmp_path, shared):
    witness = tmp_path / "ran.log"
    alice = user(tmp_path, "alice")
    top, expected = graph(alice, witness)
    first = run(alice, top, shared.uri)
    assert first.executed == 3 and first.shared == 4  # each leaf, the top under both of its IDs
    assert sorted(ran(witness)) == ["left", "right", "top"]
    assert any(k.startswith("reductions/") for k in shared.keys())

    bob = user(tmp_path, "bob")
    assert graph(bob, witness)[0] == top
    trace = tmp_path / "bob.jsonl"
    second = run(bob, top, shared.uri, trace=trace)
    assert len(ran(witness)) == 3  # nothing ran again, anywhere
    assert second.executed == 0 and second.remote_hits == 1
    assert bob.read_bytes(second.results[top], verify=True) == alice.read_bytes(first.results[top]) == expected
    started = [json.loads(line) for line in trace.read_text().splitlines() if '"started"' in line]
    assert started == []
    assert not bob.reduction_records()  # a claim is not copied into the local store
    assert not any(bob.has(v) for v in leaf_values(alice, top))  # intermediates stayed in the store


def test_deleting_local_reductions_runs_nothing_again(tmp_path, shared):
    witness = tmp_path / "ran.log"
    alice = user(tmp_path, "alice")
    top, expected = graph(alice, witness)
    assert run(alice, top, shared.uri).executed == 3
    for ref in alice.reduction_records():
        alice.forget_reduction(ref)
    again = run(alice, top, shared.uri)
    assert again.executed == 0 and alice.read_bytes(again.results[top]) == expected
    assert len(ran(witness)) == 3


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


def test_a_forged_record_whose_value_does_not_match_is_rejected_and_the_thunk_rerun(tmp_path, shared):
    """Every record of the target is forged (well-formed, marked verified) to name a value
    whose object does not hash to its ID: the claim is rejected when the value is
    downloaded, the thunk runs again, and its rerun repairs the records."""
    witness = tmp_path / "ran.log"
    alice = user(tmp_path, "alice")
    top, expected = graph(alice, witness)
    real = run(alice, top, shared.uri).results[top]
    forged = id_of_bytes(b"Y" * len(expected), Kind.VALUE)
    refs = shared.records_naming(real)
    assert len(refs) == 4  # the top's original and rewritten IDs, bare and #out
    for ref in refs:
        shared.put_raw(f"reductions/{ref}", encode_reduction(forged))
    shared.put_raw(forged, b"X" * len(expected))  # the forger's "value": not what its ID says

    bob = user(tmp_path, "bob")
    graph(bob, witness)
    trace = tmp_path / "bob.jsonl"
    second = run(bob, top, shared.uri, trace=trace)
    assert second.results[top] == real and bob.read_bytes(real, verify=True) == expected
    assert ran(witness)[3:] == ["top"] and second.executed == 1  # rerun, once; the leaves were hits
    rejected = [json.loads(line) for line in trace.read_text().splitlines() if '"rejected"' in line]
    assert [(e["thunk"], e["claimed"], e["result"]) for e in rejected] == [(top, forged, real)]
    assert not bob.has(forged)
    assert all(decode_reduction(shared.get_raw(f"reductions/{ref}")) == real for ref in refs)

    carol = user(tmp_path, "carol")
    graph(carol, witness)
    third = run(carol, top, shared.uri)
    assert third.executed == 0 and len(ran(witness)) == 4 and carol.read_bytes(third.results[top]) == expected


def test_a_forged_record_of_an_intermediate_is_rejected_and_its_producer_rerun(tmp_path, shared):
    """A leaf's record is forged; the top has no record, so it runs on the forged value's
    ID: fetching it fails verification, the leaf runs again (to another value), and the
    top runs on that one -- recorded under the ID it really ran as."""
    witness = tmp_path / "ran.log"
    alice = user(tmp_path, "alice")
    top, expected = graph(alice, witness)
    real = run(alice, top, shared.uri).results[top]
    (left,) = [item.id for item in alice.load_thunk(top).thunks if item.name == "l"]
    left_out = alice.get_reduction(f"{left}#out")
    forged = id_of_bytes(b"left\nforged\n", Kind.VALUE)
    for ref in shared.records_naming(left_out):
        shared.put_raw(f"reductions/{ref}", encode_reduction(forged))
    shared.put_raw(forged, b"rm -rf /tmp/x\n")  # same size, other bytes
    for ref in shared.records_naming(real):
        shared.delete(f"reductions/{ref}")

    bob = user(tmp_path, "bob")
    graph(bob, witness)
    second = run(bob, top, shared.uri)
    assert second.results[top] == real and bob.read_bytes(real, verify=True) == expected
    assert sorted(ran(witness)[3:]) == ["left", "top"] and second.executed == 2
    assert not bob.has(forged)
    assert shared.records_naming(forged) == []  # the rerun replaced the forged records


def test_read_only_writes_nothing(tmp_path, shared):
    """Checked by the storage (moto's request log, the directory's tree), so a write that
    is undone before the run ends (a temp file, a lease) is caught too."""
    witness = tmp_path / "ran.log"
    alice = user(tmp_path, "alice")
    top, expected = graph(alice, witness)
    with shared.writes() as writes:
        summary = run(alice, top, shared.uri, RemoteResultsMode.READ_ONLY)
    assert summary.executed == 3 and summary.shared == 0 and len(ran(witness)) == 3
    assert writes == [] and shared.keys() == []
    assert summary.traffic is not None and summary.traffic.up == 0

    writer = user(tmp_path, "writer")  # a trusted writer runs it and shares the results ...
    graph(writer, witness)
    assert run(writer, top, shared.uri).shared == 4
    bob = user(tmp_path, "bob")
    graph(bob, witness)
    before = shared.keys()
    with shared.writes() as writes:
        read_only = run(bob, top, shared.uri, RemoteResultsMode.READ_ONLY)  # ... a read-only user uses it
    assert read_only.executed == 0 and bob.read_bytes(read_only.results[top]) == expected
    assert len(ran(witness)) == 6  # alice's 3 and the writer's 3: bob's hit ran nothing
    assert writes == [] and shared.keys() == before
    assert read_only.traffic.up == 0 and read_only.traffic.down > 0


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
    for ref in bob.reduction_records():
        bob.forget_reduction(ref)
    used = gg_force(bob.root, "--remote-results", "read-only", top)
    assert used.returncode == 0 and "0 thunk(s) run, 1 from remote results" in used.stderr, used.stderr


# -- the Lambda engine (moto S3 and the local Lambda endpoint) ---------------------------------

@pytest.mark.slow
def test_a_second_user_on_lambda_runs_nothing(tmp_path, s3_uri, boto3_s3, lambda_endpoint):
    from .test_lambda_force import make_client, of_kind

    witness = tmp_path / "ran.log"  # written by the thunks, on the Lambda workers
    alice = make_client(tmp_path / "alice", s3_uri, lambda_endpoint.url)
    top, expected = graph(alice.store, witness)
    trace = tmp_path / "alice.jsonl"
    first = alice.force("--print", top, trace=trace)
    assert first.returncode == 0, first.stderr + lambda_endpoint.log()[-3000:]
    assert alice.value(first, top) == expected and len(of_kind(trace, "started")) == 3
    assert [e["engine"] for e in of_kind(trace, "started")] == ["lambda"] * 3
    assert sorted(ran(witness)) == ["left", "right", "top"]
    assert any(k.startswith("reductions/") for k in Shared(s3_uri, boto3_s3).keys())

    bob = make_client(tmp_path / "bob", s3_uri, lambda_endpoint.url)
    assert graph(bob.store, witness)[0] == top
    trace = tmp_path / "bob.jsonl"
    second = bob.force("--print", top, trace=trace)
    assert second.returncode == 0, second.stderr
    assert bob.value(second, top) == alice.value(first, top) == expected
    assert len(ran(witness)) == 3  # no worker ran anything for bob
    assert of_kind(trace, "started") == [] and [e.get("remote") for e in of_kind(trace, "cached")] == [True]
    assert not any(bob.store.has(v) for v in leaf_values(alice.store, top))

    carol = make_client(tmp_path / "carol", s3_uri, lambda_endpoint.url, GG_REMOTE_RESULTS="off")
    graph(carol.store, witness)
    trace = tmp_path / "carol.jsonl"
    third = carol.force("--print", top, trace=trace)
    assert third.returncode == 0 and len(of_kind(trace, "started")) == 3, third.stderr
    assert len(ran(witness)) == 6


@pytest.mark.slow
async def test_a_second_checkout_of_a_c_project_invokes_no_function(tmp_path, s3_uri, lambda_endpoint):
    """examples/cproject, ``gg-infer make`` in two checkouts at different paths, forced on
    Lambda against one bucket: the second invokes the function for nothing (invocations
    counted by a proxy in front of the endpoint, not by the forcer) and gets the same bytes."""
    import asyncio
    import shutil

    from .aws_fixtures import FAKE_AWS_ENV, FaultProxy
    from .test_infer_support import REPO, VENV_BIN, gg_infer, tool_env

    targets = ["app", "libutil.a", "main.o", "util.o", "strutil.o", "shapes.o", "backup/util.o"]
    async with FaultProxy(lambda_endpoint.url) as proxy:
        env = {**tool_env(), **FAKE_AWS_ENV, "GG_STORAGE_URI": s3_uri, "GG_LAMBDA_ENDPOINT": proxy.url,
               "GG_LAMBDA_FUNCTION": lambda_endpoint.function_name, "GG_LAMBDA_TIMEOUT": "120"}
        runs: dict[str, list[tuple[str, str, str]]] = {}
        for name in ("alice", "bob"):
            tree = tmp_path / name / "src"
            shutil.copytree(REPO / "examples" / "cproject", tree)
            inferred = await asyncio.to_thread(gg_infer, tree, "make", "-s")
            assert inferred.returncode == 0, inferred.stderr
            before = len(proxy.log)
            process = await asyncio.create_subprocess_exec(
                str(VENV_BIN / "gg-force"), "--engine", "lambda", "-j", "8", "--progress", "lines", *targets,
                cwd=tree, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(process.communicate(), 300)
            assert process.returncode == 0, err.decode() + lambda_endpoint.log()[-3000:]
            runs[name] = [entry for entry in proxy.log[before:] if entry[1].endswith("/invocations")]
    executing = {name: [e for e in log if e[2] != "DryRun"] for name, log in runs.items()}
    assert len(executing["alice"]) > 0 and executing["bob"] == []
    assert len(runs["bob"]) == 1  # the pre-flight DryRun, which runs nothing
    for name in targets:
        assert (tmp_path / "bob" / "src" / name).read_bytes() == (tmp_path / "alice" / "src" / name).read_bytes()


@pytest.mark.slow
def test_a_forged_record_is_rejected_and_rerun_on_lambda(tmp_path, s3_uri, boto3_s3, lambda_endpoint):
    """A leaf's records name a forged value (the top has none): the worker that fetches
    it finds it does not verify, the leaf runs again, and the top runs on the real value."""
    from .test_lambda_force import make_client, of_kind

    witness = tmp_path / "ran.log"
    shared = Shared(s3_uri, boto3_s3)
    alice = make_client(tmp_path / "alice", s3_uri, lambda_endpoint.url)
    top, expected = graph(alice.store, witness)
    first = alice.force("--print", top)
    assert first.returncode == 0, first.stderr + lambda_endpoint.log()[-3000:]
    (left,) = [item.id for item in alice.store.load_thunk(top).thunks if item.name == "l"]
    forged = id_of_bytes(b"left\nforged\n", Kind.VALUE)
    for ref in shared.records_naming(alice.store.get_reduction(f"{left}#out")):
        shared.put_raw(f"reductions/{ref}", encode_reduction(forged))
    shared.put_raw(forged, b"rm -rf /tmp/x\n")
    for ref in shared.records_naming(alice.store.get_reduction(top)):
        shared.delete(f"reductions/{ref}")

    bob = make_client(tmp_path / "bob", s3_uri, lambda_endpoint.url)
    graph(bob.store, witness)
    trace = tmp_path / "bob.jsonl"
    second = bob.force("--print", top, trace=trace)
    assert second.returncode == 0, second.stderr + lambda_endpoint.log()[-3000:]
    assert bob.value(second, top) == expected
    assert sorted(ran(witness)[3:]) == ["left", "top"]
    assert {e["engine"] for e in of_kind(trace, "started")} == {"lambda"}  # the engine was not given up
    assert [e["claimed"] for e in of_kind(trace, "rejected")] == [forged]
    assert shared.records_naming(forged) == []


@pytest.mark.parametrize("mode", ["read-write", "read-only"])
def test_a_wrong_storage_uri_is_one_line_before_anything_runs(tmp_path, mode, monkeypatch):
    alice = user(tmp_path, "alice")
    top, _ = graph(alice)
    monkeypatch.setenv("GG_STORAGE_URI", f"file://{tmp_path}/no/such/dir")
    monkeypatch.setenv("GG_REMOTE_RESULTS", mode)
    result = gg_force(alice.root, "-q", top)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "does not exist (GG_STORAGE_URI=" in result.stderr
    assert not alice.reduction_records()  # nothing ran
