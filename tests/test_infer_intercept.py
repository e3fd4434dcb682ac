"""gg-infer sees tools however the build names them (exec interposition), runs
configure steps for real, and runs the real tools exactly as the build asked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ir.placeholder import read_placeholder
from model_sub.configure import driver_kind, probe_path
from model_sub.toolnames import tool_kind
from tests.test_infer_support import gg_force, gg_infer, hidden_ok

CC = "/usr/bin/cc"
REAL_GCC = os.path.realpath(shutil.which("gcc") or "/usr/bin/gcc")  # e.g. /usr/bin/x86_64-linux-gnu-gcc-12


def _log(root: Path) -> list[list[str]]:
    path = root / ".gg" / "infer" / "log"
    return [line.split("\t") for line in path.read_text().splitlines()] if path.exists() else []


def _sources(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "x.c").write_text("int twice(int v) { return 2 * v; }\n")
    (directory / "y.cc").write_text("extern \"C\" int twice(int);\nint thrice(int v) { return twice(v) + v; }\n")
    (directory / "m.c").write_text("int twice(int);\nint main(void) { return twice(21) != 42; }\n")


# -- the name rule, in Python and in C -------------------------------------------------

NAMES = ["gcc", "cc", "c++", "g++-12", "x86_64-linux-gnu-gcc-12", "x86_64-linux-gnu-g++", "arm-none-eabi-gcc",
         "ar", "x86_64-linux-gnu-ar", "ranlib", "strip", "ld.bfd", "nm", "objcopy", "gcc-ar", "cpp-12",
         "build-cc", "ldd", "cc1", "gcc-", "mycc", "gcc.sh", "x86_64-linux-gnu-readelf", "python3"]


def test_tool_names_in_python():
    assert tool_kind("/usr/bin/x86_64-linux-gnu-gcc-12") == "gcc"
    assert tool_kind("/usr/bin/c++") == "g++"
    assert tool_kind("cc") == "gcc"
    assert tool_kind("x86_64-linux-gnu-gcc-ar-12") == "gcc-ar"  # not ar with a "...-gcc" triple
    assert tool_kind("build-cc") is None  # a prefix without a dash is not a triple
    assert tool_kind("ldd") is None and tool_kind("cc1") is None


def test_preload_routes_exactly_the_tools_python_names(tmp_path):
    """preload.c's C rule agrees with toolnames.py: every name is run by absolute path
    (a script standing in for the tool); exactly the tools reach the server."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in NAMES:
        script = bin_dir / name
        script.write_text("#!/bin/sh\nexit 0\n")
        script.chmod(0o755)
    command = " && ".join(f"{bin_dir / name} --version" for name in NAMES)
    result = gg_infer(tmp_path, "sh", "-c", command)
    assert result.returncode == 0, result.stderr
    seen = {fields[1] for fields in _log(tmp_path)}
    assert seen == {name for name in NAMES if tool_kind(name)}


# -- absolute paths from any build driver -----------------------------------------------

BUILD_SCRIPT = f"""
set -e
{CC} -c x.c -o x.o
{REAL_GCC} -c m.c -o m.o
/usr/bin/c++ -O2 -c y.cc -o y.o
{sys.executable} -c "import subprocess; subprocess.run(['{CC}', '-O1', '-c', 'x.c', '-o', 'x1.o'], check=True)"
/usr/bin/ar rc libx.a x.o y.o
/usr/bin/ranlib libx.a
make -s -f rules.mk
"""
RULES = f"CC = {CC}\nprog: m.o libx.a\n\t$(CC) -o prog m.o libx.a\n"
OUTPUTS = ["x.o", "m.o", "y.o", "x1.o", "libx.a", "prog"]


@pytest.mark.skipif(not hidden_ok(), reason="needs root and unshare -m for the hidden toolchain")
def test_tools_named_by_absolute_path_are_modelled(tmp_path):
    plain, gg = tmp_path / "plain", tmp_path / "gg"
    for directory in (plain, gg):
        _sources(directory)
        (directory / "rules.mk").write_text(RULES)
    subprocess.run(["sh", "-c", BUILD_SCRIPT], cwd=plain, check=True, capture_output=True)
    result = gg_infer(gg, "sh", "-c", BUILD_SCRIPT)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no warning: nothing static ran
    for name in OUTPUTS:
        assert read_placeholder(gg / name) is not None, name
    kinds = [fields[0] for fields in _log(gg)]
    assert kinds == ["model"] * 7, _log(gg)  # 4 compiles, ar, ranlib, the link
    # the model used the driver the build named
    assert [fields[3].split()[0] for fields in _log(gg)][:3] == [CC, REAL_GCC, "/usr/bin/c++"]

    forced = gg_force(gg, OUTPUTS, tmp_path / "trace.jsonl")
    assert forced.returncode == 0, forced.stderr
    for name in OUTPUTS:
        assert (gg / name).read_bytes() == (plain / name).read_bytes(), name
    assert subprocess.run(["./prog"], cwd=gg).returncode == 0


