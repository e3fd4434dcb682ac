"""Is a tool call's output read at once by a process that started it? Then it runs for real.

A build can probe the toolchain itself, outside any configure step: make's
``HAVE_X := $(shell $(CC) -Werror -fflag -c probe.c -o probe.o 2>/dev/null && echo yes)``
or a recipe's ``FLAGS=`$(CC) -print-file-name=x` ...``. The running program (make, a
shell) reads the command's output through a pipe and decides on it immediately, often
on the exit status behind it. A model answers "success" and writes a placeholder, so a
probe that really fails would pass and the build would pick the wrong sources or flags,
silently. Such calls must behave exactly as without gg, so they run the real tool.

What is visible from ``/proc`` (the server knows the calling shim's pid from
``SO_PEERCRED``; the ancestors are the same walk as :mod:`model_sub.configure`):
command substitution of every kind — make's ``$(shell ...)``, a shell's ``$(...)`` and
backticks, a Python script's ``subprocess.run(..., capture_output=True)`` — gives the
command a stdout that is a pipe whose *read end is held by an ancestor*. The rule:

1. Walk up from the shim to the nearest build driver (``make``, ``ninja``...; see
   :data:`BUILD_DRIVERS`), or to gg-infer when there is none.
2. The candidate pipes are those held open for writing (and not for reading) by the
   shim and by every process below that driver: the compile's stdout, and also that of
   the shell that runs it — the compile may write to ``/dev/null`` while ``sh -c 'cc
   ... >/dev/null 2>&1 && echo yes'`` writes into make's pipe (dash even keeps that pipe
   on a saved fd while the redirected command runs). A pipe held at both ends (make's
   jobserver, shared by recursive recipes) is not a result being read. Pipes the driver
   itself holds for writing only are removed: a pipe merely inherited from the build
   driver (the user ran ``make | tee log``, a test captured make's output, ``out=$(make)``
   in a script) is the build's log, not a consumed result.
3. The call is consumed when an ancestor between the shim and the driver (inclusive)
   holds one of those pipes open for reading (``/proc/<pid>/fd/*`` is ``pipe:[inode]``,
   ``/proc/<pid>/fdinfo/<fd>`` gives the access mode). The reader may still hold the
   write end too for a moment after it started the command (make and dash close it
   right after the fork; under load the compile can get there first), so only the
   writers' side decides what is a jobserver. Build drivers that capture every
   command's output only to print it (ninja, samu: :data:`CAPTURING_DRIVERS`) do not
   count as readers, or every ninja build would run for real.

What is *not* visible: an exit status consumed by a shell conditional without a pipe,
e.g. a recipe line ``if $(CC) -Werror -c probe.c -o probe.o; then ...`` — the shell only
waits for the status, and nothing in ``/proc`` says what it does with it. Probes written
that way are recognised only by their files (output to ``/dev/`` or a ``conftest*``
name, :mod:`model_sub.gcc_args` and :func:`model_sub.fallback.probe_reason`). An output in
a temporary directory outside the build tree is deliberately *not* a rule: out-of-tree
build directories under ``/tmp`` are ordinary, and whether a file will be deleted
afterwards cannot be known when the call is made.
"""

from __future__ import annotations

import os
import re

from .configure import INTERPRETERS, MAX_DEPTH, cmdline, parent_pid

BUILD_DRIVERS = {"make", "gmake", "bmake", "pmake", "remake", "mingw32-make", "ninja", "samu"}
CAPTURING_DRIVERS = {"ninja", "samu"}
_PYTHON = re.compile(r"python[\d.]*$")
_PIPE = re.compile(r"pipe:\[(\d+)\]$")
O_ACCMODE = 0o3


def program_name(words: list[str]) -> str:
    """The program a command line runs, looking through interpreters (``python3 ninja``)."""
    i = 0
    while i < len(words) - 1:
        name = os.path.basename(words[i])
        if not (name in INTERPRETERS or _PYTHON.match(name)):
            break
        if any(w == "-c" for w in words[i + 1:i + 2]):
            break  # sh -c 'string', python -c: the interpreter itself is the program
        i += 1
        while i < len(words) - 1 and words[i].startswith("-"):
            i += 1
    return os.path.basename(words[i]) if i < len(words) else ""


def _pipes(pid: int) -> tuple[set[str], set[str]]:
    """The inodes of the pipes ``pid`` holds open for reading, and for writing."""
    reads: set[str] = set()
    writes: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return reads, writes
    for fd in fds:
        try:
            match = _PIPE.match(os.readlink(f"/proc/{pid}/fd/{fd}"))
            if not match:
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as handle:
                flags = next(int(line.split()[1], 8) for line in handle if line.startswith("flags:"))
        except (OSError, StopIteration, ValueError, IndexError):
            continue  # the fd was closed meanwhile
        (reads if flags & O_ACCMODE == os.O_RDONLY else writes).add(match.group(1))
    return reads, writes


def _ancestors(pid: int, stop_pid: int) -> list[int]:
    """``pid``'s parent, grandparent... up to the nearest build driver (inclusive), or
    up to ``stop_pid`` (exclusive) when there is none. Empty when the walk reaches
    neither (an orphan reparented to init or a subreaper): unrelated processes up there
    may hold pipes that are no part of this build, so nothing is concluded."""
    chain: list[int] = []
    current = parent_pid(pid)
    for _ in range(MAX_DEPTH):
        if current == stop_pid:
            return chain
        if current <= 1:
            return []
        chain.append(current)
        if program_name(cmdline(current)) in BUILD_DRIVERS:
            return chain
        current = parent_pid(current)
    return []


def consumed_output(pid: int, stop_pid: int) -> str | None:
    """Why the output of the call made by ``pid`` is read at once by an ancestor (for
    the log), or None."""
    if pid <= 0:
        return None
    try:
        chain = _ancestors(pid, stop_pid)
    except (OSError, ValueError, IndexError):
        return None  # the process went away: its result is not awaited
    if not chain:
        return None
    top = chain[-1]
    top_name = program_name(_cmdline_or_empty(top))
    driver = top_name in BUILD_DRIVERS
    writers = [pid, *chain[:-1]] if driver else [pid, *chain]
    held: dict[int, tuple[set[str], set[str]]] = {}  # each process's fds are read once per call

    def pipes_of(p: int) -> tuple[set[str], set[str]]:
        if p not in held:
            held[p] = _pipes(p)
        return held[p]

    def write_only(p: int) -> set[str]:
        """The pipes ``p`` holds for writing only: a jobserver pipe, held at both ends by
        every process that shares it, is never a result being read."""
        reads, writes = pipes_of(p)
        return writes - reads

    pipes = set().union(*(write_only(p) for p in writers))
    if driver:
        pipes -= write_only(top)  # the build's own log (make | tee, captured output, out=$(make))
    if not pipes:
        return None
    for holder in chain[:-1] if top_name in CAPTURING_DRIVERS else chain:
        if pipes & pipes_of(holder)[0]:
            name = program_name(_cmdline_or_empty(holder)) or str(holder)
            return f"output read at once by {name} (command substitution or $(shell ...))"
    return None


def _cmdline_or_empty(pid: int) -> list[str]:
    try:
        return cmdline(pid)
    except OSError:
        return []
