"""Which programs are toolchain tools: one rule for the server, the shims and the preload.

A build names its compiler in many spellings: ``cc``, ``/usr/bin/c++``,
``x86_64-linux-gnu-gcc-12``, ``arm-none-eabi-ar``. The rule, by basename: an optional
target triple (a prefix that itself contains a dash, so ``build-cc`` is not a
compiler), one of :data:`TOOLS`, and an optional ``-VERSION`` (digits and dots).
``preload.c`` implements the same rule in C (``tool_name_length``); the tests check
both agree on the same names.
"""

from __future__ import annotations

import os
import re

# Longest first, so "x86_64-linux-gnu-gcc-ar" is gcc-ar, not ar with a "...-gcc" triple.
TOOLS = ("gcc-ranlib", "gcc-ar", "gcc-nm", "ld.bfd", "ld.gold", "objcopy", "ranlib", "strip",
         "gcc", "g++", "c++", "c89", "c99", "cpp", "cc", "as", "ld", "ar", "nm")
# What each tool is modelled as (tools not listed keep their own name).
_KIND = {"cc": "gcc", "c89": "gcc", "c99": "gcc", "c++": "g++"}
GCC_KINDS = ("gcc", "g++")

_VERSION = re.compile(r"-\d[\d.]*$")
_TRIPLE = re.compile(r"[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)+")

# Names the PATH shims answer to (static build drivers calling tools by name).
SHIM_NAMES = ("gcc", "cc", "c89", "c99", "x86_64-linux-gnu-gcc", "gcc-12", "x86_64-linux-gnu-gcc-12",
              "g++", "c++", "x86_64-linux-gnu-g++", "g++-12", "x86_64-linux-gnu-g++-12",
              "cpp", "as", "ld", "ar", "ranlib", "strip", "objcopy", "nm", "objdump", "size", "readelf")


def tool_kind(program: str) -> str | None:
    """The tool ``program`` (a name or path) is, as gcc/g++/ar/ranlib/..., or None."""
    name = _VERSION.sub("", os.path.basename(program))
    for tool in TOOLS:
        if name == tool:
            return _KIND.get(tool, tool)
        prefix = name[: -len(tool) - 1]
        if name.endswith("-" + tool) and _TRIPLE.fullmatch(prefix):
            return _KIND.get(tool, tool)
    return None


def which(name: str, path: str) -> str | None:
    """The first executable file ``name`` in the directories of ``path`` (a PATH
    string), as ``shutil.which(name, path=path)`` finds it; ``name`` as given if it has
    a slash. Here, not ``shutil``: ``shutil`` imports ``zlib``, ``bz2`` and ``lzma``,
    ~3 ms of every gg-infer start, which looks up its programs on PATH."""
    if "/" in name:
        return name if _executable_file(name) else None
    if not path:
        return None
    seen = set()
    for directory in path.split(os.pathsep):
        if directory in seen:
            continue
        seen.add(directory)
        candidate = os.path.join(directory, name)
        if _executable_file(candidate):
            return candidate
    return None


def _executable_file(path: str) -> bool:
    return os.path.exists(path) and os.access(path, os.X_OK) and not os.path.isdir(path)
