"""Pytest plugin: real local stand-ins for AWS, as separate processes on 127.0.0.1.

Register with ``pytest_plugins = ["tests.aws_fixtures"]`` in ``tests/conftest.py``.

Fixtures:

* ``aws_env`` (session): fake credentials and region in ``os.environ`` (moto accepts any),
  restored afterwards.
* ``moto_endpoint`` (session): ``http://127.0.0.1:PORT`` of a ``moto_server`` process.
* ``s3_uri`` (function): a GG_STORAGE_URI for a fresh bucket on that server.
* ``boto3_s3``: a plain boto3 client on the moto server (for tampering in fault tests).
* ``moto_recorder``: :class:`MotoRecorder`, the requests the moto server received while
  recording (its own request log: evidence independent of what gg says it did).
* ``lambda_endpoint_factory`` (function): starts ``python -m executor.lambda_local``
  with the given options and returns a :class:`LocalLambda` (url, process).
* ``lambda_endpoint`` (session): one shared endpoint with 2 workers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, process: subprocess.Popen, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers: that is all we wait for
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout:g} s")


def stop_process(process: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL: only the process this fixture started (and its group)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def aws_env() -> Iterator[dict[str, str]]:
    saved = {name: os.environ.get(name) for name in FAKE_AWS_ENV}
    os.environ.update(FAKE_AWS_ENV)
    yield dict(FAKE_AWS_ENV)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def start_moto(port: int | None = None, recording: Path | None = None) -> tuple[subprocess.Popen, str]:
    """``recording``: where the server's request recorder writes (off until started,
    see :class:`MotoRecorder`)."""
    port = port or free_port()
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if exe is None:
        pytest.skip("moto_server is not installed")
    process = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, **FAKE_AWS_ENV, "MOTO_RECORDER_FILEPATH": str(recording or os.devnull)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + "/moto-api/", process, "moto_server")
    except BaseException:
        stop_process(process)
        raise
    return process, url


@pytest.fixture(scope="session")
def moto_endpoint(aws_env, tmp_path_factory) -> Iterator[str]:
    process, url = start_moto(recording=tmp_path_factory.mktemp("moto") / "recording.jsonl")
    yield url
    stop_process(process)


@dataclass(frozen=True)
class MotoRequest:
    """One request the moto server received: ``key`` is the object key ("" for a
    bucket-level request), ``body`` the payload's size as decoded by S3."""

    method: str
    bucket: str
    key: str
    query: str
    body: int
    agent: str  # the User-Agent (AWS_SDK_UA_APP_ID=NAME adds "app/NAME": who sent it)


