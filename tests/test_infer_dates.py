"""__DATE__, __TIME__ and __TIMESTAMP__ through gg: a thunk's date is fixed, and said.

A plain build writes the day it ran into such an object; a thunk runs with
SOURCE_DATE_EPOCH=0 (its bytes, and everything built from it, the same on every run),
unless the build sets SOURCE_DATE_EPOCH itself. That difference from a plain build is
not silent: gg-infer says it in one line, counting the compiles whose files name one
of the macros, and the memo's replay says it again.
"""

from __future__ import annotations

import subprocess
import sys

from tests.test_infer_support import gg_force, gg_infer, tool_env

HEADER = '#define BUILT "built " __DATE__ " " __TIME__\n'
DATED = '#include "stamp.h"\nconst char *built(void) { return BUILT; }\n'
PLAIN = "int plain(int x) { return x + 1; }\n"
NOTE = "gg-infer: note: "


def _tree(tmp_path):
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "stamp.h").write_text(HEADER)
    (tree / "a.c").write_text(DATED)
    (tree / "b.c").write_text('#include <stdio.h>\n/* no stamp */\nconst char *b(void) { return __TIMESTAMP__; }\n')
    (tree / "c.c").write_text(PLAIN)
    (tree / "Makefile").write_text("all: a.o b.o c.o\n%.o: %.c\n\tgcc -O2 -c $< -o $@\n")
    return tree


def _date_notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(NOTE) and "__DATE__" in line]


def test_compiles_whose_files_name_the_date_macros_are_counted_in_one_note(tmp_path):
    tree = _tree(tmp_path)
    result = gg_infer(tree, "make", "-s")
    assert result.returncode == 0, result.stderr
    notes = _date_notes(result.stderr)
    assert len(notes) == 1, result.stderr
    assert notes[0].startswith(f"{NOTE}2 compiles read files that name __DATE__, __TIME__ or __TIMESTAMP__")
    assert "SOURCE_DATE_EPOCH" in notes[0]
    forced = gg_force(tree, ["a.o"], tmp_path / "trace.jsonl", hidden=False)
    assert forced.returncode == 0, forced.stderr
    assert b"built Jan  1 1970 00:00:00" in (tree / "a.o").read_bytes()  # what the note says

    (tree / "a.o").unlink()
    (tree / "b.o").unlink()
    (tree / "c.o").unlink()
    again = gg_infer(tree, "make", "-s")  # the memo answers: the same note
    assert again.returncode == 0, again.stderr
    assert [line.split(" read ")[0] for line in _date_notes(again.stderr)] == [f"{NOTE}2 compiles"], again.stderr
    assert "memo" in (tree / ".gg" / "infer" / "log").read_text().splitlines()[-1]


def test_no_note_when_the_build_sets_source_date_epoch_or_names_no_date(tmp_path):
    tree = _tree(tmp_path)
    result = subprocess.run([sys.executable, "-m", "model_sub.infer", "make", "-s"], cwd=tree,
                            env={**tool_env(), "SOURCE_DATE_EPOCH": "1700000000"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert _date_notes(result.stderr) == [], result.stderr
    forced = gg_force(tree, ["a.o"], tmp_path / "trace.jsonl", hidden=False)
    assert forced.returncode == 0, forced.stderr
    assert b"built Nov 14 2023 22:13:20" in (tree / "a.o").read_bytes()  # the build's own date

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "c.c").write_text(PLAIN)
    (plain / "Makefile").write_text("c.o: c.c\n\tgcc -O2 -c c.c\n")
    result = gg_infer(plain, "make", "-s")
    assert result.returncode == 0 and _date_notes(result.stderr) == [], result.stderr
