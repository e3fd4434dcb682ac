"""Failure semantics of `gg-force --engine lambda` (issue 10), end to end through the CLI.

Real processes only: moto_server (S3), `gg lambda-local` with awslambdaric workers, and
fault proxies in front of them. Each test is one numbered case of the issue:

1. a wrong setting fails fast, with one line naming it, and never runs locally;
2. a fallback to the local engine is said out loud (and is a failure with --no-fallback);
3. an endpoint that accepts connections but never answers is given up within seconds;
4. a thunk that hangs is killed at the default timeout on every engine, and is final;
5. running out of /tmp on a worker moves the thunk to the local engine, with its output;
6. a final value lost from every store is rebuilt under --engine lambda;
8. a missing input is one line, without "Task exception was never retrieved".
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from dataclasses import replace

import pytest

from ir.storage.uri import parse_s3_uri
from ir.thunk import Resources
from tests.aws_fixtures import FaultProxy, stop_process
from tests.forcing import ShellThunks
from tests.test_lambda_force import Client, make_client, of_kind, one_line_error

pytestmark = pytest.mark.timeout(300)


def timed(client: Client, *args: str, engine: str = "lambda", **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    forced = client.force(*args, engine=engine, **kwargs)
    return forced, time.monotonic() - started


def no_tracebacks(output: str) -> None:
    assert "Traceback" not in output and "never retrieved" not in output, output


# -- 1. configuration errors fail fast --------------------------------------------------------------


def _bad_settings(client: Client, s3_uri: str, moto: str, lambda_url: str) -> dict[str, tuple[dict, str]]:
    """Setting name -> (environment changes, what the one line must name)."""
    config = parse_s3_uri(s3_uri)
    port = lambda_url.rsplit(":", 1)[1]
    return {
        "no such bucket": ({"GG_STORAGE_URI": s3_uri.replace(config.bucket, "gg-no-such-bucket-x")},
                           "S3 bucket 'gg-no-such-bucket-x' does not exist (GG_STORAGE_URI="),
        "invalid bucket name": ({"GG_STORAGE_URI": s3_uri.replace(config.bucket, "Bad_Bucket")},
                                "'Bad_Bucket' is not a valid S3 bucket name"),
        "no credentials": ({"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None,
                            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
                            "AWS_EC2_METADATA_DISABLED": "true"},
                           "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"),
        "no such function": ({"GG_LAMBDA_FUNCTION": "gg-typo"},
                             "Lambda function 'gg-typo' does not exist at http://127.0.0.1:"),
        "https on http (lambda)": ({"GG_LAMBDA_ENDPOINT": f"https://127.0.0.1:{port}"},
                                   f"GG_LAMBDA_ENDPOINT=https://127.0.0.1:{port}"),
        "https on http (s3)": ({"GG_STORAGE_URI": s3_uri.replace("http://", "https://")}, "plain http"),
        "negative read_timeout": ({"GG_STORAGE_URI": s3_uri + "&read_timeout=-1"}, "read_timeout=-1"),
        "negative function timeout": ({"GG_LAMBDA_TIMEOUT": "-5"}, "GG_LAMBDA_TIMEOUT"),
    }


def test_wrong_settings_fail_fast_with_one_line(tmp_path, s3_uri, moto_endpoint, lambda_endpoint):
    """Each wrong setting: exit 1 within 10 s, one line naming it, nothing run anywhere."""
    base = make_client(tmp_path / "base", s3_uri, lambda_endpoint.url)
    for name, (changes, expected) in _bad_settings(base, s3_uri, moto_endpoint, lambda_endpoint.url).items():
        client = make_client(tmp_path / name.replace(" ", "-").replace("(", "").replace(")", ""), s3_uri,
                             lambda_endpoint.url)
        for variable, value in changes.items():
            if value is None:
                client.env.pop(variable, None)
            else:
                client.env[variable] = value
        tid = ShellThunks(client.store).thunk("echo x > out")
        trace = client.gg_dir.parent / "trace.jsonl"
        forced, elapsed = timed(client, tid, trace=trace, timeout=60)
        assert forced.returncode == 1, (name, forced.stderr)
        line = one_line_error(forced.stderr)
        assert line.startswith("gg-force: error: ") and expected in line, (name, line)
        assert elapsed < 10, (name, elapsed)
        assert not of_kind(trace, "started"), f"{name}: ran something"


async def test_access_denied_fails_fast(tmp_path, s3_uri, moto_endpoint, lambda_endpoint):
    """AccessDenied from S3, and from the Invoke API, each behind a proxy that denies."""
    for service in ("s3", "lambda"):
        target = moto_endpoint if service == "s3" else lambda_endpoint.url
        code = "AccessDenied" if service == "s3" else "AccessDeniedException"
        async with FaultProxy(target, fail_first=10**6, status=403, code=code) as proxy:
            uri = s3_uri.replace(moto_endpoint, proxy.url) if service == "s3" else s3_uri
            client = make_client(tmp_path / service, uri, proxy.url if service == "lambda" else lambda_endpoint.url)
            tid = ShellThunks(client.store).thunk("echo x > out")
            started = time.monotonic()
            status, output = await client.force_async(tid)
            elapsed = time.monotonic() - started
        assert status == 1, output
        line = one_line_error(output)
        assert ("AccessDenied" in line or "403" in line) and elapsed < 10, (line, elapsed)
        assert ("GG_STORAGE_URI" if service == "s3" else "GG_LAMBDA_FUNCTION") in line, line


async def test_access_denied_in_the_middle_of_a_run_stops_it(tmp_path, s3_uri, moto_endpoint, lambda_endpoint):
    """Permissions taken away after the pre-flight check (per-call classification): the
    run stops at once with one line, even with --keep-going; nothing falls back."""
    async with FaultProxy(moto_endpoint) as proxy:
        client = make_client(tmp_path, s3_uri.replace(moto_endpoint, proxy.url), lambda_endpoint.url,
                             GG_LAMBDA_INLINE_MAX="0")
        sh = ShellThunks(client.store)
        tids = [sh.thunk(f"echo {n} > out", values={"a": f"input {n}"}) for n in range(4)]
        trace = tmp_path / "trace.jsonl"
        process = await asyncio.create_subprocess_exec(
            *client.argv("--keep-going", *tids, trace=trace), cwd=tmp_path, env=client.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        # The pre-flight PUT and GET go through; from then on S3 denies everything.
        while proxy.requests < 2:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        proxy.fail_first, proxy.status, proxy.code = 10**6, 403, "AccessDenied"
        started = time.monotonic()
        out, err = await asyncio.wait_for(process.communicate(), 60)
    output = (out + err).decode()
    assert process.returncode == 1, output
    line = one_line_error(output)
    assert "AccessDenied" in line and "GG_STORAGE_URI" in line, line
    assert time.monotonic() - started < 10
    assert not of_kind(trace, "fallback") and not of_kind(trace, "retried")


def test_gg_engine_is_validated(tmp_path, s3_uri, lambda_endpoint):
    client = make_client(tmp_path, s3_uri, lambda_endpoint.url, GG_ENGINE="lamda")
    tid = ShellThunks(client.store).thunk("echo x > out")
    forced = subprocess.run(client.argv(tid)[:1] + ["--quiet", tid], cwd=tmp_path, env=client.env,
                            capture_output=True, text=True, timeout=60)
    assert forced.returncode == 2
    line = one_line_error(forced.stderr)
    assert "GG_ENGINE='lamda'" in line, line


# -- 2. fallback is loud --------------------------------------------------------------------------


def _start_and_wait_for(client: Client, args: list[str], trace, kind: str) -> subprocess.Popen:
    process = subprocess.Popen(client.argv(*args, trace=trace), cwd=client.gg_dir.parent, env=client.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not of_kind(trace, kind):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    return process


def test_lambda_lost_mid_run_falls_back_loudly(tmp_path, s3_uri, lambda_endpoint_factory):
    """The endpoint is killed after the first thunk finished: the rest runs locally,
    exit 0, and one line says how many thunks ran locally and why; the trace has it."""
    endpoint = lambda_endpoint_factory(workers=2)
    client = make_client(tmp_path, s3_uri, endpoint.url, GG_LAMBDA_BATCH="1")  # -j 2: 2 thunks out, as the test needs
    sh = ShellThunks(client.store)
    tids = [sh.thunk(f"sleep 0.3; echo {n} > out") for n in range(8)]
    trace = tmp_path / "trace.jsonl"
    process = _start_and_wait_for(client, ["-j", "2", "--print", *tids], trace, "finished")
    stop_process(endpoint.process)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    no_tracebacks(err)
    lines = [line for line in err.splitlines() if "ran locally" in line]
    assert len(lines) == 1 and lines[0].startswith("gg-force: Lambda unavailable after 4 attempts ("), err
    ran_locally = sum(1 for e in of_kind(trace, "finished") if e["engine"] == "local")
    assert ran_locally >= 1 and lines[0].endswith(f"; {ran_locally} of 8 thunks ran locally"), lines[0]
    assert [e["engine"] for e in of_kind(trace, "abandoned")] == ["lambda"]
    assert of_kind(trace, "done")[-1]["ran_on"]["local"] == ran_locally
    printed = dict(line.split(" ", 1) for line in out.splitlines())
    assert [client.store.read_bytes(printed[t].strip()) for t in tids] == [f"{n}\n".encode() for n in range(8)]


def test_no_fallback_makes_a_lost_lambda_a_failure(tmp_path, s3_uri, lambda_endpoint_factory):
    endpoint = lambda_endpoint_factory(workers=2)
    client = make_client(tmp_path, s3_uri, endpoint.url, GG_LAMBDA_BATCH="1")  # -j 2: 2 thunks out, as the test needs
    sh = ShellThunks(client.store)
    tids = [sh.thunk(f"sleep 0.3; echo {n} > out") for n in range(6)]
    trace = tmp_path / "trace.jsonl"
    process = _start_and_wait_for(client, ["--no-fallback", "-j", "2", *tids], trace, "finished")
    stop_process(endpoint.process)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1, err
    line = one_line_error(err)
    assert "gave up after 4 attempts on lambda" in line and "cannot reach" in line, line
    assert not [e for e in of_kind(trace, "started") if e["engine"] == "local"]


def test_refused_thunks_are_said_out_loud(tmp_path, s3_uri, lambda_endpoint):
    """A disk hint larger than the function's /tmp goes local up front, and the summary says so."""
    client = make_client(tmp_path, s3_uri, lambda_endpoint.url, GG_LAMBDA_EPHEMERAL_MIB="64")
    sh = ShellThunks(client.store)
    big = client.store.put_thunk(replace(client.store.load_thunk(sh.thunk("echo big > out")),
                                         resources=Resources(disk_mib=100)))
    small = sh.thunk("cat b > out", thunks={"b": big})
    forced = client.force(small)
    assert forced.returncode == 0, forced.stderr
    lines = [line for line in forced.stderr.splitlines() if "ran locally" in line]
    assert lines == ["gg-force: 1 of 2 thunks ran locally: lambda: needs 100 MiB of disk; "
                     "the function has 64 MiB"], forced.stderr


