"""The wire protocol to remote workers: messages, version, limits and statuses, once.

The messages are ``ExecutionRequest`` / ``ExecutionResponse`` in ``ir/execution.proto``
(commented field by field). This module is the only place that turns them into bytes
or back, for both sides: the Lambda engine (client) and the worker core behind the
Lambda handler.

Encoding: JSON, because Lambda's Invoke payload is JSON — protobuf's canonical JSON
mapping with the proto's own field names, ``bytes`` as standard base64 (as the hand-built
events were), every field without presence printed, absent optional ones left out. Base64
costs a third more bytes than binary, but it is what JSON can carry and what Lambda's
6 MiB limit is counted in; the budgets below are in encoded bytes.

Decoding is strict: the version must be :data:`EVENT_VERSION`, unknown fields and
unknown statuses are rejected (one version is one exact schema: a field a receiver
ignored would be silently wrong), and every problem is a :class:`ProtocolError` with
one line.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format

from ir import execution_pb2 as pb

ExecutionRequest = pb.ExecutionRequest
ExecutionResponse = pb.ExecutionResponse
Blob = pb.Blob
Status = pb.Status

EVENT_VERSION = 1

MAX_PAYLOAD = 6_291_456  # Lambda's synchronous Invoke limit, request and answer alike (6 MiB)
REQUEST_BUDGET = 5_500_000  # what the client packs into one request; JSON framing stays below the limit
ANSWER_INLINE_BUDGET = 4 << 20  # encoded bytes of inline blobs per answer; the rest goes to storage
ENTRY_OVERHEAD = 200  # an inline entry's JSON beyond its base64 (id, keys, punctuation), rounded up

# The module-level values, not Status.Value("ok"): same ints, but typed as Status.
OK = pb.ok
EXECUTION_FAILED = pb.execution_failed
RESOURCE_EXHAUSTED = pb.resource_exhausted
CONFIG_ERROR = pb.config_error
MISSING_INPUT = pb.missing_input
INFRASTRUCTURE_ERROR = pb.infrastructure_error


class ProtocolError(ValueError):
    """A message that is not a valid one of this version; the text is one line."""


class VersionMismatch(ProtocolError):
    """The peer speaks another protocol version: one side is out of date (redeploy)."""


def status_name(status: int) -> str:
    """``ok``, ``execution_failed`` ...: the name on the wire and in messages."""
    return Status.Name(status)


def base64_size(size: int) -> int:
    """Bytes ``size`` bytes take once base64-encoded."""
    return 4 * ((size + 2) // 3)


def inline_size(data: bytes | int) -> int:
    """Bytes an inline blob of ``data`` (or of that many bytes) adds to a message."""
    return base64_size(data if isinstance(data, int) else len(data)) + ENTRY_OVERHEAD


# -- encoding -----------------------------------------------------------------------------

def to_dict(message: ExecutionRequest | ExecutionResponse) -> dict[str, Any]:
    """The JSON object of ``message`` (what a Lambda handler returns; the runtime
    serializes it)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def encode(message: ExecutionRequest | ExecutionResponse) -> bytes:
    """The JSON payload of ``message``; over :data:`MAX_PAYLOAD` is a ProtocolError
    (Lambda would refuse it with a less useful error)."""
    payload = json.dumps(to_dict(message), separators=(",", ":")).encode()
    if len(payload) > MAX_PAYLOAD:
        kind = type(message).__name__
        raise ProtocolError(f"{kind} of {len(payload)} bytes is over the {MAX_PAYLOAD}-byte payload limit")
    return payload


# -- decoding -----------------------------------------------------------------------------

def decode_request(payload: bytes | str | dict) -> ExecutionRequest:
    """An ExecutionRequest from its JSON (bytes, text, or the object a Lambda runtime
    already parsed), checked: version, schema, at least an ID per thunk."""
    request = _decode(payload, ExecutionRequest(), "request")
    for thunk in request.thunks:
        if not thunk.id:
            raise ProtocolError("malformed request: a thunk without an id")
    return request


def decode_response(payload: bytes | str | dict) -> ExecutionResponse:
    """An ExecutionResponse from its JSON, checked: version, schema, a status for
    every result."""
    response = _decode(payload, ExecutionResponse(), "answer")
    for result in response.results:
        if result.status == Status.Value("status_unspecified"):
            raise ProtocolError(f"malformed answer: the result for {result.id or '?'} has no status")
    return response


def version_of(payload: object) -> object:
    """The ``version`` a JSON object claims (None if it is no object)."""
    return payload.get("version") if isinstance(payload, dict) else None


def _decode(payload: bytes | str | dict, message, what: str):
    if isinstance(payload, bytes | str):
        if len(payload) > MAX_PAYLOAD:
            raise ProtocolError(f"{what} of {len(payload)} bytes is over the {MAX_PAYLOAD}-byte payload limit")
        try:
            payload = json.loads(payload)
        except ValueError as exc:
            raise ProtocolError(f"malformed {what}: not JSON ({one_line(exc)})") from None
    if not isinstance(payload, dict):
        raise ProtocolError(f"malformed {what}: a JSON object expected, not {type(payload).__name__}")
    version = version_of(payload)
    if version != EVENT_VERSION:
        raise VersionMismatch(f"{what} has protocol version {version!r}; this side speaks {EVENT_VERSION}")
    try:
        json_format.ParseDict(payload, message)
    except (json_format.ParseError, ValueError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"malformed {what}: {one_line(exc).rstrip('.')}") from None
    return message


def one_line(exc: BaseException) -> str:
    """``Type: first line`` of an exception, for the ``error`` fields (always one line)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
