"""What the real gcc driver would run: ``gcc -###`` stage commands, and its defaults.

Instead of re-implementing gcc's specs, the model asks the driver itself, with the
already-mapped (relative, checkout-independent) arguments, for the exact stage
commands (cc1/cc1plus, as, collect2). The answers are cheap to get and cached, in
memory and in ``.gg/infer/driver/entries.log``, keyed by the driver and its arguments.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import xxhash

from ir.cache_log import JsonCache

from .fileids import stat_key
from .memo_observer import Observer

_TEMP_RE = re.compile(r"^(.*?)(/tmp/cc[A-Za-z0-9]{6,}\.([A-Za-z0-9_+]+))$")
TEMP_PREFIX = "gg-tmp"
# Stand-ins for a compile's source and output stems in a shared -### question.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9_.+-]*\.[A-Za-z0-9_+]+$")
SOURCE_TOKEN = "ggInferSourceStemX"
OUTPUT_TOKEN = "ggInferOutputStemX"
_FIXED_TOKEN = "ggInferWordX"
# Part of every cache key: a new version drops answers parsed by older code.
_CACHE_VERSION = "2"


class DriverError(Exception):
    """The driver rejected the (mapped) command line: the real tool should run instead."""


@dataclass(frozen=True)
class Stage:
    argv: tuple[str, ...]  # program (as the driver names it) and arguments; temps renamed

    @property
    def program(self) -> str:
        return self.argv[0]

    @property
    def output(self) -> str | None:
        args = self.argv
        for index, word in enumerate(args[:-1]):
            if word == "-o":
                return args[index + 1]
        return None


def _clean_env(env: dict[str, str], real_path: str) -> dict[str, str]:
    keep = {k: v for k, v in env.items() if not k.startswith(("GG_INFER", "GCC_COMPARE_DEBUG"))}
    keep.update(PATH=real_path, LC_ALL="C", TMPDIR="/tmp")
    keep.pop("LANG", None)
    return keep


def split_hash_line(line: str) -> list[str]:
    """The words of one ``gcc -###`` command line.

    gcc prints a word bare when it has only ``[A-Za-z0-9_/.-]``, else in double quotes
    with ``"``, ``\\`` and ``$`` escaped by a backslash. (``shlex`` would keep the
    backslash of ``\\$``, and ``-Wl,-rpath,'$ORIGIN'`` reached ld as ``\\$ORIGIN``.)
    """
    words: list[str] = []
    index, length = 0, len(line)
    while index < length:
        if line[index] == " ":
            index += 1
            continue
        word: list[str] = []
        while index < length and line[index] != " ":
            char = line[index]
            if char == '"':
                index += 1
                while index < length and line[index] != '"':
                    if line[index] == "\\" and index + 1 < length:
                        index += 1
                    word.append(line[index])
                    index += 1
                index += 1
            else:
                word.append(char)
                index += 1
        words.append("".join(word))
    return words


def parse_hash_hash_hash(stderr: str) -> list[Stage]:
    """Stage commands from ``gcc -###`` output, with temp files given stable names."""
    stages: list[Stage] = []
    temps: dict[str, str] = {}
    for line in stderr.splitlines():
        if not line.startswith(" "):
            continue
        words = split_hash_line(line)
        if not words or words == ["|"]:
            continue
        renamed = []
        for word in words:
            match = _TEMP_RE.match(word)
            if match:
                name = temps.setdefault(match.group(2), f"{TEMP_PREFIX}{len(temps)}.{match.group(3)}")
                word = match.group(1) + name
            renamed.append(word)
        stages.append(Stage(tuple(renamed)))
    return stages