def test_real_tool_runs_as_without_gg(tmp_path):
    """An unmodelled tool runs with the build's argv[0], without gg-infer's preload
    entry (the user's stays) and without the shim directory on PATH."""
    tools = tmp_path / "tools"
    tools.mkdir()
    nm = tools / "nm"  # a tool name without a model: the real program runs
    nm.write_text('#!/bin/sh\nprintf "%s|%s|%s|%s\\n" "$0" "$LD_PRELOAD" "$PATH" "${GG_INFER_EXEC-unset}"\n')
    nm.chmod(0o755)
    user_lib = "libm.so.6"  # any library: the user's own LD_PRELOAD entry must survive
    env_script = f"LD_PRELOAD=\"$LD_PRELOAD:{user_lib}\" {nm} --version"
    result = gg_infer(tmp_path, "sh", "-c", env_script)
    assert result.returncode == 0, result.stderr
    argv0, preload, path, exec_var = result.stdout.strip().split("|")
    assert argv0 == str(nm)
    assert preload == user_lib
    assert ".gg/infer/bin" not in path
    assert exec_var == "unset"
    assert _log(tmp_path)[-1][:2] == ["real", "nm"]
    assert _log(tmp_path)[-1][2].startswith("no model for this tool")


def test_program_with_a_placeholder_argument_reaches_the_server(tmp_path):
    """A non-tool program given a placeholder goes through the server (which may force
    it first) and then runs as asked, still intercepted itself; copies do not."""
    _sources(tmp_path)
    inspect = tmp_path / "inspect"
    inspect.write_text(f'#!/bin/sh\nhead -c 4 "$1"; echo; {CC} -c m.c -o m.o; exit 7\n')
    inspect.chmod(0o755)
    result = gg_infer(tmp_path, "sh", "-c", f"{CC} -c x.c -o x.o && cp x.o copy.o && ./inspect x.o")
    assert result.returncode == 7, result.stderr
    # (head sees the placeholder too, unless the server forced it for inspect)
    log = [fields for fields in _log(tmp_path) if fields[1] != "head"]
    assert [f[:2] for f in log] == [["model", "cc"], ["real", "inspect"], ["model", "cc"]], log
    assert read_placeholder(tmp_path / "copy.o") is not None  # cp is not routed: a copy is a placeholder
    assert read_placeholder(tmp_path / "m.o") is not None  # the program's own children are still seen


def test_shim_called_by_path_gives_gcc_its_own_path(tmp_path):
    """CC pointing at the shim itself: the real gcc still finds cc1."""
    _sources(tmp_path)
    (tmp_path / "bad.c").write_text("int f(void) { return undeclared; }\n")
    shim = tmp_path / ".gg" / "infer" / "bin" / "cc"
    ok = gg_infer(tmp_path, str(shim), "-fsyntax-only", "x.c")
    assert ok.returncode == 0, ok.stderr
    bad = gg_infer(tmp_path, str(shim), "-fsyntax-only", "bad.c")
    assert bad.returncode == 1 and "undeclared" in bad.stderr and "cc1" not in bad.stderr
    made = gg_infer(tmp_path, "make", "-s", f"CC={shim}", "x.o")
    assert made.returncode == 0, made.stderr
    assert read_placeholder(tmp_path / "x.o") is not None


def test_shim_never_runs_itself_as_the_real_tool(tmp_path):
    """The shim directory on PATH under another name (a symlinked directory): the shim
    skips itself when it looks for the real tool, instead of exec'ing itself forever."""
    _sources(tmp_path)
    assert gg_infer(tmp_path, "true").returncode == 0  # creates .gg/infer/bin
    (tmp_path / "alias").symlink_to(tmp_path / ".gg" / "infer" / "bin")
    script = f'PATH="{tmp_path / "alias"}:$PATH" exec cc -fsyntax-only x.c'
    result = gg_infer(tmp_path, "sh", "-c", script)
    assert result.returncode == 0 and "gg-infer shim" not in result.stderr, result.stderr
    assert _log(tmp_path)[-1][:3] == ["real", "cc", "option -fsyntax-only"]


