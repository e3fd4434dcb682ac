"""Which headers a translation unit reads: asked of the real preprocessor, cached.

The scan runs the real preprocessor with the user's own flags and ``-M`` (or the
user's ``-MD``/``-MMD`` request, so that the dependency file make relies on is produced
by gcc itself, byte for byte): the cc1 command the driver names for it, once checked
against the driver's own output for the same flags (see ``_run_dep``). Results are
cached in ``.gg/infer/deps/entries.log`` (a cache log, ``ir/cache_log.py``) by the scan
command and the source's content; a hit is used only if every header listed still has
the content recorded (checked through :class:`~model_sub.fileids.FileIds`: one ``stat``
per header once it is known in this run), so an unchanged file is not re-scanned and a changed header forces a new scan.
Entries read in this run are also kept in memory.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import xxhash

from ir.atomic import atomic_write_bytes, unlink_quietly
from ir.cache_log import JsonCache

from .driver import Driver
from .fileids import FileIds
from .memo_observer import Observer

_BLANKS = re.compile(r"[ \t]+")
# The preprocessor's date and time macros: a compile that expands one writes the day it
# ran into its output, except under SOURCE_DATE_EPOCH (as every thunk runs: see
# ModelContext.note_dated). Looked for in the bytes of every file a scan lists.
DATE_MACROS = re.compile(rb"__(?:DATE|TIME|TIMESTAMP)__")
# Assembler directives that read a file of their own (`.include "m.s"`, `.incbin "x.bin"`,
# in a .s/.S file or C's inline asm): the -M scan does not list it, so a thunk would lack it.
ASSEMBLER_READS = re.compile(rb"\.inc(?:lude|bin)\s+\\?\"")
# part of every scan key: entries made before ``asm_reads`` was noted are not trusted
_SCAN_FORMAT = "asm-reads-1"


class ScanFailed(Exception):
    """The preprocessor failed (missing header, #error ...): the real tool reports it."""


@dataclass(frozen=True)
class ScanResult:
    files: list[tuple[str, str]]  # (absolute host path, ID), source first
    depfile_text: str | None  # what the user's -MD/-MMD file must contain, if asked
    dated: bool = False  # a file listed names __DATE__, __TIME__ or __TIMESTAMP__
    asm_reads: bool = False  # a file listed has an .include/.incbin directive (ASSEMBLER_READS)


def parse_make_deps(text: str) -> list[str]:
    """Prerequisites listed in a gcc dependency file (first rule only, unescaped)."""
    text = text.replace("\\\n", " ")
    first_rule = text.split("\n\n")[0].split("\n")[0]
    _, sep, rest = first_rule.partition(": ")
    if not sep:
        _, _, rest = first_rule.partition(":")
    if "\\" not in rest and "$" not in rest:
        return [w for w in _BLANKS.split(rest) if w]  # the usual case: no char-by-char loop
    words, current, i = [], "", 0
    while i < len(rest):
        ch = rest[i]
        if ch == "\\" and i + 1 < len(rest) and rest[i + 1] in " #":
            current += rest[i + 1]
            i += 2
            continue
        if ch == "$" and i + 1 < len(rest) and rest[i + 1] == "$":
            current += "$"
            i += 2
            continue
        if ch in " \t":
            if current:
                words.append(current)
            current = ""
        else:
            current += ch
        i += 1
    if current:
        words.append(current)
    return words


def write_depfile(target: str, text: str) -> None:
    """Write the user's dependency file, unless it already holds exactly ``text``.

    A path that is not a regular file (``-MF /dev/null``, a pipe) is written into, and
    a symbolic link is written through, as gcc does: the atomic rename put a regular
    file in place of ``/dev/null``."""
    try:
        if not stat.S_ISREG(os.stat(target).st_mode):
            with open(target, "w", encoding="utf-8", errors="surrogateescape") as handle:
                handle.write(text)
            return
    except FileNotFoundError:
        pass
    if os.path.islink(target):
        target = os.path.realpath(target)
    try:
        with open(target, encoding="utf-8", errors="surrogateescape") as handle:
            same = handle.read() == text
    except OSError:
        same = False
    if not same:
        atomic_write_bytes(Path(target), text.encode("utf-8", "surrogateescape"))


class DepScanner:
    def __init__(self, ids: FileIds, cache_dir: Path, real_path: str, driver: Driver | None = None,
                 observer: Observer | None = None):
        self.ids = ids
        self.observer = observer or Observer()  # the memo records the dependency file written
        self.driver = driver
        self.cache_dir = cache_dir
        self._disk = JsonCache(cache_dir)
        self.scratch = cache_dir.parent / "scratch"
        self.real_path = real_path
        self._lock = threading.Lock()
        self._memo: dict[str, ScanResult] = {}
        self._marks: dict[str, tuple[bool, bool]] = {}  # file ID -> (names a date macro, asm reads)
        self._free_scratch: list[str] = []

    def _env(self, env: dict[str, str]) -> dict[str, str]:
        keep = {k: v for k, v in env.items() if not k.startswith("GG_INFER")}
        keep.update(PATH=self.real_path, LC_ALL="C")
        for name in ("DEPENDENCIES_OUTPUT", "SUNPRO_DEPENDENCIES"):
            keep.pop(name, None)
        return keep

    def snapshot(self) -> dict[str, tuple[list[tuple[str, str]], str | None, bool, bool]]:
        """The scans of this run, for the next (as the on-disk cache has them: each is
        used only after every file it lists is checked unchanged)."""
        with self._lock:
            return {key: (result.files, result.depfile_text, result.dated, result.asm_reads)
                    for key, result in self._memo.items()}

    def seed(self, memo: dict[str, tuple[list[tuple[str, str]], str | None, bool, bool]]) -> None:
        with self._lock:
            for key, (files, depfile_text, dated, asm_reads) in memo.items():
                self._memo.setdefault(key, ScanResult([(path, ident) for path, ident in files], depfile_text,
                                                      bool(dated), bool(asm_reads)))

    def scan(self, argv: list[str], cwd: str, source: str, env: dict[str, str],
             user_depfile: str | None, user_dep_args: list[str], full_deps_in_user_file: bool) -> ScanResult:
        """Scan ``source``; ``argv`` is the driver and the compile flags (no -c/-o/-M*).

        With ``user_depfile``, the user's dependency file is written there (from gcc's
        own output); ``user_dep_args`` are the user's -MD/-MMD/-MP/-MT/-MQ options.
        """
        source_path = os.path.join(cwd, source)
        source_id = self._file_id(source_path)
        key = xxhash.xxh3_128_hexdigest("\0".join(
            [_SCAN_FORMAT, cwd, source_id, str(user_depfile), *argv, "|", *user_dep_args,
             *(f"{k}={env.get(k, '')}" for k in ("CPATH", "C_INCLUDE_PATH", "CPLUS_INCLUDE_PATH"))]).encode())
        cached = self._load_valid(key)
        if cached is None:
            cached = self._run_scan(argv, cwd, source, env, user_depfile, user_dep_args, full_deps_in_user_file)
            self._disk.put(key, {"files": cached.files, "depfile": cached.depfile_text, "dated": cached.dated,
                                 "asm_reads": cached.asm_reads})
            with self._lock:
                self._memo[key] = cached
        if user_depfile is not None and cached.depfile_text is not None:
            target = os.path.join(cwd, user_depfile)
            write_depfile(target, cached.depfile_text)
            self.observer.wrote("depfile", target, cached.depfile_text)
        return cached

    def _file_id(self, path: str) -> str:
        """ID of ``path``, stored if new."""
        return self.ids.stored(path)

    def _load_valid(self, key: str) -> ScanResult | None:
        result = self._memo.get(key)
        if result is None:
            entry = self._disk.get(key)
            try:
                result = ScanResult([(str(path), str(ident)) for path, ident in entry["files"]],  # type: ignore[index]
                                    entry["depfile"], bool(entry["dated"]),  # type: ignore[index]
                                    bool(entry["asm_reads"]))  # type: ignore[index]
            except (TypeError, KeyError, ValueError):
                return None
        for path, ident in result.files:
            if not self.ids.unchanged(path, ident):
                return None
        with self._lock:
            self._memo[key] = result
        return result

    def _run_scan(self, argv, cwd, source, env, user_depfile, user_dep_args, full_deps_in_user_file) -> ScanResult:
        env = self._env(env)
        # dependency files go to scratch files of this run, reused by later scans (a
        # temporary directory per scan cost a mkdir, file creations and an rmtree)
        self.scratch.mkdir(parents=True, exist_ok=True)
        written: list[str] = []
        try:
            full = None
            depfile_text = None
            if user_depfile is not None:
                user_out = self._scratch_file(written)
                flags = ["-MM" if "-MMD" in user_dep_args and not full_deps_in_user_file else "-M"]
                flags += [a for a in user_dep_args if a not in ("-MD", "-MMD")]
                self._run_dep([*argv, "-E", source, *flags, "-MF", user_out], source, user_dep_args, cwd, env,
                              written)
                with open(user_out, encoding="utf-8", errors="surrogateescape") as handle:
                    depfile_text = handle.read()
                if flags[0] == "-M":
                    full = user_out
            if full is None:
                full = self._scratch_file(written)
                self._run_dep([*argv, "-E", source, "-M", "-MT", "x", "-MF", full], source, [], cwd, env, written)
            with open(full, encoding="utf-8", errors="surrogateescape") as handle:
                names = parse_make_deps(handle.read())
        finally:
            with self._lock:
                self._free_scratch += written
        files = []
        seen = set()
        for name in names:
            path = os.path.normpath(os.path.join(cwd, name))
            if path in seen:
                continue
            seen.add(path)
            files.append((path, self._file_id(path)))
        marks = [self._file_marks(path, ident) for path, ident in files]
        return ScanResult(files, depfile_text, any(m[0] for m in marks), any(m[1] for m in marks))

    def _file_marks(self, path: str, ident: str) -> tuple[bool, bool]:
        """Whether the file (``ident``: its content) names a date or time macro, in code
        or not (a comment, an #if'd-out line: the note says "name"), and whether it has an
        assembler directive that reads a file (ASSEMBLER_READS); once per content."""
        known = self._marks.get(ident)
        if known is None:
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
                known = (DATE_MACROS.search(data) is not None, ASSEMBLER_READS.search(data) is not None)
            except OSError:
                known = (False, False)  # gone since it was hashed: the thunk has the content hashed
            with self._lock:
                self._marks[ident] = known
        return known

    def _run_dep(self, argv: list[str], source: str, dep_args: list[str], cwd: str, env: dict[str, str],
                 written: list[str]) -> None:
        """Run the scan ``argv`` (its ``-MF`` file is ``argv[-1]``), as the driver would.

        When the driver can tell which cc1 command it would run, that command runs
        directly; the first time for a set of flags, both run and the cc1 command is
        used only if it writes exactly the same dependency file.
        """
        out = argv[-1]
        targets = [dep_args[i + 1] for i in range(len(dep_args) - 1) if dep_args[i] in ("-MT", "-MQ")]
        driver = self.driver
        plan = driver.scan_command(argv, source, [out, *targets], env) if driver else None
        if driver is None or plan is None:
            self._run(argv, cwd, env)
            return
        key, command = plan

        def check() -> bool:
            self._run(argv, cwd, env)  # the driver's own answer, into ``out``
            other = self._scratch_file(written)
            result = subprocess.run([other if word == out else word for word in command], cwd=cwd, env=env,
                                    capture_output=True, stdin=subprocess.DEVNULL)
            with open(out, "rb") as mine, open(other, "rb") as theirs:
                return result.returncode == 0 and mine.read() == theirs.read()

        checked_now: list[bool] = []

        def first_check() -> bool:
            checked_now.append(True)
            return check()

        if driver.verdict(key, first_check):
            if not checked_now:
                self._run(command, cwd, env)
        elif not checked_now:
            self._run(argv, cwd, env)

    def _scratch_file(self, written: list[str]) -> str:
        """A dependency-file name for this scan, reused across scans: creating a file
        costs ~0.2-1 ms here, and a cold call made two (plus two unlinks)."""
        with self._lock:
            path = self._free_scratch.pop() if self._free_scratch else None
        if path is None:
            fd, path = tempfile.mkstemp(dir=self.scratch, prefix="scan-", suffix=".d")
            os.close(fd)
        written.append(path)
        return path

    def close(self) -> None:
        """Remove the scratch files."""
        with self._lock:
            paths, self._free_scratch = self._free_scratch, []
        for path in paths:
            unlink_quietly(path)

    def _run(self, argv: list[str], cwd: str, env: dict[str, str]) -> None:
        result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise ScanFailed(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "scan failed")
