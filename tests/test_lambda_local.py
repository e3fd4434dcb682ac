"""gg lambda-local as a real process, driven through the real Invoke API (boto3)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.timeout(120)


def lambda_client(url: str):
    import boto3
    from botocore.config import Config

    return boto3.client("lambda", endpoint_url=url, region_name="us-east-1",
                        config=Config(retries={"max_attempts": 0}, read_timeout=60))


def test_invoke_api_shapes(lambda_endpoint):
    client = lambda_client(lambda_endpoint.url)
    answer = client.invoke(FunctionName="gg", Payload=json.dumps({"version": 1, "thunks": [],
                                                                  "storage": "s3://abc"}))
    assert answer["StatusCode"] == 200 and "FunctionError" not in answer
    assert json.loads(answer["Payload"].read()) == {"version": 1, "error": "", "results": []}
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="other", Payload=b"{}")
    with pytest.raises(client.exceptions.RequestTooLargeException):
        client.invoke(FunctionName="gg", Payload=b'"' + b"x" * 6_300_000 + b'"')


def test_code_dir_is_isolated(lambda_endpoint_factory, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "probe.py").write_text(
        "import os, sys\n"
        "def handle(event, context):\n"
        "    try:\n"
        "        import aiohttp  # in the dev venv, not in this code dir\n"
        "        leaked = True\n"
        "    except ImportError:\n"
        "        leaked = False\n"
        "    return {'path': sys.path, 'leaked': leaked, 'cwd': os.getcwd(),\n"
        "            'env': sorted(os.environ), 'memory': os.environ['AWS_LAMBDA_FUNCTION_MEMORY_SIZE']}\n"
    )
    endpoint = lambda_endpoint_factory(workers=1, extra=["--code-dir", str(code), "--handler", "probe.handle",
                                                         "--env", "GG_EXTRA=1", "--memory", "1024"])
    answer = json.loads(lambda_client(endpoint.url).invoke(FunctionName="gg", Payload=b"{}")["Payload"].read())
    assert answer["leaked"] is False
    assert answer["path"][0] == str(code) and not any("site-packages" in p for p in answer["path"])
    assert answer["cwd"] == str(code) and answer["memory"] == "1024"
    assert "GG_EXTRA" in answer["env"] and "VIRTUAL_ENV" not in answer["env"]


def test_init_error_reaches_the_caller(lambda_endpoint_factory, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "broken.py").write_text("raise RuntimeError('cannot start')\ndef handle(e, c):\n    return 1\n")
    endpoint = lambda_endpoint_factory(workers=1, extra=["--code-dir", str(code), "--handler", "broken.handle"])
    answer = lambda_client(endpoint.url).invoke(FunctionName="gg", Payload=b"{}")
    assert answer["FunctionError"] == "Unhandled"
    assert "cannot start" in answer["Payload"].read().decode()


def test_handler_exception_is_unhandled(lambda_endpoint_factory, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "raiser.py").write_text("def handle(e, c):\n    raise ValueError('bad event')\n")
    endpoint = lambda_endpoint_factory(workers=1, extra=["--code-dir", str(code), "--handler", "raiser.handle"])
    answer = lambda_client(endpoint.url).invoke(FunctionName="gg", Payload=b"{}")
    assert answer["FunctionError"] == "Unhandled"
    body = json.loads(answer["Payload"].read())
    assert body["errorType"] == "ValueError" and body["errorMessage"] == "bad event"


def test_stale_cache_roots_of_killed_endpoints_are_swept(tmp_path):
    """An endpoint killed with SIGKILL leaves its workers' cache root behind; the next one
    removes it, but never a root a live endpoint holds, a fresh one, or anything else."""
    import fcntl
    import os
    import time

    from executor.lambda_local.server import CACHE_ROOT_PREFIX, STALE_ROOT_SECONDS, sweep_stale_cache_roots

    old = time.time() - STALE_ROOT_SECONDS - 5

    def root(name: str, age: float = old) -> str:
        path = tmp_path / f"{CACHE_ROOT_PREFIX}{name}"
        (path / "worker-0" / "blobs").mkdir(parents=True)
        (path / "worker-0" / "blobs" / "Vx").write_bytes(b"x")
        os.utime(path, (age, age))
        return str(path)

    dead, live, fresh, mine = root("dead"), root("live"), root("fresh", time.time()), root("mine")
    other = tmp_path / "gg-other-dir"
    other.mkdir()
    os.utime(other, (old, old))
    holder = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        assert sweep_stale_cache_roots(str(tmp_path), keep=mine) == 1
    finally:
        os.close(holder)
    assert not os.path.exists(dead)
    assert all(os.path.exists(p) for p in (live, fresh, mine, other))
