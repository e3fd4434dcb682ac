"""Engines as plug-ins: a toy engine added through the registry (programmatically, and
as an installed package's ``gg.engines`` entry point) forces a real graph, without
any edit to the scheduler, the CLI, the engine modules or the handler."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from executor import force_cli
from executor.engines import ENGINES, register_engine
from executor.force import force
from ir.placeholder import write_placeholder
from tests.forcing import VENV_BIN, gg_env

# A whole engine in a few lines: runs every thunk through the execution core in its own
# scratch directory and counts what it ran. Used in-process and written out as a package.
TOY_ENGINE = '''
import sys
from executor.execution import execute


class ToyEngine:
    name = "toy"
    slots = 2
    remote = None

    def __init__(self, store):
        self.store = store
        self.ran = []

    def refuses(self, job):
        return "toy engines do not run thunks that ask for 2 or more CPUs" if job.thunk.resources.cpus > 1 else None

    async def run(self, job):
        self.ran.append(job.thunk_id)
        return await execute(job.thunk_id, job.thunk, self.store, self.store.root / "toy-work",
                             default_timeout=job.timeout, runtime_env={"GG_PYTHON": sys.executable})

    async def close(self):
        return None


OPENED = []


async def open_engine(options):
    OPENED.append(ToyEngine(options.store))
    return OPENED[-1]
'''


@pytest.fixture
def toy(tmp_path):
    namespace: dict = {}
    exec(compile(TOY_ENGINE, "toy_engine.py", "exec"), namespace)
    register_engine("toy", namespace["open_engine"])
    yield namespace["OPENED"]
    ENGINES.unregister("toy")


def _graph(sh) -> tuple[str, str]:
    """(a two-level graph's top thunk, what it must produce)."""
    left = sh.thunk("echo left > out")
    right = sh.thunk("echo right > out")
    top = sh.thunk("cat a b > out", thunks={"a": left, "b": right})
    return top, "left\nright\n"


def test_a_registered_engine_runs_a_graph_through_the_cli(store, sh, tmp_path, toy, monkeypatch):
    top, expected = _graph(sh)
    write_placeholder(tmp_path / "result.txt", top)
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv("GG_DIR", str(store.root))
    status = force_cli.main(["--engine", "toy", "-q", "--trace", str(trace), str(tmp_path / "result.txt")])
    assert status == 0
    assert (tmp_path / "result.txt").read_text() == expected
    assert len(toy) == 1 and len(toy[0].ran) == 3
    done = [json.loads(line) for line in trace.read_text().splitlines() if '"done"' in line][-1]
    assert done["ran_on"] == {"toy": 3}, done


def test_work_the_toy_engine_refuses_goes_to_the_fallback_engine(store, sh, toy, capsys):
    from ir.thunk import Resources

    small = sh.thunk("echo small > out")
    big = sh.thunk("cat s > out; echo big >> out", thunks={"s": small}, resources=Resources(cpus=2))
    summary = force([big], ("toy",), store=store)
    assert store.read_bytes(summary.results[big]) == b"small\nbig\n"
    assert len(toy[0].ran) == 1  # the small one; the big one was refused and ran locally
    assert "1 of 2 thunks ran locally: toy: toy engines do not run thunks" in capsys.readouterr().err
    # Engines in order of preference: what toy refuses goes to the next one, not to a fallback.
    capsys.readouterr()
    bigger = sh.thunk("echo bigger > out", resources=Resources(cpus=3))
    summary = force([bigger], ("toy", "local"), store=store, fallback=None)
    assert store.read_bytes(summary.results[bigger]) == b"bigger\n" and len(toy[1].ran) == 0
    assert capsys.readouterr().err == ""
    with pytest.raises(Exception, match="no engine can run it"):
        force([sh.thunk("echo other > out", resources=Resources(cpus=3))], ("toy",), store=store, fallback=None)


def test_unknown_engines_are_usage_errors_that_list_the_registered_ones(store, sh, tmp_path, toy, monkeypatch):
    monkeypatch.setenv("GG_DIR", str(store.root))
    for argv, env, origin in ((["--engine", "tyo"], {}, "--engine 'tyo'"),
                              ([], {"GG_ENGINE": "tyo"}, "GG_ENGINE='tyo'"),
                              (["--fallback-engine", "tyo"], {}, "--fallback-engine 'tyo'")):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        result = subprocess.run([str(VENV_BIN / "gg-force"), *argv, sh.thunk("echo x > out")],
                                env={**gg_env(store.root), **env}, capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"gg-force: error: {origin} is not an engine (choose from "), result.stderr
        assert "lambda, local" in result.stderr
        monkeypatch.delenv("GG_ENGINE", raising=False)


def test_an_installed_package_adds_an_engine_through_entry_points(store, sh, tmp_path):
    """What ``pip install toy-engine`` does, reduced to its effect: a module and a
    dist-info with a ``gg.engines`` entry point on the path of the real gg-force."""
    site = tmp_path / "site"
    (site / "toy_engine-1.0.dist-info").mkdir(parents=True)
    (site / "toy_engine.py").write_text(TOY_ENGINE + textwrap.dedent('''
        async def open_loud(options):
            engine = await open_engine(options)
            import atexit
            atexit.register(lambda: print(f"toy ran {len(engine.ran)}", file=sys.stderr))
            return engine
    '''))
    (site / "toy_engine-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-engine\n"
                                                                "Version: 1.0\n")
    (site / "toy_engine-1.0.dist-info" / "entry_points.txt").write_text("[gg.engines]\ntoy = toy_engine:open_loud\n")
    top, expected = _graph(sh)
    env = {**gg_env(store.root), "PYTHONPATH": str(site), "GG_ENGINE": "toy"}
    result = subprocess.run([str(VENV_BIN / "gg-force"), "-q", "--print", top], env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "toy ran 3\n"
    value = result.stdout.split()[1]
    assert Path(store.blob_path(value)).read_text() == expected
    listed = subprocess.run([str(VENV_BIN / "gg-force"), "--engine", "nope", top], env=env, capture_output=True,
                            text=True)
    assert "lambda, local, toy" in listed.stderr, listed.stderr
