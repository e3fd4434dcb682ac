"""Identical work merged in flight (issue 12 item 3): concurrent ``gg-force`` processes on
one graph run each thunk once in total, and a forcer killed with ``kill -9`` delays the
others by at most one lease period.

Executions are counted where they happen, not in the forcers' summaries: every thunk of
the synthetic graph appends its name to a counter file (thunks run unconfined, as the
user, on the local engine and in the local Lambda endpoint's workers alike; docs/trust.md),
so a thunk that ran twice shows up twice whichever process ran it. Compiler thunks of a
real C build cannot be instrumented that way (their IDs are their exact functions and
arguments); there the local engine's executions are the ``execve`` calls of the thunks'
functions the kernel reports to ``strace``, and the Lambda workers' are the thunks in
the Invoke payloads a proxy in front of the endpoint forwarded, each recognised as a
thunk of the graph by its function and arguments (:func:`origin`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from executor import protocol
from executor.execution import GGHASH_RE
from executor.inflight import ENV, lease_seconds
from ir.errors import ConfigError
from ir.ids import parse_ref
from ir.placeholder import read_placeholder
from ir.store import LocalStore
from ir.thunk import Thunk, parse_thunk

from .aws_fixtures import FAKE_AWS_ENV, FaultProxy
from .forcing import VENV_BIN, ShellThunks, gg_env

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# -- the synthetic graph -------------------------------------------------------------------


def synthetic(store: LocalStore, counter: Path, leaves: int, sleep: float = 0.05,
              groups: int = 8, first_sleep: float | None = None) -> tuple[str, bytes, int]:
    """``leaves`` slow thunks under ``groups`` combiners under one top: (top, its bytes,
    thunk count). The same IDs in every store for the same counter path. With
    ``first_sleep``, a leaf's first execution sleeps that long instead (a run killed in
    it leaves a takeover that is quick, so the takeover's delay is what is measured)."""
    sh = ShellThunks(store)
    log = f"echo {{}} >> {counter}; "
    if first_sleep is None:
        leaf_ids = [sh.thunk(log.format(f"leaf{i}") + f"sleep {sleep}; echo {i} > out") for i in range(leaves)]
    else:
        leaf_ids = [sh.thunk(f"if grep -qx leaf{i} {counter} 2>/dev/null; then s={sleep}; else s={first_sleep}; fi; "
                             + log.format(f"leaf{i}") + f"sleep $s; echo {i} > out") for i in range(leaves)]
    group_ids = []
    for g in range(groups):
        members = leaf_ids[g::groups]
        names = [f"i{k}" for k in range(len(members))]
        group_ids.append(sh.thunk(log.format(f"group{g}") + f"cat {' '.join(names)} > out",
                                  thunks=dict(zip(names, members, strict=True))))
    names = [f"g{g}" for g in range(groups)]
    top = sh.thunk(log.format("top") + f"cat {' '.join(names)} > out", thunks=dict(zip(names, group_ids, strict=True)))
    expected = b"".join(f"{i}\n".encode() for g in range(groups) for i in range(leaves)[g::groups])
    return top, expected, leaves + groups + 1


def executions(counter: Path) -> Counter[str]:
    """How many times each thunk ran, as the thunks themselves recorded it."""
    return Counter(counter.read_text().split()) if counter.exists() else Counter()


def events(trace: Path) -> list[dict]:
    if not trace.exists():
        return []
    return [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]


def start(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(processes: list[subprocess.Popen], timeout: float = 240) -> list[tuple[int, str, str]]:
    results = []
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        results.append((process.returncode, out, err))
    return results


def printed(out: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())


def force_argv(*args: str) -> list[str]:
    # No speculation: a straggler's duplicate is a deliberate second execution, not the
    # kind of duplicate these tests count.
    return [str(VENV_BIN / "gg-force"), "--no-speculate", "--progress", "lines", "--print", *args]


def assert_once_each(counter: Path, total: int) -> None:
    ran = executions(counter)
    twice = {name: n for name, n in ran.items() if n > 1}
    assert not twice, f"ran more than once: {twice}"
    assert len(ran) == total, f"{len(ran)} of {total} thunks ran"


# -- configuration -------------------------------------------------------------------------


def test_lease_period_comes_from_the_environment_or_the_default():
    assert lease_seconds({}) == 60.0
    assert lease_seconds({ENV: "2.5"}) == 2.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ConfigError, match=ENV):
            lease_seconds({ENV: bad})


