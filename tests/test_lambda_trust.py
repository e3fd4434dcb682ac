"""On Lambda: a thunk cannot poison the warm blob cache (issue 10, case 11), nor make
the handler touch anything outside its work directory (cases 9 and 10).

The handler is called in-process against a real moto_server, as in
tests/test_lambda_handler.py; its warm state (the /tmp store and what was verified
there) survives between calls exactly as in a warm sandbox.
"""

from __future__ import annotations

import base64
import os

import pytest

from ir.store import VerifiedBlobs
from lambda_handler import handler
from lambda_handler.handler import handle
from tests.forcing import ShellThunks
from tests.test_lambda_handler import client_store, event_for, lambda_env, upload_inputs  # noqa: F401

pytestmark = pytest.mark.timeout(120)

GENUINE = b"the genuine input\n"
POISON = b"the poisoned data\n"  # same size: only the bytes differ


def poisoner(sh: ShellThunks, victim: str, keep_mtime: bool) -> str:
    """A thunk that rewrites a cached blob through the path GG_DIR leads to."""
    path = f'"$GG_DIR/../../../blobs/{victim}"'
    restore = f"touch -r ref {path}; " if keep_mtime else ""
    script = (f"cp -p {path} ref 2>/dev/null; chmod u+w {path} && printf '{POISON.decode()[:-1]}\\n' > {path}; "
              f"chmod a-w {path}; {restore}echo done > out")
    return sh.thunk(script)


def output_of(answer: dict, s3, uri_config, ident: str) -> bytes:
    result = next(r for r in answer["results"] if r["id"] == ident)
    assert result["status"] == "ok", result
    out = result["outputs"][0]
    if "data" in out:
        return base64.b64decode(out["data"])
    return s3.get_object(Bucket=uri_config.bucket, Key=uri_config.key(out["id"]))["Body"].read()


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["plain-rewrite", "mtime-restored"])
def test_case_11_a_poisoned_cache_blob_is_never_used(s3_uri, client_store, lambda_env, boto3_s3,  # noqa: F811
                                                      keep_mtime):
    from ir.storage.uri import parse_s3_uri

    config = parse_s3_uri(s3_uri)
    sh = ShellThunks(client_store)
    victim = client_store.put_bytes(GENUINE)
    first = sh.thunk("cat in > out", values={"in": GENUINE.decode()})
    attack = poisoner(sh, victim, keep_mtime)
    second = sh.thunk("cat in in > out", values={"in": GENUINE.decode()})
    upload_inputs(s3_uri, client_store, [first, attack, second])

    # 1. A thunk brings the blob into the warm cache (and the worker verifies it).
    answer = handle(event_for(s3_uri, client_store, [first]), None)
    assert output_of(answer, boto3_s3, config, first) == GENUINE
    cache_store = handler._WARM.workers[str(lambda_env.root)].store
    cached = cache_store.blob_path(victim)
    assert cached.read_bytes() == GENUINE
    # Make the worker trust what it verified at once (no racy window), so this test
    # proves the stat memo catches the rewrite, not just the freshness of the blob.
    cache_store.verified = VerifiedBlobs(racy_window_ns=0)
    cache_store.verify_for_use(victim)
    assert cache_store.verified.trusts(victim, os.lstat(cached))

    # 2. Another invocation on the same worker rewrites the cached blob.
    answer = handle(event_for(s3_uri, client_store, [attack]), None)
    assert answer["results"][0]["status"] == "ok"
    assert cached.read_bytes() == POISON  # the attack itself worked: the cache was reachable

    # 3. The next thunk that needs the blob gets the genuine bytes (fetched again).
    answer = handle(event_for(s3_uri, client_store, [second]), None)
    assert output_of(answer, boto3_s3, config, second) == GENUINE * 2
    assert cached.read_bytes() == GENUINE


