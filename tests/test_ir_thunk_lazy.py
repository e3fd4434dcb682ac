"""Lazily decoded thunks and the whole-list fast checks (ir/input_lists.py).

The fast checks may only *accept*: whatever they vouch for must pass the per-input
checks too, and what they do not vouch for is decided by the slow path. These tests
hold that against random and near-miss input lists, pin the IDs of known thunks (content
addressing: the encoding must never change), and check that a lazily decoded thunk is
indistinguishable from a constructed one.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ir.ids import Kind, id_of_bytes
from ir.input_lists import inputs_certainly_valid, tags_certainly_valid
from ir.store import LocalStore
from ir.thunk import MAGIC, Input, Link, MalformedThunk, Resources, Thunk, parse_thunk
from tests.test_ir_thunk import SH, base, thunks, tid, vid

# IDs computed by the encoder before lazy decoding existed (commit 03ed84c): they name
# thunks in existing stores and must never change.
GOLDEN = {
    "base": "Tx4eb2782e9ed35c73f6345196be8c489d_d7",
    "full": "Txc6fdac5689e4de337db58e050cf5ab5d_f9",
    "leaf": "Txb30ca509958ffe4a5bd05c307af418ff_6a",
    "group": "Tx01ced39833f5c55f1312b69c7803dee2_1251",
}


def golden_thunks() -> dict[str, Thunk]:
    return {
        "base": base(),
        "full": base(envars=("A=1", "B=x=y"), timeout_ms=5000, links=(Link("l", "in"),),
                     resources=Resources(memory_mib=512, cpus=2, disk_mib=7)),
        "leaf": Thunk(function_hash=SH, args=("f", "7"), outputs=("out",), executables=(Input(SH),)),
        "group": Thunk(function_hash=SH, args=("f", "group3"), outputs=("out", "log"),
                       thunks=tuple(Input(tid(k), f"in/{k}") for k in range(100)),
                       values=(Input(vid(77)), Input(vid(78), "z=1")), executables=(Input(SH, "sh"),)),
    }


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_ids_never_change(name):
    thunk = golden_thunks()[name]
    assert thunk.id == GOLDEN[name]
    data = thunk.serialize()
    assert id_of_bytes(data, Kind.THUNK) == GOLDEN[name]
    loaded = parse_thunk(data, expected_id=GOLDEN[name])
    assert loaded == thunk.canonical()
    assert loaded.serialize() == data and loaded.id == GOLDEN[name]
    assert replace(loaded, args=(*loaded.args, "x")).id != GOLDEN[name]  # a changed thunk is another


def test_loaded_thunk_decodes_the_rest_on_first_read():
    thunk = golden_thunks()["group"]
    loaded = parse_thunk(thunk.serialize())
    eager = {"function_hash", "outputs", "timeout_ms", "thunks"}
    assert eager <= set(vars(loaded)) and "values" not in vars(loaded) and "_data" in vars(loaded)
    assert loaded.executables == (Input(SH, "sh"),)  # one read decodes every remaining field
    assert "_data" not in vars(loaded) and {"args", "envars", "values", "links", "resources"} <= set(vars(loaded))
    assert loaded.values == (Input(vid(77)), Input(vid(78), "z=1"))
    # A second thread that looked the field up before the first finished decoding finds it done.
    assert vars(Thunk)["values"].__get__(loaded, Thunk) is loaded.values
    assert loaded.resources == Resources() and not loaded.links
    assert loaded == thunk.canonical() and hash(loaded) == hash(thunk.canonical())


def test_loaded_thunk_behaves_like_a_constructed_one():
    thunk = golden_thunks()["full"]
    loaded = parse_thunk(thunk.serialize())
    fresh = parse_thunk(thunk.serialize())
    assert hash(fresh) == hash(thunk.canonical())  # hashing decodes, and agrees
    assert pickle.loads(pickle.dumps(parse_thunk(thunk.serialize()))) == thunk.canonical()
    assert repr(loaded) == repr(thunk.canonical())
    changed = replace(parse_thunk(thunk.serialize()), timeout_ms=7)
    assert changed.timeout_ms == 7 and changed.links == thunk.links and changed.envars == thunk.envars
    with pytest.raises(AttributeError):
        loaded.outputs = ("other",)  # type: ignore[misc]  # still frozen
    assert Thunk(SH, ("a",), ("out",), executables=(Input(SH),)).values == ()  # defaults intact


def test_the_fast_path_is_taken_for_ordinary_thunks():
    """Without links and with distinct names, a valid thunk is vouched for (so loading
    does not silently fall back to the slow path for every thunk)."""
    for name in ("base", "leaf", "group"):
        loaded = parse_thunk(golden_thunks()[name].serialize())
        assert "_data" in vars(loaded), name
    assert "_data" not in vars(parse_thunk(golden_thunks()["full"].serialize()))  # links: the full checks


# -- the fast checks never accept what the slow path refuses ------------------------------

def slow_accepts(thunk: Thunk) -> bool:
    try:
        thunk.canonical().validate()
    except MalformedThunk:
        return False
    return True


def fast_accepts(thunk: Thunk) -> bool:
    def encoded(items):
        return [f"{i.ref}={i.name}" if i.name else i.ref for i in items]

    return inputs_certainly_valid(thunk.function_hash, encoded(thunk.values), encoded(thunk.thunks),
                                  encoded(thunk.executables)) and tags_certainly_valid(thunk.outputs)


# Near misses: pieces of valid references and names, glued at random.
PIECES = ["V", "T", "x", "y", "0", "1", "a", "f", "_", "#", "=", "/", ".", "..", "\0", "\n", "out", "0" * 32,
          "a" * 31, vid(1), tid(2), SH, "=in", "#out", "/", "in/", "../", "./"]
near_misses = st.lists(st.sampled_from(PIECES), min_size=0, max_size=6).map("".join)
near_refs = st.one_of(st.sampled_from([vid(1), vid(2), tid(2), SH, tid(3) + "#out", tid(3) + "#a/b"]), near_misses)
near_names = st.lists(st.sampled_from(["a", "..", ".", "", "\0", "\n", "=", "b c", "/", "in"]), min_size=1,
                      max_size=3).map("/".join)
near_inputs = st.one_of(near_misses, st.builds(lambda r, n: f"{r}={n}", near_refs, near_names), near_refs)


@st.composite
def mutated_thunks(draw) -> Thunk:
    """A valid thunk (links dropped: they always take the slow path) with one input or
    output tag changed into a near miss: a piece inserted, or a name or reference swapped."""
    thunk = replace(draw(thunks()), links=())
    which = draw(st.sampled_from(["values", "thunks", "executables", "outputs"]))
    texts = [str(item) for item in getattr(thunk, which)] if which != "outputs" else list(thunk.outputs)
    index = draw(st.integers(0, len(texts)))
    original = texts[index] if index < len(texts) else draw(near_refs)
    how = draw(st.sampled_from(["insert", "name", "ref", "piece"]))
    if how == "insert":
        at = draw(st.integers(0, len(original)))
        text = original[:at] + draw(st.sampled_from(PIECES)) + original[at:]
    elif how == "name":
        text = original.partition("=")[0] + "=" + draw(near_names)
    elif how == "ref":
        ref, sep, name = original.partition("=")
        text = draw(near_refs) + sep + name
    else:
        text = draw(near_misses)
    texts[index:index + 1] = [text]
    if which == "outputs":
        return replace(thunk, outputs=tuple(texts))
    return replace(thunk, **{which: tuple(Input(*t.partition("=")[::2]) for t in texts)})


@settings(max_examples=300, deadline=None)
@given(thunk=mutated_thunks())
def test_fast_checks_accept_only_what_the_slow_path_accepts(thunk):
    if fast_accepts(thunk):
        assert slow_accepts(thunk), thunk
    # Whatever the checks say, serializing and parsing agree with the slow path.
    if slow_accepts(thunk):
        assert parse_thunk(thunk.serialize()) == thunk.canonical()
    else:
        with pytest.raises(MalformedThunk):
            thunk.serialize()


@settings(max_examples=100, deadline=None)
@given(thunk=thunks())
def test_fast_checks_vouch_for_valid_thunks(thunk):
    assert fast_accepts(thunk)
    loaded = parse_thunk(thunk.serialize())
    assert ("_data" in vars(loaded)) == (not thunk.links)
    assert loaded == thunk.canonical()


@pytest.mark.parametrize("text", [
    "Vx" + "0" * 32 + "_5=a\0" + vid(2),  # a NUL in a name must not read as two inputs
    vid(2) + "=a/../../b", vid(2) + "=..", vid(2) + "=/abs", vid(2) + "=", vid(2) + "#tag",
    "Vy" + "0" * 32 + "_5", "Vx" + "0" * 31 + "_5", vid(2) + "g", vid(2) + "\n", "Vx" + "0" * 32 + "_05",
])
def test_near_miss_values_go_to_the_slow_path(text):
    assert not inputs_certainly_valid(SH, [text], [], [SH])


@pytest.mark.parametrize("text", [tid(3) + "#..", tid(3) + "#a//b", tid(3) + "#/a", tid(3) + "#", tid(3) + "#a b",
                                  vid(3)])
def test_near_miss_thunk_refs_go_to_the_slow_path(text):
    assert not inputs_certainly_valid(SH, [], [text], [SH])


def test_function_must_be_one_of_the_executables_exactly():
    other = vid(9)
    assert inputs_certainly_valid(SH, [], [], [f"{SH}=sh"])
    assert not inputs_certainly_valid(other, [], [], [f"{SH}=sh"])
    assert not inputs_certainly_valid(SH[:-1], [], [], [SH])  # a prefix of an executable's ID
    assert not inputs_certainly_valid(f"{SH}\0{other}", [], [], [SH, other])  # two joined IDs
    assert not inputs_certainly_valid(tid(1), [], [], [tid(1)])


def test_same_name_twice_is_decided_by_the_slow_path():
    same = base(values=(Input(vid(2), "in"),), thunks=(), executables=(Input(SH, "sh"),))
    assert not inputs_certainly_valid(SH, [f"{vid(2)}=x", f"{vid(3)}=x"], [], [SH])
    with pytest.raises(MalformedThunk, match=re.escape(f"input name 'x' is given to both {vid(2)} and {vid(3)}")):
        replace(same, values=(Input(vid(2), "x"), Input(vid(3), "x"))).serialize()
    data = MAGIC + replace(same, values=(Input(vid(2), "in"), Input(vid(2), "in"))).to_proto().SerializeToString()
    assert parse_thunk(data).values == (Input(vid(2), "in"), Input(vid(2), "in"))  # allowed, as before


# -- the store reads a thunk sized by its ID ----------------------------------------------

def test_store_refuses_a_thunk_file_longer_or_shorter_than_its_id(tmp_path):
    store = LocalStore.init(tmp_path / ".gg")
    thunk = golden_thunks()["leaf"]
    ident = store.put_thunk(thunk)
    assert store.load_thunk(ident) == thunk.canonical()
    path = store.blob_path(ident)
    path.chmod(0o644)
    path.write_bytes(thunk.serialize() + b"\x00" * 70000)
    longer = len(thunk.serialize()) + 70000
    with pytest.raises(MalformedThunk, match=f"thunk {ident}: content hashes to Tx.*_{longer:x}, not"):
        store.load_thunk(ident)
    path.write_bytes(thunk.serialize()[:-1])
    with pytest.raises(MalformedThunk, match="truncated thunk file"):
        store.load_thunk(ident)
