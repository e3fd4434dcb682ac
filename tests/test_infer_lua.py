"""Lua 5.4 (from the lupa sdist) through gg-infer make + gg-force, toolchain hidden."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.test_infer_support import extract_lua54, gg_force, gg_infer, hidden_ok, started_thunks

pytestmark = pytest.mark.skipif(not hidden_ok(), reason="needs root and unshare -m for the hidden toolchain")

SCRIPT = r"""
local t = {}
for i = 1, 200 do t[i] = (i * 7919) % 1000 end
table.sort(t)
print(t[1], t[100], t[200], #t)
print(string.format("%5.2f %d %s", math.pi, 2^31 // 3, ("ab"):rep(3)))
local co = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
print(co(1), co(21))
print(select("#", table.unpack({1, 2, nil, 4}, 1, 4)), utf8.char(72, 228, 8364))
print(pcall(error, {code = 7}), load("return 6 * 7")())
local s = 0 for w in ("the quick brown fox"):gmatch("%a+") do s = s + #w end print(s)
print(string.pack("<i4", 100):byte(1, -1))
"""


def _run_lua(tree: Path, script: Path) -> str:
    return subprocess.run(["./lua", str(script)], cwd=tree, capture_output=True, text=True, check=True).stdout


def test_lua_through_gg_behaves_like_plain_make(tmp_path):
    script = tmp_path / "check.lua"
    script.write_text(SCRIPT)
    plain = extract_lua54(tmp_path / "plain")
    subprocess.run(["make", "-s", "-j2"], cwd=plain, check=True, capture_output=True)
    expected = _run_lua(plain, script)

    gg = extract_lua54(tmp_path / "gg")
    inferred = gg_infer(gg, "make", "-s", "-j2")
    assert inferred.returncode == 0, inferred.stderr
    trace = tmp_path / "cold.jsonl"
    forced = gg_force(gg, ["lua"], trace)
    assert forced.returncode == 0, forced.stderr
    assert _run_lua(gg, script) == expected
    assert (gg / "lua").read_bytes() == (plain / "lua").read_bytes()
    assert len(started_thunks(trace)) > 60  # 34 units x (cc1, as) + ar + ranlib + ld

    warm = tmp_path / "warm.jsonl"
    assert gg_infer(gg, "make", "-s", "-j2").returncode == 0
    assert gg_force(gg, ["lua"], warm).returncode == 0
    assert started_thunks(warm) == []

    objects = sorted(p.name for p in plain.glob("*.o"))
    assert gg_force(gg, ["liblua.a", *objects], warm).returncode == 0
    for name in [*objects, "liblua.a"]:
        assert (gg / name).read_bytes() == (plain / name).read_bytes(), name

    lstrlib = gg / "lstrlib.c"
    lstrlib.write_text(lstrlib.read_text().replace('"invalid capture index %%%d"', '"bad capture index %%%d"'))
    changed = tmp_path / "changed.jsonl"
    assert gg_infer(gg, "make", "-s", "-j2").returncode == 0
    assert gg_force(gg, ["lua"], changed).returncode == 0
    assert len(started_thunks(changed)) == 5  # cc1, as, ar, ranlib, ld
    assert _run_lua(gg, script) == expected
