"""examples/cproject on Lambda: ``gg-infer make``, then ``gg-force --engine lambda`` with
the local endpoint's workers in the hidden-toolchain sandbox (no compiler, headers or
binutils where the thunks run), compared byte for byte with the local engine's build."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.aws_fixtures import FAKE_AWS_ENV
from tests.hidden_toolchain import hidden_command
from tests.test_infer_support import REPO, VENV_BIN, gg_force, gg_infer, hidden_ok, started_thunks, tool_env

pytestmark = [pytest.mark.timeout(400),
              pytest.mark.skipif(not hidden_ok(), reason="needs root and unshare -m for the hidden toolchain")]

TARGETS = ["app", "libutil.a", "main.o", "util.o", "strutil.o", "shapes.o", "backup/util.o"]


def _copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(REPO / "examples" / "cproject", target)
    return target


def _events(trace: Path) -> list[dict]:
    return [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]


def test_cproject_on_lambda_without_a_toolchain_matches_local(tmp_path, s3_uri, lambda_endpoint_factory):
    empty_dir, empty_file = tmp_path / "empty", tmp_path / "empty-file"
    empty_dir.mkdir()
    empty_file.write_bytes(b"")
    empty_file.chmod(0)
    sandbox = shlex.join(hidden_command([], str(empty_dir), str(empty_file)))
    endpoint = lambda_endpoint_factory(workers=2, function_timeout=120, extra=["--sandbox-command", sandbox])

    local, remote = _copy(tmp_path, "local"), _copy(tmp_path, "lambda")
    for tree in (local, remote):
        inferred = gg_infer(tree, "make", "-s")
        assert inferred.returncode == 0, inferred.stderr
    built = gg_force(local, TARGETS, tmp_path / "local.jsonl", hidden=False)
    assert built.returncode == 0, built.stderr

    env = {**tool_env(), **FAKE_AWS_ENV, "GG_STORAGE_URI": s3_uri, "GG_LAMBDA_ENDPOINT": endpoint.url,
           "GG_LAMBDA_FUNCTION": endpoint.function_name, "GG_LAMBDA_TIMEOUT": "120"}

    def force_on_lambda(trace: Path) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "gg-force"), "--engine", "lambda", "-q", "-j", "8",
                               "--trace", str(trace), *TARGETS], cwd=remote, env=env, capture_output=True,
                              text=True, timeout=300)

    trace = tmp_path / "lambda.jsonl"
    forced = force_on_lambda(trace)
    assert forced.returncode == 0, forced.stderr + endpoint.log()[-3000:]
    events = _events(trace)
    started = [e for e in events if e["event"] == "started"]
    assert started and {e["engine"] for e in started} == {"lambda"}, "a thunk ran outside the sandbox"
    assert not [e for e in events if e["event"] in ("fallback", "failed")]

    for name in TARGETS:
        assert (remote / name).read_bytes() == (local / name).read_bytes(), name
    ran = [subprocess.run(["./app"], cwd=tree, capture_output=True, text=True, check=True).stdout
           for tree in (local, remote)]
    assert ran[0] == ran[1] and ran[0]

    # A second run is all cache hits.
    again = tmp_path / "again.jsonl"
    assert gg_infer(remote, "make", "-s").returncode == 0
    rerun = force_on_lambda(again)
    assert rerun.returncode == 0, rerun.stderr
    assert started_thunks(again) == []
