"""The scheduler on graphs of real /bin/sh thunks: shapes, sharing, caching, tail calls."""

from __future__ import annotations

import json

from tests.forcing import force


def text(store, ident):
    return store.read_bytes(ident).decode()


def test_diamond_runs_each_thunk_once_and_rewrites_deterministically(store, sh, tmp_path):
    top = sh.thunk("echo top > out")
    left = sh.thunk("tr a-z A-Z < in > out", thunks={"in": top})
    right = sh.thunk("rev < in > out", thunks={"in": top})
    bottom = sh.thunk("cat l r > out", thunks={"l": left, "r": right})
    trace = tmp_path / "trace.jsonl"
    results, scheduler = force(store, [bottom], trace=trace)
    assert text(store, results[bottom]) == "TOP\npot\n"
    assert scheduler.executed == 4
    started = [json.loads(line) for line in trace.read_text().splitlines()]
    assert sorted(e["thunk"] for e in started if e["event"] == "started") == sorted([top, left, right, bottom])
    # The rewritten thunk was stored and reduced too, so it is a cache hit on its own.
    ran = {e["thunk"]: e["ran"] for e in started if e["event"] == "started"}
    assert ran[bottom] != bottom and store.resolve(ran[bottom]) == results[bottom]


def test_second_run_is_all_cache_hits(store, sh, tmp_path):
    leaves = [sh.thunk(f"echo {i} > out") for i in range(5)]
    top = sh.thunk("cat " + " ".join(f"f{i}" for i in range(5)) + " > out",
                   thunks={f"f{i}": leaf for i, leaf in enumerate(leaves)})
    first, scheduler = force(store, [top])
    assert scheduler.executed == 6
    trace = tmp_path / "again.jsonl"
    second, scheduler = force(store, [top], trace=trace)
    assert second == first and scheduler.executed == 0
    events = [json.loads(line)["event"] for line in trace.read_text().splitlines()]
    assert "started" not in events and events.count("cached") == 1  # the top hit: nothing below is loaded


def test_rewritten_thunk_hits_cache_when_only_the_original_is_new(store, sh):
    dep = sh.thunk("echo same > out")
    consumer = sh.thunk("cat in > out", thunks={"in": dep})
    force(store, [consumer])
    # A different producer of the same bytes gives the same rewritten consumer.
    other_dep = sh.thunk("printf 'same\\n' > out")
    other_consumer = sh.thunk("cat in > out", thunks={"in": other_dep})
    results, scheduler = force(store, [other_consumer])
    assert scheduler.executed == 1  # only the new producer ran
    assert text(store, results[other_consumer]) == "same\n"


def test_wide_graph_of_a_thousand_siblings(store, sh):
    leaves = {f"in/{i}": sh.thunk(f"echo {i} > out") for i in range(1000)}
    total = sh.thunk("cat in/* | awk '{s+=$1} END {print s}' > out", thunks=leaves)
    results, scheduler = force(store, [total], jobs=4)
    assert text(store, results[total]) == f"{sum(range(1000))}\n"
    assert scheduler.executed == 1001


def test_deep_chain_of_five_hundred(store, sh):
    ident = sh.thunk("echo 0 > out")
    for _ in range(500):
        ident = sh.thunk("echo $(( $(cat in) + 1 )) > out", thunks={"in": ident})
    results, scheduler = force(store, [ident])
    assert text(store, results[ident]) == "500\n"
    assert scheduler.executed == 501


def test_tail_call_chain_is_followed_to_a_value(store, sh):
    ident = sh.thunk("echo bottom > out")
    chain = [ident]
    for _ in range(6):
        ident = sh.returning(ident)
        chain.append(ident)
    results, scheduler = force(store, [ident])
    assert text(store, results[ident]) == "bottom\n"
    assert scheduler.executed == 7
    # Every link of the chain reduces to the next one, and resolves to the value.
    for outer, inner in zip(chain[1:], chain, strict=False):
        assert store.get_reduction(outer) == inner
        assert store.resolve(outer) == results[ident]


def test_tail_call_output_feeds_a_parent(store, sh):
    value = sh.thunk("echo 41 > out")
    indirect = sh.returning(value)
    parent = sh.thunk("echo $(( $(cat x) + 1 )) > out", thunks={"x": indirect})
    results, _ = force(store, [parent])
    assert text(store, results[parent]) == "42\n"


def test_named_outputs_and_tag_references(store, sh):
    both = sh.thunk("echo first > a; echo second > b", outputs=("a", "b"))
    use_b = sh.thunk("cat x x > out", thunks={"x": f"{both}#b"})
    results, _ = force(store, [f"{both}#a", f"{both}#b", use_b, both])
    assert text(store, results[f"{both}#a"]) == "first\n"
    assert text(store, results[both]) == "first\n"  # the bare ID means the first output
    assert text(store, results[use_b]) == "second\nsecond\n"
    assert store.get_reduction(f"{both}#b") == results[f"{both}#b"]


def test_gghash_references_in_args_follow_the_rewrite(store, sh):
    dep = sh.thunk("echo referenced > out")
    user = sh.thunk(f"cat @{{GGHASH:{dep}}} > out", thunks={"unused": dep})
    results, _ = force(store, [user])
    assert text(store, results[user]) == "referenced\n"


def test_shared_subgraph_across_targets_runs_once(store, sh):
    shared = sh.thunk("echo shared > out")
    targets = [sh.thunk(f"cat s > out; echo {i} >> out", thunks={"s": shared}) for i in range(10)]
    _, scheduler = force(store, targets)
    assert scheduler.executed == 11


def test_value_targets_pass_through(store, sh):
    ident = store.put_bytes(b"plain")
    results, scheduler = force(store, [ident])
    assert results == {ident: ident} and scheduler.executed == 0


def test_clean_environment(store, sh, monkeypatch):
    monkeypatch.setenv("LEAKY_SECRET", "should-not-be-seen")
    ident = sh.thunk("env | sort > out", envars=("ONLY=this",))
    results, _ = force(store, [ident])
    names = {line.split("=", 1)[0] for line in text(store, results[ident]).splitlines()}
    assert "LEAKY_SECRET" not in names and "ONLY" in names
    assert names <= {"ONLY", "GG_DIR", "GG_PYTHON", "PWD", "OLDPWD", "SHLVL", "_"}