# -- 3. an endpoint that never answers --------------------------------------------------------------


def test_stopped_endpoint_at_start_is_one_line(tmp_path, s3_uri, lambda_endpoint_factory):
    endpoint = lambda_endpoint_factory(workers=1)
    client = make_client(tmp_path, s3_uri, endpoint.url)
    tid = ShellThunks(client.store).thunk("echo x > out")
    os.kill(endpoint.process.pid, signal.SIGSTOP)
    try:
        forced, elapsed = timed(client, tid, timeout=60)
    finally:
        os.kill(endpoint.process.pid, signal.SIGCONT)
    assert forced.returncode == 1, forced.stderr
    line = one_line_error(forced.stderr)
    assert "does not answer" in line and "GG_LAMBDA_ENDPOINT" in line, line
    assert elapsed < 15


def test_endpoint_stopped_mid_run_is_abandoned_within_seconds(tmp_path, s3_uri, lambda_endpoint_factory):
    """SIGSTOP the endpoint (it still accepts connections, answers nothing) while thunks
    are out: the liveness probe notices, the rest runs locally, well before any
    invocation deadline (the function timeout here is 60 s)."""
    endpoint = lambda_endpoint_factory(workers=2)
    client = make_client(tmp_path, s3_uri, endpoint.url, GG_LAMBDA_BATCH="1")  # -j 2: 2 thunks out, as the test needs
    sh = ShellThunks(client.store)
    tids = [sh.thunk(f"sleep 0.5; echo {n} > out") for n in range(8)]
    trace = tmp_path / "trace.jsonl"
    started = time.monotonic()
    process = _start_and_wait_for(client, ["-j", "2", *tids], trace, "finished")
    os.kill(endpoint.process.pid, signal.SIGSTOP)
    try:
        _, err = process.communicate(timeout=120)
    finally:
        os.kill(endpoint.process.pid, signal.SIGCONT)
    elapsed = time.monotonic() - started
    assert process.returncode == 0, err
    no_tracebacks(err)
    assert "stopped answering" in err and "ran locally" in err, err
    abandoned = of_kind(trace, "abandoned")
    assert abandoned and abandoned[0]["t"] < 15, abandoned
    assert elapsed < 25, elapsed


