"""The corpus harness's own parts (fast): deb-src entries, log classification, kinds, caches."""

from __future__ import annotations

import subprocess

from tests.corpus.fetch import deb_src_stanzas
from tests.corpus.harness import (
    Build,
    cmake_cache_entries,
    configure_differences,
    file_kind,
    is_build_command,
    known_differences,
    thunk_share,
)

DEBIAN_SOURCES = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_deb_src_copies_every_deb_stanza():
    text = deb_src_stanzas(DEBIAN_SOURCES)
    assert text.count("Types: deb-src\n") == 2
    assert "Types: deb\n" not in text
    assert "Suites: bookworm-security" in text and "Signed-By:" in text


def test_build_commands_are_told_from_queries():
    assert is_build_command("gcc", ["gcc", "-c", "a.c"])
    assert is_build_command("/usr/bin/c++", ["/usr/bin/c++", "a.o", "-o", "app"])
    assert is_build_command("ar", ["ar", "-src", "lib.a", "a.o"])
    assert is_build_command("ar", ["ar", "cru", "lib.a", "a.o"])
    assert is_build_command("ranlib", ["ranlib", "lib.a"])
    assert not is_build_command("gcc", ["gcc", "-v"])
    assert not is_build_command("gcc", ["gcc", "-print-multi-os-directory"])
    assert not is_build_command("gcc", ["gcc", "-E", "a.c"])
    assert not is_build_command("ar", ["ar", "t", "lib.a"])
    assert not is_build_command("strip", ["strip", "-V"])
    assert not is_build_command("make", ["make", "all"])


def test_share_counts_build_commands_after_configure(tmp_path):
    log = tmp_path / ".gg" / "infer" / "log"
    log.parent.mkdir(parents=True)
    configure = "real\tgcc\tconfigure probe\tgcc -c conftest.c\n"
    log.write_text(configure + "model\tgcc\t3.0ms\tgcc -c a.c\nreal\tar\tar operation cr\tar cr l.a a.o\n"
                   "real\tgcc\tconfigure: re-run\tgcc -c conftest.c\nreal\tgcc\toption -v\tgcc -v\n"
                   "error\tranlib\tranlib l.a\nTraceback (most recent call last):\n  boom\n"
                   "fail\tnm\tno model\tforcing inputs failed: x\tnm l.a\nfail\tobjcopy\tno model\tforcing inputs "
                   "failed: y\tobjcopy a.o b.o\n")
    share = thunk_share(Build(tmp_path, log_mark=len(configure)))
    assert (share.modelled, share.total) == (1, 4)
    assert share.real == ["real\tar\tar operation cr\tar cr l.a a.o", "error\tranlib\tmodel error\tranlib l.a",
                          "fail\tobjcopy\tno model forcing inputs failed: y\tobjcopy a.o b.o"]


def test_file_kinds(tmp_path):
    (tmp_path / "a.c").write_text("int f(void) { return 1; }\nint main(void) { return 0; }\n")
    subprocess.run(["gcc", "-c", "a.c"], cwd=tmp_path, check=True)
    subprocess.run(["gcc", "-o", "app", "a.o"], cwd=tmp_path, check=True)
    subprocess.run(["gcc", "-shared", "-o", "liba.so.1", "a.o"], cwd=tmp_path, check=True)
    subprocess.run(["ar", "rcs", "liba.a", "a.o"], cwd=tmp_path, check=True)
    kinds = {name: file_kind(tmp_path / name) for name in ("a.c", "a.o", "app", "liba.so.1", "liba.a")}
    assert kinds == {"a.c": None, "a.o": "object", "app": "program", "liba.so.1": "shared", "liba.a": "archive"}


def test_cmake_cache_entries_compare_by_key(tmp_path):
    (tmp_path / "a").write_text("# comment\n//help\nCMAKE_C_FLAGS:STRING=-O2\nX:INTERNAL=1\n")
    (tmp_path / "b").write_text("CMAKE_C_FLAGS:STRING=\nX:INTERNAL=1\nY:BOOL=ON\n")
    plain = {"c": cmake_cache_entries(tmp_path / "a")}
    gg = {"c": cmake_cache_entries(tmp_path / "b")}
    assert configure_differences(plain, gg) == ["configure: c: CMAKE_C_FLAGS:STRING: plain '-O2', gg ''",
                                                "configure: c: Y:BOOL: plain None, gg 'ON'"]


def test_known_differences_file_names_checkable_causes():
    for project in ("zlib", "lz4", "libyaml", "fmtlib", "zlib-cmake-ninja"):
        for entry in known_differences(project).values():
            assert entry.cause == "debug-info" and entry.why
