"""The run-it-locally path: an unmodelled call runs for real, on real inputs.

A call the models cannot express still has to give the right result. Before the
shim execs the real tool, every placeholder among the call's inputs is forced into
the real file (``gg-force``, same store), so the real tool never reads placeholder
text; its outputs are then real and correct, just not remote. Each such call is
counted by reason (:class:`LocalRuns`), and gg-infer prints one summary line at the
end of the run.

Inputs are found cheaply, without knowing each tool's grammar: every argument word
that names an existing file (also the value of ``--opt=FILE``, ``name=FILE``, the
words of ``-Wl,a,b``, the contents of ``@file`` response files), the libraries that
``-lNAME`` names in the call's own ``-L`` directories, and the members of thin
archives. Headers are not scanned (a header is never a placeholder: only compilers,
linkers and binutils write placeholders, and none of them writes a header). The word
after ``-o`` is an output, not forced.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field

from ir.archives import is_thin_archive, thin_members
from ir.placeholder import read_placeholder

_MAX_RESPONSE_DEPTH = 10
# Tools whose "-o" names the output file (not an input to force).
_OUTPUT_OPTION_TOOLS = ("gcc", "g++", "cc", "c++", "c89", "c99", "cpp", "as", "ld", "strip", "clang")


class ForceError(Exception):
    """A placeholder input could not be forced: the call must fail, not run on it."""


@dataclass
class LocalRuns:
    """Calls that ran the real tool instead of becoming thunks, counted by reason.

    Shared by the server's threads (one per call), hence the lock."""

    counts: Counter = field(default_factory=Counter)
    # Calls whose output or status the build read at once ($(shell cc ...), backticks):
    # they must run for real, so they are not fallbacks, but a build whose driver reads
    # every command's output would then run wholly for real: said out loud too.
    read_at_once: Counter = field(default_factory=Counter)
    # Compiles with debug info made as thunks: their objects record the compile
    # directory as "." (the same in every checkout) where a plain build records the
    # absolute build directory, so they differ from a plain build's there: said once.
    relative_debug_dirs: int = 0
    # Compiles whose files name __DATE__/__TIME__/__TIMESTAMP__, made as thunks with
    # SOURCE_DATE_EPOCH=0 (the build set none): a fixed date where a plain build writes
    # the day it ran: said once.
    dated: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, reason: str) -> None:
        with self._lock:
            self.counts[reason] += 1

    def record_read_at_once(self, tool: str) -> None:
        with self._lock:
            self.read_at_once[tool] += 1

    def record_relative_debug_dir(self, count: int = 1) -> None:
        with self._lock:
            self.relative_debug_dirs += count

    def record_dated(self, count: int = 1) -> None:
        with self._lock:
            self.dated += count

    def dated_summary(self) -> str | None:
        """``gg-infer: note: N compiles read files that name __DATE__ ...``."""
        with self._lock:
            count = self.dated
        return _note(count, "compile reads", "compiles read",
                     "files that name __DATE__, __TIME__ or __TIMESTAMP__: as thunks they expand to "
                     "Jan  1 1970 00:00:00 (the same on every run, so the outputs stay cached) where a "
                     "plain build writes the time it ran; set SOURCE_DATE_EPOCH for a date of the "
                     "build's choosing (see docs/model_sub.md)")

    def debug_dir_summary(self) -> str | None:
        """``gg-infer: note: N compiles with -g record their compile directory as "." ...``."""
        with self._lock:
            count = self.relative_debug_dirs
        return _note(count, "compile", "compiles",
                     'with debug info record their compile directory (DW_AT_comp_dir) as "." where a '
                     "plain build records the build directory: the objects are the same in every "
                     "checkout and differ from a plain build only there; run a debugger from the build "
                     "directory (see docs/model_sub.md)")

    def read_at_once_summary(self, log_hint: str) -> str | None:
        """``gg-infer: N tool calls ran for real, their output read at once by the build: cc xN (see LOG)``."""
        with self._lock:
            items = sorted(self.read_at_once.items(), key=lambda kv: (-kv[1], kv[0]))
        total = sum(n for _, n in items)
        if not total:
            return None
        noun = "tool call" if total == 1 else "tool calls"
        tools = ", ".join(f"{tool} x{n}" for tool, n in items)
        return (f"gg-infer: {total} {noun} ran for real, their output read at once by the build "
                f"(probes, not thunks): {tools} (see {log_hint})")

    def summary(self, log_hint: str) -> str | None:
        """``gg-infer: N commands ran locally, not as thunks: R1 xA, R2 xB (see LOG)``."""
        with self._lock:
            items = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        total = sum(n for _, n in items)
        if not total:
            return None
        noun = "command" if total == 1 else "commands"
        reasons = ", ".join(f"{reason} x{n}" for reason, n in items)
        return f"gg-infer: {total} {noun} ran locally, not as thunks: {reasons} (see {log_hint})"


def _tool_family(argv0: str) -> str:
    name = os.path.basename(argv0)
    for family in _OUTPUT_OPTION_TOOLS:
        if name == family or name.endswith("-" + family) or name.startswith(family + "-") \
                or f"-{family}-" in name:
            return family
    return name


def _expand(words: list[str], cwd: str, depth: int = 0) -> list[str]:
    out: list[str] = []
    for word in words:
        if word.startswith("@") and len(word) > 1 and depth < _MAX_RESPONSE_DEPTH:
            path = os.path.join(cwd, word[1:])
            if os.path.isfile(path):
                try:
                    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
                        inner = shlex.split(handle.read(), posix=True)
                except (OSError, ValueError):
                    inner = []
                out.extend(_expand(inner, cwd, depth + 1))
                continue
        out.append(word)
    return out


