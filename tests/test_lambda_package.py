"""``gg lambda package``: the deployment zip is deterministic, within Lambda's limits,
self-contained, and is what the local Lambda endpoint's workers run.

The zip is built from real wheels for Lambda (manylinux x86_64, CPython 3.11), cached
in ``~/.cache/gg-py/wheels`` so that only the first run on a machine downloads them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from executor import lambda_package as package
from ir.store import LocalStore
from tests.aws_fixtures import FAKE_AWS_ENV
from tests.forcing import ShellThunks

REPO = Path(__file__).resolve().parent.parent
TARGET = package.Target(python_version="3.11", architecture="x86_64")
# The zip's native wheels can only be loaded by the interpreter they were built for.
SAME_PYTHON = sys.version_info[:2] == (3, 11) and sys.platform == "linux" and \
    __import__("platform").machine() == "x86_64"

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> package.Package:
    out = tmp_path_factory.mktemp("pkg") / "gg-lambda-x86_64.zip"
    return package.build_package(out, TARGET, cache_dir=package.default_cache_dir())


@pytest.fixture(scope="module")
def unpacked(built, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("code")
    with zipfile.ZipFile(built.path) as zf:
        zf.extractall(root)
    return root


def test_same_inputs_give_the_same_bytes(built, tmp_path):
    again = package.build_package(tmp_path / "again.zip", TARGET, cache_dir=package.default_cache_dir())
    assert again.sha256 == built.sha256
    assert again.path.read_bytes() == built.path.read_bytes()


def test_entries_are_sorted_with_fixed_times_and_modes(built):
    with zipfile.ZipFile(built.path) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names) and len(names) == len(set(names))
    assert {i.date_time for i in infos} == {package.FIXED_DATE}
    assert {(i.external_attr >> 16) for i in infos} <= {0o100644, 0o100755}
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_contents_are_for_lambda_not_this_machine(built):
    with zipfile.ZipFile(built.path) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read(package.MANIFEST))
    assert manifest["handler"] == package.HANDLER
    assert (manifest["runtime"], manifest["architecture"]) == ("python3.11", "x86_64")
    # Handler, IR and the execution core; not the scheduler, the CLI or this packager.
    for name in ("lambda_handler/handler.py", "ir/storage/s3.py", "ir/storage/file.py", "ir/storage/registry.py",
                 "ir/sdk.py", "executor/execution.py", "executor/protocol.py", "executor/worker.py",
                 "executor/worker_cache.py", "ir/execution_pb2.py", "ir/execution.proto"):
        assert name in names
    for name in ("executor/scheduler.py", "executor/force_cli.py", "executor/lambda_package.py"):
        assert name not in names
    # Native code comes from manylinux wheels for CPython 3.11, not from site-packages.
    native = [w for w in manifest["wheels"] if "-none-any" not in w and "py3-none" not in w]
    assert native and all(("cp311" in w or "abi3" in w) and "manylinux" in w and "x86_64" in w for w in native)
    assert any(n.startswith("zstandard/") and n.endswith(".so") and "cpython-311-x86_64-linux-gnu" in n
               for n in names)
    assert not any(n.startswith("boto3/") for n in names)  # in the runtime, and unused
    assert any(n.startswith("botocore/") for n in names)  # aiobotocore needs its exact pin


def test_size_within_lambda_limits(built):
    assert built.zipped_bytes == built.path.stat().st_size
    assert built.zipped_bytes <= package.LAMBDA_LIMITS.zipped
    assert built.unzipped_bytes <= package.LAMBDA_LIMITS.unzipped
    with zipfile.ZipFile(built.path) as zf:
        assert sum(i.file_size for i in zf.infolist()) == built.unzipped_bytes


def test_over_the_limits_fails_clearly_and_writes_nothing(tmp_path):
    out = tmp_path / "too-big.zip"
    with pytest.raises(package.PackageError, match=r"over Lambda's 1 MiB limit for unzipped code"):
        package.build_package(out, TARGET, cache_dir=package.default_cache_dir(),
                              limits=package.Limits(zipped=1 << 20, unzipped=1 << 20))
    with pytest.raises(package.PackageError, match=r"MiB zipped, over Lambda's 2 MiB direct-upload limit"):
        package.build_package(out, TARGET, cache_dir=package.default_cache_dir(),
                              limits=package.Limits(zipped=2 << 20, unzipped=1 << 30))
    assert not out.exists()


def test_unknown_architecture_is_a_one_line_error():
    with pytest.raises(package.PackageError, match="architecture 'sparc'"):
        package.Target(architecture="sparc")


@pytest.mark.skipif(not SAME_PYTHON, reason="the zip's native wheels need CPython 3.11 on linux x86_64")
def test_handler_imports_from_the_unpacked_zip_alone(unpacked):
    """``-I -S``: no PYTHONPATH, no site-packages, no current directory; only the zip
    and the standard library. Every module the handler path loads must come from the zip."""
    probe = textwrap.dedent("""
        import inspect, json, sys, sysconfig
        code = sys.argv[1]
        sys.path.insert(0, code)
        import lambda_handler.handler as h
        import executor.execution, executor.protocol, executor.worker, ir.storage.s3, ir.sdk
        import aiobotocore.session, aiohttp, botocore, zstandard, xxhash, google.protobuf
        stdlib = sysconfig.get_paths()["stdlib"]
        outside = sorted(
            m.__file__ for m in list(sys.modules.values())
            if getattr(m, "__file__", None) and not m.__file__.startswith((code, stdlib))
        )
        print(json.dumps({"params": list(inspect.signature(h.handle).parameters), "outside": outside,
                          "botocore": botocore.__file__}))
    """)
    result = subprocess.run([sys.executable, "-I", "-S", "-c", probe, str(unpacked)],
                            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["params"][:2] == ["event", "context"]
    assert answer["outside"] == []
    assert answer["botocore"].startswith(str(unpacked))


def _upload(uri: str, store: LocalStore, ids: list[str]) -> None:
    from ir.storage.s3 import S3Storage
    from ir.storage.uri import parse_s3_uri

    async def run() -> None:
        storage = S3Storage(parse_s3_uri(uri))
        try:
            for ident in ids:
                await storage.upload(store, ident)
        finally:
            await storage.close()

    asyncio.run(run())


@pytest.mark.skipif(not SAME_PYTHON, reason="the zip's native wheels need CPython 3.11 on linux x86_64")
def test_local_lambda_workers_run_the_unpacked_zip(unpacked, lambda_endpoint_factory, s3_uri, boto3_s3,
                                                   tmp_path):
    """End to end: the local endpoint runs its workers from the unpacked zip (``--code-dir``:
    ``python -I -S``, sys.path = the zip, the standard library and awslambdaric only), and
    a real Invoke through botocore's Lambda client forces thunks there against moto S3:
    a shell thunk, and an SDK thunk (fib) whose function imports ``ir.sdk`` from the zip."""
    import boto3

    from examples.fib.fib import fib
    from ir import sdk
    from ir.storage.uri import parse_s3_uri

    store = LocalStore.init(tmp_path / ".gg")
    sh = ShellThunks(store)
    cat = sh.thunk("cat a b > out", values={"a": "from the ", "b": "zip"})
    fib_ref = sdk.save(fib(2), store)
    fib_id = fib_ref.split("#")[0]
    # The handler tells functions where its own `ir` package was imported from.
    where = sh.thunk('printf %s "$GG_PYTHONPATH" > out')
    thunk_ids = [cat, fib_id, where]
    needed = sorted({i.id for t in thunk_ids for i in (*store.load_thunk(t).values,
                                                       *store.load_thunk(t).executables)})
    _upload(s3_uri, store, needed)

    endpoint = lambda_endpoint_factory(workers=1, extra=["--code-dir", str(unpacked)])
    client = boto3.client("lambda", endpoint_url=endpoint.url, region_name=FAKE_AWS_ENV["AWS_REGION"],
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    event = {"version": 1, "storage": s3_uri,
             "thunks": [{"id": t, "data": base64.b64encode(store.read_bytes(t)).decode()} for t in thunk_ids]}
    answer = client.invoke(FunctionName=endpoint.function_name, Payload=json.dumps(event).encode())
    assert "FunctionError" not in answer, answer["Payload"].read()
    body = json.loads(answer["Payload"].read())
    results = {r["id"]: r for r in body["results"]}
    assert results[cat]["status"] == "ok", results[cat]
    assert results[fib_id]["status"] == "ok", results[fib_id]
    assert results[where]["status"] == "ok", results[where]

    config = parse_s3_uri(s3_uri)
    out = results[cat]["outputs"][0]
    data = boto3_s3.get_object(Bucket=config.bucket, Key=config.key(out["id"]))["Body"].read()
    assert data == b"from the zip"
    # fib(2) tail-calls add(fib(1), fib(0)): a thunk, sent back inline.
    tail = results[fib_id]["outputs"][0]
    assert tail["id"].startswith("T") and base64.b64decode(tail["data"])

    # The worker really ran from the zip: the handler's `ir` was imported from there.
    out = results[where]["outputs"][0]
    data = boto3_s3.get_object(Bucket=config.bucket, Key=config.key(out["id"]))["Body"].read()
    assert Path(data.decode()).resolve() == unpacked.resolve()


@pytest.mark.skipif(not SAME_PYTHON, reason="the zip's native wheels need CPython 3.11 on linux x86_64")
def test_gg_force_on_the_local_lambda_running_the_zip(unpacked, lambda_endpoint_factory, s3_uri, tmp_path):
    """The deploy guide's last step, against the zip: `gg-force --engine lambda` on a
    fib(10) placeholder, with the settings `terraform output env_exports` gives, pointed
    at the local endpoint. Every thunk must have run on Lambda (no fallback, no retry)."""
    endpoint = lambda_endpoint_factory(workers=2, extra=["--code-dir", str(unpacked)])
    trace = tmp_path / "trace.jsonl"
    work = tmp_path / "work"
    work.mkdir()
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", **FAKE_AWS_ENV, "PYTHONPATH": str(REPO),
        "GG_ENGINE": "lambda", "GG_STORAGE_URI": s3_uri, "GG_LAMBDA_FUNCTION": endpoint.function_name,
        "GG_LAMBDA_REGION": FAKE_AWS_ENV["AWS_REGION"], "GG_LAMBDA_ENDPOINT": endpoint.url,
        "GG_LAMBDA_TIMEOUT": "60",
    }
    made = subprocess.run([sys.executable, "-m", "examples.fib", "10", "--placeholder", "fib10"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    result = subprocess.run(
        [str(Path(sys.executable).parent / "gg-force"), "--engine", "lambda", "-j", "4",
         "--trace", str(trace), "--quiet", "fib10"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr + endpoint.log()[-3000:]
    assert json.loads((work / "fib10").read_text()) == 55
    events = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]
    started = [e for e in events if e["event"] == "started"]
    assert started and {e["engine"] for e in started} == {"lambda"}
    assert not [e for e in events if e["event"] in ("fallback", "retried", "failed")]


def _gg_lambda(argv: list[str]) -> int:
    """``gg lambda ...`` through the real parser and error handling of the ``gg`` command
    (registered here directly, whether or not executor/subcommands.py lists it yet)."""
    import argparse

    from ir.cli import run_handler

    parser = argparse.ArgumentParser(prog="gg")
    package.add(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_handler(args.handler, args)


def test_cli_builds_the_same_zip(built, tmp_path, capsys):
    out = tmp_path / "cli.zip"
    assert _gg_lambda(["lambda", "package", "-o", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes() == built.path.read_bytes()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert _gg_lambda(["lambda", "package", "-o", str(tmp_path / "x.zip"), "--python-version", "3"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("gg: error: python version '3'") and "\n" not in err
