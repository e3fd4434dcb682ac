"""`gg-force --engine lambda` end to end, through the real CLI as a subprocess.

Every test runs the installed ``gg-force`` against real processes on 127.0.0.1: a
``moto_server`` (S3) and ``gg lambda-local`` (the Invoke and Runtime APIs, with real
``awslambdaric`` workers running ``lambda_handler``), each with a fresh ``GG_DIR``.
What they check is what a user sees: the files written, the exit status, one-line
errors, and the ``--trace`` events (docs/force.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from ir.ids import Kind, id_of_bytes, parse_id
from ir.storage.s3 import PROBE_DATA
from ir.storage.uri import parse_s3_uri
from ir.store import LocalStore
from ir.thunk import Resources
from tests.aws_fixtures import FAKE_AWS_ENV, FaultProxy, LocalLambda
from tests.forcing import ShellThunks

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass
class Client:
    """One gg-force user: a store of their own, pointed at the shared bucket and endpoint."""

    gg_dir: Path
    env: dict[str, str]

    @property
    def store(self) -> LocalStore:
        return LocalStore.init(self.gg_dir)

    def argv(self, *args: str, trace: Path | None = None, engine: str = "lambda") -> list[str]:
        extra = ["--trace", str(trace)] if trace else []
        return [str(BIN / "gg-force"), "--engine", engine, "--quiet", *extra, *args]

    def force(self, *args: str, trace: Path | None = None, engine: str = "lambda", timeout: float = 240,
              cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args, trace=trace, engine=engine), cwd=cwd or self.gg_dir.parent,
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    async def force_async(self, *args: str, trace: Path | None = None) -> tuple[int, str]:
        """The same, without blocking the event loop (for tests that serve a proxy)."""
        process = await asyncio.create_subprocess_exec(
            *self.argv(*args, trace=trace), cwd=self.gg_dir.parent, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 240)
        return process.returncode, (out + err).decode(errors="replace")

    def value(self, forced: subprocess.CompletedProcess, target: str) -> bytes:
        """The content a ``--print`` run reduced ``target`` to (gg-force made it local)."""
        printed = dict(line.split(" ", 1) for line in forced.stdout.splitlines())
        return self.store.read_bytes(printed[target].strip())


def make_client(root: Path, s3_uri: str, endpoint_url: str, **extra: str) -> Client:
    gg_dir = root / ".gg"
    LocalStore.init(gg_dir)
    env = {
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(root), "LANG": "C.UTF-8",
        **FAKE_AWS_ENV, "GG_DIR": str(gg_dir), "GG_STORAGE_URI": s3_uri, "GG_LAMBDA_FUNCTION": "gg",
        "GG_LAMBDA_ENDPOINT": endpoint_url, "GG_LAMBDA_TIMEOUT": "60", **extra,
    }
    return Client(gg_dir, env)


def events(trace: Path) -> list[dict]:
    if not trace.exists():
        return []
    return [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]


def of_kind(trace: Path, kind: str) -> list[dict]:
    return [e for e in events(trace) if e["event"] == kind]


def assert_store_intact(store: LocalStore) -> None:
    """Every blob in the store hashes to its name: nothing corrupt was cached."""
    for path in store.blobs.iterdir():
        kind = parse_id(path.name).kind
        assert id_of_bytes(path.read_bytes(), kind) == path.name, f"corrupt blob cached: {path.name}"


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan is reaped whenever init gets to it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def one_line_error(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


# -- the fib example ---------------------------------------------------------------------------


def test_fib_on_lambda_matches_local_and_reruns_from_cache(tmp_path, s3_uri, boto3_s3,
                                                           lambda_endpoint: LocalLambda):
    """fib(25) (tail calls, created thunks, python functions) through gg-force --engine lambda:
    the same value and the same reductions as the local engine; then nothing runs again,
    on either engine."""
    # Shared results off: this is about each engine on its own (and inline transport; a
    # shared record would have to name blobs others can fetch, so sharing uploads them).
    on_lambda = make_client(tmp_path / "lambda", s3_uri, lambda_endpoint.url, GG_REMOTE_RESULTS="off")
    on_local = make_client(tmp_path / "local", s3_uri, lambda_endpoint.url, GG_REMOTE_RESULTS="off")
    for client in (on_lambda, on_local):
        made = subprocess.run([sys.executable, "-m", "examples.fib", "25", "--placeholder",
                               str(client.gg_dir.parent / "fib25")],
                              cwd=REPO, env={**client.env, "PYTHONPATH": str(REPO)},
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
    trace = tmp_path / "lambda.jsonl"
    forced = on_lambda.force("-j", "8", "fib25", trace=trace)
    assert forced.returncode == 0, forced.stderr + lambda_endpoint.log()[-3000:]
    local = on_local.force("fib25", engine="local")
    assert local.returncode == 0, local.stderr

    assert (on_lambda.gg_dir.parent / "fib25").read_text() == "75025"
    assert (on_local.gg_dir.parent / "fib25").read_text() == "75025"
    started = of_kind(trace, "started")
    assert started and {e["engine"] for e in started} == {"lambda"}
    assert not of_kind(trace, "fallback") and not of_kind(trace, "failed")
    # Small blobs travel inside invocations: none of them went through the bucket.
    config = parse_s3_uri(s3_uri)
    probe = config.key(id_of_bytes(PROBE_DATA, Kind.VALUE))  # the pre-flight check's blob
    keys = [o["Key"] for o in boto3_s3.list_objects_v2(Bucket=config.bucket).get("Contents", [])]
    assert all(parse_id(key.rsplit("/", 1)[-1]).size > 64 << 10 for key in keys if key != probe), keys
    # The same reductions, thunk for thunk: switching engines between runs hits the cache.
    reductions = on_local.store.reduction_records()
    assert reductions and on_lambda.store.reduction_records() == reductions

    # A second run: every node a cache hit, on the Lambda engine and on the local one.
    for engine in ("lambda", "local"):
        again = tmp_path / f"again-{engine}.jsonl"
        placeholder = subprocess.run([sys.executable, "-m", "examples.fib", "25", "--placeholder",
                                      str(on_lambda.gg_dir.parent / "again")],
                                     cwd=REPO, env={**on_lambda.env, "PYTHONPATH": str(REPO)},
                                     capture_output=True, text=True, timeout=60)
        assert placeholder.returncode == 0, placeholder.stderr
        rerun = on_lambda.force("again", trace=again, engine=engine)
        assert rerun.returncode == 0, rerun.stderr
        assert (on_lambda.gg_dir.parent / "again").read_text() == "75025"
        assert not of_kind(again, "started") and of_kind(again, "cached")
        assert of_kind(again, "done")[-1]["executed"] == 0


# -- what Lambda cannot take, and what cannot reach Lambda -----------------------------------------


def test_thunks_too_large_for_lambda_run_locally(tmp_path, file_storage_uri, lambda_endpoint):
    """A memory hint above the function's memory, and inputs over its /tmp, go to the
    local fallback up front; the rest of the graph still runs on Lambda."""
    client = make_client(tmp_path, file_storage_uri, lambda_endpoint.url,
                         GG_LAMBDA_MEMORY_MIB="512", GG_LAMBDA_EPHEMERAL_MIB="2")
    sh = ShellThunks(client.store)
    big = os.urandom(3 << 20)
    hungry = client.store.put_thunk(replace(client.store.load_thunk(sh.thunk("echo hungry > out")),
                                            resources=Resources(memory_mib=1024)))
    heavy = sh.thunk("wc -c < big > out", values={"big": big})
    small = sh.thunk("cat h w > out", thunks={"h": hungry, "w": heavy})
    trace = tmp_path / "trace.jsonl"
    forced = client.force("--print", small, trace=trace)
    assert forced.returncode == 0, forced.stderr
    assert client.value(forced, small).split() == [b"hungry", str(len(big)).encode()]

    engines = {e["thunk"]: e["engine"] for e in of_kind(trace, "started")}
    assert engines == {hungry: "local", heavy: "local", small: "lambda"}
    reasons = {e["thunk"]: e["reason"] for e in of_kind(trace, "fallback")}
    assert set(reasons) == {hungry, heavy}
    assert "memory" in reasons[hungry] and "/tmp" in reasons[heavy]


def test_a_successful_thunks_output_on_lambda_is_shown_and_kept(tmp_path, file_storage_uri, lambda_endpoint):
    """What a thunk that succeeded on Lambda printed (a compile's warnings) comes back in
    its answer: gg-force shows it once, even with --quiet, and keeps it as a local run's."""
    client = make_client(tmp_path, file_storage_uri, lambda_endpoint.url, GG_REMOTE_RESULTS="off")
    sh = ShellThunks(client.store)
    noisy = sh.thunk("echo 'x.c:1:5: warning: wärning' >&2; echo ok > out")
    silent = sh.thunk("cat x > out", thunks={"x": noisy})
    trace = tmp_path / "trace.jsonl"
    forced = client.force(silent, trace=trace)
    assert forced.returncode == 0, forced.stderr
    assert {e["engine"] for e in of_kind(trace, "started")} == {"lambda"}
    assert forced.stderr == (f"gg-force: thunk {noisy} (sh) succeeded with output:\nx.c:1:5: warning: wärning\n")
    assert client.store.kept_output(noisy) == "x.c:1:5: warning: wärning\n".encode()
    again = client.force(silent)
    assert again.returncode == 0 and again.stderr == ""  # reduced already: nothing new


def test_unreachable_endpoint_is_one_clear_error(tmp_path, s3_uri):
    """A wrong GG_LAMBDA_ENDPOINT: exit 1 at once with one line naming the endpoint —
    not a hang, not a traceback, and not a silent build on this machine instead."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        client = make_client(tmp_path, s3_uri, url)
        sh = ShellThunks(client.store)
        tids = [sh.thunk(f"echo {n} > out") for n in range(3)]
        trace = tmp_path / "trace.jsonl"
        started = time.monotonic()
        forced = client.force(*tids, trace=trace, timeout=120)
        elapsed = time.monotonic() - started
    assert forced.returncode == 1, forced.stderr
    line = one_line_error(forced.stderr)
    assert line.startswith("gg-force: error: ") and url in line and "GG_LAMBDA_ENDPOINT" in line, line
    assert not [e for e in of_kind(trace, "started") if e["engine"] == "local"], "ran locally instead"
    assert elapsed < 120


def test_missing_storage_uri_is_one_clear_error(tmp_path, lambda_endpoint):
    client = make_client(tmp_path, "", lambda_endpoint.url)
    client.env.pop("GG_STORAGE_URI")
    tid = ShellThunks(client.store).thunk("echo x > out")
    forced = client.force(tid)
    assert forced.returncode == 1
    line = one_line_error(forced.stderr)
    assert line.startswith("gg-force: error: ") and "GG_STORAGE_URI" in line, line


# -- faults ------------------------------------------------------------------------------------


def test_worker_killed_mid_thunk(tmp_path, file_storage_uri, lambda_endpoint_factory):
    """SIGKILL the worker running a thunk: the run retries it and ends with the right value,
    and the function's processes die with their sandbox instead of lingering."""
    endpoint = lambda_endpoint_factory(workers=2)
    client = make_client(tmp_path, file_storage_uri, endpoint.url)
    sh = ShellThunks(client.store)
    marker, pid_file = tmp_path / "first-attempt", tmp_path / "worker.pid"
    victim = sh.thunk(f"if mkdir {marker} 2>/dev/null; then echo $PPID $$ > {pid_file}.tmp; "
                      f"mv {pid_file}.tmp {pid_file}; sleep 60; fi; cat a > out", values={"a": "survived"})
    trace = tmp_path / "trace.jsonl"
    process = subprocess.Popen(client.argv("--print", victim, trace=trace), cwd=tmp_path, env=client.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        worker_pid, function_pid = map(int, pid_file.read_text().split())
        os.kill(worker_pid, signal.SIGKILL)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err + endpoint.log()[-3000:]
    assert client.value(subprocess.CompletedProcess([], 0, out, err), victim) == b"survived"
    retried = of_kind(trace, "retried")
    assert retried and "Runtime.ExitError" in retried[0]["error"]
    assert {e["engine"] for e in of_kind(trace, "started")} == {"lambda"}
    assert_store_intact(client.store)
    assert not running(function_pid), "the killed worker's function is still running"


def _produce_and_consume(client: Client, big: bytes) -> tuple[str, str, str]:
    """(input ID, producer, consumer): the producer's 4 MiB output feeds the consumer."""
    sh = ShellThunks(client.store)
    produce = sh.thunk("cat big big > out", values={"big": big})
    consume = sh.thunk("wc -c < v > out; cksum < v >> out", thunks={"v": produce})
    return client.store.put_bytes(big), produce, consume


def test_corrupt_objects_in_s3_between_runs(tmp_path, s3_uri, lambda_endpoint_factory, boto3_s3):
    """Garbage replaces an input and an intermediate output in the bucket between two runs
    (large objects, so the uploader's HEAD finds them "present"). A second user, with an
    empty store, still gets the right result on Lambda, and nothing corrupt is cached."""
    # A cache cap of 0: workers keep nothing in /tmp between invocations, so inputs come from S3.
    endpoint = lambda_endpoint_factory(workers=2, env={"GG_CACHE_MAX_MIB": "0"})
    big = os.urandom(2 << 20)
    first = make_client(tmp_path / "first", s3_uri, endpoint.url)
    big_id, produce, consume = _produce_and_consume(first, big)
    one = first.force("--print", consume)
    assert one.returncode == 0, one.stderr + endpoint.log()[-3000:]
    expected = first.value(one, consume)
    assert expected.split()[0] == str(2 * len(big)).encode()

    config = parse_s3_uri(s3_uri)
    output = first.store.get_reduction(produce)
    for ident in (big_id, output):
        boto3_s3.put_object(Bucket=config.bucket, Key=config.key(ident), Body=b"not what the ID says" * 100)

    # Shared results off: with them the second user would reuse the first's (intact) final
    # result and never need the corrupted objects (tests/test_remote_results.py).
    second = make_client(tmp_path / "second", s3_uri, endpoint.url, GG_REMOTE_RESULTS="off")
    assert _produce_and_consume(second, big) == (big_id, produce, consume)
    trace = tmp_path / "second.jsonl"
    two = second.force("--print", consume, trace=trace)
    assert two.returncode == 0, two.stderr + endpoint.log()[-3000:]
    assert second.value(two, consume) == expected
    # Found and repaired on Lambda: retried there, never sent to the local fallback.
    assert of_kind(trace, "retried") and not of_kind(trace, "fallback")
    assert {e["engine"] for e in of_kind(trace, "started")} == {"lambda"}
    for store in (first.store, second.store):
        assert_store_intact(store)
    third = make_client(tmp_path / "third", s3_uri, endpoint.url)  # the bucket holds good copies again
    fetched = third.force("--print", big_id, output)
    assert fetched.returncode == 0, fetched.stderr
    for ident in (big_id, output):
        assert id_of_bytes(third.value(fetched, ident), parse_id(ident).kind) == ident


def test_bucket_emptied_between_runs(tmp_path, s3_uri, lambda_endpoint, boto3_s3):
    """Every object deleted between two runs: the second run uploads what it needs again
    (small inputs, a large one, and the first run's result) instead of trusting memory."""
    client = make_client(tmp_path, s3_uri, lambda_endpoint.url)
    sh = ShellThunks(client.store)
    big = os.urandom(2 << 20)
    first = sh.thunk("cat a b > out", values={"a": "emptied ", "b": "bucket"})
    one = client.force("--print", first)
    assert one.returncode == 0, one.stderr
    assert client.value(one, first) == b"emptied bucket"

    config = parse_s3_uri(s3_uri)
    listed = boto3_s3.list_objects_v2(Bucket=config.bucket)
    assert listed.get("KeyCount", 0) > 0
    for item in listed["Contents"]:
        boto3_s3.delete_object(Bucket=config.bucket, Key=item["Key"])

    second = sh.thunk("cat t a > out; wc -c < big >> out", thunks={"t": first},
                      values={"a": "emptied ", "big": big})
    trace = tmp_path / "trace.jsonl"
    two = client.force("--print", second, trace=trace)
    assert two.returncode == 0, two.stderr + lambda_endpoint.log()[-3000:]
    assert client.value(two, second) == f"emptied bucketemptied {len(big)}\n".encode()
    assert [e["engine"] for e in of_kind(trace, "started")] == ["lambda"]
    assert not of_kind(trace, "fallback") and not of_kind(trace, "failed")


async def test_throttling_is_retried(tmp_path, s3_uri, lambda_endpoint):
    """The first invocations are throttled (429 TooManyRequestsException, injected by a
    proxy in front of the endpoint): backed off, retried, every result right, no fallback."""
    async with FaultProxy(lambda_endpoint.url, fail_first=5, status=429, code="TooManyRequestsException") as proxy:
        client = make_client(tmp_path, s3_uri, proxy.url, GG_LAMBDA_BATCH="1")
        sh = ShellThunks(client.store)
        tids = [sh.thunk(f"echo {n} > out") for n in range(4)]
        trace = tmp_path / "trace.jsonl"
        status, output = await client.force_async("--print", *tids, trace=trace)
    assert status == 0, output
    assert proxy.failed == 5 and proxy.requests > 5
    printed = dict(line.split(" ", 1) for line in output.splitlines() if line.startswith("T"))
    assert [client.store.read_bytes(printed[t].strip()) for t in tids] == [f"{n}\n".encode() for n in range(4)]
    assert {e["engine"] for e in of_kind(trace, "started")} == {"lambda"}
    assert not of_kind(trace, "fallback") and not of_kind(trace, "failed")


def test_straggler_is_run_again(tmp_path, file_storage_uri, lambda_endpoint_factory):
    """One invocation hangs (its first attempt sleeps for minutes); with --speculate-after 1
    a duplicate runs on another worker and its result is used."""
    endpoint = lambda_endpoint_factory(workers=3)
    client = make_client(tmp_path, file_storage_uri, endpoint.url)
    sh = ShellThunks(client.store)
    quick = {f"q{n}": sh.thunk(f"echo {n} > out") for n in range(6)}  # durations to compare with
    marker = tmp_path / "first-attempt"
    slow = sh.thunk(f"if mkdir {marker} 2>/dev/null; then sleep 300; fi; cat q0 q1 q2 q3 q4 q5 > out", thunks=quick)
    trace = tmp_path / "trace.jsonl"
    forced = client.force("--speculate-after", "1", "--print", slow, trace=trace, timeout=200)
    assert forced.returncode == 0, forced.stderr + endpoint.log()[-3000:]
    assert client.value(forced, slow) == b"".join(f"{n}\n".encode() for n in range(6))
    assert [e["thunk"] for e in of_kind(trace, "speculated")] == [slow]
    assert {e["engine"] for e in of_kind(trace, "started")} == {"lambda"}
    assert not of_kind(trace, "failed")


def test_executable_output_comes_back_executable(tmp_path, file_storage_uri, lambda_endpoint):
    """A program built on Lambda stays a program: value outputs stay in storage until forced,
    and the download must not lose the execute bit the ID cannot carry."""
    client = make_client(tmp_path, file_storage_uri, lambda_endpoint.url)
    sh = ShellThunks(client.store)
    tool = sh.thunk("printf '#!/bin/sh\\necho built remotely\\n' > out; chmod +x out")
    user = sh.thunk("cat t > out", thunks={"t": tool})  # makes `tool` an intermediate
    forced = client.force("--print", user, tool)
    assert forced.returncode == 0, forced.stderr
    printed = dict(line.split(" ", 1) for line in forced.stdout.splitlines())
    program = client.store.blob_path(printed[tool].strip())
    assert os.access(program, os.X_OK)
    assert subprocess.run([program], capture_output=True, text=True).stdout == "built remotely\n"


def test_emptied_bucket_loses_a_large_intermediate_value(tmp_path, s3_uri, lambda_endpoint, boto3_s3):
    """A large intermediate value lives only in S3 (small ones come back inline). Once the
    bucket is emptied, a new consumer of it can only succeed if its producer runs again."""
    client = make_client(tmp_path, s3_uri, lambda_endpoint.url)
    sh = ShellThunks(client.store)
    produce = sh.thunk("head -c 200000 /dev/zero > out")
    one = client.force(sh.thunk("wc -c < p > out", thunks={"p": produce}))
    assert one.returncode == 0, one.stderr
    config = parse_s3_uri(s3_uri)
    for item in boto3_s3.list_objects_v2(Bucket=config.bucket).get("Contents", []):
        boto3_s3.delete_object(Bucket=config.bucket, Key=item["Key"])
    other = sh.thunk("cksum < p > out", thunks={"p": produce})
    two = client.force("--print", other, timeout=120)
    assert two.returncode == 0, two.stderr