def _template(args: list[str], source: str, output: str) -> tuple[list[str], dict[str, str]] | None:
    """``args`` with the source and output stems replaced by tokens, and the way back.

    Compiles of one directory differ only in these names (and in ``-frandom-seed``,
    which holds the source name), so one ``-###`` answer serves them all. None when
    the names are unusual or the substitution would not be exactly reversible.
    """
    src_dir, src_base = os.path.split(source)
    if not _SAFE_NAME.match(src_base) or not _SAFE_NAME.match(output) or "/" in output:
        return None
    src_stem, src_ext = os.path.splitext(src_base)
    out_stem, out_ext = os.path.splitext(output)
    out_token = SOURCE_TOKEN if out_stem == src_stem else OUTPUT_TOKEN
    src_token_name = os.path.join(src_dir, SOURCE_TOKEN + src_ext)
    back = {SOURCE_TOKEN: src_stem, OUTPUT_TOKEN: out_stem}
    forward = [a.replace(source, src_token_name).replace(output, out_token + out_ext) for a in args]
    if any(SOURCE_TOKEN in a or OUTPUT_TOKEN in a for a in args) or _substitute(forward, back) != args:
        return None
    return forward, back


def _substitute(words: list[str], back: dict[str, str]) -> list[str]:
    out = []
    for word in words:
        for token, stem in back.items():
            word = word.replace(token, stem)
        out.append(word)
    return out


