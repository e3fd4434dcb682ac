"""An autotools + libtool project (shared and static library, a program linked against
it) through gg-infer: libtool's compile lines (``-fPIC -DPIC -o src/.libs/x.o`` and the
plain ``-o src/x.o``), its shared link with ``-Wl,-soname``, ``ar cr`` + ``ranlib`` of
``.libs/libfoo.a``, the symlinks and the ``.la`` files it writes itself, and the program
linked against ``./.libs/libfoo.so``. Forced with the toolchain hidden, every binary
equals the plain build's, and the program runs.

Needs autoconf, automake and libtool (Debian: ``apt-get install autoconf automake
libtool``; .ci/run installs them)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ir.placeholder import read_placeholder
from tests.corpus.fetch import ensure_tools
from tests.test_infer_support import gg_force, gg_infer, hidden_ok, tool_env

pytestmark = pytest.mark.skipif(not hidden_ok(), reason="needs root and unshare -m for the hidden toolchain")

FILES = {
    "configure.ac": """AC_INIT([ltdemo], [1.0])
AC_CONFIG_SRCDIR([src/foo.c])
AC_CONFIG_AUX_DIR([build-aux])
AC_CONFIG_MACRO_DIRS([m4])
AM_INIT_AUTOMAKE([foreign subdir-objects])
AC_PROG_CC
LT_INIT
AC_CONFIG_FILES([Makefile])
AC_OUTPUT
""",
    "Makefile.am": """ACLOCAL_AMFLAGS = -I m4
lib_LTLIBRARIES = libfoo.la
libfoo_la_SOURCES = src/foo.c src/bar.c
libfoo_la_LDFLAGS = -version-info 1:0:0
include_HEADERS = src/foo.h
bin_PROGRAMS = prog
prog_SOURCES = src/main.c
prog_LDADD = libfoo.la
""",
    "src/foo.h": "int foo(void);\nint bar(void);\n",
    "src/foo.c": '#include "foo.h"\nint foo(void) { return bar() + 1; }\n',
    "src/bar.c": '#include "foo.h"\nint bar(void) { return 41; }\n',
    "src/main.c": '#include <stdio.h>\n#include "foo.h"\nint main(void) { printf("%d\\n", foo()); return 0; }\n',
}
BINARIES = [".libs/prog", ".libs/libfoo.so.1.0.0", ".libs/libfoo.a", "src/foo.o", "src/bar.o", "src/main.o",
            "src/.libs/foo.o", "src/.libs/bar.o"]
# -g objects record the absolute build directory (see docs/model_sub.md), so no -g here
CONFIGURE = ["./configure", "-q", "CFLAGS=-O2"]


def _run(cwd, *command):
    result = subprocess.run(list(command), cwd=cwd, env=tool_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result


def test_libtool_project_through_gg_matches_plain(tmp_path):
    ensure_tools(["autoreconf", "libtoolize", "automake"])  # apt-get install when missing (as root)
    source = tmp_path / "source"
    for rel, text in FILES.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text(text)
    _run(source, "autoreconf", "-fi")
    plain = tmp_path / "plain"
    gg = tmp_path / "gg"
    shutil.copytree(source, plain, symlinks=True)
    shutil.copytree(source, gg, symlinks=True)
    _run(plain, *CONFIGURE)
    _run(plain, "make", "-s")

    configured = gg_infer(gg, *CONFIGURE)
    assert configured.returncode == 0, configured.stderr
    built = gg_infer(gg, "make")
    assert built.returncode == 0, built.stderr
    assert "ran locally" not in built.stderr, built.stderr  # every make step was a thunk
    for name in BINARIES:
        assert read_placeholder(gg / name) is not None, name
    # what libtool writes itself is real, and the same
    for name in ["libfoo.la", ".libs/libfoo.lai", "src/foo.lo", "src/bar.lo"]:
        assert (gg / name).read_text() == (plain / name).read_text(), name
    assert (gg / ".libs/libfoo.so.1").is_symlink() and (gg / ".libs/libfoo.so").is_symlink()

    forced = gg_force(gg, BINARIES, tmp_path / "trace.jsonl")
    assert forced.returncode == 0, forced.stderr
    for name in BINARIES:
        assert (gg / name).read_bytes() == (plain / name).read_bytes(), name
    # the libtool wrapper runs the real program against the real library
    assert _run(gg, "./prog").stdout == "42\n"
