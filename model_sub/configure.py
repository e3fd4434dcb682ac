"""Is a tool call part of a configure step? Then the real tool runs, as without gg.

A configure step consumes a tool's answer at once: ``./configure`` and CMake read a
probe's exit status and output, identify the compiler from its ``-v`` text and the
binary it produced, and record flags that work. A model answers "success" and
writes a placeholder, so a probe that really fails would pass and a compiler would
not be identified. Modelling probes faithfully would mean running them anyway, and
they are a small part of a build's work, so they simply run for real.

How a call is recognised (first rule that matches):

1. **An ancestor process is a configure driver.** The server knows the calling
   shim's pid (``SO_PEERCRED``); the parent chain up to gg-infer is read from
   ``/proc/<pid>/stat`` and each ancestor's ``cmdline`` is classified by
   :func:`driver_kind`: ``cmake`` except ``cmake --build``/``--install``/``-E``/``-P``
   (so ``cmake -E cmake_link_script``, a link step, is a build step, while
   ``cmake --check-build-system`` and ``--regenerate-during-build`` re-runs are
   configure steps), a shell running a ``configure`` or ``config.status`` script,
   ``meson setup|configure`` (or ``meson --internal regenerate``, or the old
   ``meson BUILDDIR``), ``waf configure``, and the autotools (``autoreconf``,
   ``autoconf``, ``aclocal``, ...). Probes usually run in child builds (CMake's
   ``try_compile`` runs make or ninja under the configuring cmake), which is why the
   whole chain is walked, not only the parent.
2. **Probe paths**, for the cases the chain cannot show (no ``/proc``, a daemon in
   between): the working directory or an argument inside ``CMakeFiles/CMakeScratch/``,
   ``CMakeFiles/CMakeTmp`` or ``CMakeFiles/<version>/CompilerId*``, or an argument named
   ``conftest*`` (autoconf).
"""

from __future__ import annotations

import os
import re

SHELLS = {"sh", "bash", "dash", "ksh", "zsh", "busybox"}
INTERPRETERS = SHELLS | {"perl", "env"}
AUTOTOOLS = {"autoreconf", "autoconf", "autoheader", "aclocal", "automake", "autom4te", "libtoolize", "autopoint"}
CONFIGURE_SCRIPTS = {"configure", "config.status", "Configure"}
CMAKE_BUILD_MODES = {"--build", "--install", "-E", "-P", "--open", "--workflow"}
MESON_BUILD_COMMANDS = {"compile", "test", "install", "introspect", "init", "dist", "subprojects", "wrap", "help",
                        "rewrite", "devenv", "env2mfile", "format", "fmt", "--version", "-v", "-h", "--help"}
_PYTHON = re.compile(r"python[\d.]*$")
_CMAKE = re.compile(r"cmake[\d.]*$")
_PROBE_DIR = re.compile(r"/CMakeFiles/(CMakeScratch/|CMakeTmp|[\d.]+/CompilerId)")
MAX_DEPTH = 64


def driver_kind(words: list[str]) -> str | None:
    """What configure driver a process with this command line is, or None."""
    i = 0
    # look through interpreters (sh ./configure, perl -w /usr/bin/autoreconf, python3 meson.py ...)
    while i < len(words) - 1:
        name = os.path.basename(words[i])
        if not (name in INTERPRETERS or _PYTHON.match(name)):
            break
        i += 1
        while i < len(words) - 1 and (words[i].startswith("-") or (name == "env" and "=" in words[i])):
            if words[i] == "-c" and os.path.basename(words[0]) in SHELLS:
                return None  # sh -c 'string': the string's own commands are processes of their own
            i += 1
    if i >= len(words):
        return None
    name, rest = os.path.basename(words[i]), words[i + 1:]
    if name in CONFIGURE_SCRIPTS:
        return name
    if name in AUTOTOOLS:
        return name
    if _CMAKE.match(name):
        if rest and rest[0] in CMAKE_BUILD_MODES or "-P" in rest or "--build" in rest:
            return None
        return "cmake"
    if name in ("meson", "meson.py"):
        sub = next((w for w in rest if not w.startswith("-") or w == "--internal"), None)
        if sub == "--internal":
            position = rest.index("--internal")
            return "meson" if rest[position + 1: position + 2] == ["regenerate"] else None
        if sub in ("setup", "configure") or (sub is not None and sub not in MESON_BUILD_COMMANDS):
            return "meson"
        return None
    if name == "waf" and "configure" in rest:
        return "waf"
    return None


def parent_pid(pid: int) -> int:
    """The parent of ``pid``, from /proc (the command name in ``stat`` may hold spaces
    and parentheses, so the fields are read after its last ``)``)."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        stat = handle.read()
    return int(stat[stat.rindex(b")") + 2:].split()[1])


def cmdline(pid: int) -> list[str]:
    """The argv of ``pid``, from /proc."""
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return [w.decode("utf-8", "surrogateescape") for w in handle.read().split(b"\0")[:-1]]


def ancestor_driver(pid: int, stop_pid: int) -> str | None:
    """The configure driver among ``pid``'s ancestors (below ``stop_pid``), if any."""
    try:
        current = parent_pid(pid)
        for _ in range(MAX_DEPTH):
            if current <= 1 or current == stop_pid:
                return None
            kind = driver_kind(cmdline(current))
            if kind:
                return kind
            current = parent_pid(current)
    except (OSError, ValueError, IndexError):
        return None  # the process went away: the probe-path rule still applies
    return None


def probe_path(cwd: str, argv: list[str]) -> bool:
    """Whether the call runs in, or names, a configure probe's files."""
    if _PROBE_DIR.search(cwd + "/"):
        return True
    for word in argv[1:]:
        if _PROBE_DIR.search(word) or os.path.basename(word).startswith("conftest"):
            return True
    return False


def configure_step(pid: int, cwd: str, argv: list[str], stop_pid: int) -> str | None:
    """Why this call is part of a configure step (for the log), or None."""
    kind = ancestor_driver(pid, stop_pid) if pid > 0 else None
    if kind:
        return f"configure step ({kind})"
    if probe_path(cwd, argv):
        return "configure step (probe files)"
    return None
