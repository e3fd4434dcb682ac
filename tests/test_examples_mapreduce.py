"""examples/mapreduce: word counts with one map thunk per chunk feeding one reduce."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from examples.mapreduce.corpus import make_chunks
from examples.mapreduce.wordcount import WORD, count_words, word_count
from ir import sdk
from ir.store import LocalStore

from .test_sdk import force_by_hand

REPO = Path(__file__).resolve().parents[1]


def expected_counts(chunks: list[bytes]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for chunk in chunks:
        total.update(WORD.findall(chunk.decode().lower()))
    return dict(total)


def test_shape_is_fan_in():
    chunks = make_chunks(5, words_per_chunk=50)
    handle = word_count(chunks)
    assert {i.ref for i in handle.thunk.thunks} == {count_words(c).id for c in chunks}
    assert make_chunks(5, words_per_chunk=50) == chunks  # the corpus is deterministic


async def test_mapreduce_by_hand(tmp_path):
    chunks = make_chunks(4, words_per_chunk=300)
    store = LocalStore.init(tmp_path / ".gg")
    job = word_count(chunks, top=3)
    runs: Counter = Counter()
    await force_by_hand(store, sdk.save(job["top"], store), counter=runs)
    assert len(runs) == 5
    expected = expected_counts(chunks)
    assert sdk.read_result(store, job["counts"], dict) == expected
    best = sorted(expected.items(), key=lambda item: (-item[1], item[0]))[:3]
    assert sdk.read_result(store, job["top"], str) == "".join(f"{n}\t{w}\n" for w, n in best)


def test_mapreduce_through_gg_force(tmp_path):
    files = []
    for index, chunk in enumerate(make_chunks(40, words_per_chunk=500, seed=3)):
        path = tmp_path / f"chunk{index:02d}.txt"
        path.write_bytes(chunk)
        files.append(path)
    env = {**os.environ, "GG_DIR": str(tmp_path / ".gg")}
    trace = tmp_path / "trace.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "examples.mapreduce", "--force", "--quiet", "--top", "5", "--trace", str(trace),
         *map(str, files)],
        cwd=REPO, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    expected = expected_counts([p.read_bytes() for p in files])
    best = sorted(expected.items(), key=lambda item: (-item[1], item[0]))[:5]
    assert run.stdout == "".join(f"{n}\t{w}\n" for w, n in best)
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    assert events[-1]["executed"] == 41
    reduce_node = [e for e in events if e["event"] == "queued" and len(e["deps"]) == 40]
    assert len(reduce_node) == 1
    assert not re.search(r"\S", run.stderr)