def test_concurrent_poisoning_fails_the_victim_instead_of_reporting_success(
        s3_uri, client_store, lambda_env, boto3_s3, monkeypatch, tmp_path):  # noqa: F811
    """A thunk that rewrites another running thunk's input: the victim's result is not
    trusted (its inputs are verified again after it ran)."""
    monkeypatch.setenv("GG_THUNK_PARALLELISM", "2")
    sh = ShellThunks(client_store)
    victim = client_store.put_bytes(GENUINE)
    # The victim reads its input only after the attacker has rewritten it.
    started, poisoned = tmp_path / "started", tmp_path / "poisoned"
    slow_reader = sh.thunk(f"touch {started}; while [ ! -e {poisoned} ]; do sleep 0.05; done; cat in > out",
                           values={"in": GENUINE.decode()}, timeout_ms=60_000)
    path = f'"$GG_DIR/../../../blobs/{victim}"'
    attack = sh.thunk(f"while [ ! -e {started} ]; do sleep 0.05; done; "
                      f"chmod u+w {path} && printf '{POISON.decode()[:-1]}\\n' > {path}; touch {poisoned}; echo > out",
                      timeout_ms=60_000)
    upload_inputs(s3_uri, client_store, [slow_reader, attack])
    answer = handle(event_for(s3_uri, client_store, [slow_reader, attack]), None)
    result = next(r for r in answer["results"] if r["id"] == slow_reader)
    assert result["status"] != "ok", result
    assert "was modified in the store while the function ran" in result["error"]


def test_case_11_through_the_local_lambda_endpoint(tmp_path, s3_uri, lambda_endpoint_factory):
    """The same attack through gg-force, the Invoke API and one warm awslambdaric worker
    (so every invocation lands on the poisoned cache): each run is a separate gg-force."""
    from tests.test_lambda_force import make_client

    endpoint = lambda_endpoint_factory(workers=1)
    client = make_client(tmp_path / "user", s3_uri, endpoint.url)
    sh = ShellThunks(client.store)
    genuine = os.urandom(48 << 10)  # large enough to travel through S3, not inline
    victim = client.store.put_bytes(genuine)
    first = sh.thunk("cksum < in > out", values={"in": genuine})
    path = f'"$GG_DIR/../../../blobs/{victim}"'
    # Fails (and the test with it) unless the cached blob was really there to rewrite.
    attack = sh.thunk(f"chmod u+w {path} && head -c {len(genuine)} /dev/zero > {path} && chmod a-w {path} && "
                      "echo done > out")
    second = sh.thunk("cksum < in > out; echo again >> out", values={"in": genuine})

    one = client.force("--print", first)
    assert one.returncode == 0, one.stderr + endpoint.log()[-3000:]
    expected = client.value(one, first)
    poisoned = client.force("--print", attack)
    assert poisoned.returncode == 0, poisoned.stderr
    two = client.force("--print", second)
    assert two.returncode == 0, two.stderr + endpoint.log()[-3000:]
    assert client.value(two, second) == expected + b"again\n"


def test_cases_9_and_10_on_the_handler_nothing_outside_is_touched(s3_uri, client_store, lambda_env,  # noqa: F811
                                                                   tmp_path):
    outside = tmp_path / "some" / "dir"
    outside.mkdir(parents=True)
    (outside / "secret.txt").write_text("do not move me\n")
    sh = ShellThunks(client_store)
    behind_link = sh.thunk(f"ln -s {outside} d", outputs=("d/secret.txt",))
    gg_dir_link = sh.thunk(f'rm -rf "$GG_DIR"; ln -s {outside} "$GG_DIR"; echo > out')
    upload_inputs(s3_uri, client_store, [behind_link, gg_dir_link])
    answer = handle(event_for(s3_uri, client_store, [behind_link, gg_dir_link]), None)
    results = {r["id"]: r for r in answer["results"]}
    assert results[behind_link]["status"] == "execution_failed"
    assert "output 'd/secret.txt' was not collected: 'd' is a symbolic link" in results[behind_link]["error"]
    assert results[gg_dir_link]["status"] == "execution_failed"
    assert "'gg' is a symbolic link" in results[gg_dir_link]["error"]
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "do not move me\n"