def test_a_bad_lease_period_is_one_line(tmp_path):
    store = LocalStore.init(tmp_path / ".gg")
    top, _, _ = synthetic(store, tmp_path / "counter", 1, sleep=0)
    forced = subprocess.run(force_argv(top), env={**gg_env(store.root), ENV: "never"}, capture_output=True,
                            text=True, timeout=60)
    assert forced.returncode == 1
    assert forced.stderr.strip().splitlines()[-1].startswith("gg-force: error: ") and ENV in forced.stderr
    assert not (tmp_path / "counter").exists()


def test_the_progress_line_shows_thunks_waiting_on_a_concurrent_run():
    import io

    from executor.progress import Counts, ProgressDisplay

    stream = io.StringIO()
    counts = Counts(discovered=10, cached=1, running=2, done=3, waiting=3, peer=1)
    ProgressDisplay("lines", stream).update(counts, force=True)
    line = stream.getvalue()
    assert "1 by a concurrent run" in line and "3 waiting on a concurrent run" in line
    assert counts.settled == 5 and counts.queued == 0  # waiting is neither queued nor settled


# -- the local engine, one .gg store --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("forcers", [2, 4])
def test_concurrent_local_forcers_run_each_thunk_once(tmp_path, forcers):
    store = LocalStore.init(tmp_path / ".gg")
    counter = tmp_path / "counter"
    top, expected, total = synthetic(store, counter, 200)
    traces = [tmp_path / f"f{n}.jsonl" for n in range(forcers)]
    processes = [start(force_argv("-j", "2", "--trace", str(trace), top), gg_env(store.root)) for trace in traces]
    results = finish(processes)
    for status, _, err in results:
        assert status == 0, err
    assert_once_each(counter, total)
    values = {printed(out)[top].strip() for _, out, _ in results}
    assert len(values) == 1 and store.read_bytes(values.pop(), verify=True) == expected
    # The peers' work is said in the summary line, and they waited on each other.
    peer = [e for trace in traces for e in events(trace) if e["event"] == "peer_done"]
    assert peer and any("reduced by a concurrent run" in err for _, _, err in results)
    assert any(e["event"] == "waiting" for trace in traces for e in events(trace))


@pytest.mark.slow
def test_concurrent_forcers_sharing_a_file_store_run_each_thunk_once(tmp_path, file_storage_uri):
    """Four machines' worth of forcers (a ``.gg`` each, local engine) merged only by
    leases in a shared ``file://`` store; leases appear and vanish under their feet."""
    counter = tmp_path / "counter"
    stores = [LocalStore.init(tmp_path / f"user{n}" / ".gg") for n in range(4)]
    graphs = {synthetic(store, counter, 120) for store in stores}
    assert len(graphs) == 1
    top, expected, total = graphs.pop()
    env = {"GG_STORAGE_URI": file_storage_uri, "GG_REMOTE_RESULTS": "read-write", "GG_LEASE_SECONDS": "20"}
    results = finish([start(force_argv("-j", "2", top), {**gg_env(store.root), **env}) for store in stores], 120)
    for status, _, err in results:
        assert status == 0, err
    assert_once_each(counter, total)
    for (_, out, _), store in zip(results, stores, strict=True):
        assert store.read_bytes(printed(out)[top].strip(), verify=True) == expected
    assert not [p for p in Path(file_storage_uri[len("file://"):], "leases").iterdir() if p.name != ".lock"]


