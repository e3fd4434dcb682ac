"""Thunks: canonical serialization, round trips, and every rejection with its message."""

from __future__ import annotations

import filecmp
import random
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ir
from ir.ids import Kind, make_id
from ir.thunk import MAGIC, Input, Link, MalformedThunk, Resources, Thunk, parse_thunk

HEX = "0123456789abcdef"


def vid(n: int, size: int = 10) -> str:
    return make_id(Kind.VALUE, f"{n:032x}", size)


def tid(n: int, size: int = 0xA5) -> str:
    return make_id(Kind.THUNK, f"{n:032x}", size)


SH = vid(1, 0x1000)


def base(**changes) -> Thunk:
    thunk = Thunk(
        function_hash=SH,
        args=("sh", "-c", "cat in > out"),
        outputs=("out",),
        values=(Input(vid(2), "in"),),
        thunks=(Input(tid(3) + "#obj", "dep.o"),),
        executables=(Input(SH, "sh"),),
    )
    return replace(thunk, **changes)


# -- hypothesis strategies ----------------------------------------------------------------

digests = st.text(HEX, min_size=32, max_size=32)
sizes = st.integers(0, 2**40)
value_ids = st.builds(lambda d, s: make_id(Kind.VALUE, d, s), digests, sizes)
thunk_ids = st.builds(lambda d, s: make_id(Kind.THUNK, d, s), digests, sizes)
tags = st.from_regex(r"[A-Za-z0-9_.+\-]{1,8}(/[A-Za-z0-9_+\-]{1,8})?", fullmatch=True).filter(
    lambda t: all(part not in (".", "..") for part in t.split("/"))
)
names = st.from_regex(r"[a-z0-9_]{1,6}(/[a-z0-9_.]{1,6}){0,2}", fullmatch=True)
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
envar_names = st.from_regex(r"[A-Z_]{1,5}", fullmatch=True)


@st.composite
def thunks(draw) -> Thunk:
    """Random valid thunks; input names are unique so no two refs share a name."""
    function = draw(value_ids)
    pool = iter(draw(st.lists(names, min_size=12, max_size=12, unique=True)))
    values = [Input(r, draw(st.sampled_from(["", next(pool)]))) for r in draw(st.lists(value_ids, max_size=4))]
    thunk_refs = draw(st.lists(st.tuples(thunk_ids, st.none() | tags), max_size=3))
    thunk_inputs = [Input(r if t is None else f"{r}#{t}", next(pool)) for r, t in thunk_refs]
    executables = [Input(function, next(pool))] + [Input(r) for r in draw(st.lists(value_ids, max_size=2))]
    # A link may only name an input (see validate_links); "@" is in no input name or output tag.
    named = sorted({i.name for i in (*values, *thunk_inputs, *executables) if i.name})
    links = [Link(f"link@{n}", draw(st.sampled_from(named))) for n in range(draw(st.integers(0, 2)))]
    return Thunk(
        function_hash=function,
        args=tuple(draw(st.lists(text, min_size=1, max_size=4))),
        outputs=tuple(draw(st.lists(tags, min_size=1, max_size=4, unique=True))),
        envars=tuple(f"{k}={v}" for k, v in draw(st.lists(st.tuples(envar_names, text), max_size=3))),
        values=tuple(values),
        thunks=tuple(thunk_inputs),
        executables=tuple(executables),
        timeout_ms=draw(st.integers(0, 2**64 - 1)),
        links=tuple(links),
        resources=Resources(draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 64)), draw(st.integers(0, 2**50))),
    )


@settings(max_examples=100, deadline=None)
@given(thunk=thunks(), seed=st.integers(0, 2**32))
def test_canonical_order_and_round_trip(thunk, seed):
    shuffle = random.Random(seed)

    def shuffled(items):
        items = list(items)
        shuffle.shuffle(items)
        return tuple(items)

    data = thunk.serialize()
    other = replace(
        thunk,
        values=shuffled(thunk.values),
        thunks=shuffled(thunk.thunks),
        executables=shuffled(thunk.executables),
        links=shuffled(thunk.links),
    )
    assert other.serialize() == data
    assert other.id == thunk.id
    parsed = parse_thunk(data, expected_id=thunk.id)
    assert parsed == thunk.canonical()
    assert parsed.serialize() == data  # serialize -> parse -> serialize is the identity
    assert parsed.id == thunk.id


@settings(max_examples=50, deadline=None)
@given(thunk=thunks())
def test_order_sensitive_fields_keep_their_order(thunk):
    """args, outputs and envars mean something in order; they are never sorted."""
    if len(set(thunk.outputs)) > 1:
        flipped = replace(thunk, outputs=tuple(reversed(thunk.outputs)))
        assert flipped.id != thunk.id  # first output is the default one
        assert parse_thunk(flipped.serialize()).outputs == flipped.outputs


