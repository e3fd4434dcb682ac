"""g++ forms seen in C++ builds, through gg-infer + gg-force (toolchain hidden), byte for
byte against the real g++."""

from __future__ import annotations

import pytest

from ir.placeholder import read_placeholder
from tests.script_builds import force_and_compare, run_both
from tests.test_infer_support import hidden_ok

pytestmark = pytest.mark.skipif(not hidden_ok(), reason="needs root and unshare -m for the hidden toolchain")

MODULE_FILES = {
    "hello.cpp": "export module hello;\nexport int greet() { return 7; }\n",
    "main.cpp": "import hello;\nint main() { return greet() - 7; }\n",
}
MODULE_SCRIPT = """\
g++ -std=c++20 -fmodules-ts -c hello.cpp
g++ -std=c++20 -fmodules-ts -c main.cpp -o main.o
g++ -o prog main.o hello.o
"""


def test_cxx_modules_run_the_real_compiler_and_say_so(tmp_path):
    # g++ writes gcm.cache/hello.gcm, named by the source's module declaration, not on the
    # command line: as a thunk it was missing after gg-infer (exit 0), and main.o failed
    # only when forced ("failed to read compiled module")
    run = run_both(tmp_path, MODULE_FILES, MODULE_SCRIPT)
    assert (run.gg / "gcm.cache/hello.gcm").read_bytes().startswith(b"\x7fELF")  # it names its tree
    for name in ("hello.o", "main.o"):
        assert read_placeholder(run.gg / name) is None, name
    assert "2 commands ran locally, not as thunks: g++ -fmodules-ts x2" in run.summary()
    assert read_placeholder(run.gg / "prog") is not None  # the link is still a thunk
    force_and_compare(tmp_path, run, ["prog"])


RSP_FILES = {
    "a.cc": '#include <string>\nstd::string name() { return "a"; }\n',
    "c.c++": "int c() { return 3; }\n",
    "main.cpp": "#include <iostream>\n#include <string>\nstd::string name(); int c();\n"
                "int main() { std::cout << name() << c() << std::endl; }\n",
}
RSP_SCRIPT = """\
mkdir -p o
g++ -c a.cc -o o/a.o; g++ -c c.c++ -o o/c.o; g++ -c main.cpp -o o/main.o
printf 'o/a.o\\n' > ar.rsp; ar qc liba.a @ar.rsp
printf 'o/main.o "o/c.o"\\n' > ld.rsp
g++ -o prog -Wl,@ld.rsp liba.a
g++ -o prog2 -Xlinker @ld.rsp liba.a
"""


def test_linker_response_files_name_the_link_inputs(tmp_path):
    # ld reads @FILE itself: carried verbatim, the thunk had neither FILE nor the objects
    # it names, and the link failed only when forced ("cannot find @ld.rsp")
    run = run_both(tmp_path, RSP_FILES, RSP_SCRIPT)
    assert "ran locally" not in run.summary()
    assert read_placeholder(run.gg / "prog") is not None
    force_and_compare(tmp_path, run, ["prog", "prog2"])
