"""Portable toolchain programs: a stage binary plus its loader and shared libraries.

Real Lambda has no compiler or binutils, and a thunk may only use what it carries.
A stage program (cc1, as, ld, ar, ...) is therefore run as
``gg/ld-linux-x86-64.so.2 --library-path gg/lib gg/bin/<prog> ARGS`` with the dynamic
loader, the program and its whole shared-library closure (from ``ldd``) as executable
inputs. The blobs are stored once by content and shared by every thunk, so a thunk
itself stays a few hundred bytes.

``ldd`` costs 8-20 ms a program, so its answer is cached in ``.gg/infer/closure/entries.log``,
keyed by the program's ``stat`` and that of ``/etc/ld.so.cache`` (rewritten by
``ldconfig`` whenever libraries are installed) and trusted only while the loader and
every library listed still have the ``stat`` recorded.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import xxhash

from ir.cache_log import JsonCache
from ir.thunk import Input

from .fileids import FileIds, stat_key
from .memo_observer import Observer
from .paths import TOOL_PREFIX
from .toolnames import which

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


LD_SO_CACHE = "/etc/ld.so.cache"


def _stat_list(path: str) -> list[int] | None:
    try:
        return list(stat_key(os.stat(path)))
    except OSError:
        return None


def program_fact(program: PortableProgram) -> list:
    """A :class:`PortableProgram` as plain data (a memo fact, compared after a JSON round trip)."""
    return [program.function_hash, list(program.argv_prefix), [[i.ref, i.name] for i in program.executables]]


def closure_fact(closure: tuple[str | None, list[str]]) -> list:
    return [closure[0], list(closure[1])]


class Toolchain:
    """Stores programs once per process and hands out :class:`PortableProgram`s."""

    def __init__(self, ids: FileIds, cache_dir: Path, real_path: str, observer: Observer | None = None):
        self.ids = ids
        self.observer = observer or Observer()  # the memo's facts: which, programs, closures
        self._disk = JsonCache(cache_dir)
        self.real_path = real_path
        self._lock = threading.Lock()
        self._portable_lock = threading.Lock()
        self._programs: dict[str, PortableProgram] = {}
        self._closures: dict[str, tuple[list[int] | None, tuple[str | None, list[str]]]] = {}
        self._which: dict[str, str] = {}

    def which(self, name: str) -> str:
        """Absolute path of ``name`` on the real PATH (or as given if it has a slash),
        symlinks resolved; each name is resolved once per run (then checked to exist)."""
        found = self._resolve(name)
        self.observer.which(name, found)
        return found

    def _resolve(self, name: str) -> str:
        known = self._which.get(name)
        if known is not None and os.path.exists(known):
            return known
        found = name if "/" in name else which(name, self.real_path)
        if not found or not os.path.exists(found):
            raise ToolchainError(f"{name}: not found on the real PATH")
        real = os.path.realpath(found)
        if "/" not in name or os.path.isabs(name):
            # once per run, like a name on PATH: an absolute name's realpath (an lstat
            # per component, ~0.3 ms) was most of a warm call's which() time
            with self._lock:
                self._which[name] = real
        return real

    def closure(self, path: str) -> tuple[str | None, list[str]]:
        """:func:`shared_closure` of ``path``, cached in memory and on disk (see above)."""
        result = self._closure(path)
        self.observer.closure(path, closure_fact(result))
        return result

    def _closure(self, path: str) -> tuple[str | None, list[str]]:
        own = _stat_list(path)
        memo = self._closures.get(path)
        if memo is not None and memo[0] == own and own is not None:
            return memo[1]
        key = xxhash.xxh3_128_hexdigest(json.dumps([path, own, _stat_list(LD_SO_CACHE)]).encode())
        result = None
        entry = self._disk.get(key)
        try:
            if entry is not None and all(_stat_list(lib) == recorded for lib, recorded in entry["stats"]):  # type: ignore[index]
                result = (entry["loader"], list(entry["libs"]))  # type: ignore[index]
        except (ValueError, KeyError, TypeError):
            result = None
        if result is None:
            result = shared_closure(path)
            loader, libs = result
            stats = [(lib, _stat_list(lib)) for lib in ([loader] if loader else []) + libs]
            if own is not None and all(recorded is not None for _, recorded in stats):
                self._disk.put(key, {"loader": loader, "libs": libs, "stats": stats})
        with self._lock:
            self._closures[path] = (own, result)
        return result

    def program(self, path_or_name: str) -> PortableProgram:
        real = self.which(path_or_name)
        cached = self._programs.get(real)
        if cached is None:
            # one thread stores a program (cc1 is ~30 MB) while the others wait for it
            with self._portable_lock:
                cached = self._programs.get(real)
                if cached is None:
                    cached = self._programs[real] = self._portable(real)
        self.observer.program(path_or_name, program_fact(cached))
        return cached

    def _portable(self, real: str) -> PortableProgram:
        loader, libs = self.closure(real)
        prog_name = f"{TOOL_PREFIX}/bin/{os.path.basename(real)}"
        prog = Input(self.ids.stored(real, executable=True), prog_name)
        if loader is None:  # static program: run it directly
            return PortableProgram(prog.ref, (prog_name,), (prog,))
        loader_name = f"{TOOL_PREFIX}/{os.path.basename(loader)}"
        executables = [prog, Input(self.ids.stored(os.path.realpath(loader), executable=True), loader_name)]
        for lib in libs:
            executables.append(Input(self.ids.stored(os.path.realpath(lib), executable=True),
                                     f"{TOOL_PREFIX}/lib/{os.path.basename(lib)}"))
        prefix = (loader_name, "--library-path", f"{TOOL_PREFIX}/lib", prog_name)
        return PortableProgram(executables[1].ref, prefix, tuple(executables))
