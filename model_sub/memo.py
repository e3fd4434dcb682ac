"""The per-call memo: an unchanged tool call gets its recorded answer again, unmodelled.

Why: after ``make clean`` every call of a warm build is one the models have answered
before, and re-modelling it (argument parsing, the scan cache's checks, the driver's
templates, the thunk key) was most of a warm gg-infer run — ccache's direct mode
answers the same question from a manifest. So a modelled call is recorded, and a later
call with the same :func:`key` whose recorded *facts* all still hold is answered by
writing the recorded outputs again (through the same functions the models write with)
and replying what the model replied.

The key (:meth:`Memo.key`) is everything of the request a model's answer depends on
that can be hashed at once: the code (:func:`~.warm.code_fingerprint`), the build root,
the real PATH, the umask, the tool, the program the build named, cwd, argv (and the
words of every ``@file`` in it), and the environment except gg-infer's own variables,
``PATH`` (the models use the real PATH, which is in the key), the shell's bookkeeping
(``_``, ``OLDPWD``, ``SHLVL``) and make's jobserver address in ``MAKEFLAGS``. The facts are
everything the model looked at on the file system, recorded while it ran
(:class:`~.memo_observer.Observer`, fed by :class:`~.fileids.FileIds`, the context, the toolchain, the
driver and the scanner):

* every file whose content it used (sources, headers from the scan, linker inputs and
  scripts, the toolchain's programs and libraries), checked as the scan cache checks
  headers: :meth:`FileIds.unchanged`, one ``stat`` for a file whose identity is known,
  a hash otherwise;
* every placeholder it read (by its reference), every existence or mode question it
  asked (a library search's misses too), the programs ``which`` found, the portable
  programs and library closures the toolchain gave, and the ``stat`` identity of each
  driver it asked (its answers are cached by that);
* the thunks it stored: each must still be in the store (a ``gg gc`` may have run).

A fact that no longer holds is a miss: the model runs and its new record replaces the
old one. A call that was not modelled (configure steps, consumed output, fallbacks) is
never recorded; the configure and consumed-output checks run before the memo is asked.
Records are kept in memory, handed to the warm model server like the other caches, and
on disk in ``.gg/infer/memo/entries.log`` (a cache log). ``GG_INFER_MEMO=off`` turns it off.

What a fact cannot see, as for the scan cache: a header that appears, after the call
was recorded, earlier on the include path than the one the preprocessor found.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import xxhash

from ir.cache_log import JsonCache
from ir.placeholder import read_placeholder

from .fileids import FileIds, stat_key
from .gcc_args import expand_response_files
from .memo_observer import PROBES, Recording

FORMAT = "1"  # part of every key: records of another layout are never read
# Records kept in memory per run, and so handed to the warm server's next worker: a
# compile's record is ~100 facts (tens of KB as Python objects), and the server keeps
# what its workers report. Beyond this many, a record is read from disk on each use
# (one small JSON file, ~0.1 ms).
MAX_ENTRIES = 2_000
# Not in the key: the models use the real PATH (in the key); nothing the models run
# reads the others, which differ from run to run with how the build was started
# (bash's ``_`` names the last command a shell ran: every call would miss after
# ``strace gg-infer make`` or ``time gg-infer make``).
IGNORED_ENV = frozenset({"PATH", "_", "OLDPWD", "SHLVL"})
# make's jobserver, which names a new FIFO per run since make 4.4 (gcc reads it only in
# lto-wrapper, at a link, which a model never runs: thunks have an environment of their own)
_JOBSERVER = ("--jobserver-auth=", "--jobserver-fds=")


def _env_value(name: str, value: str) -> str:
    if name in ("MAKEFLAGS", "MFLAGS") and "--jobserver" in value:
        return " ".join(word for word in value.split(" ") if not word.startswith(_JOBSERVER))
    return value


def _umask() -> str:
    """The process's umask without changing it (other threads may be creating files)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return line.split()[1]
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return oct(mask)