def candidate_inputs(argv: list[str], cwd: str, env: dict[str, str] | None = None) -> list[str]:
    """Absolute paths of existing files the call may read (see the module docstring).

    ``env``: the call's environment; gcc also searches ``$LIBRARY_PATH`` for ``-l``."""
    words = _expand(argv[1:], cwd)
    skip_output = _tool_family(argv[0]) in _OUTPUT_OPTION_TOOLS
    lib_dirs: list[str] = []
    library_path = (env or {}).get("LIBRARY_PATH", "")
    libs: list[str] = []
    candidates: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word == "-o" and skip_output:
            index += 1
            continue
        if word.startswith("-Wl,") or word.startswith("-Wa,") or word.startswith("-Wp,"):
            parts = word.split(",")[1:]
            candidates += parts + [p.partition("=")[2] for p in parts if "=" in p]
            continue
        if word.startswith("-L"):
            directory = word[2:] or (words[index] if index < len(words) else "")
            index += 0 if word[2:] else 1
            lib_dirs.append(os.path.join(cwd, directory))
            continue
        if word.startswith("-l") and len(word) > 2:
            libs.append(word[2:])
            continue
        if "=" in word:
            candidates.append(word.partition("=")[2])
        candidates.append(word)
    lib_dirs += [os.path.join(cwd, d) for d in library_path.split(":") if d]
    for name in libs:
        choices = [name[1:]] if name.startswith(":") else [f"lib{name}.so", f"lib{name}.a"]
        for directory in lib_dirs:
            candidates += [os.path.join(directory, choice) for choice in choices]
    found: list[str] = []
    for candidate in candidates:
        if not candidate:
            continue
        path = os.path.normpath(os.path.join(cwd, candidate))
        if os.path.isfile(path):
            found.append(path)
    return list(dict.fromkeys(found))


_PROBE_PREFIXES = ("conftest", "libconftest", "conftstm", "cmTC_")
_PROBE_DIRS = ("/CMakeFiles/CMakeScratch/", "/CMakeFiles/CMakeTmp")


def probe_reason(argv: list[str], cwd: str = "") -> str | None:
    """Why this call is a configure probe, if it is: autoconf's ``conftest*`` files,
    CMake's ``try_compile`` projects (``cmTC_*`` in ``CMakeFiles/CMakeScratch``).

    A probe's result is consumed at once by the configure script (exit status, output,
    the file it writes), so it runs as it is: never a thunk, never counted."""
    if any(marker in cwd + "/" for marker in _PROBE_DIRS):
        return "configure probe (CMake try_compile)"
    for word in argv[1:]:
        name = os.path.basename(word.rpartition("=")[2] if word.startswith("-") else word.lstrip("@"))
        if name.startswith(_PROBE_PREFIXES):
            return "configure probe"
    return None


def placeholders_among(paths: list[str]) -> list[str]:
    """The placeholders among ``paths`` and among the members of thin archives there."""
    out: list[str] = []
    for path in paths:
        if read_placeholder(path) is not None:
            out.append(path)
        elif is_thin_archive(path):
            try:
                members = thin_members(path)
            except (OSError, ValueError):
                continue
            out += [m for m in members if read_placeholder(m) is not None]
    return list(dict.fromkeys(out))


class Forcer:
    """Forces placeholders with ``gg-force`` on the run's store, once per path at a time.

    Several build jobs may need the same placeholder at once; the first one runs
    ``gg-force`` and the others wait for it (within this gg-infer). Separate gg-force
    processes on one placeholder are safe too: the store's writes are atomic, and a
    result replaces a placeholder only while it is still that placeholder."""

    def __init__(self, store_root: str, jobs: int | None = None):
        self.store_root = store_root
        self.jobs = jobs or os.cpu_count() or 1
        self._lock = threading.Lock()
        self._inflight: dict[str, threading.Event] = {}

    def force(self, paths: list[str]) -> int:
        """Make every path in ``paths`` real; raise :class:`ForceError` with one line.

        Returns how many this call forced itself (the others another call was forcing)."""
        mine: list[str] = []
        waits: list[threading.Event] = []
        with self._lock:
            for path in paths:
                event = self._inflight.get(path)
                if event is None:
                    self._inflight[path] = threading.Event()
                    mine.append(path)
                else:
                    waits.append(event)
        try:
            if mine:
                self._run_force(mine)
        finally:
            with self._lock:
                for path in mine:
                    self._inflight.pop(path).set()
        for event in waits:
            event.wait()
        still = [p for p in paths if read_placeholder(p) is not None]
        if still:
            raise ForceError(f"{still[0]} is still a placeholder after gg-force")
        return len(mine)

    def _run_force(self, paths: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GG_INFER")}
        env["GG_DIR"] = self.store_root
        command = [sys.executable, "-m", "executor.force_cli", "-q", "-j", str(self.jobs), *paths]
        try:
            result = subprocess.run(command, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise ForceError(f"cannot run gg-force: {exc}") from None
        if result.returncode != 0:
            lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
            raise ForceError(lines[-1] if lines else f"gg-force exited with status {result.returncode}")


def _note(count: int, one: str, many: str, rest: str) -> str | None:
    """One closing ``gg-infer: note:`` line counting calls that differ from a plain build
    by design (None when there are none)."""
    if not count:
        return None
    return f"gg-infer: note: {count} {one if count == 1 else many} {rest}"
