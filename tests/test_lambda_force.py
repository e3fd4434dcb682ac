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
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from ir.ids import id_of_bytes, parse_id
from ir.store import LocalStore
from ir.thunk import Resources
from tests.aws_fixtures import FAKE_AWS_ENV, LocalLambda
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


def one_line_error(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


# -- the fib example ---------------------------------------------------------------------------


def test_fib_on_lambda_matches_local_and_reruns_from_cache(tmp_path, s3_uri, lambda_endpoint: LocalLambda):
    """fib(25) (tail calls, created thunks, python functions) through gg-force --engine lambda:
    the same value and the same reductions as the local engine; then nothing runs again,
    on either engine."""
    on_lambda = make_client(tmp_path / "lambda", s3_uri, lambda_endpoint.url)
    on_local = make_client(tmp_path / "local", s3_uri, lambda_endpoint.url)
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
    # The same reductions, thunk for thunk: switching engines between runs hits the cache.
    reductions = {p.name: p.read_text() for p in on_local.store.reductions.iterdir()}
    assert {p.name: p.read_text() for p in on_lambda.store.reductions.iterdir()} == reductions

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


def test_thunks_too_large_for_lambda_run_locally(tmp_path, s3_uri, lambda_endpoint):
    """A memory hint above the function's memory, and inputs over its /tmp, go to the
    local fallback up front; the rest of the graph still runs on Lambda."""
    client = make_client(tmp_path, s3_uri, lambda_endpoint.url,
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