def test_duplicate_inputs_collapse():
    thunk = base(values=(Input(vid(2), "in"), Input(vid(2), "in")))
    assert thunk.serialize() == base().serialize()


def test_file_starts_with_magic_and_is_deterministic():
    data = base().serialize()
    assert data.startswith(MAGIC) and MAGIC == b"##GGTHUNK##"
    assert base().serialize() == data
    assert base().id.startswith("Tx")


def test_resources_absent_when_unset():
    """A thunk without gg-py additions encodes exactly as gg's message layout would."""
    from ir import thunk_pb2

    msg = thunk_pb2.Thunk()
    msg.ParseFromString(base().serialize()[len(MAGIC):])
    assert not msg.HasField("resources")
    with_hint = parse_thunk(base(resources=Resources(memory_mib=3008, cpus=2)).serialize())
    assert with_hint.resources == Resources(memory_mib=3008, cpus=2)


# -- rejections ---------------------------------------------------------------------------

REJECTIONS = [
    (dict(function_hash=""), "thunk has no function"),
    (dict(function_hash="nothex"), "function: malformed ID 'nothex'"),
    (dict(function_hash=tid(9)), "function hash names a thunk, not an executable value"),
    (dict(function_hash=vid(8)), f"function {vid(8)} is not among the executables"),
    (dict(args=()), "thunk has no args"),
    (dict(outputs=()), "thunk has no outputs"),
    (dict(executables=()), "thunk has no executables"),
    (dict(outputs=("out", "log", "out")), "duplicate output tag 'out'"),
    (dict(outputs=("../out",)), "output tag '../out' must be a plain relative path"),
    (dict(outputs=("/out",)), "output tag '/out' must be a plain relative path"),
    (dict(outputs=("a b",)), "invalid output tag 'a b'"),
    (dict(envars=("NOEQUALS",)), "environment entry 'NOEQUALS' is not NAME=VALUE"),
    (dict(envars=("=x",)), "environment entry '=x' is not NAME=VALUE"),
    (dict(values=(Input(vid(2), "/etc/passwd"),)), "values: input name '/etc/passwd' is absolute"),
    (dict(values=(Input(vid(2), "../x"),)), "values: input name '../x' escapes the work directory"),
    (dict(values=(Input(vid(2), "a/../../x"),)), "values: input name 'a/../../x' escapes the work directory"),
    (dict(values=(Input(vid(2), "a\0b"),)), "contains a NUL byte"),
    (dict(thunks=(Input(tid(3), "../dep"),)), "thunks: input name '../dep' escapes the work directory"),
    (dict(executables=(Input(SH, "/bin/sh"),)), "executables: input name '/bin/sh' is absolute"),
    (dict(values=(Input("Vxbad_1", "in"),)), "values: ID 'Vxbad_1' has a 3-character digest, expected 32"),
    (dict(values=(Input("Vx" + "0" * 32 + "_01", "in"),)), "values: malformed ID"),
    (dict(thunks=(Input("T" + "x" * 33 + "_1", "d"),)), "thunks: malformed ID"),
    (dict(executables=(Input(SH, "sh"), Input("V", "e"))), "executables: malformed ID 'V'"),
    (dict(thunks=(Input(tid(3) + "#../x", "d"),)), "output tag '../x' must be a plain relative path"),
    (dict(values=(Input(tid(4), "in"),)), f"input {tid(4)}=in is listed as a value but is not one"),
    (dict(executables=(Input(SH, "sh"), Input(tid(4), "t"))), "is listed as a value but is not one"),
    (dict(thunks=(Input(vid(5), "dep"),)), f"input {vid(5)}=dep is listed as a thunk but is not one"),
    (dict(values=(Input(vid(2), "sh"),)), f"input name 'sh' is given to both {vid(2)} and {SH}"),
    (dict(links=(Link("/abs", "x"),)), "input name '/abs' is absolute"),
    (dict(links=(Link("../l", "x"),)), "input name '../l' escapes the work directory"),
    (dict(links=(Link("d", "/some/dir"),)), "link 'd' -> '/some/dir': absolute target"),
    (dict(links=(Link("d", "../x"),)), "link 'd' -> '../x': target leaves the work directory"),
    (dict(links=(Link("a/d", "../../in"),)), "target leaves the work directory"),
    (dict(links=(Link("d", "."),)), "target is the work directory itself"),
    (dict(links=(Link("d", "nothing"),)), "link 'd' -> 'nothing' names no input"),
    (dict(links=(Link("d", "in"),), outputs=("d/secret.txt",)), "output 'd/secret.txt' lies behind link 'd'"),
    (dict(links=(Link("a", "in"), Link("a/planted", "../in"))), "link 'a/planted' lies behind link 'a'"),
    (dict(links=(Link("d", "in"),), values=(Input(vid(2), "d/x"),)), "input 'd/x' lies behind link 'd'"),
    (dict(links=(Link("d", "in"),), outputs=("d",)), "output 'd' is also a link"),
    (dict(links=(Link("d", "sh"), Link("e", "d/../in"))), "link 'e' -> 'd/../in': target goes through link 'd'"),
    (dict(timeout_ms=-1), "timeout -1 is out of range"),
    (dict(timeout_ms=2**64), "is out of range"),
    (dict(resources=Resources(memory_mib=2**32)), "memory hint 4294967296 is out of range"),
    (dict(resources=Resources(cpus=-2)), "cpus hint -2 is out of range"),
    (dict(resources=Resources(disk_mib=1.5)), "disk hint 1.5 is not an integer"),
]