# -- 4. a thunk that hangs ------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["lambda", "local"])
def test_hanging_thunk_without_timeout_is_killed_at_the_default(tmp_path, s3_uri, lambda_endpoint, engine):
    """No timeout of its own: the default one (--default-timeout) kills it, on either engine.
    That is an execution failure: final, not retried, never re-run elsewhere."""
    client = make_client(tmp_path, s3_uri, lambda_endpoint.url)
    sh = ShellThunks(client.store)
    pid_file = tmp_path / "pid"
    hangs = sh.thunk(f"echo $$ > {pid_file}; echo hanging; sleep 600; echo x > out")
    trace = tmp_path / "trace.jsonl"
    forced, elapsed = timed(client, "--default-timeout", "2", hangs, trace=trace, engine=engine, timeout=120)
    assert forced.returncode == 1, forced.stderr
    no_tracebacks(forced.stderr)
    assert "timed out after 2 s" in forced.stderr and "hanging" in forced.stderr, forced.stderr
    assert elapsed < 20, elapsed
    assert {e["engine"] for e in of_kind(trace, "started")} == {engine}
    assert not of_kind(trace, "retried") and not of_kind(trace, "fallback")
    pid = int(pid_file.read_text())
    assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split(")")[1][:3]


def test_thunk_longer_than_the_function_allows_runs_locally_with_its_limit(tmp_path, s3_uri,
                                                                           lambda_endpoint_factory):
    """A thunk allowed longer than the function's timeout: stopped on Lambda before the
    sandbox dies, then run locally — with the limit (one that hangs still fails there)."""
    endpoint = lambda_endpoint_factory(workers=1, function_timeout=3)
    client = make_client(tmp_path, s3_uri, endpoint.url, GG_LAMBDA_TIMEOUT="3")
    sh = ShellThunks(client.store)
    slow = sh.thunk("sleep 4; echo done > out")
    trace = tmp_path / "trace.jsonl"
    forced, elapsed = timed(client, "--default-timeout", "8", "--print", slow, trace=trace)
    assert forced.returncode == 0, forced.stderr
    assert client.value(forced, slow) == b"done\n"
    assert [e["engine"] for e in of_kind(trace, "started")] == ["lambda", "local"]
    assert "ran locally after running out of resources on lambda" in forced.stderr, forced.stderr
    assert not of_kind(trace, "retried")

    hangs = sh.thunk("sleep 600; echo x > out")
    forced, elapsed = timed(client, "--default-timeout", "5", hangs, timeout=120)
    assert forced.returncode == 1 and "timed out after 5 s" in forced.stderr, forced.stderr
    assert elapsed < 30


