"""The corpus: real public projects, each as its own build system ships it.

A :class:`Project` says where its sources come from (a Debian source package, pinned),
which tools it needs, how to prepare the unpacked tree (run once, plainly, e.g.
``autoreconf``), its configure and build commands (run plainly, then under
``gg-infer``), which files hold configure results, and a small check of its own.
Commands are argv lists run in the project's tree.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

Command = tuple[str, ...]

# A small program that uses fmt, linked against the library the build made (fmtlib's own
# tests are off, as they would triple the build).
FMT_CHECK = r"""
#include <fmt/format.h>
#include <fmt/os.h>
#include <vector>
int main() {
  std::vector<int> v{1, 1, 2, 3, 5, 8};
  int sum = 0;
  for (int x : v) sum += x;
  fmt::print("{:>6}|{:<6}|{:^6}|\n", "r", "l", "c");
  fmt::print("{:.3f} {:e} {:#x} {:08b}\n", 3.14159265, 12345.678, 255, 5);
  fmt::print("sum={} of {} items, {}\n", sum, v.size(), fmt::format("{1}-{0}", "a", "b"));
  return sum == 20 ? 0 : 1;
}
"""


@dataclass(frozen=True)
class Project:
    """One corpus project; see the module docstring."""

    name: str
    package: str
    version: str  # Debian version, as apt-get source NAME=VERSION takes it
    tools: tuple[str, ...]  # programs the build needs (installed when missing)
    configure: tuple[Command, ...]
    build: tuple[Command, ...]
    configured: tuple[str, ...] = ()  # files whose content is a configure result
    cmake_cache: str | None = None  # CMakeCache.txt path, compared entry by entry
    prepare: tuple[Command, ...] = ()  # run once, plainly, on the unpacked tree
    extra_files: dict[str, str] = field(default_factory=dict)  # written into the tree before prepare
    check: Callable[[Path], str] | None = None  # runs the project's own check; returns its output
    clean: tuple[Command, ...] = (("make", "clean"),)  # the build's own clean (bench: warm rebuilds)


def _run(command: list[str], cwd: Path, **env: str) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env={**os.environ, **env})
    if result.returncode != 0:
        raise AssertionError(f"check `{' '.join(command)}` exited {result.returncode}: {result.stdout}"
                             f"{result.stderr}")
    return result.stdout


def _zlib_check(tree: Path) -> str:
    """zlib's own test programs: ``example`` (static) and ``examplesh`` (shared), and a
    ``minigzip`` round trip."""
    scratch = tree / "gg-check"
    scratch.mkdir(exist_ok=True)
    out = _run([str(tree / "example")], scratch)
    out += _run([str(tree / "examplesh")], scratch, LD_LIBRARY_PATH=str(tree))
    data = (tree / "deflate.c").read_bytes()
    packed = subprocess.run([str(tree / "minigzip")], input=data, capture_output=True, check=True).stdout
    unpacked = subprocess.run([str(tree / "minigzip"), "-d"], input=packed, capture_output=True, check=True).stdout
    assert unpacked == data, "minigzip round trip changed the data"
    return out + f"minigzip: {len(data)} -> {len(packed)} bytes, round trip ok\n"


def _zlib_cmake_check(tree: Path) -> str:
    scratch = tree / "gg-check"
    scratch.mkdir(exist_ok=True)
    return _run([str(tree / "build" / "example")], scratch)


def _lz4_check(tree: Path) -> str:
    """Compress and decompress a file with the ``lz4`` program the build made."""
    lz4 = tree / "programs" / "lz4"
    scratch = tree / "gg-check"
    scratch.mkdir(exist_ok=True)
    original = scratch / "input"
    original.write_bytes(b"".join(p.read_bytes() for p in sorted((tree / "lib").glob("*.[ch]"))) * 4)
    _run([str(lz4), "-q", "-f", "-9", str(original), str(scratch / "input.lz4")], scratch)
    _run([str(lz4), "-q", "-f", "-d", str(scratch / "input.lz4"), str(scratch / "output")], scratch)
    assert (scratch / "output").read_bytes() == original.read_bytes(), "lz4 round trip changed the data"
    packed = (scratch / "input.lz4").read_bytes()
    return f"lz4: {original.stat().st_size} -> {len(packed)} bytes sha256 {hashlib.sha256(packed).hexdigest()}\n"


def _libyaml_check(tree: Path) -> str:
    """Two of ``make check``'s programs (built by ``make check TESTS=``, run here)."""
    return "".join(_run([str(tree / "tests" / name)], tree / "tests") for name in ("test-version", "test-reader"))


def _fmt_check(tree: Path) -> str:
    return _run([str(tree / "build" / "gg-check")], tree)


PROJECTS = {
    "zlib": Project(
        name="zlib", package="zlib", version="1:1.2.13.dfsg-1", tools=(),
        configure=(("./configure",),),
        build=(("make", "-j2"),),
        configured=("zconf.h", "Makefile", "zlib.pc"),
        check=_zlib_check,
    ),
    "zlib-cmake-ninja": Project(
        name="zlib-cmake-ninja", package="zlib", version="1:1.2.13.dfsg-1", tools=("cmake", "ninja"),
        # Debian's repack drops win32/, but CMakeLists.txt names win32/zlib1.rc as a source of
        # the shared library on every platform (only a Windows toolchain compiles it)
        extra_files={"win32/zlib1.rc": ""},
        configure=(("cmake", "-S", ".", "-B", "build", "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release"),),
        build=(("ninja", "-C", "build", "-j2"),),
        clean=(("ninja", "-C", "build", "clean"),),
        configured=("build/zconf.h", "build/zlib.pc"),
        cmake_cache="build/CMakeCache.txt",
        check=_zlib_cmake_check,
    ),
    "lz4": Project(
        name="lz4", package="lz4", version="1.9.4-1", tools=(),
        configure=(),
        build=(("make", "-j2"),),
        check=_lz4_check,
    ),
    "libyaml": Project(
        name="libyaml", package="libyaml", version="0.2.5-1", tools=("autoreconf", "automake", "libtoolize"),
        prepare=(("autoreconf", "-fi"),),
        configure=(("./configure", "--enable-static", "--enable-shared"),),
        build=(("make", "-j2"), ("make", "-j2", "check", "TESTS=")),
        configured=("include/config.h", "Makefile", "src/Makefile", "tests/Makefile", "libtool", "yaml-0.1.pc"),
        check=_libyaml_check,
    ),
    "fmtlib": Project(
        name="fmtlib", package="fmtlib", version="9.1.0+ds1-2", tools=("cmake",),
        extra_files={"gg-check.cc": FMT_CHECK},
        configure=(("cmake", "-S", ".", "-B", "build", "-DFMT_TEST=OFF", "-DFMT_DOC=OFF"),),
        build=(("cmake", "--build", "build", "-j", "2"),
               ("g++", "-std=c++11", "-O2", "-Iinclude", "gg-check.cc", "build/libfmt.a", "-o", "build/gg-check")),
        clean=(("cmake", "--build", "build", "--target", "clean"), ("rm", "-f", "build/gg-check")),
        cmake_cache="build/CMakeCache.txt",
        check=_fmt_check,
    ),
}