@pytest.mark.parametrize(("changes", "message"), REJECTIONS, ids=[m for _, m in REJECTIONS])
def test_invalid_thunk_rejected_on_serialize(changes, message):
    with pytest.raises(MalformedThunk, match=re.escape(message)):
        base(**changes).serialize()


def _encode_unchecked(thunk: Thunk) -> bytes:
    """Bytes of a thunk file that skips validation: what a buggy or hostile writer makes."""
    return MAGIC + thunk.to_proto().SerializeToString(deterministic=True)


PARSEABLE = [(c, m) for c, m in REJECTIONS if not any(k in ("timeout_ms", "resources") for k in c)]


@pytest.mark.parametrize(("changes", "message"), PARSEABLE, ids=[m for _, m in PARSEABLE])
def test_invalid_thunk_rejected_on_parse(changes, message):
    data = _encode_unchecked(base(**changes))
    with pytest.raises(MalformedThunk, match=r"^in\.thunk: .*" + re.escape(message)) as info:
        parse_thunk(data, where="in.thunk")
    assert "\n" not in str(info.value)


def test_truncated_files_rejected_at_every_cut():
    full = base(
        envars=("A=1",),
        timeout_ms=5000,
        links=(Link("l", "in"),),
        resources=Resources(memory_mib=512),
    )
    data, ident = full.serialize(), full.id
    for cut in range(len(data)):
        with pytest.raises(MalformedThunk, match=r"^x: truncated thunk file"):
            parse_thunk(data[:cut], where="x", expected_id=ident)
    # Without the ID, a cut inside a field is still seen as truncated; a cut inside
    # the header is named as such.
    for cut in (3, len(MAGIC) + 5, len(data) - 5):
        with pytest.raises(MalformedThunk, match="truncated"):
            parse_thunk(data[:cut], where="x")


def test_corrupt_file_with_known_id_rejected():
    data = bytearray(base().serialize())
    data[-2] ^= 0x01
    with pytest.raises(MalformedThunk, match=f"content hashes to .*, not {re.escape(base().id)}"):
        parse_thunk(bytes(data), expected_id=base().id)
    with pytest.raises(MalformedThunk, match="is a value ID, not a thunk ID"):
        parse_thunk(base().serialize(), expected_id=vid(1))


@pytest.mark.parametrize(
    "data",
    [b"", b"#!/bin/sh\necho hi\n", b"\x7fELF\x02\x01\x01", b"##GGTHUNX##" + b"\x00" * 20, b"hello"],
)
def test_foreign_files_rejected(data):
    with pytest.raises(MalformedThunk, match=r"^f: (not a thunk file \(no ##GGTHUNK## header\)|truncated)"):
        parse_thunk(data, where="f")


def test_garbage_after_magic_rejected():
    with pytest.raises(MalformedThunk, match="truncated or corrupt thunk encoding"):
        parse_thunk(MAGIC + b"\xff\xff\xff\xff", where="g")
    with pytest.raises(MalformedThunk, match="thunk has no function"):
        parse_thunk(MAGIC, where="g")


def test_input_parse():
    assert Input.parse(f"{vid(1)}=a/b") == Input(vid(1), "a/b")
    assert Input.parse(f"{tid(1)}#x=y") == Input(f"{tid(1)}#x", "y")
    assert Input.parse(vid(1)) == Input(vid(1))
    with pytest.raises(MalformedThunk, match="empty input name"):
        Input.parse(f"{vid(1)}=")


# -- generated protobuf freshness ---------------------------------------------------------

@pytest.mark.parametrize("name", ["thunk", "execution"])
def test_generated_protobuf_is_fresh(tmp_path: Path, name: str):
    """The committed ir/NAME_pb2.py (and its .pyi, which the type check reads) must be
    what grpc_tools makes of ir/NAME.proto."""
    package = Path(ir.__file__).parent
    (tmp_path / f"{name}.proto").write_bytes((package / f"{name}.proto").read_bytes())
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path}", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", f"{name}.proto"],
        check=True,
        cwd=tmp_path,
    )
    for generated in (f"{name}_pb2.py", f"{name}_pb2.pyi"):
        assert filecmp.cmp(tmp_path / generated, package / generated, shallow=False), (
            f"ir/{generated} is stale: regenerate with "
            f"(cd ir && python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. {name}.proto)"
        )