@pytest.mark.slow
def test_a_killed_local_forcer_delays_the_other_by_nothing(tmp_path):
    """The kernel drops a dead forcer's locks: the survivor takes its thunks over at once."""
    store = LocalStore.init(tmp_path / ".gg")
    counter = tmp_path / "counter"
    top, expected, total = synthetic(store, counter, 2, sleep=3, groups=1)
    env = gg_env(store.root)
    owner = start(force_argv("-j", "2", top), env)
    deadline = time.monotonic() + 60
    while len(executions(counter)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(executions(counter)) == 2, "the first forcer did not start its thunks"
    survivor_trace = tmp_path / "survivor.jsonl"
    survivor = start(force_argv("-j", "2", "--trace", str(survivor_trace), top), env)
    deadline = time.monotonic() + 60
    while not [e for e in events(survivor_trace) if e["event"] == "waiting"] and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(owner.pid, signal.SIGKILL)
    killed = time.monotonic()
    owner.communicate()
    (status, out, err), = finish([survivor])
    took = time.monotonic() - killed
    assert status == 0, err
    assert store.read_bytes(printed(out)[top].strip(), verify=True) == expected
    kinds = Counter(e["event"] for e in events(survivor_trace))
    assert kinds["takeover"] == 2 and kinds["started"] == 4  # both leaves again, their combiner, the top
    # Its own work (one 3 s round of leaves, then the top) plus slack; no lease to wait out.
    assert took < 3 + 20, took
    ran = executions(counter)  # each leaf by the dead forcer and by the survivor; the rest once
    assert ran == Counter({**{f"leaf{i}": 2 for i in range(2)}, "group0": 1, "top": 1}) and total == 4


# -- a real C build: executions counted where they happen ----------------------------------


def graph_thunks(store: LocalStore, targets: list[str]) -> dict[str, Thunk]:
    """Every thunk ``targets`` depend on, read from the thunks themselves (not from a
    forcer's trace): what a run with nothing reduced has to execute."""
    todo = [parse_ref(target).id for target in targets if parse_ref(target).is_thunk]
    seen: dict[str, Thunk] = {}
    while todo:
        ident = todo.pop()
        if ident not in seen:
            seen[ident] = store.load_thunk(ident)
            todo += [item.parsed.id for item in seen[ident].thunks]
    return seen


Origin = tuple[str, tuple[str, ...]]


def origin(function_hash: str, args: list[str] | tuple[str, ...], blob: re.Pattern[str] = GGHASH_RE) -> Origin:
    """Which thunk of the graph an execution is, whatever its ID: a thunk runs rewritten
    (its thunk inputs replaced by their values, so under another ID), but its function
    and its arguments, with every blob reference masked, stay what they were."""
    return function_hash, tuple(blob.sub("@{blob}", arg) for arg in args)


def assert_ran_each_once(ran: Counter[Origin], graph: dict[str, Thunk]) -> None:
    """``ran`` (executions the workers saw) is every thunk of ``graph`` exactly once."""
    expected = Counter(origin(thunk.function_hash, thunk.args) for thunk in graph.values())
    assert max(expected.values()) == 1, "two thunks of the graph look alike; the count could not tell them apart"
    twice = {key: n for key, n in ran.items() if n > 1}
    assert not twice, f"the workers ran thunks more than once: {twice}"
    assert set(ran) == set(expected), (f"ran {len(ran)} of {len(expected)}; not in the graph: "
                                       f"{set(ran) - set(expected)}; never ran: {set(expected) - set(ran)}")


EXECVE = re.compile(r'^execve\("((?:\\x[0-9a-f]{2})*)", \[((?:"(?:\\x[0-9a-f]{2})*"(?:, )?)*)\], .*\) = 0$')
STRING = re.compile(r'"((?:\\x[0-9a-f]{2})*)"')


def exec_traced(argv: list[str], log: Path) -> list[str]:
    """``argv`` under strace, every process it starts followed: each successful
    ``execve`` lands in ``log.PID`` (strings in hex, so nothing is abbreviated or
    escaped). ``--seccomp-bpf``: only ``execve`` stops the tracee, nothing else slows."""
    return ["strace", "-f", "-ff", "--seccomp-bpf", "-qq", "-xx", "-s", "65536", "-e", "trace=execve",
            "-o", str(log), *argv]


def _unhex(text: str) -> str:
    return bytes.fromhex(text.replace("\\x", "")).decode()


def execs(logs: Path) -> list[tuple[str, list[str]]]:
    """(program, argv) of every successful ``execve`` the kernel reported under ``logs``."""
    found = []
    for path in sorted(logs.iterdir()):
        for line in path.read_text().splitlines():
            match = EXECVE.match(line)
            if match:
                found.append((_unhex(match.group(1)), [_unhex(arg) for arg in STRING.findall(match.group(2))]))
    return found


def functions_run(logs: Path, store: LocalStore) -> Counter[Origin]:
    """The thunks' functions the local engines started (a thunk runs as one ``execve`` of
    its function's blob in ``store``), by :func:`origin`."""
    blobs = str(store.blobs) + "/"
    blob_path = re.compile(re.escape(blobs) + r"[^/\s]+")
    return Counter(origin(program[len(blobs):], argv, blob_path)
                   for program, argv in execs(logs) if program.startswith(blobs))


@pytest.mark.slow
def test_concurrent_local_forcers_of_a_c_build_run_each_thunk_once(tmp_path):
    """examples/cproject inferred once, then forced by two and then (its reductions
    deleted) four forcers at once on its one ``.gg``.

    Executions are counted by the kernel, not by the forcers: each forcer runs under
    ``strace -f -e trace=execve``, and a thunk on the local engine is one ``execve`` of
    its function's blob (``.gg/blobs/HASH``, the dynamic loader here, with the tool it
    loads in its arguments). Every thunk of the graph (walked from the targets in the
    store, recognised after its rewrite by :func:`origin`) must be started exactly once
    over all forcers of a round. Why not a worker-side file as the synthetic graph has:
    the compiler thunks' IDs depend on their exact functions and arguments, so they
    cannot be instrumented without building a different graph; a wrapper around the
    toolchain would change the thunks the same way. Process spawns are what a local
    engine's execution is, and the kernel reports them whatever the forcer records."""
    from .corpus.fetch import ensure_tools
    from .test_infer_support import REPO, gg_infer, tool_env

    ensure_tools(["strace"])  # apt-get install when missing (as root)
    tree = tmp_path / "cproject"
    shutil.copytree(REPO / "examples" / "cproject", tree)
    inferred = gg_infer(tree, "make", "-s")
    assert inferred.returncode == 0, inferred.stderr
    names = ["app", "libutil.a", "main.o", "util.o", "strutil.o", "shapes.o", "backup/util.o"]
    targets = []
    for name in names:
        placeholder = read_placeholder(tree / name)
        assert placeholder is not None, name
        targets.append(placeholder.ref)
    store = LocalStore.init(tree / ".gg")
    graph = graph_thunks(store, targets)
    argv = [str(VENV_BIN / "gg-force"), "--no-speculate", "-q", "-j", "2", "--print"]
    answers: list[dict[str, str]] = []
    for forcers in (2, 4):
        for ref in store.reduction_records():
            store.forget_reduction(ref)  # the same graph, nothing reduced
        logs = [tmp_path / f"exec{forcers}-{n}" for n in range(forcers)]
        for log in logs:
            log.mkdir()
        results = finish([start(exec_traced([*argv, *targets], log / "exec"), tool_env(), cwd=tree)
                          for log in logs], 300)
        for status, _, err in results:
            assert status == 0, err
        ran: Counter[Origin] = Counter()
        for log in logs:
            ran += functions_run(log, store)
        assert_ran_each_once(ran, graph)
        answers += [printed(out) for _, out, _ in results]
    assert all(answer == answers[0] for answer in answers) and len(answers[0]) == len(set(targets))
    for value in answers[0].values():  # every forcer of both rounds: the same, intact bytes
        store.read_bytes(value.strip(), verify=True)


# -- Lambda, one bucket, a store per forcer --------------------------------------------------


def lambda_env(root: Path, s3_uri: str, endpoint_url: str, **extra: str) -> dict[str, str]:
    gg_dir = root / ".gg"
    LocalStore.init(gg_dir)
    return {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(root), "LANG": "C.UTF-8",
            **FAKE_AWS_ENV, "GG_DIR": str(gg_dir), "GG_STORAGE_URI": s3_uri, "GG_LAMBDA_FUNCTION": "gg",
            "GG_LAMBDA_ENDPOINT": endpoint_url, "GG_LAMBDA_TIMEOUT": "60", "GG_REMOTE_RESULTS": "read-write",
            **extra}


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_concurrent_lambda_forcers_on_one_bucket_run_each_thunk_once(tmp_path, s3_uri, lambda_endpoint_factory):
    endpoint = lambda_endpoint_factory(workers=4, function_timeout=60)
    for forcers, leaves in ((2, 16), (4, 16)):
        counter = tmp_path / f"counter-{forcers}"
        roots = [tmp_path / f"run{forcers}" / f"user{n}" for n in range(forcers)]
        # A period long enough that a loaded machine's slow renewals never let a live lease
        # lapse (that would be a deliberate second run, not a missed merge).
        envs = [lambda_env(root, s3_uri, endpoint.url, GG_LEASE_SECONDS="20") for root in roots]
        graphs = {synthetic(LocalStore.init(Path(env["GG_DIR"])), counter, leaves) for env in envs}
        assert len(graphs) == 1
        top, expected, total = graphs.pop()
        traces = [root / "trace.jsonl" for root in roots]
        processes = [start(force_argv("--engine", "lambda", "-j", "4", "--trace", str(trace), top), env)
                     for env, trace in zip(envs, traces, strict=True)]
        results = finish(processes, 300)
        for status, _, err in results:
            assert status == 0, err + endpoint.log()[-2000:]
        assert_once_each(counter, total)
        for (_, out, _), env in zip(results, envs, strict=True):
            value = printed(out)[top].strip()
            assert LocalStore.init(Path(env["GG_DIR"])).read_bytes(value, verify=True) == expected
        assert any(e["event"] == "peer_done" for t in traces for e in events(t))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_lambda_forcer_delays_the_others_by_one_lease_period(tmp_path, s3_uri, lambda_endpoint_factory):
    """The owner of the leases dies with ``kill -9``: its leases expire (nobody releases
    them), and the survivors take the thunks over within one lease period of its death."""
    period = 3.0
    endpoint = lambda_endpoint_factory(workers=4, function_timeout=60)
    counter = tmp_path / "counter"
    roots = [tmp_path / name for name in ("owner", "b", "c")]
    envs = [lambda_env(root, s3_uri, endpoint.url, GG_LEASE_SECONDS=str(period)) for root in roots]
    tops = {synthetic(LocalStore.init(Path(env["GG_DIR"])), counter, 2, sleep=0.5, groups=1, first_sleep=40)[0]
            for env in envs}
    top = tops.pop()
    owner = start(force_argv("--engine", "lambda", "-j", "4", top), envs[0])
    deadline = time.monotonic() + 90
    while len(executions(counter)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(executions(counter)) == 2, "the owner did not start its thunks"
    traces = [root / "trace.jsonl" for root in roots[1:]]
    others = [start(force_argv("--engine", "lambda", "-j", "4", "--trace", str(t), top), env)
              for env, t in zip(envs[1:], traces, strict=True)]
    deadline = time.monotonic() + 60
    while not all(any(e["event"] == "waiting" for e in events(t)) for t in traces) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(owner.pid, signal.SIGKILL)
    killed = time.monotonic()
    owner.communicate()
    results = finish(others, 240)
    took = time.monotonic() - killed
    for status, _, err in results:
        assert status == 0, err + endpoint.log()[-2000:]
    values = {printed(out)[top].strip() for _, out, _ in results}
    assert len(values) == 1
    # The lease runs out (<= one period), a survivor reruns the leaves (0.5 s) and the rest
    # (the dead owner's first runs would take 40 s); the slack covers Lambda round trips
    # on a loaded machine.
    assert took < period + 0.5 + 15, took
    waited = {e["thunk"] for t in traces for e in events(t) if e["event"] == "waiting"}
    takeovers = [e["thunk"] for t in traces for e in events(t) if e["event"] == "takeover"]
    assert sorted(takeovers) == sorted(set(takeovers)) and len(takeovers) == 2 and set(takeovers) <= waited
    ran = executions(counter)
    # The killed owner's two runs, then each leaf once more by whichever survivor took it
    # over, and the combiners once: the survivors did not run anything twice between them.
    assert ran["leaf0"] == ran["leaf1"] == 2 and ran["group0"] == ran["top"] == 1, ran


def invoked(exchanges: list[tuple[str, str, bytes, int, bytes]]) -> Counter[Origin]:
    """What the Lambda workers were given to execute, from the Invoke payloads a proxy in
    front of the endpoint saw (DryRun invokes run nothing). Every invoke must have been
    answered with a result for each of its thunks: a payload sent but not served would
    be counted as run."""
    ran: Counter[Origin] = Counter()
    for path, kind, body, status, answer in exchanges:
        if not path.endswith("/invocations") or kind == "DryRun":
            continue
        request = protocol.decode_request(body)
        assert status == 200, (status, answer[:300])
        served = {result.id for result in protocol.decode_response(answer).results}
        assert served == {thunk.id for thunk in request.thunks}, (request.thunks, served)
        for item in request.thunks:
            thunk = parse_thunk(item.data, expected_id=item.id)
            ran[origin(thunk.function_hash, thunk.args)] += 1
    return ran


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_concurrent_lambda_forcers_of_a_c_build_run_each_thunk_once(tmp_path, s3_uri, lambda_endpoint_factory):
    """Fresh checkouts of examples/cproject (a ``.gg`` each) forced on Lambda at once
    through one bucket, two and then four (on a fresh prefix, reductions deleted): every
    thunk ran once over all of them, and every forcer got the same outputs.

    Executions are counted on the workers' side: every forcer invokes the endpoint through
    one proxy (:class:`FaultProxy`), whose log of Invoke payloads (decoded with
    ``executor.protocol``) is what the workers were given to run, whichever forcer sent
    it. Each of the graph's thunks (walked from the targets in the store, recognised
    after its rewrite by :func:`origin`) must appear in exactly one answered Invoke over
    all forcers of a round."""
    import asyncio

    from .test_infer_support import REPO, gg_infer, tool_env

    endpoint = lambda_endpoint_factory(workers=4, function_timeout=120)
    names = ["app", "libutil.a", "main.o", "util.o", "strutil.o", "shapes.o", "backup/util.o"]
    trees = [tmp_path / f"user{n}" for n in range(4)]
    placeholders = set()
    for tree in trees:
        shutil.copytree(REPO / "examples" / "cproject", tree)
        inferred = await asyncio.to_thread(gg_infer, tree, "make", "-s")
        assert inferred.returncode == 0, inferred.stderr
        placeholders.add(tuple((tree / name).read_bytes() for name in names))
    assert len(placeholders) == 1  # the same thunk IDs in every checkout: one graph
    found = [read_placeholder(trees[0] / name) for name in names]
    targets = sorted({placeholder.ref for placeholder in found if placeholder is not None})
    assert None not in found, "a target is not a placeholder"
    graph = graph_thunks(LocalStore.init(trees[0] / ".gg"), targets)
    argv = [str(VENV_BIN / "gg-force"), "--engine", "lambda", "--no-speculate", "-q", "-j", "8", "--print"]
    answers: list[dict[str, str]] = []
    async with FaultProxy(endpoint.url, record=True) as proxy:
        for forcers, prefix in ((2, "/blobs?"), (4, "/four?")):
            env = {**tool_env(), **FAKE_AWS_ENV, "GG_STORAGE_URI": s3_uri.replace("/blobs?", prefix),
                   "GG_LAMBDA_ENDPOINT": proxy.url, "GG_LAMBDA_FUNCTION": endpoint.function_name,
                   "GG_LAMBDA_TIMEOUT": "120", "GG_REMOTE_RESULTS": "read-write", "GG_LEASE_SECONDS": "30"}
            for tree in trees[:forcers]:
                tree_store = LocalStore.init(tree / ".gg")
                for ref in tree_store.reduction_records():
                    tree_store.forget_reduction(ref)
            traces = [tree / f"trace{forcers}.jsonl" for tree in trees[:forcers]]
            before = len(proxy.exchanges)
            processes = [start([*argv, "--trace", str(t), *targets], {**env, "GG_DIR": str(tree / ".gg")}, cwd=tree)
                         for tree, t in zip(trees, traces, strict=False)]
            results = await asyncio.to_thread(finish, processes, 300)
            for status, _, err in results:
                assert status == 0, err + endpoint.log()[-2000:]
            assert_ran_each_once(invoked(proxy.exchanges[before:]), graph)
            answers += [printed(out) for _, out, _ in results]
    assert all(answer == answers[0] for answer in answers) and len(answers[0]) == len(targets)
    for tree in trees:  # each user has the bytes (gg-force made every target local)
        store = LocalStore.init(tree / ".gg")
        for value in answers[0].values():
            store.read_bytes(value.strip(), verify=True)
