"""The ``gg`` IR utilities, run as the installed console script (a real subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ir.hashing import hash_file
from ir.ids import Kind, id_of_bytes
from ir.store import LocalStore
from ir.thunk import Input, Thunk

GG = Path(sys.executable).with_name("gg")
if not GG.exists():  # not run from the project's venv: fall back to PATH
    GG = Path(shutil.which("gg") or "gg")


def gg(*args: str, cwd: Path, env: dict | None = None, check: int | None = 0) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "GG_DIR"}
    environ.update(env or {})
    run = subprocess.run([str(GG), *args], cwd=cwd, env=environ, capture_output=True, text=True)
    if check is not None:
        assert run.returncode == check, (run.returncode, run.stdout, run.stderr)
    return run


def assert_one_line_error(run: subprocess.CompletedProcess, code: int, fragment: str) -> None:
    assert run.returncode == code, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    if code == 1:
        lines = run.stderr.splitlines()
        assert len(lines) == 1, run.stderr
        assert lines[0].startswith("gg: error: "), lines
    assert fragment in run.stderr, run.stderr


def gg_many(cases: dict[str, list[str]], cwd: Path) -> dict[str, subprocess.CompletedProcess]:
    """Run many independent ``gg`` invocations at once (they only read, or write the
    concurrency-safe store), so the suite does not pay each start-up in turn."""
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = {key: pool.submit(gg, *args, cwd=cwd, check=None) for key, args in cases.items()}
        return {key: future.result() for key, future in futures.items()}


@pytest.fixture
def work(tmp_path) -> Path:
    LocalStore.init(tmp_path / ".gg")  # `gg init` itself is tested in test_init
    return tmp_path


COMMANDS = ["init", "hash", "collect", "create-thunk", "describe"]


@pytest.fixture(scope="module")
def help_runs(tmp_path_factory) -> tuple[Path, dict[str, subprocess.CompletedProcess]]:
    cwd = tmp_path_factory.mktemp("help")
    return cwd, gg_many({c: [c, "--help"] for c in COMMANDS} | {"": ["--help"]}, cwd)


@pytest.mark.parametrize("command", COMMANDS)
def test_help(help_runs, command):
    cwd, runs = help_runs
    assert runs[command].returncode == 0, runs[command].stderr
    assert runs[command].stdout.startswith(f"usage: gg {command}")
    assert not (cwd / ".gg").exists()


def test_top_level_help(help_runs):
    run = help_runs[1][""]
    assert run.returncode == 0
    for command in COMMANDS:
        assert command in run.stdout


def test_init(tmp_path):
    run = gg("init", cwd=tmp_path)
    assert run.stdout.strip() == str(tmp_path / ".gg")
    assert (tmp_path / ".gg" / "blobs").is_dir()
    gg("init", cwd=tmp_path)  # harmless twice
    gg("init", str(tmp_path / "other"), cwd=tmp_path)
    assert (tmp_path / "other" / ".gg" / "blobs").is_dir()
    target = tmp_path / "via-env"
    assert gg("init", cwd=tmp_path, env={"GG_DIR": str(target)}).stdout.strip() == str(target)
    assert (target / "hash_cache").is_dir()


def test_hash(tmp_path):
    (tmp_path / "a").write_bytes(b"hello")
    (tmp_path / "b").write_bytes(b"")
    assert gg("hash", "a", cwd=tmp_path).stdout == id_of_bytes(b"hello", Kind.VALUE) + "\n"
    both = gg("hash", "a", "b", cwd=tmp_path).stdout.splitlines()
    assert both == [f"{id_of_bytes(b'hello', Kind.VALUE)}  a", f"{id_of_bytes(b'', Kind.VALUE)}  b"]
    assert not (tmp_path / ".gg").exists()  # hashing needs no store


def test_collect(work):
    (work / "a").write_bytes(b"data")
    (work / "tool").write_bytes(b"#!/bin/sh\n")
    (work / "tool").chmod(0o755)
    lines = gg("collect", "a", "tool", cwd=work).stdout.splitlines()
    ids = [line.split()[0] for line in lines]
    assert ids == [hash_file(work / "a"), hash_file(work / "tool")]
    store = LocalStore(work / ".gg")
    assert store.read_bytes(ids[0], verify=True) == b"data"
    assert stat.S_IMODE(os.stat(store.blob_path(ids[1])).st_mode) == 0o555
    sub = work / "sub"
    sub.mkdir()
    (sub / "c").write_bytes(b"c")
    assert store.has(gg("collect", "c", cwd=sub).stdout.strip())  # found by walking up


def test_create_thunk_and_describe_show_exactly_what_was_put_in(work):
    (work / "in.txt").write_bytes(b"input\n")
    (work / "helper").write_bytes(b"#!/bin/sh\nexit 0\n")
    (work / "helper").chmod(0o755)
    sh = Path("/bin/sh").resolve()
    dep = gg("create-thunk", "-o", "dep.out", str(sh), "--", "sh", "-c", "echo > dep.out", cwd=work)
    dep_id = dep.stdout.strip()
    gg("create-thunk", "-o", "x.o", "-C", "x.o", str(sh), "--", "sh", "-c", "touch x.o", cwd=work)
    x_placeholder_ref = gg("describe", "x.o", cwd=work)
    x_id = json.loads(x_placeholder_ref.stdout)["id"]
    value_id = id_of_bytes(b"explicit value", Kind.VALUE)

    run = gg(
        "create-thunk",
        "--envar", "LANG=C", "-e", "EMPTY=",
        "--value", "in.txt", "-v", "in.txt=copy/in.txt", "--value", f"{value_id}=v.bin",
        "--thunk", f"{dep_id}=dep", "-t", f"{dep_id}#dep.out=dep2", "--thunk", "x.o",
        "--executable", "helper", "-x", "helper=bin/helper2",
        "--output", "out", "-o", "lib/out.o",
        "--timeout", "90000",
        "--link", "lib/link.so=../in.txt", "-l", "l2=copy/in.txt",
        "--memory", "3008", "--cpus", "2", "--disk", "10240",
        "--placeholder", "result",
        str(sh), "--", "sh", "-c", "do-it --flag", "arg with spaces",
        cwd=work,
    )
    ident = run.stdout.strip()
    sh_id, in_id, helper_id = hash_file(sh), hash_file(work / "in.txt"), hash_file(work / "helper")
    expected = {
        "id": ident,
        "kind": "thunk",
        "function": {
            "hash": sh_id,
            "args": ["sh", "-c", "do-it --flag", "arg with spaces"],
            "envars": ["LANG=C", "EMPTY="],
        },
        "values": sorted(
            [
                {"ref": in_id, "name": "in.txt"},
                {"ref": in_id, "name": "copy/in.txt"},
                {"ref": value_id, "name": "v.bin"},
            ],
            key=lambda i: (i["ref"], i["name"]),
        ),
        "thunks": sorted(
            [
                {"ref": dep_id, "name": "dep"},
                {"ref": f"{dep_id}#dep.out", "name": "dep2"},
                {"ref": x_id, "name": "x.o"},
            ],
            key=lambda i: (i["ref"], i["name"]),
        ),
        "executables": sorted(
            [
                {"ref": helper_id, "name": "helper"},
                {"ref": helper_id, "name": "bin/helper2"},
                {"ref": sh_id, "name": sh.name},
            ],
            key=lambda i: (i["ref"], i["name"]),
        ),
        "outputs": ["out", "lib/out.o"],
        "timeout_ms": 90000,
        "links": [{"name": "l2", "target": "copy/in.txt"}, {"name": "lib/link.so", "target": "../in.txt"}],
        "resources": {"memory_mib": 3008, "cpus": 2, "disk_mib": 10240},
        "reduces_to": None,
    }
    assert json.loads(gg("describe", ident, cwd=work).stdout) == expected
    by_placeholder = json.loads(gg("describe", "result", cwd=work).stdout)
    assert by_placeholder.pop("placeholder") == {"path": "result", "form": "shebang"}
    assert by_placeholder == expected
    assert stat.S_IMODE(os.stat(work / "result").st_mode) == 0o755

    # The stored thunk is exactly that, and the collected inputs are in the store.
    store = LocalStore(work / ".gg")
    thunk = store.load_thunk(ident)
    assert thunk == Thunk(
        function_hash=sh_id,
        args=("sh", "-c", "do-it --flag", "arg with spaces"),
        envars=("LANG=C", "EMPTY="),
        values=(Input(in_id, "in.txt"), Input(in_id, "copy/in.txt"), Input(value_id, "v.bin")),
        thunks=(Input(dep_id, "dep"), Input(f"{dep_id}#dep.out", "dep2"), Input(x_id, "x.o")),
        executables=(Input(helper_id, "helper"), Input(helper_id, "bin/helper2"), Input(sh_id, sh.name)),
        outputs=("out", "lib/out.o"),
        timeout_ms=90000,
        links=thunk.links,
        resources=thunk.resources,
    ).canonical()
    for blob in (sh_id, in_id, helper_id):
        assert store.verify(blob)
    assert os.access(store.blob_path(helper_id), os.X_OK)


def test_create_thunk_linker_placeholder_and_reduction(work):
    ident = gg("create-thunk", "-o", "a.o", "-C", "a.o", "/bin/sh", "--", "sh", cwd=work).stdout.strip()
    assert (work / "a.o").read_bytes().startswith(b'OUTPUT_FORMAT("elf64-x86-64")')
    assert stat.S_IMODE(os.stat(work / "a.o").st_mode) == 0o644
    store = LocalStore(work / ".gg")
    value = store.put_bytes(b"object code")
    store.put_reduction(ident, value)
    report = json.loads(gg("describe", "a.o", cwd=work).stdout)
    assert report["placeholder"] == {"path": "a.o", "form": "linker"}
    assert report["reduces_to"] == value
    assert report["args"] if "args" in report else report["function"]["args"] == ["sh"]


def test_create_thunk_default_args_is_function_basename(work):
    ident = gg("create-thunk", "-o", "o", "/bin/sh", cwd=work).stdout.strip()
    assert json.loads(gg("describe", ident, cwd=work).stdout)["function"]["args"] == ["sh"]


def test_describe_value(work):
    (work / "v").write_bytes(b"12345")
    ident = gg("collect", "v", cwd=work).stdout.strip()
    assert json.loads(gg("describe", ident, cwd=work).stdout) == {
        "id": ident, "kind": "value", "size": 5, "stored": True, "executable": False,
    }


ERRORS = [
        (["hash", "missing"], "No such file or directory: missing"),
        (["hash", "."], "Is a directory: ."),
        (["collect", "missing"], "No such file or directory: missing"),
        (["describe", "nonsense"], "'nonsense' is neither an ID nor a placeholder file"),
        (["describe", "Tx" + "0" * 32 + "_5"], "blob Tx" + "0" * 32 + "_5 is not in"),
        (["describe", "Vx" + "0" * 32 + "_05"], "neither an ID nor a placeholder"),
        (["create-thunk", "-o", "o", "missing-program"], "'missing-program' is neither an ID nor a file"),
        (["create-thunk", "-o", "o", "-v", "nope", "/bin/sh"], "'nope' is neither an ID nor a file"),
        (["create-thunk", "-o", "o", "-t", "nope", "/bin/sh"], "'nope' is neither a thunk ID nor a placeholder"),
        (["create-thunk", "-o", "o", "-o", "o", "/bin/sh"], "duplicate output tag 'o'"),
        (["create-thunk", "-o", "../o", "/bin/sh"], "output tag '../o' must be a plain relative path"),
        (["create-thunk", "-o", "o", "-e", "NOVALUE", "/bin/sh"], "'NOVALUE' is not NAME=VALUE"),
        (["create-thunk", "-o", "o", "-l", "noequals", "/bin/sh"], "--link 'noequals' is not NAME=TARGET"),
        (["create-thunk", "-o", "o", "-l", "/abs=x", "/bin/sh"], "input name '/abs' is absolute"),
        (["create-thunk", "-o", "o", "-v", "/bin/sh=../x", "/bin/sh"], "input name '../x' escapes"),
        (["create-thunk", "-o", "o", "-v", "/bin/sh=/x", "/bin/sh"], "input name '/x' is absolute"),
        (["create-thunk", "-o", "o", "--timeout", "-5", "/bin/sh"], "timeout -5 is out of range"),
        (["create-thunk", "-o", "o", "--memory", str(2**32), "/bin/sh"], "memory hint 4294967296 is out"),
        (["create-thunk", "-o", "o", "-v", "Tx" + "0" * 32 + "_5", "/bin/sh"], "is listed as a value"),
        (["create-thunk", "-o", "o", "-t", "Vx" + "0" * 32 + "_5", "/bin/sh"], "is listed as a thunk"),
        (["create-thunk", "-o", "o", "-t", "Vx" + "0" * 32 + "_5#t", "/bin/sh"], "output tag on a value ID"),
        (["create-thunk", "-o", "o", "Tx" + "0" * 32 + "_5"], "names a thunk, not an executable"),
]


@pytest.mark.parametrize(("args", "fragment"), ERRORS)
def test_errors_are_one_line_exit_1(error_runs, args, fragment):
    assert_one_line_error(error_runs[" ".join(args)], 1, fragment)


def test_no_store_is_an_error(tmp_path):
    run = gg("describe", "Vx" + "0" * 32 + "_5", cwd=tmp_path, check=None)
    assert_one_line_error(run, 1, "no .gg directory")
    run = gg("describe", "Vx" + "0" * 32 + "_5", cwd=tmp_path, env={"GG_DIR": str(tmp_path / "n")}, check=None)
    assert_one_line_error(run, 1, "does not exist (run 'gg init' there)")


USAGE_ERRORS = [
        ([], "required: COMMAND"),
        (["bogus"], "invalid choice"),
        (["hash"], "the following arguments are required: FILE"),
        (["collect"], "the following arguments are required: FILE"),
        (["describe"], "the following arguments are required: ID|PLACEHOLDER"),
        (["create-thunk", "/bin/sh"], "the following arguments are required: --output"),
        (["create-thunk", "-o", "o"], "the following arguments are required: FUNCTION"),
        (["create-thunk", "-o", "o", "--timeout", "soon", "/bin/sh"], "invalid int value: 'soon'"),
        (["init", "a", "b"], "unrecognized arguments"),
]


@pytest.fixture(scope="module")
def error_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every error case, run concurrently in one directory with a store."""
    cwd = tmp_path_factory.mktemp("errors")
    LocalStore.init(cwd / ".gg")
    return gg_many({" ".join(args): args for args, _ in ERRORS + USAGE_ERRORS}, cwd)


@pytest.mark.parametrize(("args", "fragment"), USAGE_ERRORS)
def test_usage_errors_exit_2(error_runs, args, fragment):
    assert_one_line_error(error_runs[" ".join(args)], 2, fragment)
