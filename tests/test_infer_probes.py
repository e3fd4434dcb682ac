"""Probes run by the build itself (make's ``$(shell $(CC) ...)``, a shell's ``$(...)``)
run for real under gg-infer, so the build picks exactly what a plain make picks; the
build's ordinary compiles are still modelled, also when make's own stdout is a pipe."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from model_sub.consumed import program_name
from tests.corpus.fetch import ensure_tools
from tests.test_infer_support import gg_force, gg_infer, hidden_ok, tool_env

# -Wall -Werror fails on an unused variable: a compile-stage (cc1) warning, so a
# preprocessor-only check cannot see it either.
SOURCES = {
    "probe_ok.c": "int probe_ok(void) { return 0; }\n",
    "probe_bad.c": "int probe_bad(void) { int unused; return 0; }\n",
    "flag_yes.c": "const char *flag(void) { return \"ok-probe-passed\"; }\n",
    "flag_no.c": "const char *flag(void) { return \"ok-probe-failed\"; }\n",
    "main.c": """#include <stdio.h>
const char *flag(void);
int main(void) {
#ifdef BAD_PASSED
    puts("bad-probe-passed");
#else
    puts("bad-probe-failed");
#endif
#ifdef QUIET_BAD_PASSED
    puts("quiet-bad-probe-passed");
#else
    puts("quiet-bad-probe-failed");
#endif
#ifdef SUBST_BAD_PASSED
    puts("subst-bad-probe-passed");
#else
    puts("subst-bad-probe-failed");
#endif
    puts(flag());
    return 0;
}
""",
}

# HAVE_OK / HAVE_BAD: the compile's own stdout is make's pipe. HAVE_BAD_QUIET: the
# compile writes to /dev/null, the shell around it writes into make's pipe. The recipe of
# main.o probes with a shell's command substitution.
MAKEFILE = """
CC = cc
HAVE_OK := $(shell $(CC) -Wall -Werror -c probe_ok.c -o probe_ok.o 2>/dev/null && echo yes)
HAVE_BAD := $(shell $(CC) -Wall -Werror -c probe_bad.c -o probe_bad.o 2>/dev/null && echo yes)
HAVE_BAD_QUIET := $(shell $(CC) -Wall -Werror -c probe_bad.c -o probe_bad2.o >/dev/null 2>&1 && echo yes)
ifeq ($(HAVE_OK),yes)
FLAG_SRC := flag_yes.c
else
FLAG_SRC := flag_no.c
endif
ifeq ($(HAVE_BAD),yes)
DEFS += -DBAD_PASSED
endif
ifeq ($(HAVE_BAD_QUIET),yes)
DEFS += -DQUIET_BAD_PASSED
endif

prog: main.o flag.o
\t$(CC) -o prog main.o flag.o
main.o: main.c
\tSUBST=`$(CC) -Wall -Werror -c probe_bad.c -o probe_bad3.o 2>/dev/null && echo -DSUBST_BAD_PASSED`; \\
\t$(CC) $(DEFS) $$SUBST -c main.c -o main.o
flag.o: $(FLAG_SRC)
\t$(CC) -c $(FLAG_SRC) -o flag.o
"""
EXPECTED = "bad-probe-failed\nquiet-bad-probe-failed\nsubst-bad-probe-failed\nok-probe-passed\n"


def _project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in SOURCES.items():
        (root / name).write_text(text)
    (root / "Makefile").write_text(MAKEFILE)
    return root


def _log(root: Path) -> list[list[str]]:
    path = root / ".gg" / "infer" / "log"
    return [line.split("\t") for line in path.read_text().splitlines()] if path.exists() else []


def _modelled_and_real(root: Path) -> tuple[list[str], list[str]]:
    log = _log(root)
    return ([f[-1] for f in log if f[0] == "model"], [f[-1] for f in log if f[0] == "real"])


def test_program_names():
    assert program_name(["/usr/bin/make", "-C", "x"]) == "make"
    assert program_name(["/usr/bin/python3", "/venv/bin/ninja", "-C", "b"]) == "ninja"
    assert program_name(["/bin/sh", "-c", "make all"]) == "sh"
    assert program_name(["/usr/bin/env", "-i", "gmake"]) == "gmake"
    assert program_name([]) == ""


def test_plain_make_picks(tmp_path):
    """The reference: a plain make, whose result the gg-infer runs must equal."""
    root = _project(tmp_path / "plain")
    subprocess.run(["make", "-s"], cwd=root, env=tool_env(), check=True, capture_output=True)
    out = subprocess.run(["./prog"], cwd=root, check=True, capture_output=True, text=True).stdout
    assert out == EXPECTED


@pytest.mark.parametrize("command", [["make"], ["make", "-j2"], ["sh", "-c", "make | cat"],
                                     ["sh", "-c", 'out=$(make) && echo "$out"']],
                         ids=["captured", "jobserver", "make-piped-to-cat", "make-in-command-substitution"])
def test_build_probes_run_real_ordinary_compiles_modelled(tmp_path, command):
    """Every probe runs for real (the failing ones fail, as in a plain make); main.o,
    flag.o and prog are modelled although make's stdout is a pipe (captured by the test,
    piped into ``cat``, or read by a shell's command substitution of the whole make) and
    with make's jobserver pipe passed down; forcing gives the program a plain make gives."""
    root = _project(tmp_path / "p")
    result = gg_infer(root, *command)
    assert result.returncode == 0, result.stderr
    modelled, real = _modelled_and_real(root)
    assert any("-DBAD_PASSED" not in m and "main.c" in m and "-o main.o" in m for m in modelled), modelled
    assert not any("PASSED" in m for m in modelled), modelled
    assert any("flag_yes.c" in m for m in modelled), modelled
    assert any("-o prog" in m for m in modelled), modelled
    for probe in ("probe_ok.o", "probe_bad.o", "probe_bad2.o", "probe_bad3.o"):
        assert any(probe in r for r in real), (probe, real)
    reasons = [f[2] for f in _log(root) if f[0] == "real"]
    assert all("read at once" in r for r in reasons), reasons
    assert "ran locally" not in result.stderr  # run for real, not a counted fallback
    assert "ran for real, their output read at once by the build" in result.stderr  # but said out loud
    assert not (root / "probe_bad.o").exists() and (root / "probe_ok.o").exists()
    assert not (root / "prog").read_bytes().startswith(b"\x7fELF")  # a placeholder until forced
    forced = gg_force(root, ["prog"], tmp_path / "trace", hidden=hidden_ok())
    assert forced.returncode == 0, forced.stderr
    out = subprocess.run(["./prog"], cwd=root, check=True, capture_output=True, text=True).stdout
    assert out == EXPECTED


