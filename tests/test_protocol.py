"""The wire protocol (executor/protocol.py, ir/execution.proto): what goes over the wire
round-trips exactly, anything else is refused with one line; and the layering it
allows (lambda_handler -> executor, never back)."""

from __future__ import annotations

import ast
import base64
import json
from pathlib import Path

import pytest

from executor import protocol
from executor.protocol import ExecutionRequest, ExecutionResponse, ProtocolError, VersionMismatch

REPO = Path(__file__).resolve().parent.parent


def request() -> ExecutionRequest:
    return ExecutionRequest(
        version=protocol.EVENT_VERSION, storage="s3://bucket/prefix?region=eu-west-1",
        thunks=[ExecutionRequest.Thunk(id="Tx1_1", data=bytes(range(256)), timeout=2.5),
                ExecutionRequest.Thunk(id="Tx2_1", data=b"##GGTHUNK##\x00")],
        blobs=[protocol.Blob(id="Vx3_0", data=b""), protocol.Blob(id="Vx4_3", data=b"\xff\x00\n")],
        inline_values=65536,
    )


def response() -> ExecutionResponse:
    Result = ExecutionResponse.Result
    return ExecutionResponse(version=protocol.EVENT_VERSION, results=[
        Result(id="Tx1_1", status=protocol.OK, duration=0.25,
               outputs=[ExecutionResponse.Output(tag="out", id="Vx5_0", executable=True, data=b""),
                        ExecutionResponse.Output(tag="big", id="Vx6_99999")],
               created=[ExecutionResponse.Created(id="Tx7_3", data=b"abc")]),
        Result(id="Tx2_1", status=protocol.EXECUTION_FAILED, error="exit status 3", stderr_tail="broken\n"),
        Result(id="Tx8_1", status=protocol.MISSING_INPUT, error="1 input(s) missing", missing=["Vx9_4"]),
    ])


def test_request_round_trips_with_base64_bytes_and_optional_fields():
    payload = protocol.encode(request())
    obj = json.loads(payload)
    assert obj["version"] == protocol.EVENT_VERSION
    assert base64.b64decode(obj["thunks"][0]["data"]) == bytes(range(256))  # standard base64, as before
    assert obj["thunks"][0]["timeout"] == 2.5 and "timeout" not in obj["thunks"][1]  # absent: no default sent
    assert obj["blobs"][0] == {"id": "Vx3_0", "data": ""}  # an empty blob is still inline
    assert protocol.decode_request(payload) == request()
    assert protocol.decode_request(payload.decode()) == request()
    assert protocol.decode_request(obj) == request()  # what the Lambda runtime hands the handler


def test_response_round_trips_and_inline_presence_survives():
    obj = protocol.to_dict(response())
    out, big = obj["results"][0]["outputs"]
    assert out["data"] == "" and "data" not in big  # empty inline blob vs. "in storage"
    assert [r["status"] for r in obj["results"]] == ["ok", "execution_failed", "missing_input"]
    assert obj["results"][1]["error"] == "exit status 3" and obj["results"][0]["error"] == ""
    decoded = protocol.decode_response(json.dumps(obj).encode())
    assert decoded == response()
    assert decoded.results[0].outputs[0].HasField("data") and not decoded.results[0].outputs[1].HasField("data")


def test_every_status_has_its_wire_name():
    names = {protocol.status_name(s) for s in (protocol.OK, protocol.EXECUTION_FAILED, protocol.RESOURCE_EXHAUSTED,
                                               protocol.CONFIG_ERROR, protocol.MISSING_INPUT,
                                               protocol.INFRASTRUCTURE_ERROR)}
    assert names == {"ok", "execution_failed", "resource_exhausted", "config_error", "missing_input",
                     "infrastructure_error"}


@pytest.mark.parametrize("version", [None, 0, 2, "1"])
def test_another_version_is_refused_as_a_mismatch(version):
    obj = protocol.to_dict(request())
    obj["version"] = version
    if version is None:
        del obj["version"]
    with pytest.raises(VersionMismatch, match=f"request has protocol version {version!r}; this side speaks 1"):
        protocol.decode_request(obj)
    with pytest.raises(VersionMismatch, match="answer has protocol version"):
        protocol.decode_response({**protocol.to_dict(response()), "version": version})