class Driver:
    """Cached questions to the real gcc driver for one gg-infer run."""

    def __init__(self, cache_dir: Path, real_path: str, observer: Observer | None = None):
        self.cache_dir = cache_dir
        self._disk = JsonCache(cache_dir)
        self.observer = observer or Observer()  # the memo's facts: the stat of each program asked
        self.real_path = real_path
        self._lock = threading.Lock()
        self._memo: dict[str, object] = {}
        self._empty: str | None = None

    def snapshot(self) -> dict[str, object]:
        """The driver's answers of this run (the on-disk cache's, without the reads)."""
        with self._lock:
            return dict(self._memo)

    def seed(self, memo: dict[str, object]) -> None:
        with self._lock:
            for key, value in memo.items():
                self._memo.setdefault(key, value)

    def _cached(self, key_parts: list[str], compute):
        key = xxhash.xxh3_128_hexdigest("\0".join([_CACHE_VERSION, *key_parts]).encode())
        with self._lock:
            if key in self._memo:
                return self._memo[key]
        value = self._disk.get(key)
        if value is None:
            value = compute()
            self._disk.put(key, value)
        with self._lock:
            self._memo[key] = value
        return value

    def _run(self, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
        # In an empty directory, so that no file of the build can influence the answer.
        # One kept in the store and shared by every run, never removed: a temporary
        # directory per run was left in /tmp by every run that was killed (a fresh one
        # per question cost ~2 ms), and removing a shared one could pull it from under a
        # concurrent run. ``gcc -###`` only prints, so it stays empty.
        with self._lock:
            if self._empty is None:
                empty = os.path.join(self.cache_dir, "empty-cwd")
                os.makedirs(empty, exist_ok=True)
                self._empty = empty
            empty = self._empty
        return subprocess.run(argv, cwd=empty, env=_clean_env(env, self.real_path),
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)

    def _mtime(self, program: str) -> str:
        """The program's mtime, part of every cache key; its whole stat identity is a memo fact."""
        st = os.stat(program)
        self.observer.stat(program, list(stat_key(st)))
        return str(st.st_mtime_ns)

    def close(self) -> None:
        """Nothing to release (the empty working directory stays in the store)."""
        self._empty = None

    def stages(self, driver: str, args: list[str], env: dict[str, str]) -> list[Stage]:
        """The commands ``driver args`` would run (``driver`` is an absolute path)."""

        def compute():
            result = self._run([driver, "-###", *args], env)
            if result.returncode != 0:
                raise DriverError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed")
            return [list(stage.argv) for stage in parse_hash_hash_hash(result.stderr)]

        raw = self._cached(["stages", driver, self._mtime(driver), *args], compute)
        return [Stage(tuple(words)) for words in raw]

    def compile_stages(self, driver: str, args: list[str], source: str, output: str,
                       env: dict[str, str]) -> list[Stage]:
        """:meth:`stages` for a compile of ``source`` to ``output`` (names in ``args``).

        Asks the driver once per set of flags, with the source and output stems
        replaced by tokens, instead of once per source (a ``-###`` run is a process
        start). The first time a template is made it is checked against the direct
        answer for this source; if they differ, the template is never used.
        """
        template = _template(args, source, output)
        if template is None:
            return self.stages(driver, args, env)
        key_args, back = template

        def compute():
            shared = self.stages(driver, key_args, env)
            direct = self.stages(driver, args, env)
            ok = [list(_substitute(list(stage.argv), back)) for stage in shared] == [list(s.argv) for s in direct]
            return {"ok": ok, "stages": [list(stage.argv) for stage in shared]}

        raw = self._cached(["template", driver, self._mtime(driver), *key_args], compute)
        if not raw["ok"]:
            return self.stages(driver, args, env)
        return [Stage(tuple(_substitute(words, back))) for words in raw["stages"]]

    def scan_command(self, argv: list[str], source: str, fixed: list[str],
                     env: dict[str, str]) -> tuple[list[str], list[str]] | None:
        """The preprocessor command that the dependency scan ``argv`` (``driver ... -E
        source -M ...``) would run, to run it without the driver process (a third of
        a scan's CPU time). Returns (key, cc1 command) or None if that is not possible.

        Shared among sources like :meth:`compile_stages`: the source's stem and every
        word in ``fixed`` (the ``-MF`` file, make targets) are tokens in the ``-###``
        question. Callers must check the command once per key (:meth:`verdict`).
        """
        driver, args = argv[0], argv[1:]
        src_dir, src_base = os.path.split(source)
        if not _SAFE_NAME.match(src_base):
            return None
        stem, ext = os.path.splitext(src_base)
        back = {SOURCE_TOKEN: stem}
        tokens: dict[str, str] = {}
        for index, word in enumerate(dict.fromkeys(fixed)):
            tokens[word] = back_token = f"{_FIXED_TOKEN}{index}Z"
            back[back_token] = word
        src_token_name = os.path.join(src_dir, SOURCE_TOKEN + ext)
        forward = [tokens[a] if a in tokens else a.replace(source, src_token_name) for a in args]
        if any(SOURCE_TOKEN in a or _FIXED_TOKEN in a for a in args) or _substitute(forward, back) != args:
            return None
        try:
            stages = self.stages(driver, forward, env)
        except DriverError:
            return None
        if len(stages) != 1 or not os.path.basename(stages[0].program).startswith("cc1") \
                or "-E" not in stages[0].argv:
            return None
        key = [driver, self._mtime(driver), *forward]
        return key, _substitute(list(stages[0].argv), back)

    def verdict(self, key: list[str], check) -> bool:
        """Whether the scan command for ``key`` gives what the driver gives: ``check()``
        is run (it runs both) the first time only, and the answer is cached."""
        return bool(self._cached(["scan-ok", *key], lambda: bool(check())))

    def include_dirs(self, driver: str, lang: str, flags: list[str], env: dict[str, str]) -> list[str]:
        """The driver's default ``#include <...>`` directories for ``lang``, in order."""

        def compute():
            result = self._run([driver, *flags, "-x", lang, "-E", "-v", "/dev/null", "-o", "/dev/null"], env)
            dirs, inside = [], False
            for line in result.stderr.splitlines():
                if line.startswith("#include <...> search starts here:"):
                    inside = True
                elif line.startswith("End of search list."):
                    inside = False
                elif inside and line.startswith(" "):
                    dirs.append(os.path.normpath(line.strip().split(" (")[0]))
            return dirs

        return self._cached(["incdirs", driver, self._mtime(driver), lang, *flags], compute)

    def deterministic_by_default(self, program: str) -> bool:
        """Whether ar/ranlib ``program`` writes zero timestamps and owners unless told
        otherwise (``--help`` marks ``D`` as the default; Debian's binutils do). If not,
        an archive made without ``D`` differs from run to run, and no thunk can
        reproduce the bytes the real tool would write."""

        def compute():
            result = self._run([program, "--help"], {})
            return any(("[D]" in line or line.strip().startswith("-D")) and "(default)" in line
                       for line in result.stdout.splitlines())

        return bool(self._cached(["deterministic", program, self._mtime(program)], compute))

    def linker_search_dirs(self, ld: str) -> list[str]:
        """ld's built-in ``SEARCH_DIR``s (sysroot-relative), from ``ld --verbose``."""

        def compute():
            result = self._run([ld, "--verbose"], {})
            return [d.lstrip("=") for d in re.findall(r'SEARCH_DIR\("([^"]+)"\)', result.stdout)]

        return self._cached(["ldsearch", ld, self._mtime(ld)], compute)