class MotoRecorder:
    """The moto server's own request log (``/moto-api/recorder``): what reached S3, as
    opposed to what the client under test reports."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint

    def _call(self, action: str) -> bytes:
        request = urllib.request.Request(f"{self.endpoint}/moto-api/recorder/{action}", method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.read()

    @contextlib.contextmanager
    def recording(self, bucket: str) -> Iterator[list[MotoRequest]]:
        """Record while the block runs; the list is filled, for ``bucket``, when it ends."""
        self._call("reset-recording")
        self._call("start-recording")
        requests: list[MotoRequest] = []
        try:
            yield requests
        finally:
            self._call("stop-recording")
        requests += self.parse(self._call("download-recording"), bucket)

    @staticmethod
    def parse(recording: bytes, bucket: str) -> list[MotoRequest]:
        import base64
        from urllib.parse import unquote, urlsplit

        found = []
        for entry in _json_objects(recording.decode()):
            url = urlsplit(entry["url"])
            name, _, key = url.path.lstrip("/").partition("/")  # path-style addressing
            if name != bucket:
                continue
            headers = {k.lower(): v for k, v in entry["headers"].items()}
            body = entry.get("body") or ""
            raw = len(base64.b64decode(body)) if entry.get("body_encoded") else len(body.encode())
            size = int(headers.get("x-amz-decoded-content-length", raw))
            found.append(MotoRequest(entry["method"], name, unquote(key), url.query, size,
                                     headers.get("user-agent", "")))
        return found


def _json_objects(text: str) -> Iterator[dict]:
    """The JSON objects of moto's recording, one after another. Not line by line: moto
    writes an entry and its newline with two writes, and an entry longer than the file
    buffer goes out at once, so under concurrent requests two entries can be adjacent
    and their newlines follow later."""
    import json

    decoder = json.JSONDecoder()
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return
        entry, position = decoder.raw_decode(text, position)
        yield entry


@pytest.fixture
def moto_recorder(moto_endpoint) -> MotoRecorder:
    return MotoRecorder(moto_endpoint)


@pytest.fixture
def boto3_s3(moto_endpoint):
    import boto3

    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def s3_bucket(boto3_s3) -> str:
    name = f"gg-test-{uuid.uuid4().hex[:12]}"
    boto3_s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_uri(s3_bucket, moto_endpoint) -> str:
    return f"s3://{s3_bucket}/blobs?region=us-east-1&endpoint={moto_endpoint}"


@dataclass
class LocalLambda:
    url: str
    process: subprocess.Popen
    function_name: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_lambda_local(
    workers: int = 2,
    function_timeout: float = 60.0,
    function_name: str = "gg",
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
) -> LocalLambda:
    """Start ``python -m executor.lambda_local`` on a free port; wait until it is ready."""
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="gg-lambda-log-"))
    log_path = log_dir / f"lambda-local-{uuid.uuid4().hex[:6]}.log"
    ready_path = log_dir / f"ready-{uuid.uuid4().hex[:6]}"
    argv = [
        sys.executable, "-m", "executor.lambda_local", "--port", "0", "--workers", str(workers),
        "--timeout", str(function_timeout), "--function-name", function_name,
        "--ready-file", str(ready_path), *(extra or []),
    ]
    log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, **FAKE_AWS_ENV, "PYTHONPATH": str(REPO), **(env or {})},
    )
    log.close()
    deadline = time.monotonic() + 60
    while not ready_path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(f"lambda-local did not start: {log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    url = ready_path.read_text().strip()
    return LocalLambda(url, process, function_name, log_path)


@pytest.fixture
def lambda_endpoint_factory(aws_env, tmp_path) -> Iterator:
    started: list[LocalLambda] = []

    def start(**options) -> LocalLambda:
        options.setdefault("log_dir", tmp_path)
        endpoint = start_lambda_local(**options)
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        stop_process(endpoint.process)


@pytest.fixture(scope="session")
def lambda_endpoint(aws_env, tmp_path_factory) -> Iterator[LocalLambda]:
    endpoint = start_lambda_local(workers=2, log_dir=tmp_path_factory.mktemp("lambda-local"))
    yield endpoint
    stop_process(endpoint.process)


class FaultProxy:
    """A real HTTP proxy in front of ``target`` that answers the first ``fail_first``
    requests with an S3-style error (503 SlowDown by default), or never answers them
    (``hang=True``). Run it in the test's event loop with ``async with``. With
    ``record=True`` it keeps every forwarded request and answer in :attr:`exchanges`
    (off by default: S3 bodies can be large).
    """

    def __init__(self, target: str, fail_first: int = 0, status: int = 503, code: str = "SlowDown",
                 hang: bool = False, record: bool = False):
        self.target = target.rstrip("/")
        self.fail_first = fail_first
        self.status = status
        self.code = code
        self.hang = hang
        self.record = record
        self.requests = 0
        self.failed = 0
        self.url = ""
        self.log: list[tuple[str, str, str]] = []  # (method, path, X-Amz-Invocation-Type)
        # Every forwarded request with its answer: (path, X-Amz-Invocation-Type, request
        # body, answer status, answer body); what a test decodes to see the payloads.
        self.exchanges: list[tuple[str, str, bytes, int, bytes]] = []

    async def _handle(self, request):
        import asyncio

        from aiohttp import ClientSession, web

        self.requests += 1
        self.log.append((request.method, request.path, request.headers.get("X-Amz-Invocation-Type", "")))
        body = await request.read()
        if self.hang:
            await asyncio.sleep(3600)
        if self.failed < self.fail_first:
            self.failed += 1
            xml = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{self.code}</Code>"
                   f"<Message>injected by FaultProxy</Message></Error>")
            return web.Response(status=self.status, body=xml.encode(), content_type="application/xml")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "transfer-encoding")}
        async with ClientSession(auto_decompress=False) as session:
            async with session.request(request.method, self.target + request.path_qs, headers=headers,
                                       data=body, allow_redirects=False) as answer:
                payload = await answer.read()
                if self.record:
                    self.exchanges.append((request.path, request.headers.get("X-Amz-Invocation-Type", ""), body,
                                           answer.status, payload))
                out = {k: v for k, v in answer.headers.items()
                       if k.lower() not in ("transfer-encoding", "content-length", "connection")}
                return web.Response(status=answer.status, body=payload, headers=out)

    async def __aenter__(self) -> FaultProxy:
        from aiohttp import web

        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()
