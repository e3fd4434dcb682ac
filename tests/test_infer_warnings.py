"""A successful compile's warnings are shown: by gg-force when it runs the compile, and
again by gg-infer on a warm build (``make clean``, store kept), as ccache replays a hit.

Real gg-infer and gg-force runs of a small make project with the real gcc: ``main.c``
has an unused variable (``-Wall`` warns), ``x.c`` compiles silently.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ir.store import LocalStore
from tests.test_infer_memo import _env, infer
from tests.test_infer_support import VENV_BIN

TIMEOUT = 120
BLOCK = "succeeded with output"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "p"
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.c").write_text("int x(void);\nint main(void)\n{\n    int unused;\n    return x();\n}\n")
    (root / "src" / "x.c").write_text("int x(void) { return 0; }\n")
    (root / "Makefile").write_text(
        "CFLAGS = -Wall -O2\n"
        "app: main.o x.o\n\tcc -o app main.o x.o\n"
        "main.o: src/main.c\n\tcc $(CFLAGS) -c src/main.c -o main.o\n"
        "x.o: src/x.c\n\tcc $(CFLAGS) -c src/x.c -o x.o\n"
        "clean:\n\trm -f app *.o\n")
    return root


def plain_warning(root: Path, source: str = "src/main.c") -> str:
    """What gcc itself prints for main.c (in the thunks' locale, C: plain quotes)."""
    done = subprocess.run(["cc", "-Wall", "-O2", "-c", source, "-o", "/dev/null"], cwd=root,
                          env={**os.environ, "LC_ALL": "C"}, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0 and "unused variable 'unused'" in done.stderr, done.stderr
    return done.stderr


def gg_force(root: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([str(VENV_BIN / "gg-force"), *args], cwd=root, env=_env(), capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    return done


def warm(root: Path, **extra: str) -> str:
    subprocess.run(["make", "-s", "clean"], cwd=root, check=True, capture_output=True)
    return infer(root, "make", "-s", **extra).stderr


@pytest.mark.parametrize("server", ["on", "off"])
def test_warnings_shown_cold_by_gg_force_and_warm_by_gg_infer(tree, server):
    expected = plain_warning(tree)
    try:
        cold = infer(tree, "make", "-s", GG_INFER_SERVER=server).stderr
        assert "warning" not in cold  # modelled, not compiled: gg-force shows it
        forced = gg_force(tree, "-q", "app")
        assert forced.stderr.count(BLOCK) == 1, forced.stderr  # x.c's compile and the link print nothing
        header, _, shown = forced.stderr.partition("\n")
        assert header.startswith("gg-force: thunk T") and "cc1 " in header and "r/src/main.c" in header
        assert shown == expected.replace("src/main.c", "r/src/main.c")  # the thunk's names

        # Warm, memo replay: the warning again, where make ran the compile, as gcc prints it.
        assert warm(tree, GG_INFER_SERVER=server) == expected
        # Warm, modelled again (no memo): the same.
        assert warm(tree, GG_INFER_SERVER=server, GG_INFER_MEMO="off") == expected
        # gg-force finds everything reduced: nothing new is printed.
        assert BLOCK not in gg_force(tree, "app").stderr
        assert subprocess.run([str(tree / "app")], timeout=TIMEOUT).returncode == 0
    finally:
        if server == "on":
            from tests.test_infer_server import stop

            stop(tree)


def test_a_store_without_output_records_builds_without_replay(tree):
    infer(tree, "make", "-s")
    gg_force(tree, "-q", "app")
    os.unlink(tree / ".gg" / "outputs.log")  # as a store from before output was kept
    assert warm(tree) == ""
    assert gg_force(tree, "-q", "app").stderr == ""


def test_a_lost_output_blob_is_said_never_taken_for_no_warnings(tree):
    infer(tree, "make", "-s")
    gg_force(tree, "-q", "app")
    store = LocalStore(tree / ".gg")
    (blob,) = set(store.output_log.records().values())
    os.chmod(store.blobs / blob, 0o644)
    (store.blobs / blob).write_text("src/main.c: something else\n")  # corrupt: dropped, then missing
    for _ in range(2):  # said on every build while the record stays
        said = warm(tree)
        assert said.count("\n") == 1, said
        assert said.startswith("gg-infer: warning: the output kept for thunk T") and "is not shown" in said
        assert blob in said
    assert not (store.blobs / blob).exists()
    assert gg_force(tree, "-q", "app").stderr == ""  # the build itself is good


def test_early_forcing_shows_the_warnings_at_the_end_of_the_run(tree):
    """Early forcing runs the compiles after their model answered, in a gg-force with no
    terminal: gg-infer shows what they printed when the build is over, once."""
    expected = plain_warning(tree)
    said = infer(tree, "make", "-s", GG_INFER_EARLY="2").stderr
    shown, _, summary = said.partition("gg-infer: forced ")
    assert shown == expected, said
    assert "early" in summary
    assert BLOCK not in gg_force(tree, "-q", "app").stderr  # reduced early: nothing new
    # Warm: the models replay it; nothing runs early, so nothing more at the end.
    assert warm(tree, GG_INFER_EARLY="2") == expected


def test_a_fallbacks_forced_inputs_show_their_warnings(tree):
    """An unmodelled tool that reads an object forces it first (its gg-force's output is
    captured): the compile's warning is shown at the end of the run."""
    expected = plain_warning(tree)
    with open(tree / "Makefile", "a") as makefile:
        makefile.write("dump: main.o\n\tobjdump -h main.o > dump.txt\n")
    said = infer(tree, "make", "-s", "dump").stderr
    assert said.startswith(expected), said
    assert said.count("unused variable") == 1
    assert "objdump x1" in said  # the fallback's own summary line follows


def test_a_call_naming_its_source_absolutely_gets_absolute_names(tree):
    """As CMake does: gcc prints the absolute name, and so does the replay."""
    makefile = tree / "Makefile"
    makefile.write_text(makefile.read_text().replace("-c src/main.c", "-c $(CURDIR)/src/main.c"))
    expected = plain_warning(tree, str(tree / "src" / "main.c"))
    assert str(tree / "src" / "main.c") + ":4:9: warning" in expected
    infer(tree, "make", "-s")
    gg_force(tree, "-q", "app")
    assert warm(tree) == expected
