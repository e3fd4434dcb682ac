"""Portable toolchain programs: a stage binary plus its loader and shared libraries.

Real Lambda has no compiler or binutils, and a thunk may only use what it carries.
A stage program (cc1, as, ld, ar, ...) is therefore run as
``gg/ld-linux-x86-64.so.2 --library-path gg/lib gg/bin/<prog> ARGS`` with the dynamic
loader, the program and its whole shared-library closure (from ``ldd``) as executable
inputs. The blobs are stored once by content and shared by every thunk, so a thunk
itself stays a few hundred bytes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass

from ir.store import LocalStore
from ir.thunk import Input

from .paths import TOOL_PREFIX

_LDD_ARROW = re.compile(r"^\s*(\S+)\s+=>\s+(\S+)\s+\(0x[0-9a-f]+\)")
_LDD_PLAIN = re.compile(r"^\s*(/\S+)\s+\(0x[0-9a-f]+\)")


class ToolchainError(Exception):
    """A program or one of its libraries cannot be found."""


@dataclass(frozen=True)
class PortableProgram:
    """How a thunk runs one program, and which executables it needs for that."""

    function_hash: str
    argv_prefix: tuple[str, ...]
    executables: tuple[Input, ...]


def shared_closure(path: str) -> tuple[str | None, list[str]]:
    """(loader path or None if static, shared libraries) that ``path`` needs at run time."""
    result = subprocess.run(["ldd", path], capture_output=True, text=True, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"})
    if result.returncode != 0 or "not a dynamic executable" in result.stdout + result.stderr:
        return None, []
    loader, libs = None, []
    for line in result.stdout.splitlines():
        if "not found" in line:
            raise ToolchainError(f"{path}: shared library missing: {line.strip()}")
        match = _LDD_ARROW.match(line)
        if match:
            libs.append(match.group(2))
            continue
        match = _LDD_PLAIN.match(line)
        if match:
            loader = match.group(1)
    return loader, libs


class Toolchain:
    """Stores programs once per process and hands out :class:`PortableProgram`s."""

    def __init__(self, store: LocalStore, real_path: str):
        self.store = store
        self.real_path = real_path
        self._lock = threading.Lock()
        self._programs: dict[str, PortableProgram] = {}

    def which(self, name: str) -> str:
        """Absolute path of ``name`` on the real PATH (or as given if it has a slash)."""
        found = name if "/" in name else shutil.which(name, path=self.real_path)
        if not found or not os.path.exists(found):
            raise ToolchainError(f"{name}: not found on the real PATH")
        return os.path.realpath(found)

    def program(self, path_or_name: str) -> PortableProgram:
        real = self.which(path_or_name)
        with self._lock:
            cached = self._programs.get(real)
            if cached is None:
                cached = self._programs[real] = self._portable(real)
            return cached

    def _portable(self, real: str) -> PortableProgram:
        loader, libs = shared_closure(real)
        prog_name = f"{TOOL_PREFIX}/bin/{os.path.basename(real)}"
        prog = Input(self.store.put_file(real, executable=True), prog_name)
        if loader is None:  # static program: run it directly
            return PortableProgram(prog.ref, (prog_name,), (prog,))
        loader_name = f"{TOOL_PREFIX}/{os.path.basename(loader)}"
        executables = [prog, Input(self.store.put_file(os.path.realpath(loader), executable=True), loader_name)]
        for lib in libs:
            executables.append(Input(self.store.put_file(os.path.realpath(lib), executable=True),
                                     f"{TOOL_PREFIX}/lib/{os.path.basename(lib)}"))
        prefix = (loader_name, "--library-path", f"{TOOL_PREFIX}/lib", prog_name)
        return PortableProgram(executables[1].ref, prefix, tuple(executables))
