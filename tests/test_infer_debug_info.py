"""-g builds through gg: objects are the same on every run, in every checkout.

The compile runs in a fresh, randomly named directory; unless that name is kept out of
the debug info (DW_AT_comp_dir), every run produces different bytes and everything
downstream of an object misses the cache.
"""

from __future__ import annotations

import shutil
import subprocess

from ir.placeholder import read_placeholder
from tests.test_infer_support import gg_force, gg_infer

SOURCE = "int twice(int x) { return 2 * x; }\n"
MAKEFILE = "all: a.o\na.o: a.c\n\tgcc -g -O2 -c a.c\n"


def _build(tree, trace):
    tree.mkdir()
    (tree / "a.c").write_text(SOURCE)
    (tree / "Makefile").write_text(MAKEFILE)
    assert gg_infer(tree, "make", "-s").returncode == 0
    placeholder = read_placeholder(tree / "a.o")
    forced = gg_force(tree, ["a.o"], trace, hidden=False)
    assert forced.returncode == 0, forced.stderr
    return placeholder.ref, (tree / "a.o").read_bytes()


def test_debug_objects_are_reproducible_across_runs_and_checkouts(tmp_path):
    first_ref, first = _build(tmp_path / "one", tmp_path / "one.jsonl")
    shutil.rmtree(tmp_path / "one" / ".gg")  # nothing cached: the compile runs again
    (tmp_path / "one").rename(tmp_path / "moved")
    shutil.rmtree(tmp_path / "moved")
    second_ref, second = _build(tmp_path / "elsewhere", tmp_path / "two.jsonl")
    assert first_ref == second_ref  # same thunk in another checkout
    assert first == second  # and the same bytes from another run directory
    info = subprocess.run(["readelf", "--debug-dump=info", str(tmp_path / "elsewhere" / "a.o")],
                          capture_output=True, text=True, check=True).stdout
    comp_dirs = [line.split(":")[-1].strip() for line in info.splitlines() if "DW_AT_comp_dir" in line]
    assert comp_dirs == ["."]
    assert b"/run-" not in second and str(tmp_path).encode() not in second


def test_debug_info_difference_from_a_plain_build_is_said_once(tmp_path):
    """A plain build records the absolute build directory; the thunks record ".": gg-infer
    says so in one line, counting the compiles, and says nothing when there is no debug
    info (no -g, or -g turned off again by a later -g0)."""
    tree = tmp_path / "t"
    tree.mkdir()
    for name in ("a", "b", "c", "d"):
        (tree / f"{name}.c").write_text(f"int {name}(int x) {{ return x + 1; }}\n")
    (tree / "Makefile").write_text(
        "all: a.o b.o c.o d.o\n"
        "a.o: a.c\n\tgcc -g -O2 -c a.c\n"
        "b.o: b.c\n\tgcc -ggdb3 -c b.c\n"
        "c.o: c.c\n\tgcc -g -O2 -g0 -c c.c\n"
        "d.o: d.c\n\tgcc -O2 -gz -c d.c\n"
    )
    result = gg_infer(tree, "make", "-s")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "DW_AT_comp_dir" in line]
    assert len(notes) == 1, result.stderr
    assert notes[0].startswith("gg-infer: note: 2 compiles with debug info ")

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "e.c").write_text(SOURCE)
    (plain / "Makefile").write_text("e.o: e.c\n\tgcc -O2 -c e.c\n")
    result = gg_infer(plain, "make", "-s")
    assert result.returncode == 0 and "DW_AT_comp_dir" not in result.stderr, result.stderr
