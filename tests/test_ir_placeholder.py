"""Placeholders: both forms written, detected and read back; modes; non-placeholders."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ir.ids import InvalidId
from ir.placeholder import (
    LINKER_PREFIX,
    SHEBANG_PREFIX,
    Placeholder,
    parse_placeholder,
    read_placeholder,
    render,
    wants_linker_form,
    write_placeholder,
)

THUNK = "Tx0123456789abcdef0123456789abcdef_a5"
VALUE = "Vx0123456789abcdef0123456789abcdef_1f"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(
    ("name", "linker"),
    [
        ("x.o", True), ("libx.a", True), ("libx.so", True), ("libx.so.1", True), ("libx.so.1.2", True),
        ("x.s", True), ("prog", False), ("x.c", False), ("x.oo", False), ("x.sox", False),
        ("x.so.a1", False), ("script.sh", False), ("x.S", False),
    ],
)
def test_default_form_by_extension(tmp_path, name, linker):
    assert wants_linker_form(Path(name)) is linker
    path = tmp_path / name
    write_placeholder(path, THUNK)
    data = path.read_bytes()
    assert data.startswith(LINKER_PREFIX if linker else SHEBANG_PREFIX)
    assert read_placeholder(path) == Placeholder(THUNK, linker)
    assert mode(path) == (0o644 if linker else 0o755)


def test_exact_bytes_of_both_forms():
    assert render(THUNK, False) == b"#!/usr/bin/env gg-force-and-run\n" + THUNK.encode() + b"\n"
    assert render(THUNK, True) == b'OUTPUT_FORMAT("elf64-x86-64")/*\n' + THUNK.encode() + b"\n*/\n"


def test_gg_linker_form_without_final_newline_is_read():
    data = b'OUTPUT_FORMAT("elf64-x86-64")/*\n' + THUNK.encode() + b"\n*/"
    assert parse_placeholder(data) == Placeholder(THUNK, True)


@pytest.mark.parametrize("linker", [True, False])
@pytest.mark.parametrize("explicit_mode", [0o600, 0o755, 0o444, 0o700])
def test_explicit_mode_and_form(tmp_path, linker, explicit_mode):
    path = tmp_path / "out.bin"
    write_placeholder(path, f"{THUNK}#lib/a.o", mode=explicit_mode, linker_form=linker)
    assert mode(path) == explicit_mode  # exact: the umask does not apply
    assert read_placeholder(path) == Placeholder(f"{THUNK}#lib/a.o", linker)


def test_value_ref_and_overwrite(tmp_path):
    path = tmp_path / "p"
    write_placeholder(path, THUNK)
    write_placeholder(path, VALUE)  # rewritten in place, atomically
    assert read_placeholder(path) == Placeholder(VALUE, False)
    assert [p.name for p in tmp_path.iterdir()] == ["p"]  # no temp file left behind


def test_invalid_ref_not_written(tmp_path):
    with pytest.raises(InvalidId):
        write_placeholder(tmp_path / "p", "not-an-id")
    with pytest.raises(InvalidId):
        write_placeholder(tmp_path / "p", f"{VALUE}#tag")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world\n",
        SHEBANG_PREFIX,
        SHEBANG_PREFIX + b"not an id\n",
        SHEBANG_PREFIX + THUNK.encode() + b"\nexec something\n",
        b"#!/bin/sh\n" + THUNK.encode() + b"\n",
        SHEBANG_PREFIX + THUNK.encode() + b"#../x\n",
        LINKER_PREFIX + THUNK.encode() + b"\n",
        LINKER_PREFIX + THUNK.encode() + b"\n*/\nINPUT(x.o)\n",
        SHEBANG_PREFIX + THUNK.encode() + b"\n" + b"#" * 600,
        SHEBANG_PREFIX + "Tx\u00e9".encode() + b"\n",
        b"\x7fELF\x02\x01\x01\x00" + bytes(100),
    ],
)
def test_non_placeholders_not_detected(tmp_path, data):
    assert parse_placeholder(data) is None
    path = tmp_path / "f"
    path.write_bytes(data)
    assert read_placeholder(path) is None


def test_large_file_starting_like_a_placeholder_not_detected(tmp_path):
    path = tmp_path / "big.o"
    path.write_bytes(render(THUNK, True) + b"\0" * (1 << 20))
    assert read_placeholder(path) is None


def test_missing_and_directories_are_not_placeholders(tmp_path):
    assert read_placeholder(tmp_path / "nope") is None
    assert read_placeholder(tmp_path) is None


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600) | st.text(max_size=300).map(str.encode))
def test_random_bytes_are_not_placeholders(data):
    assert parse_placeholder(data) is None


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a real gcc/ld")
def test_real_linker_accepts_linker_form_only(tmp_path):
    """Why the linker form exists: ld takes it as a harmless linker script."""
    (tmp_path / "m.c").write_text("int main(void) { return 0; }\n")
    subprocess.run(["gcc", "-c", "m.c", "-o", "m.o"], cwd=tmp_path, check=True)
    write_placeholder(tmp_path / "dep.o", THUNK)
    linked = subprocess.run(["gcc", "m.o", "dep.o", "-o", "a.out"], cwd=tmp_path, capture_output=True)
    assert linked.returncode == 0, linked.stderr
    write_placeholder(tmp_path / "bad.o", THUNK, linker_form=False)
    refused = subprocess.run(["gcc", "m.o", "bad.o", "-o", "b.out"], cwd=tmp_path, capture_output=True)
    assert refused.returncode != 0
