"""Content IDs: format, known vectors (committed fixture), round trips, rejections."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from ir.ids import (
    InvalidId,
    Kind,
    ObjectId,
    Ref,
    id_of_bytes,
    make_id,
    parse_id,
    parse_ref,
    validate_tag,
)
from ir.thunk import Thunk, parse_thunk

VECTORS = json.loads((Path(__file__).parent / "fixtures" / "ir" / "id_vectors.json").read_text())
DIGEST = "0123456789abcdef0123456789abcdef"


def _expand(spec: dict) -> bytes:
    if "text" in spec:
        return spec["text"].encode()
    if "hex" in spec:
        return bytes.fromhex(spec["hex"])
    return bytes.fromhex(spec["repeat_hex"]) * spec["count"]


@pytest.mark.parametrize("vector", VECTORS["values"], ids=lambda v: v["label"])
def test_value_known_vectors(vector):
    data = _expand(vector)
    assert id_of_bytes(data, Kind.VALUE) == vector["id"]
    # The digest is plain XXH3-128 and the size is the byte count: nothing hidden.
    oid = parse_id(vector["id"])
    assert oid.digest == xxhash.xxh3_128(data).hexdigest()
    assert oid.size == len(data)


@pytest.mark.parametrize("vector", VECTORS["thunks"], ids=lambda v: v["label"])
def test_thunk_known_vectors(vector):
    from tests.fixtures.ir.generate_id_vectors import fixed_thunks

    thunk = dict(fixed_thunks())[vector["label"]]
    data = bytes.fromhex(vector["serialized_hex"])
    assert thunk.serialize() == data
    assert thunk.id == vector["id"]
    assert id_of_bytes(data, Kind.THUNK) == vector["id"]
    assert parse_thunk(data, expected_id=vector["id"]) == thunk.canonical()


def test_id_shape():
    ident = id_of_bytes(b"hello", Kind.VALUE)
    assert re.fullmatch(r"Vx[0-9a-f]{32}_5", ident)
    assert id_of_bytes(b"hello", Kind.THUNK)[0] == "T"
    assert id_of_bytes(b"hello", Kind.THUNK)[1:] == ident[1:]


@given(
    kind=st.sampled_from(list(Kind)),
    digest=st.text("0123456789abcdef", min_size=32, max_size=32),
    size=st.integers(min_value=0, max_value=2**80),
)
def test_format_parse_round_trip(kind, digest, size):
    text = make_id(kind, digest, size)
    oid = parse_id(text)
    assert oid == ObjectId(kind, "x", digest, size)
    assert str(oid) == text
    # Safe as a file name and an S3 key: only lowercase hex, V/T, x and '_'.
    assert re.fullmatch(r"[VT]x[0-9a-f]+_[0-9a-f]+", text)


def test_no_4gib_cap():
    big = 2**32 + 5
    text = make_id(Kind.VALUE, DIGEST, big)
    assert text.endswith("_100000005")
    assert parse_id(text).size == big
    huge = f"Vx{DIGEST}_{2**70:x}"
    assert parse_id(huge).size == 2**70
    assert str(parse_id(huge)) == huge


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty ID"),
        ("Xx" + DIGEST + "_5", "must start with V (value) or T (thunk)"),
        ("v" + "x" + DIGEST + "_5", "must start with V (value) or T (thunk)"),
        ("V", "second character must name the hash algorithm"),
        ("VX" + DIGEST + "_5", "second character must name the hash algorithm"),
        ("Vx" + DIGEST + "5", "no '_' before the size"),
        ("Vx" + DIGEST.upper() + "_5", "digest must be lowercase hex"),
        ("Vx" + DIGEST[:-1] + "g_5", "digest must be lowercase hex"),
        ("Vx_5", "digest must be lowercase hex"),
        ("Vx" + DIGEST + "_", "size must be lowercase hex"),
        ("Vx" + DIGEST + "_A", "size must be lowercase hex"),
        ("Vx" + DIGEST + "_-5", "size must be lowercase hex"),
        ("Vx" + DIGEST + "_05", "size has leading zeros"),
        ("Vx" + DIGEST + "_5\n", "size must be lowercase hex"),
        ("Vx" + DIGEST + "_5/../x", "size must be lowercase hex"),
        ("Vq" + DIGEST + "_5", "unknown hash algorithm 'q'"),
        ("Vx" + DIGEST[:-2] + "_5", "has a 30-character digest, expected 32"),
        ("Vx" + DIGEST + "00_5", "has a 34-character digest, expected 32"),
    ],
)
def test_malformed_ids_rejected_with_reason(text, message):
    with pytest.raises(InvalidId, match=re.escape(message)):
        parse_id(text)


def test_non_string_id_rejected():
    with pytest.raises(InvalidId, match="must be a string"):
        parse_id(b"Vx")  # type: ignore[arg-type]


def test_refs():
    thunk = make_id(Kind.THUNK, DIGEST, 9)
    value = make_id(Kind.VALUE, DIGEST, 9)
    assert parse_ref(thunk) == Ref(thunk)
    assert parse_ref(f"{thunk}#out/a.o") == Ref(thunk, "out/a.o")
    assert str(parse_ref(f"{thunk}#out/a.o")) == f"{thunk}#out/a.o"
    assert parse_ref(value) == Ref(value) and not parse_ref(value).is_thunk
    with pytest.raises(InvalidId, match="puts an output tag on a value ID"):
        parse_ref(f"{value}#x")
    with pytest.raises(InvalidId, match="invalid output tag ''"):
        parse_ref(f"{thunk}#")
    with pytest.raises(InvalidId, match="malformed ID"):
        parse_ref("nonsense#x")


@pytest.mark.parametrize("tag", ["out", "a.o", "dir/x_1+2-3", "lib/libx.so.1"])
def test_valid_tags(tag):
    assert validate_tag(tag) == tag


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("", "invalid output tag"),
        ("a b", "invalid output tag"),
        ("a=b", "invalid output tag"),
        ("x\n", "invalid output tag"),
        ("/abs", "must be a plain relative path"),
        ("../up", "must be a plain relative path"),
        ("a/../b", "must be a plain relative path"),
        ("a//b", "must be a plain relative path"),
        ("./a", "must be a plain relative path"),
    ],
)
def test_invalid_tags(tag, message):
    with pytest.raises(InvalidId, match=re.escape(message)):
        validate_tag(tag)


def test_thunk_id_is_hash_of_serialization():
    from tests.fixtures.ir.generate_id_vectors import fixed_thunks

    thunk: Thunk = dict(fixed_thunks())["full"]
    data = thunk.serialize()
    assert thunk.id == f"Tx{xxhash.xxh3_128(data).hexdigest()}_{len(data):x}"