def test_python_capture_under_make_runs_real(tmp_path):
    """A script a recipe runs that captures a compile's output (exit status and text
    consumed at once) is the same case as $(shell ...): the compile runs for real."""
    root = _project(tmp_path / "py")
    (root / "check.py").write_text(
        "import subprocess, sys\n"
        "r = subprocess.run(['cc', '-Wall', '-Werror', '-c', 'probe_bad.c', '-o', 'probe_py.o'],"
        " capture_output=True)\n"
        "open('py_result.txt', 'w').write(str(r.returncode != 0))\n")
    (root / "Makefile").write_text("all:\n\tpython3 check.py\n")
    result = gg_infer(root, "make")
    assert result.returncode == 0, result.stderr
    assert (root / "py_result.txt").read_text() == "True"
    _, real = _modelled_and_real(root)
    assert any("probe_py.o" in r for r in real), real


def test_consumed_call_on_a_placeholder_forces_it_first(tmp_path):
    """`ar t libx.a` in a recipe's backticks, on an archive the model wrote as a
    placeholder: the archive is forced, then the real ar lists the real members (run for
    real, not counted as a fallback)."""
    root = tmp_path / "ar"
    root.mkdir()
    (root / "x.c").write_text("int x(void) { return 1; }\n")
    (root / "y.c").write_text("int y(void) { return 2; }\n")
    (root / "Makefile").write_text(
        "members.txt: libx.a\n\tM=`ar t libx.a`; echo \"$$M\" > members.txt\n"
        "libx.a: x.o y.o\n\tar rcs libx.a x.o y.o\n"
        "%.o: %.c\n\tcc -c $< -o $@\n")
    result = gg_infer(root, "make")
    assert result.returncode == 0, result.stderr
    assert (root / "members.txt").read_text() == "x.o\ny.o\n"
    real = [f for f in _log(root) if f[0] == "real"]
    assert [f[1] for f in real] == ["ar"] and "read at once" in real[0][2] and "forced" in real[0][2], real
    assert "ran locally" not in result.stderr
    modelled, _ = _modelled_and_real(root)
    assert len(modelled) == 3, modelled  # x.o, y.o, libx.a


NINJA = """
rule cc
  command = cc -c $in -o $out
rule probe_then_cc
  command = D=`cc -Wall -Werror -c probe_bad.c -o probe_bad_ninja.o 2>/dev/null && echo -DBAD_PASSED`; $
      cc $$D -c $in -o $out
rule link
  command = cc -o $out $in
build main.o: probe_then_cc main.c
build flag.o: cc flag_yes.c
build prog: link main.o flag.o
"""


def test_ninja_capture_is_not_consumption(tmp_path):
    """Ninja holds a pipe to every command's output only to print it: the compiles are
    modelled; a probe in a command's backticks still runs for real."""
    ensure_tools(["ninja"])  # apt-get install when missing (as root)
    root = _project(tmp_path / "n")
    (root / "build.ninja").write_text(NINJA)
    result = gg_infer(root, "ninja")
    assert result.returncode == 0, result.stderr
    modelled, real = _modelled_and_real(root)
    assert real == ["cc -Wall -Werror -c probe_bad.c -o probe_bad_ninja.o"], real
    assert sorted(modelled) == ["cc -c flag_yes.c -o flag.o", "cc -c main.c -o main.o", "cc -o prog main.o flag.o"]
    assert not any("PASSED" in m for m in modelled), modelled
