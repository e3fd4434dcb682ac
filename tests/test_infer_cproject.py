"""examples/cproject through gg-infer make + gg-force, forced with the toolchain hidden."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ir.placeholder import read_placeholder
from tests.test_infer_support import REPO, gg_force, gg_infer, hidden_ok, started_thunks

pytestmark = pytest.mark.skipif(not hidden_ok(), reason="needs root and unshare -m for the hidden toolchain")

OBJECTS = ["main.o", "util.o", "strutil.o", "shapes.o"]


def _copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(REPO / "examples" / "cproject", target)
    return target


def test_cproject_through_gg_matches_plain_make(tmp_path):
    plain = _copy(tmp_path, "plain")
    subprocess.run(["make", "-s"], cwd=plain, check=True, capture_output=True)
    expected = subprocess.run(["./app"], cwd=plain, check=True, capture_output=True, text=True).stdout

    gg = _copy(tmp_path, "gg")
    inferred = gg_infer(gg, "make", "-s")
    assert inferred.returncode == 0, inferred.stderr
    # the models left placeholders, not objects; the tool run during the build was forced
    for name in ["app", "libutil.a", *OBJECTS, "backup/util.o"]:
        assert read_placeholder(gg / name) is not None, name
    assert "TABLE_SIZE 8" in (gg / "table.h").read_text()
    assert (gg / "main.d").read_text() == (plain / "main.d").read_text()

    # force only what a user asks for; the tool run during the build was forced on demand
    trace = tmp_path / "trace.jsonl"
    forced = gg_force(gg, ["app", "backup/util.o"], trace)
    assert forced.returncode == 0, forced.stderr
    assert subprocess.run(["./app"], cwd=gg, capture_output=True, text=True).stdout == expected
    assert (gg / "gentable").read_bytes() == (plain / "gentable").read_bytes()
    assert (gg / "backup/util.o").read_bytes() == (plain / "util.o").read_bytes()
    assert started_thunks(trace)

    # unchanged sources: a second inference and force run no thunk
    again = tmp_path / "again.jsonl"
    assert gg_infer(gg, "make", "-s").returncode == 0
    assert gg_force(gg, ["app"], again).returncode == 0
    assert started_thunks(again) == []

    # every intermediate file is byte-identical to the plain build's
    assert gg_force(gg, ["libutil.a", *OBJECTS], again).returncode == 0
    for name in [*OBJECTS, "libutil.a"]:
        assert (gg / name).read_bytes() == (plain / name).read_bytes(), name

    # a real change to one source re-runs exactly its compile, the archive and the link
    util = gg / "util.c"
    util.write_text(util.read_text().replace("x * SCALE", "x * SCALE + 1"))
    changed = tmp_path / "changed.jsonl"
    assert gg_infer(gg, "make", "-s").returncode == 0
    assert gg_force(gg, ["app"], changed).returncode == 0
    assert len(started_thunks(changed)) == 5  # cc1, as, ar, ranlib, ld
    assert "scaled: 421" in subprocess.run(["./app"], cwd=gg, capture_output=True, text=True).stdout


def test_thunk_ids_do_not_depend_on_the_checkout_directory(tmp_path):
    first, second = _copy(tmp_path, "one"), _copy(tmp_path / "deeper" / "path", "two")
    for tree in (first, second):
        assert gg_infer(tree, "make", "-s", "app").returncode == 0
    for name in ["app", "libutil.a", *OBJECTS]:
        assert read_placeholder(first / name) == read_placeholder(second / name), name