# -- 5. resource exhaustion -------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="a tmpfs per worker needs root")
def test_output_too_large_for_the_workers_tmp_runs_locally(tmp_path, s3_uri, lambda_endpoint_factory):
    """A 100 MiB output on a worker whose /tmp is a 64 MiB tmpfs: ENOSPC there is the
    worker's limit, not the thunk's fault. It runs locally (said in the summary), and the
    trace keeps the tail of what it printed on Lambda."""
    endpoint = lambda_endpoint_factory(workers=1, extra=["--tmp-mib", "64"], env={"GG_CACHE_MAX_MIB": "16"})
    client = make_client(tmp_path, s3_uri, endpoint.url, GG_LAMBDA_EPHEMERAL_MIB="64")
    sh = ShellThunks(client.store)
    big = sh.thunk("echo writing 100 MiB; head -c 104857600 /dev/zero > out")
    trace = tmp_path / "trace.jsonl"
    forced = client.force("--print", big, trace=trace)
    assert forced.returncode == 0, forced.stderr + endpoint.log()[-2000:]
    printed = forced.stdout.split()[1]
    assert client.store.blob_path(printed).stat().st_size == 100 << 20
    assert [e["engine"] for e in of_kind(trace, "started")] == ["lambda", "local"]
    moved = of_kind(trace, "fallback")
    assert len(moved) == 1 and "disk full" in moved[0]["reason"], moved
    assert "writing 100 MiB" in moved[0]["output"] and "No space left" in moved[0]["output"], moved
    lines = [line for line in forced.stderr.splitlines() if "ran locally" in line]
    assert len(lines) == 1 and "after running out of resources on lambda" in lines[0], forced.stderr