class Memo:
    """Records of modelled calls for one run: look up, check, replay; record.

    ``checks`` gives the context's own ways of answering the non-file facts (the
    toolchain's ``which``, ``program`` and ``closure``), so a fact is checked the way
    the model would have found it; ``writers`` are the functions the models write their
    outputs (and the notes gg-infer says at the end) with, by the kind of write the
    observer records: ``place``, ``depfile``, ``debug_dirs``, ``dated``."""

    def __init__(self, cache_dir: Path, ids: FileIds, fingerprint: Callable[[], str], identity: list[str],
                 checks: dict[str, Callable[[str], object]], writers: dict[str, Callable[..., None]]):
        self._disk = JsonCache(cache_dir)
        self.ids = ids
        self._fingerprint = fingerprint
        self._prefix: str | None = None
        self.identity = identity
        self.checks = checks
        self.writers = writers
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}

    def snapshot(self) -> dict[str, dict]:
        """The records of this run, for the next (the warm model server keeps them)."""
        with self._lock:
            return dict(self._entries)

    def seed(self, entries: dict[str, dict]) -> None:
        with self._lock:
            for key, entry in entries.items():
                if len(self._entries) >= MAX_ENTRIES:
                    break
                self._entries.setdefault(key, entry)

    def key(self, tool: str, program: str, cwd: str, argv: list[str], env: dict[str, str]) -> str | None:
        """The record's name for a request (see the module docstring for what is in it);
        None when it cannot be made (an ``@file`` that cannot be read): no memo then."""
        if self._prefix is None:
            self._prefix = "\0".join([FORMAT, self._fingerprint(), _umask(), *self.identity])
        try:
            expanded = expand_response_files(argv, cwd) if any(w.startswith("@") for w in argv) else argv
        except (OSError, ValueError):
            return None
        parts = [self._prefix, tool, program, cwd, str(len(argv)), *argv, str(len(expanded)), *expanded]
        parts += sorted(f"{k}={_env_value(k, v)}" for k, v in env.items()
                        if k not in IGNORED_ENV and not k.startswith("GG_INFER"))
        return xxhash.xxh3_128_hexdigest("\0".join(parts).encode("utf-8", "surrogateescape"))

    def replay(self, key: str) -> tuple[bytes, list[str]] | None:
        """Write the recorded outputs and return the recorded stderr and the thunks the
        call stored (their kept output is replayed too, see replay.py), if every fact of
        the record for ``key`` still holds; else None (nothing written)."""
        entry = self._entry(key)
        if entry is None or any(write[0] not in self.writers for write in entry["writes"]) \
                or not self._holds(entry):
            return None
        for kind, *arguments in entry["writes"]:
            self.writers[kind](*arguments)
        return entry["stderr"].encode("utf-8", "surrogateescape"), entry["thunks"]

    def remember(self, key: str, record: Recording, stderr: bytes) -> None:
        """Keep what a successful model call looked at and wrote."""
        if record.conflict:
            return
        entry = {"files": record.files, "placeholders": record.placeholders, "probes": record.probes,
                 "which": record.which, "programs": record.programs, "closures": record.closures,
                 "stats": record.stats, "thunks": list(dict.fromkeys(record.thunks)), "writes": record.writes,
                 "stderr": stderr.decode("utf-8", "surrogateescape")}
        with self._lock:
            if len(self._entries) < MAX_ENTRIES:
                self._entries[key] = entry
        self._disk.put(key, entry)  # (lost on a full disk: the next call is modelled)

    def _entry(self, key: str) -> dict | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None:
            return entry
        stored = self._disk.get(key)
        if not isinstance(stored, dict):
            return None
        with self._lock:
            if len(self._entries) < MAX_ENTRIES:
                self._entries[key] = stored
        return stored

    def _holds(self, entry: dict) -> bool:
        """Whether every fact of ``entry`` is still true (cheapest kinds first)."""
        try:
            for name, found in entry["which"].items():
                if self.checks["which"](name) != found:
                    return False
            for path, key in entry["stats"].items():
                if list(stat_key(os.stat(path))) != key:
                    return False
            for kind_path, answer in entry["probes"].items():
                kind, _, path = kind_path.partition("\0")
                if PROBES[kind](path) != answer:
                    return False
            for path, ref in entry["placeholders"].items():
                placeholder = read_placeholder(path)
                if (placeholder.ref if placeholder is not None else None) != ref:
                    return False
            if not self.ids.all_unchanged(entry["files"]):
                return False
            for name, value in entry["programs"].items():
                if self.checks["program"](name) != value:
                    return False
            for path, value in entry["closures"].items():
                if self.checks["closure"](path) != value:
                    return False
            return all(self.ids.has_blob(ident) for ident in entry["thunks"])
        except Exception:  # noqa: BLE001 - a fact that cannot be checked (a tool gone, a bad record) is a miss
            return False
