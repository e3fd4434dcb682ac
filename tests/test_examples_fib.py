"""examples/fib: gg's recursive fibonacci, by hand through the execution core and
through the real gg-force (fib(70) = 190392490709135)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from examples.fib.fib import add, fib
from ir import sdk
from ir.store import LocalStore

from .test_sdk import force_by_hand

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env(store_dir: Path) -> dict[str, str]:
    return {**os.environ, "GG_DIR": str(store_dir)}


def test_fib_thunks_are_shared():
    """fib(k) is one thunk however it is reached: the graph is linear, not exponential."""
    assert fib(10).id == fib(10).id
    assert add(fib(9), fib(8)).thunk.thunks == add(fib(9), fib(8)).thunk.thunks
    assert {i.ref for i in add(fib(9), fib(8)).thunk.thunks} == {fib(9).id, fib(8).id}


async def test_fib_by_hand(tmp_path):
    store = LocalStore.init(tmp_path / ".gg")
    runs: Counter = Counter()
    ref = sdk.save(fib(12), store)
    await force_by_hand(store, ref, counter=runs)
    assert sdk.read_result(store, ref, int) == 144
    # 13 fib thunks (0..12) and 11 add thunks, each run exactly once
    assert len(runs) == 24 and set(runs.values()) == {1}


def test_fib_70_through_gg_force(tmp_path):
    store_dir = tmp_path / ".gg"
    placeholder = tmp_path / "fib70"
    trace = tmp_path / "trace.jsonl"
    made = subprocess.run([sys.executable, "-m", "examples.fib", "70", "--placeholder", str(placeholder)],
                          cwd=REPO, env=_env(store_dir), capture_output=True, text=True, check=True)
    ref = made.stdout.strip()
    assert ref == fib(70).id  # same ID in another process
    forced = subprocess.run([str(BIN / "gg-force"), "--quiet", "--trace", str(trace), str(placeholder)],
                            cwd=tmp_path, env=_env(store_dir), capture_output=True, text=True)
    assert forced.returncode == 0, forced.stderr
    assert placeholder.read_text() == "190392490709135"
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    done = events[-1]
    assert done["event"] == "done" and done["status"] == "ok"
    # content addressing memoizes the recursion: 71 fib thunks + 69 add thunks, each once
    assert done["executed"] == 140
    assert len({e["thunk"] for e in events if e["event"] == "finished"}) == 140

    second = tmp_path / "second.jsonl"
    again = subprocess.run([sys.executable, "-m", "examples.fib", "70", "--force", "--quiet", "--trace", str(second)],
                           cwd=REPO, env=_env(store_dir), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "fib(70) = 190392490709135"
    events = [json.loads(line) for line in second.read_text().splitlines()]
    assert events[-1]["executed"] == 0 and not [e for e in events if e["event"] == "started"]
    assert LocalStore(store_dir).resolve(ref) is not None
