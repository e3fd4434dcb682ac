"""The ``-frandom-seed`` a thunk adds must not show in the object or override the build's.

``-frecord-gcc-switches`` writes the compile's code-generation switches into the object
(``.GCC.command.line``, not debug info): the thunk's added ``-frandom-seed=r/x.c`` was
recorded there, so every such object silently differed from a plain build's. A seed the
build sets itself was overridden (the last one counts; seen in
the recorded switches, which then named both). Built plainly and through
gg-infer + gg-force (toolchain hidden) in the same directory, compared byte for byte.
"""

from __future__ import annotations

import subprocess

import pytest

from ir.placeholder import read_placeholder
from tests.test_infer_support import gg_force, gg_infer, hidden_ok

pytestmark = pytest.mark.skipif(not hidden_ok(), reason="needs root and unshare -m for the hidden toolchain")

SCRIPT = """
gcc -O2 -frecord-gcc-switches -Iinc -c x.c -o rec.o
gcc -O2 -frecord-gcc-switches -frandom-seed=rec-seed.o -Iinc -c x.c -o rec-seed.o
gcc -O2 -frecord-gcc-switches -fno-record-gcc-switches -Iinc -c x.c -o norec.o
"""


def test_the_thunks_seed_is_neither_recorded_nor_overrides_the_builds(tmp_path):
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc/h.h").write_text("#define H 3\n")
    (tmp_path / "x.c").write_text('#include "h.h"\nint f(int x) { return x * H; }\n')
    (tmp_path / "build.sh").write_text(SCRIPT)
    outputs = ["rec.o", "rec-seed.o", "norec.o"]
    subprocess.run(["sh", "-e", "build.sh"], cwd=tmp_path, check=True)
    expected = {name: (tmp_path / name).read_bytes() for name in outputs}
    assert b"-frandom-seed=rec-seed.o" in expected["rec-seed.o"]
    for name in outputs:
        (tmp_path / name).unlink()
    inferred = gg_infer(tmp_path, "sh", "-e", "build.sh")
    assert inferred.returncode == 0, inferred.stderr
    assert "ran locally" not in inferred.stderr, inferred.stderr
    for name in outputs:
        assert read_placeholder(tmp_path / name) is not None, name
    forced = gg_force(tmp_path, outputs, tmp_path / "trace.jsonl")
    assert forced.returncode == 0, forced.stderr
    assert {name: (tmp_path / name).read_bytes() for name in outputs} == expected
