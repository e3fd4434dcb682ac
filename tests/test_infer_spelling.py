"""Paths written with ``./``, ``//`` or ``..``: gcc prints a file as the build spelled the
way to it (``__FILE__`` in the source, in a header beside it, in a header found through
``-I.`` or ``-I./inc``, in a ``-include`` file), and the thunk must print the same text
(zstd compiles ``.//dictBuilder/divsufsort.c``, whose assert strings came out of the
thunk as ``dictBuilder/divsufsort.c``). Real gcc, toolchain hidden for the thunks."""

from __future__ import annotations

import pytest

from ir.placeholder import read_placeholder
from tests.script_builds import force_and_compare, run_both
from tests.test_infer_support import hidden_ok

pytestmark = pytest.mark.skipif(not hidden_ok(), reason="needs root and unshare -m for the hidden toolchain")

FILES = {
    "sub/a.c": '#include "near.h"\n#include <far.h>\n#include <top.h>\nconst char *a_file = __FILE__;\n',
    "sub/near.h": "const char *near_file = __FILE__;\n",
    "inc/far.h": "#ifndef FAR_H\n#define FAR_H\nconst char *far_file = __FILE__;\n#endif\n",
    "top.h": "const char *top_file = __FILE__;\n",
    "build/top.h": "const char *build_top_file = __FILE__;\n",
    "empty/README": "",
}
SCRIPT = """\
gcc -c .//sub/a.c -I./inc -I. -o a1.o
gcc -c ./sub/a.c -Iinc/ -I. -o a2.o
gcc -c sub/../sub/a.c -I./inc/../inc -I. -o a3.o
gcc -c -include ./inc/far.h -I. -Iinc sub/a.c -o a4.o
cd build && gcc -c ../sub/a.c -I. -I.. -I../inc -o a5.o && cd ..
cd build && gcc -c ..//sub/a.c -I./ -I../inc/ -o a6.o && cd ..
mkdir -p nothing && cd nothing && gcc -c ../sub/a.c -I.. -I../nothing/../inc -o a7.o
"""
MODELLED = ["a1.o", "a2.o", "a3.o", "a4.o", "build/a5.o", "build/a6.o"]


def test_paths_print_as_the_build_spelled_them(tmp_path):
    run = run_both(tmp_path, FILES, SCRIPT)
    for name in MODELLED:
        assert read_placeholder(run.gg / name) is not None, (name, run.log())
    assert b".//sub/near.h" in (run.plain / "a1.o").read_bytes()  # what the real gcc prints
    assert b"./top.h" in (run.plain / "a2.o").read_bytes()
    force_and_compare(tmp_path, run, MODELLED)


def test_dotdot_through_a_directory_without_inputs_runs_locally(tmp_path):
    """``nothing/..`` cannot be resolved inside a thunk that has no file in ``nothing``:
    the call runs locally (the real gcc, so the same bytes) and the summary says so."""
    run = run_both(tmp_path, FILES, SCRIPT)
    assert read_placeholder(run.gg / "nothing" / "a7.o") is None
    assert (run.gg / "nothing" / "a7.o").read_bytes() == (run.plain / "nothing" / "a7.o").read_bytes()
    assert "(.. through a directory without inputs) x1" in run.summary(), run.summary()


def test_include_file_found_through_the_include_path_runs_locally(tmp_path):
    """``-include cfg.h -Ib``: not in the working directory, gcc finds ``b/cfg.h`` along
    the include chain; the thunk named it ``r/cfg.h`` and failed when forced. It runs
    locally now, said in the summary, with the real gcc's bytes."""
    files = {"b/cfg.h": "#define V 7\n", "a.c": "int v(void) { return V; }\n"}
    run = run_both(tmp_path, files, "gcc -c -include cfg.h -Ib a.c -o a.o\n")
    assert read_placeholder(run.gg / "a.o") is None
    assert (run.gg / "a.o").read_bytes() == (run.plain / "a.o").read_bytes()
    assert "(-include found through the include path) x1" in run.summary(), run.summary()
