"""The build's own ``-ffile-prefix-map``/``-fmacro-prefix-map``/``-fdebug-prefix-map``
(Debian's dpkg-buildflags adds ``-ffile-prefix-map=<build dir>=.``): their ``OLD`` is a
host path, which no thunk name matches, so they were silently lost (``__FILE__`` said
``<root>/src/a.c`` where the real gcc said ``./src/a.c``). Built plainly and through
gg-infer + gg-force (toolchain hidden) in the same directory, since the bytes hold
absolute paths. With ``-g``, the compile directory is mapped too (the objects then
differ only in the producer string, which names the thunk's ``-frandom-seed``: the
debug-info note's difference)."""

from __future__ import annotations

import subprocess

import pytest

from ir.placeholder import read_placeholder
from tests.test_infer_support import gg_force, gg_infer, hidden_ok

pytestmark = pytest.mark.skipif(not hidden_ok(), reason="needs root and unshare -m for the hidden toolchain")


def test_the_builds_prefix_maps_apply_as_with_the_real_gcc(tmp_path):
    tree = tmp_path / "proj"
    for rel, text in {
        "include/check.h": '#include <assert.h>\nstatic inline int check(int x) { assert(x > 0); return x; }\n',
        "src/a.c": '#include "check.h"\nconst char *where = __FILE__;\nint a(int x) { return check(x); }\n',
        "sub/b.c": 'const char *where_b = __FILE__;\n',
    }.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    (tree / "build").mkdir()
    script = (
        f"cd {tree}/build && gcc -O2 -ffile-prefix-map={tree}=. -I{tree}/include -c {tree}/src/a.c -o a1.o\n"
        f"cd {tree}/build && gcc -O2 -ffile-prefix-map={tree}/src=S -I{tree}/include -c {tree}/src/a.c -o a2.o\n"
        f"cd {tree}/build && gcc -O2 -fmacro-prefix-map={tree}=M -I{tree}/include -c {tree}/src/a.c -o a3.o\n"
        f"cd {tree}/sub && gcc -O2 -g -ffile-prefix-map={tree}=. -c b.c -o b.o\n"
    )
    (tree / "build.sh").write_text(script)
    outputs = ["build/a1.o", "build/a2.o", "build/a3.o", "sub/b.o"]
    plain = subprocess.run(["sh", "-e", "build.sh"], cwd=tree, capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr
    expected = {name: (tree / name).read_bytes() for name in outputs}
    assert b"./src/a.c" in expected["build/a1.o"] and b"S/a.c" in expected["build/a2.o"]
    assert b"M/src/a.c" in expected["build/a3.o"]
    for name in outputs:
        (tree / name).unlink()
    inferred = gg_infer(tree, "sh", "-e", "build.sh")
    assert inferred.returncode == 0, inferred.stderr
    assert "ran locally" not in inferred.stderr, inferred.stderr
    for name in outputs:
        assert read_placeholder(tree / name) is not None, name
    forced = gg_force(tree, outputs, tmp_path / "trace.jsonl")
    assert forced.returncode == 0, forced.stderr
    for name, data in expected.items():
        if name != "sub/b.o":
            assert (tree / name).read_bytes() == data, name
    (tmp_path / "plain-b.o").write_bytes(expected["sub/b.o"])
    assert _comp_dirs(tree / "sub/b.o") == _comp_dirs(tmp_path / "plain-b.o") == ["./sub"]


def _comp_dirs(path) -> list[str]:
    dump = subprocess.run(["readelf", "--debug-dump=info", str(path)], capture_output=True, text=True).stdout
    return [line.rsplit(": ", 1)[-1].strip() for line in dump.splitlines() if "DW_AT_comp_dir" in line]
