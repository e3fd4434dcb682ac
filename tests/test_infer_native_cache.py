"""gg-infer's native helpers (the shim and the preload library) are compiled once per
user, not once per store: a fresh store copies them from ~/.cache/gg-py/native."""

from __future__ import annotations

import os
import shutil

from model_sub.launcher import preload_library, shim_binary


def _counting_compiler(directory, log):
    """A ``cc`` on PATH that logs each call and runs the real one."""
    directory.mkdir()
    real = shutil.which("cc") or shutil.which("gcc")
    script = directory / "cc"
    script.write_text(f'#!/bin/sh\necho call >> {log}\nexec {real} "$@"\n')
    script.chmod(0o755)
    return f"{directory}:/usr/bin:/bin"


def test_a_second_store_takes_the_helpers_from_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    log = tmp_path / "compiles.log"
    path = _counting_compiler(tmp_path / "bin", log)
    first = [shim_binary(tmp_path / "one", path), preload_library(tmp_path / "one", path)]
    assert len(log.read_text().splitlines()) == 2
    second = [shim_binary(tmp_path / "two", path), preload_library(tmp_path / "two", path)]
    assert len(log.read_text().splitlines()) == 2  # no compile for the second store
    for mine, theirs in zip(first, second, strict=True):
        assert mine.read_bytes() == theirs.read_bytes() and os.access(theirs, os.X_OK)
        assert os.stat(mine).st_ino != os.stat(theirs).st_ino  # a copy: stores share no inode

    for cached in (tmp_path / "xdg" / "gg-py" / "native").iterdir():  # a damaged cache entry
        cached.write_bytes(b"not a program")
    third = shim_binary(tmp_path / "three", path)
    assert len(log.read_text().splitlines()) == 3  # compiled again, and the cache mended
    assert third.read_bytes() == first[0].read_bytes()

    (tmp_path / "bin" / "cc").write_text((tmp_path / "bin" / "cc").read_text() + "# another compiler\n")
    shim_binary(tmp_path / "four", path)
    assert len(log.read_text().splitlines()) == 4  # a different compiler: not the same build
