"""gg-force's fast path for a build that is already done (executor/cached.py).

What a run does is checked, never how long it takes: the fast path gives the same
bytes, modes and timestamps as the scheduler path, it never imports the scheduler, and
any target it cannot vouch for (a value that is corrupt or gone, a thunk never run)
sends the whole run down the scheduler path with the outcome that path always had.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from executor import force as force_module
from executor.trace_summary import read_trace, summarize
from ir.placeholder import read_placeholder, write_placeholder
from tests.forcing import gg_env

# gg-force's own main(), then one line saying whether the scheduler path was imported
PROBE = ("import sys\nfrom executor.force_cli import main\nstatus = main(sys.argv[1:])\n"
         "print('path: ' + ('scheduler' if 'executor.scheduler' in sys.modules else 'cached'), file=sys.stderr)\n"
         "sys.exit(status)\n")


def force(store, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, *args], env=gg_env(store.root), cwd=cwd,
                          capture_output=True, text=True)


def snapshot(paths) -> list[tuple[bytes, int, int]]:
    return [(p.read_bytes(), os.stat(p).st_mode & 0o777, os.stat(p).st_mtime_ns) for p in paths]


def make_targets(sh, tmp_path):
    """Placeholders for a plain thunk, an executable, a named output and a tail call."""
    tool = sh.thunk("printf '#!/bin/sh\\necho tool\\n' > out; chmod +x out")
    data = sh.thunk("echo data > out")
    pair = sh.thunk("echo first > out; echo second > second", outputs=("out", "second"))
    tail = sh.returning(sh.thunk("echo from the tail > out"))
    refs = {"tool": tool, "data.o": data, "second.txt": f"{pair}#second", "tail.txt": tail}
    for name, ref in refs.items():
        write_placeholder(tmp_path / name, ref)
        os.utime(tmp_path / name, ns=(1_000_000_000_000_000_000, 1_000_000_000_123_456_789))
    return refs


def test_cached_run_gives_the_same_files_as_the_scheduler_path(store, sh, tmp_path):
    refs = make_targets(sh, tmp_path)
    paths = [tmp_path / name for name in refs]
    first = force(store, *refs, cwd=tmp_path)
    assert first.returncode == 0 and "path: scheduler" in first.stderr, first.stderr
    assert "4 target(s), 4 written, 5 thunk(s) run" in first.stderr
    built = snapshot(paths)
    assert [b[0] for b in built] == [b"#!/bin/sh\necho tool\n", b"data\n", b"second\n", b"from the tail\n"]

    for name, ref in refs.items():  # make clean; the build writes the same placeholders
        (tmp_path / name).unlink()
        write_placeholder(tmp_path / name, ref)
        os.utime(tmp_path / name, ns=(1_000_000_000_000_000_000, 1_000_000_000_123_456_789))
    trace = tmp_path / "trace.jsonl"
    again = force(store, "--trace", str(trace), "--print", *refs, cwd=tmp_path)
    assert again.returncode == 0 and "path: cached" in again.stderr, again.stderr
    assert "4 target(s), 4 written, 0 thunk(s) run" in again.stderr
    assert "gg-force: 5/5 done (0 run, 5 cached, 0 failed)" in again.stderr  # the progress line
    assert snapshot(paths) == built
    printed = dict(line.split() for line in again.stdout.splitlines())
    assert printed == {name: store.resolve(ref) for name, ref in refs.items()}

    events = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [e["event"] for e in events].count("cached") == 5 and events[-1]["event"] == "done"
    assert events[-1]["status"] == "ok" and events[-1]["executed"] == 0
    summary = summarize(read_trace(trace))
    assert summary["totals"]["run"] == 0 and summary["cache_hit_ratio"] == 1.0
    report = subprocess.run([sys.executable, "-m", "executor.gg_command", "trace", str(trace)],
                            capture_output=True, text=True)
    assert report.returncode == 0, report.stderr


def test_ids_and_real_files_take_the_cached_path_too(store, sh, tmp_path):
    ident = sh.thunk("echo value > out")
    assert force(store, "-q", ident).returncode == 0
    write_placeholder(tmp_path / "x.txt", ident)
    assert force(store, "-q", "x.txt", cwd=tmp_path).returncode == 0
    again = force(store, "--print", ident, "x.txt", cwd=tmp_path)
    assert again.returncode == 0 and "path: cached" in again.stderr, again.stderr
    assert "x.txt is already a real file" in again.stderr
    assert again.stdout == f"{ident} {store.resolve(ident)}\n"


# What a warm build's gg-force must not import before it is done (its start is most of
# its cost; docs/performance.md, "A finished build", round 4).
HEAVY = ("asyncio", "google.protobuf", "executor.scheduler", "ir.thunk", "dataclasses", "json", "threading")
IMPORTS_PROBE = ("import sys\nfrom executor.force_cli import main\nstatus = main(sys.argv[1:])\n"
                 f"print('heavy: ' + ' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
                 "sys.exit(status)\n")


def test_the_cached_path_imports_nothing_heavy(store, sh, tmp_path):
    ident = sh.thunk("echo value > out")
    assert force(store, "-q", ident).returncode == 0
    write_placeholder(tmp_path / "x.txt", ident)
    result = subprocess.run([sys.executable, "-c", IMPORTS_PROBE, "-q", "x.txt"], env=gg_env(store.root),
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0 and (tmp_path / "x.txt").read_text() == "value\n", result.stderr
    assert "heavy: \n" in result.stderr, result.stderr  # none of them


def test_a_corrupt_value_is_reported_and_rebuilt_as_before(store, sh, tmp_path):
    ident = sh.thunk("echo precious > out")
    value = force(store, "-q", "--print", ident).stdout.split()[1]
    blob = store.blob_path(value)
    blob.chmod(0o644)
    blob.write_bytes(b"rotten!!\n")
    target = tmp_path / "result.txt"
    write_placeholder(target, ident)
    broken = force(store, "result.txt", cwd=tmp_path)
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert f"blob {value}" in broken.stderr and "corrupt" in broken.stderr
    assert read_placeholder(target).ref == ident  # never overwritten with the rotten bytes
    again = force(store, "result.txt", cwd=tmp_path)
    assert again.returncode == 0 and "path: scheduler" in again.stderr, again.stderr
    assert target.read_text() == "precious\n" and "1 thunk(s) run" in again.stderr


def test_a_missing_value_or_an_unrun_thunk_goes_the_scheduler_path(store, sh, tmp_path):
    done = sh.thunk("echo done > out")
    lost = sh.thunk("echo lost > out")
    values = force(store, "-q", "--print", done, lost).stdout.split()
    store.blob_path(values[3]).unlink()  # the value of `lost` is gone
    fresh = sh.thunk("echo fresh > out")  # never run
    for name, ref in (("done.txt", done), ("lost.txt", lost), ("fresh.txt", fresh)):
        write_placeholder(tmp_path / name, ref)
    result = force(store, "done.txt", "lost.txt", "fresh.txt", cwd=tmp_path)
    assert result.returncode == 0 and "path: scheduler" in result.stderr, result.stderr
    assert "3 target(s), 3 written, 2 thunk(s) run" in result.stderr
    assert [(tmp_path / n).read_text() for n in ("done.txt", "lost.txt", "fresh.txt")] == [
        "done\n", "lost\n", "fresh\n"]


def test_a_tagged_record_without_its_bare_record_is_no_hit(store, sh, tmp_path):
    """The bare record is written last: without it the thunk's records may be partial."""
    pair = sh.thunk("echo first > out; echo second > second", outputs=("out", "second"))
    assert force(store, "-q", pair).returncode == 0
    store.forget_reduction(pair)
    result = force(store, "--print", f"{pair}#second")
    assert result.returncode == 0 and "path: scheduler" in result.stderr, result.stderr
    assert "1 thunk(s) run" in result.stderr


def test_sigterm_during_the_cached_path_is_an_interrupt(store, sh, tmp_path, monkeypatch):
    """As on the scheduler path: the run stops as interrupted, and the target being
    written is left as it was (no temp file beside it)."""
    ident = sh.thunk("echo value > out")
    assert force(store, "-q", ident).returncode == 0
    target = tmp_path / "x.txt"
    write_placeholder(target, ident)

    def terminated(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt")

    monkeypatch.setattr(force_module.TargetWriter, "write", terminated)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        force_module.force([str(target)], store=store)
    assert read_placeholder(target).ref == ident and sorted(os.listdir(tmp_path)) == [".gg", "x.txt"]
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back
