"""The Python SDK: thunks from decorated functions, deterministic IDs, and real runs.

Functions under test live in module files written into tmp_path (as a user's would),
and run through the real execution core; :func:`force_by_hand` is a deliberately tiny
sequential forcer (no scheduler) so these tests do not depend on it.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from executor.execution import ExecutionFailed, execute
from ir import sdk
from ir.store import LocalStore
from ir.thunk import Input, parse_thunk

RUNTIME_ENV = {"GG_PYTHON": sys.executable}
REPO = Path(__file__).resolve().parents[1]


async def force_by_hand(store: LocalStore, ref: str, runtime_env=None, counter: Counter | None = None) -> str:
    """Reduce ``ref`` to a value ID: inputs first, then run, then follow tail calls."""
    while ref[0] == "T":
        reduced = store.get_reduction(ref)
        if reduced is None:
            ident = ref.partition("#")[0]
            thunk = store.load_thunk(ident)
            values = list(thunk.values)
            for item in thunk.thunks:
                values.append(Input(await force_by_hand(store, item.ref, runtime_env, counter), item.name))
            ready = replace(thunk, values=tuple(values), thunks=())
            ready_id = store.put_thunk(ready)
            result = await execute(ready_id, ready, store, runtime_env=runtime_env or RUNTIME_ENV)
            if counter is not None:
                counter[ident] += 1
            for index, output in enumerate(result.outputs):
                for name in {ident, ready_id}:
                    store.put_reduction(name if index == 0 else f"{name}#{output.tag}", output.id)
            reduced = store.get_reduction(ref)
        ref = reduced
    return ref


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


FUNCS = '''
from __future__ import annotations
import json
from pathlib import Path
from ir.sdk import gg_function, Value


@gg_function
def describe(raw: bytes, text: str, number: int, path: Path, untyped, many: list[int], plain=3, *rest, **named):
    return {
        "raw": raw.decode(), "text": text, "number": number, "path": path.read_text(),
        "path_is_path": isinstance(path, Path), "untyped_is_path": isinstance(untyped, Path),
        "many": many, "plain": plain, "rest": list(rest), "named": named,
    }


@gg_function(outputs=("counts", "total"))
def split(words: str):
    counts = {}
    for word in words.split():
        counts[word] = counts.get(word, 0) + 1
    return {"counts": counts, "total": str(sum(counts.values()))}


@gg_function
def double(total: int) -> int:
    return 2 * total


@gg_function
def countdown(n: int, acc: int = 0):
    if n == 0:
        return acc
    return countdown(n - 1, acc + n)


@gg_function
def bad_tail():
    return split("a b")["total"]


@gg_function
def boom(n: int):
    raise RuntimeError(f"boom {n}")


@gg_function
def uses_extra():
    import gg_extra
    return gg_extra.VALUE


@gg_function
def raw_bytes():
    return b"\\x00\\x01"


@gg_function
def pass_through(data: Path):
    return data


@gg_function
def optional(value: int | None = None, pair: tuple[int, str] = (0, "")):
    return {"value": value, "pair_is_tuple": isinstance(pair, tuple), "pair": list(pair)}
'''


@pytest.fixture
def funcs(tmp_path):
    path = tmp_path / "funcs.py"
    path.write_text(FUNCS)
    return load_module(path, "sdk_test_funcs")


@pytest.fixture
def store(tmp_path):
    return LocalStore.init(tmp_path / ".gg")


# -- building thunks --------------------------------------------------------------------


def test_same_call_same_id_and_defaults_bound(funcs):
    assert funcs.countdown(3).id == funcs.countdown(3).id
    assert funcs.countdown(3).id == funcs.countdown(n=3).id == funcs.countdown(3, 0).id
    assert funcs.countdown(3).id != funcs.countdown(4).id
    assert funcs.countdown(3).id != funcs.double(3).id


def test_id_independent_of_location_and_module_name(funcs, tmp_path):
    elsewhere = tmp_path / "other" / "checkout"
    elsewhere.mkdir(parents=True)
    (elsewhere / "renamed.py").write_text(FUNCS)
    other = load_module(elsewhere / "renamed.py", "sdk_test_funcs_renamed")
    assert other.countdown(5).id == funcs.countdown(5).id


def test_id_same_in_another_process(tmp_path):
    (tmp_path / "funcs.py").write_text(FUNCS)
    script = "import funcs; print(funcs.countdown(7).id)"
    out = [subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          check=True).stdout.strip() for _ in range(2)]
    here = load_module(tmp_path / "funcs.py", "sdk_test_funcs_again")
    assert out[0] == out[1] == here.countdown(7).id


def test_changing_the_module_changes_the_id(funcs, tmp_path):
    (tmp_path / "changed.py").write_text(FUNCS + "\n# a comment\n")
    changed = load_module(tmp_path / "changed.py", "sdk_test_funcs_changed")
    assert changed.countdown(1).id != funcs.countdown(1).id


def test_save_round_trip(funcs, store, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("file content")
    handle = funcs.describe(b"raw", sdk.Value("text"), funcs.double(2), data, data, [1, 2])
    ref = sdk.save(handle, store, placeholder=tmp_path / "result")
    assert ref == handle.id
    loaded = store.load_thunk(handle.id)
    assert loaded == handle.thunk
    assert parse_thunk(store.read_bytes(handle.id)) == handle.thunk
    for item in (*loaded.values, *loaded.executables, *loaded.thunks):
        assert store.has(item.id), item
    assert store.blob_path(sdk.LAUNCHER_ID).stat().st_mode & 0o100
    assert [i.id for i in loaded.thunks] == [funcs.double(2).id]
    # the same file passed twice is one input
    names = {i.name for i in loaded.values}
    assert sdk.MODULE_INPUT in names and len(loaded.values) == 4
    assert (tmp_path / "result").read_text().strip().endswith(handle.id)


def test_named_output_reference(funcs):
    parts = funcs.split("a b a")
    handle = funcs.double(parts["total"])
    assert [i.ref for i in handle.thunk.thunks] == [f"{parts.id}#total"]
    assert funcs.double(parts["counts"]).thunk.thunks[0].ref == parts.id  # first output: bare ID
    with pytest.raises(sdk.SdkError, match="no output 'nope'"):
        parts["nope"]


def test_rejections(funcs, tmp_path):
    with pytest.raises(sdk.SdkError, match="cannot pass a set"):
        funcs.double({1, 2})
    with pytest.raises(sdk.SdkError, match="reserved"):
        funcs.double({"$gg": "x"})
    with pytest.raises(sdk.SdkError, match="keys must be strings"):
        funcs.double({1: 2})
    with pytest.raises(sdk.SdkError, match="countdown"):
        funcs.countdown(1, 2, 3)
    with pytest.raises(sdk.SdkError, match="not a file"):
        sdk.File(tmp_path / "missing")

    def local():
        return 1

    with pytest.raises(sdk.SdkError, match="module level"):
        sdk.gg_function(local)


def test_launcher_is_constant():
    assert sdk.LAUNCHER.startswith(b"#!/bin/sh\n")
    assert str(sys.executable).encode() not in sdk.LAUNCHER


# -- running thunks through the execution core ------------------------------------------


async def test_arguments_arrive_decoded(funcs, store, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("file content")
    handle = funcs.describe(b"raw", sdk.Value("text"), funcs.double(21), data, b"u", [4, 5], 3, 7, 8, key="v")
    ref = sdk.save(handle, store)
    await force_by_hand(store, ref)
    got = sdk.read_result(store, ref, dict)
    assert got == {
        "raw": "raw", "text": "text", "number": 42, "path": "file content", "path_is_path": True,
        "untyped_is_path": True, "many": [4, 5], "plain": 3, "rest": [7, 8], "named": {"key": "v"},
    }


async def test_named_outputs_and_dependent_thunk(funcs, store):
    parts = funcs.split("a b a c")
    ref = sdk.save(funcs.double(parts["total"]), store)
    await force_by_hand(store, ref)
    assert sdk.read_result(store, ref, int) == 8
    assert sdk.read_result(store, parts["counts"], dict) == {"a": 2, "b": 1, "c": 1}
    assert sdk.read_result(store, parts["total"], str) == "4"


async def test_tail_call_chain(funcs, store):
    runs: Counter = Counter()
    ref = sdk.save(funcs.countdown(6), store)
    await force_by_hand(store, ref, counter=runs)
    assert sdk.read_result(store, ref, int) == 21
    assert len(runs) == 7 and set(runs.values()) == {1}
    # every step's reduction is a thunk until the last one
    assert store.get_reduction(ref) == funcs.countdown(5, 6).id


async def test_bytes_and_path_results(funcs, store):
    ref = sdk.save(funcs.raw_bytes(), store)
    await force_by_hand(store, ref)
    assert sdk.read_result(store, ref) == b"\x00\x01"
    ref = sdk.save(funcs.pass_through(b"passed along"), store)
    await force_by_hand(store, ref)
    assert sdk.read_result(store, ref, str) == "passed along"


async def test_optional_and_tuple_annotations(funcs, store):
    ref = sdk.save(funcs.optional(funcs.double(4), (funcs.double(1), "x")), store)
    await force_by_hand(store, ref)
    assert sdk.read_result(store, ref, dict) == {"value": 8, "pair_is_tuple": True, "pair": [2, "x"]}


def test_command_rejects_ambiguous_str():
    with pytest.raises(sdk.SdkError, match="ambiguous"):
        sdk.command("/bin/sh", "sh", inputs={"in": "text"})


async def test_tail_call_to_named_output_is_refused(funcs, store):
    ref = sdk.save(funcs.bad_tail(), store)
    with pytest.raises(ExecutionFailed) as failure:
        await force_by_hand(store, ref)
    assert "first output" in failure.value.stderr_tail


async def test_exception_reaches_stderr_tail(funcs, store):
    ref = sdk.save(funcs.boom(3), store)
    with pytest.raises(ExecutionFailed) as failure:
        await force_by_hand(store, ref)
    assert "RuntimeError: boom 3" in failure.value.stderr_tail
    assert store.get_reduction(ref) is None


async def test_missing_gg_python_is_explained(funcs, store):
    handle = funcs.double(1)
    ref = sdk.save(handle, store)
    with pytest.raises(ExecutionFailed) as failure:
        await execute(ref, handle.thunk, store, runtime_env={})
    assert "GG_PYTHON" in failure.value.stderr_tail


async def test_gg_pythonpath_is_put_on_pythonpath(funcs, store, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "gg_extra.py").write_text("VALUE = 'from GG_PYTHONPATH'\n")
    ref = sdk.save(funcs.uses_extra(), store)
    await force_by_hand(store, ref, runtime_env={**RUNTIME_ENV, "GG_PYTHONPATH": str(extra)})
    assert sdk.read_result(store, ref, str) == "from GG_PYTHONPATH"


async def test_command_thunk(store, tmp_path):
    words = sdk.Value("one two three\n")
    handle = sdk.command("/bin/sh", "sh", "-c", "wc -w < in | tr -d ' ' > out", inputs={"in": words})
    ref = sdk.save(handle, store)
    await force_by_hand(store, ref)
    assert sdk.read_result(store, ref, int) == 3
    # a command can consume an SDK thunk's output
    upper = sdk.command("/bin/sh", "sh", "-c", "tr a-z A-Z < in > out", inputs={"in": handle})
    assert upper.thunk.thunks[0].ref == handle.id
    ref = sdk.save(upper, store)
    await force_by_hand(store, ref)
    assert sdk.read_result(store, ref, str) == "3\n"


def test_json_encoding_is_canonical(funcs):
    a = funcs.double({"b": 1, "a": [1, 2]})
    b = funcs.double({"a": [1, 2], "b": 1})
    assert a.id == b.id
    assert json.loads(a.thunk.args[-1]) == {"total": {"a": [1, 2], "b": 1}}
    assert funcs.double((1, 2)).id == funcs.double([1, 2]).id


def test_examples_are_importable_from_repo():
    """The examples are shipped modules: they import only the stdlib and ir.sdk."""
    for rel in ("examples/fib/fib.py", "examples/mapreduce/wordcount.py"):
        source = (REPO / rel).read_text()
        imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
        for line in imports:
            module = line.split()[1]
            assert module in ("__future__", "ir.sdk") or module.split(".")[0] in sys.stdlib_module_names, line
    assert textwrap.dedent("x") == "x"