@pytest.mark.parametrize("payload, message", [
    (b"{not json", "malformed request: not JSON"),
    (b"[1, 2]", "a JSON object expected, not list"),
    (b"null", "a JSON object expected, not NoneType"),
    (b'{"version": 1, "thunks": [{"id": "T", "data": "AA=="}], "extra": 1}', 'no field named "extra"'),
    (b'{"version": 1, "thunks": [{"id": "T", "data": "x"}]}', "Invalid base64-encoded string"),
    (b'{"version": 1, "thunks": [{"id": "T", "dta": "AA=="}]}', 'no field named "dta"'),
    (b'{"version": 1, "thunks": {"id": "T"}}', "thunks"),
    (b'{"version": 1, "thunks": [{"data": "AA=="}]}', "a thunk without an id"),
    (b'{"version": 1, "inline_values": -1}', "inline_values"),
])
def test_malformed_requests_are_one_line_errors(payload, message):
    with pytest.raises(ProtocolError) as caught:
        protocol.decode_request(payload)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("result, message", [
    ({"id": "T"}, "the result for T has no status"),
    ({"id": "T", "status": "maybe"}, "Invalid enum value maybe"),
    ({"id": "T", "status": "ok", "outputs": [{"tag": "out", "id": "V", "data": 5}]}, "data"),
    ({"id": "T", "status": "ok", "duration": "fast"}, "duration"),
])
def test_malformed_answers_are_one_line_errors(result, message):
    with pytest.raises(ProtocolError) as caught:
        protocol.decode_response({"version": 1, "results": [result]})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_oversize_payloads_are_refused_both_ways():
    huge = ExecutionRequest(version=1, blobs=[protocol.Blob(id="V", data=b"x" * (protocol.MAX_PAYLOAD * 3 // 4))])
    with pytest.raises(ProtocolError, match="ExecutionRequest of .* bytes is over the 6291456-byte payload limit"):
        protocol.encode(huge)
    with pytest.raises(ProtocolError, match="answer of .* bytes is over the 6291456-byte payload limit"):
        protocol.decode_response(b" " * (protocol.MAX_PAYLOAD + 1))


def test_budgets_fit_the_limit():
    """What the client packs (thunks + inline inputs) and what the worker sends back
    inline leave room for the JSON around them under Lambda's limit."""
    assert protocol.REQUEST_BUDGET < protocol.MAX_PAYLOAD
    assert protocol.ANSWER_INLINE_BUDGET < protocol.MAX_PAYLOAD - (1 << 20)
    data = b"\x01" * 3000
    blob = protocol.Blob(id="Vx" + "f" * 32 + "_bb8", data=data)
    encoded = protocol.encode(ExecutionRequest(version=1, blobs=[blob]))
    assert len(encoded) <= protocol.inline_size(data) + 50


# -- layering ---------------------------------------------------------------------------------------

def _imported_packages(package: str) -> dict[str, set[str]]:
    """Module path -> top-level first-party packages it imports (lazy imports included)."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        tops: set[str] = set()
        for node in ast.walk(ast.parse(path.read_bytes())):
            if isinstance(node, ast.Import):
                tops.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO))] = tops
    return found


def test_executor_never_imports_lambda_handler():
    """The handler builds on executor (protocol, worker core); executor knows the
    handler only by name (the string lambda_local's workers run), never by import."""
    offenders = {path for path, tops in _imported_packages("executor").items() if "lambda_handler" in tops}
    assert not offenders, f"executor modules import lambda_handler: {sorted(offenders)}"
    handler_imports = set().union(*_imported_packages("lambda_handler").values())
    assert "executor" in handler_imports  # the one direction, and it is used


def test_engine_and_handler_share_the_protocol_and_the_worker_core():
    """No second definition of the version, the payload limit or the statuses."""
    for path in ("executor/lambda_engine.py", "lambda_handler/handler.py", "executor/worker.py"):
        source = (REPO / path).read_text()
        assert "EVENT_VERSION =" not in source and "6_291_456" not in source and "b64encode" not in source, path
    assert "executor.protocol" in (REPO / "executor/lambda_engine.py").read_text() or \
        "from . import protocol" in (REPO / "executor/lambda_engine.py").read_text()
    handler = (REPO / "lambda_handler/handler.py").read_text()
    assert "from executor.worker import" in handler and "from executor import protocol" in handler