def test_gg_infer_inside_gg_infer(tmp_path):
    """An inner gg-infer builds its helpers for real (not modelled by the outer one) and
    drops the outer library from LD_PRELOAD: its calls are modelled once, by itself."""
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    outer.mkdir()
    _sources(inner)
    script = f'cd "{inner}" && "{sys.executable}" -m model_sub.infer sh -c "echo \\$LD_PRELOAD; {CC} -c x.c -o x.o"'
    result = gg_infer(outer, "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    preloads = result.stdout.strip().split(":")
    assert len(preloads) == 1 and preloads[0].startswith(str(inner / ".gg"))
    assert Path(preloads[0]).read_bytes()[:4] == b"\x7fELF"
    assert read_placeholder(inner / "x.o") is not None
    assert [f[:2] for f in _log(inner)] == [["model", "cc"]]
    assert _log(outer) == []


EXEC_FAMILY = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
extern char **environ;
static int wait_for(pid_t pid) {
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) < 0) return 1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
static int run(int variant) {
    char out[16];
    strcpy(out, "v0.o");
    out[1] = (char)('0' + variant);
    char *argv[] = {"cc", "-c", "x.c", "-o", out, NULL};
    if (variant == 7 || variant == 8) {  /* posix_spawn, posix_spawnp */
        pid_t pid;
        int err = variant == 7 ? posix_spawn(&pid, "/usr/bin/cc", NULL, NULL, argv, environ)
                               : posix_spawnp(&pid, "cc", NULL, NULL, argv, environ);
        return err ? 1 : wait_for(pid);
    }
    pid_t pid = fork();
    if (pid == 0) {
        switch (variant) {
        case 0: execve("/usr/bin/cc", argv, environ); break;
        case 1: execv("/usr/bin/cc", argv); break;
        case 2: execvp("cc", argv); break;
        case 3: execvpe("cc", argv, environ); break;
        case 4: execl("/usr/bin/cc", "cc", "-c", "x.c", "-o", out, (char *)0); break;
        case 5: execlp("cc", "cc", "-c", "x.c", "-o", out, (char *)0); break;
        case 6: execle("/usr/bin/cc", "cc", "-c", "x.c", "-o", out, (char *)0, environ); break;
        case 9: fexecve(open("/usr/bin/cc", O_RDONLY), argv, environ); break;
        }
        _exit(127);
    }
    return wait_for(pid);
}
int main(void) {
    int failed = 0;
    for (int variant = 0; variant <= 9; variant++) failed |= run(variant);
    return failed;
}
"""


def test_every_exec_function_is_intercepted(tmp_path):
    _sources(tmp_path)
    (tmp_path / "family.c").write_text(EXEC_FAMILY)
    built = subprocess.run([CC, "-o", "family", "family.c"], cwd=tmp_path, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    result = gg_infer(tmp_path, "./family")
    assert (result.returncode, result.stderr) == (0, "")
    for variant in range(10):
        assert read_placeholder(tmp_path / f"v{variant}.o") is not None, variant
    assert [fields[0] for fields in _log(tmp_path)] == ["model"] * 10


STATIC_DRIVER = r"""
#include <sys/wait.h>
#include <unistd.h>
static int run(int by_name, const char *out) {
    pid_t pid = fork();
    if (pid == 0) {
        if (by_name) execlp("cc", "cc", "-c", "x.c", "-o", out, (char *)0);
        else execl("/usr/bin/cc", "cc", "-c", "x.c", "-o", out, (char *)0);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
int main(void) { return run(1, "by-name.o") | run(0, "by-path.o"); }
"""


def test_static_build_driver_is_reported(tmp_path):
    """A static program's execs are invisible to the preload library: its tools called
    by name still reach the PATH shims, those it runs by path run for real (correct,
    and gcc still finds cc1 with a bare argv[0]), and gg-infer says so."""
    _sources(tmp_path)
    (tmp_path / "driver.c").write_text(STATIC_DRIVER)
    built = subprocess.run([CC, "-static", "-o", "driver", "driver.c"], cwd=tmp_path, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    result = gg_infer(tmp_path, "./driver")
    assert result.returncode == 0, result.stderr
    assert (f"gg-infer: warning: static program {tmp_path / 'driver'} ran; tools it runs by absolute path are "
            "not seen (see .gg/infer/log)") in result.stderr.splitlines()
    assert read_placeholder(tmp_path / "by-name.o") is not None
    assert (tmp_path / "by-path.o").read_bytes()[:4] == b"\x7fELF"
    assert ["static", str(tmp_path / "driver")] in [f[:2] for f in _log(tmp_path)]


# -- configure steps ----------------------------------------------------------------------

CONFIGURE = r"""#!/bin/sh
# a hand-written configure: each probe's answer is its compiler's exit status
CC=${CC:-cc}
: > config.h
for probe in fullfsync cloexec; do
  case $probe in
    fullfsync) symbol=F_FULLFSYNC ;;
    cloexec) symbol=O_CLOEXEC ;;
  esac
  printf '#include <fcntl.h>\nint main(void) { return %s == 0; }\n' "$symbol" > check_$probe.c
  if $CC -c check_$probe.c -o check_$probe.o 2>/dev/null && $CC -o check_$probe check_$probe.o 2>/dev/null; then
    echo "#define HAVE_$symbol 1" >> config.h
    echo "checking for $symbol... yes"
  else
    echo "checking for $symbol... no"
  fi
