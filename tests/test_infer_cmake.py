"""CMake projects through gg-infer: configure stays real, the build is modelled.

A small C/C++ project with feature probes that really fail and really succeed is
configured plainly and under gg-infer (Unix Makefiles and Ninja generators); the
caches and the configure output must be the same. Then the build runs under gg-infer
(the compiler, ar and ranlib are named by absolute path in CMake's rules), and
gg-force with the toolchain hidden must give the plain build's bytes.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ir.placeholder import read_placeholder
from tests.corpus.fetch import ensure_tools
from tests.test_infer_support import gg_force, gg_infer, hidden_ok, tool_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hidden_ok(), reason="needs root and unshare -m for the hidden toolchain"),
]



@pytest.fixture(autouse=True, scope="module")
def _cmake_installed():
    ensure_tools(["cmake"])  # on the machine image today; apt-get install when missing (as root)


CMAKELISTS = """\
cmake_minimum_required(VERSION 3.13)
project(ggprobe C CXX)
set(CMAKE_CXX_STANDARD 11)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
include(CheckSymbolExists)
include(CheckCSourceCompiles)
check_symbol_exists(F_FULLFSYNC "fcntl.h" HAVE_FULLFSYNC)
check_symbol_exists(O_CLOEXEC "fcntl.h" HAVE_O_CLOEXEC)
check_c_source_compiles("int main(void) { return __builtin_expect(0, 0); }" HAVE_BUILTIN_EXPECT)
check_c_source_compiles("#include <no_such_header_gg.h>\\nint main(void) { return 0; }" HAVE_NO_SUCH_HEADER)
configure_file(config.h.in config.h)
add_library(util STATIC util.c)
target_include_directories(util PUBLIC ${CMAKE_CURRENT_BINARY_DIR})
add_executable(app main.cpp)
target_link_libraries(app util)
"""
# appended after the first configure: the re-run during the build must probe for real
LATE_PROBE = 'check_symbol_exists(F_NOCACHE "fcntl.h" HAVE_F_NOCACHE)\n'
CONFIG_H_IN = "".join(f"#cmakedefine {name} 1\n" for name in
                      ("HAVE_FULLFSYNC", "HAVE_O_CLOEXEC", "HAVE_BUILTIN_EXPECT", "HAVE_NO_SUCH_HEADER"))
UTIL_C = """\
#include "config.h"
int util_flags(void) {
    int flags = 0;
#ifdef HAVE_FULLFSYNC
    flags |= 1;
#endif
#ifdef HAVE_O_CLOEXEC
    flags |= 2;
#endif
#ifdef HAVE_BUILTIN_EXPECT
    flags |= 4;
#endif
    return flags;
}
"""
MAIN_CPP = """\
#include <cstdio>
#include <memory>
extern "C" int util_flags(void);
int main() {
    std::unique_ptr<int> flags(new int(util_flags()));
    std::printf("flags=%d cplusplus=%ld\\n", *flags, (long)__cplusplus);
    return 0;
}
"""
TARGETS = ["app", "libutil.a", "CMakeFiles/util.dir/util.c.o", "CMakeFiles/app.dir/main.cpp.o"]


def _project(root: Path) -> Path:
    src = root / "src"
    src.mkdir()
    for name, text in (("CMakeLists.txt", CMAKELISTS), ("config.h.in", CONFIG_H_IN), ("util.c", UTIL_C),
                       ("main.cpp", MAIN_CPP)):
        (src / name).write_text(text)
    return src


def _cache(build: Path) -> list[str]:
    """CMakeCache.txt's entries, with the build directory's own name made neutral."""
    lines = (build / "CMakeCache.txt").read_text().splitlines()
    return [line.replace(str(build), "<build>") for line in lines if line and not line.startswith(("#", "//"))]


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _configure_both(root: Path, generator: str) -> None:
    args = ["-S", "src", "-G", generator, "-DCMAKE_BUILD_TYPE=Release"]
    plain = _run(["cmake", *args, "-B", "plain"], root)
    inferred = gg_infer(root, "cmake", *args, "-B", "gg")
    assert inferred.returncode == 0, inferred.stdout + inferred.stderr
    assert inferred.stderr == plain.stderr
    assert (inferred.stdout.replace(str(root / "gg"), "<build>")
            == plain.stdout.replace(str(root / "plain"), "<build>"))
    assert "The C compiler identification is GNU" in plain.stdout
    assert _cache(root / "gg") == _cache(root / "plain")
    cache = "\n".join(_cache(root / "plain"))
    assert "HAVE_FULLFSYNC:INTERNAL=\n" in cache + "\n" and "HAVE_O_CLOEXEC:INTERNAL=1" in cache
    assert "HAVE_NO_SUCH_HEADER:INTERNAL=\n" in cache + "\n" and "HAVE_BUILTIN_EXPECT:INTERNAL=1" in cache


def _check_build(root: Path, log_start: int) -> None:
    plain, gg = root / "plain", root / "gg"
    for name in TARGETS:
        assert read_placeholder(gg / name) is not None, name
    log = [line.split("\t") for line in (root / ".gg/infer/log").read_text().splitlines()[log_start:]]
    modelled = sorted(fields[1] for fields in log if fields[0] == "model")
    assert modelled == ["ar", "c++", "c++", "cc", "ranlib"], log
    assert all(fields[2].startswith("configure step") for fields in log if fields[0] == "real"), log
    forced = gg_force(gg, TARGETS, root / "trace.jsonl")
    assert forced.returncode == 0, forced.stderr
    for name in TARGETS:
        assert (gg / name).read_bytes() == (plain / name).read_bytes(), name
    assert _run(["./app"], gg).stdout == "flags=6 cplusplus=201103\n"


def test_cmake_makefiles_configure_real_build_modelled(tmp_path):
    src = _project(tmp_path)
    _configure_both(tmp_path, "Unix Makefiles")
    log_start = len((tmp_path / ".gg/infer/log").read_text().splitlines())
    # a changed CMakeLists.txt: make re-runs the configure (cmake --check-build-system)
    with open(src / "CMakeLists.txt", "a") as handle:
        handle.write(LATE_PROBE)
    _run(["make", "-C", "plain"], tmp_path)
    built = gg_infer(tmp_path, "make", "-C", "gg")
    assert built.returncode == 0, built.stdout + built.stderr
    assert _cache(tmp_path / "gg") == _cache(tmp_path / "plain")
    assert "HAVE_F_NOCACHE:INTERNAL=" in _cache(tmp_path / "gg")
    _check_build(tmp_path, log_start)


@pytest.mark.skipif(shutil.which("ninja", path=tool_env()["PATH"]) is None, reason="ninja is a test dependency")
def test_cmake_ninja_configure_real_build_modelled(tmp_path):
    _project(tmp_path)
    _configure_both(tmp_path, "Ninja")
    log_start = len((tmp_path / ".gg/infer/log").read_text().splitlines())
    _run(["cmake", "--build", "plain"], tmp_path)
    built = gg_infer(tmp_path, "cmake", "--build", "gg")
    assert built.returncode == 0, built.stdout + built.stderr
    _check_build(tmp_path, log_start)


def test_cmake_with_the_shims_as_compilers(tmp_path):
    """CC and CXX pointing at the shims themselves: configure identifies GNU (the real
    gcc gets its own path as argv[0], so it finds cc1), and the build is modelled."""
    _project(tmp_path)
    _run(["cmake", "-S", "src", "-B", "plain", "-DCMAKE_BUILD_TYPE=Release"], tmp_path)
    _run(["make", "-C", "plain"], tmp_path)
    assert gg_infer(tmp_path, "true").returncode == 0  # makes .gg/infer/bin
    shims = tmp_path / ".gg" / "infer" / "bin"
    configure = subprocess.run(["cmake", "-S", "src", "-B", "gg", "-DCMAKE_BUILD_TYPE=Release"], cwd=tmp_path,
                               env={**tool_env(), "CC": str(shims / "cc"), "CXX": str(shims / "c++")},
                               capture_output=True, text=True)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    assert "The C compiler identification is GNU" in configure.stdout
    assert "The CXX compiler identification is GNU" in configure.stdout
    built = gg_infer(tmp_path, "make", "-C", "gg")
    assert built.returncode == 0, built.stdout + built.stderr
    _check_build(tmp_path, 0)