def test_out_of_memory_on_a_worker_runs_locally(tmp_path, s3_uri, lambda_endpoint_factory):
    """A thunk that needs more memory than the function has: the sandbox is killed
    (Runtime.OutOfMemory, emulated by lambda-local --enforce-memory); the thunk runs
    locally, at once, and the summary says why."""
    endpoint = lambda_endpoint_factory(workers=1, extra=["--memory", "300", "--enforce-memory"])
    client = make_client(tmp_path, s3_uri, endpoint.url, GG_LAMBDA_MEMORY_MIB="300")
    sh = ShellThunks(client.store)
    hungry = sh.thunk('"$GG_PYTHON" -c "import time; x = b\'x\' * (400 << 20); time.sleep(3)"; echo fed > out')
    trace = tmp_path / "trace.jsonl"
    forced = client.force("--print", hungry, trace=trace)
    assert forced.returncode == 0, forced.stderr + endpoint.log()[-2000:]
    assert client.value(forced, hungry) == b"fed\n"
    assert [e["engine"] for e in of_kind(trace, "started")] == ["lambda", "local"]
    assert not of_kind(trace, "retried")
    moved = of_kind(trace, "fallback")
    assert len(moved) == 1 and "Runtime.OutOfMemory" in moved[0]["reason"], moved
    assert "after running out of resources on lambda" in forced.stderr, forced.stderr


# -- 6. lost values regenerate ----------------------------------------------------------------------


def test_lost_final_value_is_rebuilt_on_lambda(tmp_path, s3_uri, lambda_endpoint, boto3_s3):
    """A target's value gone from the local store and from S3 (an expiry rule): the next
    run rebuilds it through its producer, as the local engine does."""
    client = make_client(tmp_path, s3_uri, lambda_endpoint.url)
    sh = ShellThunks(client.store)
    produce = sh.thunk("seq 1 40000 > out")  # 229 KB: too large to come back inline
    final = sh.thunk("cat p > out; echo tail >> out", thunks={"p": produce})
    one = client.force("--print", final)
    assert one.returncode == 0, one.stderr
    value = one.stdout.split()[1]
    expected = client.store.read_bytes(value)

    config = parse_s3_uri(s3_uri)
    client.store.blob_path(value).unlink()
    boto3_s3.delete_object(Bucket=config.bucket, Key=config.key(value))
    trace = tmp_path / "trace.jsonl"
    two = client.force("--print", final, trace=trace)
    assert two.returncode == 0, two.stderr
    no_tracebacks(two.stderr)
    assert two.stdout.split()[1] == value and client.store.read_bytes(value) == expected
    assert [e["thunk"] for e in of_kind(trace, "regenerate")] == [final]
    assert [e["engine"] for e in of_kind(trace, "started")] == ["lambda"]


# -- 8. one line per error --------------------------------------------------------------------------


def test_missing_input_is_one_line_without_task_tracebacks(tmp_path, s3_uri, lambda_endpoint):
    client = make_client(tmp_path, s3_uri, lambda_endpoint.url)
    sh = ShellThunks(client.store)
    sources = [f"source {n}" * 100 for n in range(10)]
    leaves = [sh.thunk(f"cat s{n} > out", values={f"s{n}": text}) for n, text in enumerate(sources)]
    top = sh.thunk("cat " + " ".join(f"l{n}" for n in range(10)) + " > out",
                   thunks={f"l{n}": t for n, t in enumerate(leaves)})
    missing = {client.store.put_bytes(text.encode()) for text in sources[3:]}
    for ident in missing:
        client.store.blob_path(ident).unlink()
    forced = client.force(top, timeout=120)
    assert forced.returncode == 1, forced.stderr
    no_tracebacks(forced.stderr)
    lines = forced.stderr.strip().splitlines()
    # One line per root cause (each missing source), nothing else.
    assert 1 <= len(lines) <= len(missing), forced.stderr
    for line in lines:
        assert line.startswith("gg-force: error: thunk ") and line.endswith(" is not in the local store nor in S3")
        assert line.split(": blob ")[1].split()[0] in missing, line