done
version=$($CC -dumpversion)
echo "compiler version $version"
"""


def test_configure_script_answers_as_without_gg(tmp_path):
    plain, gg = tmp_path / "plain", tmp_path / "gg"
    for directory in (plain, gg):
        directory.mkdir()
        (directory / "configure").write_text(CONFIGURE)
        (directory / "configure").chmod(0o755)
    expected = subprocess.run(["./configure"], cwd=plain, capture_output=True, text=True, check=True)
    assert "F_FULLFSYNC... no" in expected.stdout and "O_CLOEXEC... yes" in expected.stdout
    result = gg_infer(gg, "./configure")
    assert (result.returncode, result.stdout) == (0, expected.stdout)
    assert (gg / "config.h").read_text() == (plain / "config.h").read_text()
    assert (gg / "check_cloexec").read_bytes() == (plain / "check_cloexec").read_bytes()
    reasons = {fields[2] for fields in _log(gg)}
    assert reasons == {"configure step (configure)"}


@pytest.mark.parametrize(("cmdline", "kind"), [
    (["/bin/sh", "./configure", "--prefix=/usr"], "configure"),
    (["/bin/bash", "-e", "../configure"], "configure"),
    (["/bin/sh", "./config.status"], "config.status"),
    (["/bin/sh", "-c", "./configure"], None),
    (["/usr/bin/perl", "-w", "/usr/bin/autoreconf", "-fi"], "autoreconf"),
    (["/usr/bin/cmake", "-S", ".", "-B", "build"], "cmake"),
    (["cmake", ".."], "cmake"),
    (["/usr/bin/cmake", "--check-build-system", "CMakeFiles/Makefile.cmake", "0"], "cmake"),
    (["/usr/bin/cmake", "--regenerate-during-build", "-S.", "-Bbuild"], "cmake"),
    (["/usr/bin/cmake", "--build", "build"], None),
    (["/usr/bin/cmake", "-E", "cmake_link_script", "CMakeFiles/app.dir/link.txt", "--verbose=1"], None),
    (["/usr/bin/cmake", "-DX=1", "-P", "script.cmake"], None),
    (["/usr/bin/python3", "/usr/bin/meson", "setup", "build"], "meson"),
    (["/usr/bin/python3", "/usr/bin/meson", "compile", "-C", "build"], None),
    (["/usr/bin/python3", "/usr/bin/meson", "--internal", "regenerate", "src", "build"], "meson"),
    (["/usr/bin/python3", "/usr/bin/meson", "--internal", "exe", "--unpickle", "x"], None),
    (["/usr/bin/env", "CC=gcc", "cmake", ".."], "cmake"),
    (["make", "-j2"], None),
    (["/bin/sh"], None),
])
def test_configure_drivers(cmdline, kind):
    assert driver_kind(cmdline) == kind


def test_probe_paths():
    assert probe_path("/b/CMakeFiles/CMakeScratch/TryCompile-abc", ["cc", "-c", "x.c"])
    assert probe_path("/b", ["cc", "/b/CMakeFiles/3.25.1/CompilerIdC/CMakeCCompilerId.c"])
    assert probe_path("/b", ["cc", "-c", "conftest.c"])
    assert not probe_path("/b", ["cc", "-c", "CMakeFiles/app.dir/main.c", "-o", "CMakeFiles/app.dir/main.c.o"])
