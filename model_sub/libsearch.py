"""Link-time library discovery: which files a link really reads.

Searches ``-lNAME`` the way GNU ld does (every ``-L`` directory in order, then ld's
built-in ``SEARCH_DIR``s; ``libNAME.so`` before ``libNAME.a`` in each directory unless
static), follows linker scripts (``libc.so`` is one: ``GROUP ( /lib/.../libc.so.6 ...)``)
and the ``DT_NEEDED`` closure of shared libraries (ld opens those too to check
undefined symbols). Every file found is laid out under its ``a/<abs>`` name, which
the ld thunk uses as its ``--sysroot``.
"""

from __future__ import annotations

import os
import re

from ir.archives import THIN_MAGIC, thin_member_names

from .context import Inputs, ModelContext
from .reasons import Unmodelled

_SCRIPT_KEYWORDS = {"GROUP", "INPUT", "AS_NEEDED", "OUTPUT_FORMAT", "OUTPUT_ARCH", "SEARCH_DIR", "TARGET",
                    "OUTPUT", "STARTUP", "INCLUDE"}
_COMMENT = re.compile(r"/\*.*?\*/", re.S)


class LibrarySearch:
    def __init__(self, ctx: ModelContext, dirs: list[str]):
        self.ctx = ctx
        self.dirs = [os.path.normpath(d) for d in dirs]
        self.added: set[str] = set()

    def find(self, name: str, static: bool, extra_dirs: tuple[str, ...] = ()) -> str | None:
        if name.startswith(":"):
            candidates = [name[1:]]
        elif static:
            candidates = [f"lib{name}.a"]
        else:
            candidates = [f"lib{name}.so", f"lib{name}.a"]
        for directory in (*extra_dirs, *self.dirs):
            for candidate in candidates:
                path = os.path.join(directory, candidate)
                if self.ctx.isfile(path):
                    return os.path.normpath(path)
        return None

    def add(self, inputs: Inputs, path: str) -> None:
        """Lay out ``path`` and, for scripts and shared libraries, what it pulls in."""
        path = os.path.normpath(path)
        if path in self.added:
            return
        self.added.add(path)
        name = self.ctx.paths.to_thunk(path, "/")
        self.ctx.add_file(inputs, path, name)
        if self.ctx.is_placeholder(path):
            return
        with open(path, "rb") as handle:
            head = handle.read(4096)
        if head.startswith(b"\x7fELF"):
            if head[16:18] == b"\x03\x00":  # ET_DYN: a shared library (or PIE)
                _, libs = self.ctx.toolchain.closure(path)
                for lib in libs:
                    self.add(inputs, lib)
            return
        if head.startswith(THIN_MAGIC):
            self._add_thin_members(inputs, path, name)
            return
        if head.startswith(b"!<arch>") or b"\0" in head:
            return
        self._follow_script(inputs, path)

    def _add_thin_members(self, inputs: Inputs, path: str, name: str) -> None:
        """A thin archive names its members by path (relative to the archive); ld opens
        them, so they are inputs too, at the names those paths resolve to in the thunk."""
        try:
            members = thin_member_names(path)
        except (OSError, ValueError) as exc:
            raise Unmodelled(f"thin archive {path}: {exc}", label="(thin archive)") from None
        for stored, host in members:
            where = os.path.normpath(os.path.join(os.path.dirname(name), stored))
            if os.path.isabs(stored) or where != self.ctx.paths.to_thunk(host, "/"):
                raise Unmodelled(f"thin archive {path}: member path {stored} leaves its tree",
                                 label="(thin archive member path)")
            if not self.ctx.isfile(host):
                raise Unmodelled(f"thin archive {path}: member {stored} is missing", label="(missing input)")
            self.add(inputs, host)

    def _follow_script(self, inputs: Inputs, path: str) -> None:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = _COMMENT.sub(" ", handle.read())
        for word in re.findall(r"[^\s(),]+", text):
            if word in _SCRIPT_KEYWORDS or word.startswith('"'):
                continue
            if word.startswith("-l"):
                found = self.find(word[2:], static=False)
            elif word.startswith("/"):
                found = word if self.ctx.isfile(word) else None
            elif ".so" in word or word.endswith((".a", ".o")):
                found = self.find(":" + word, static=False, extra_dirs=(os.path.dirname(path),))
            else:
                continue
            if found is not None:
                self.add(inputs, found)
