"""What the real gcc driver would run: ``gcc -###`` stage commands, and its defaults.

Instead of re-implementing gcc's specs, the model asks the driver itself, with the
already-mapped (relative, checkout-independent) arguments, for the exact stage
commands (cc1/cc1plus, as, collect2). The answers are cheap to get and cached, in
memory and under ``.gg/infer/driver``, keyed by the driver and its arguments.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import xxhash

from ir.atomic import atomic_write_bytes

_TEMP_RE = re.compile(r"^(.*?)(/tmp/cc[A-Za-z0-9]{6,}\.([A-Za-z0-9_+]+))$")
TEMP_PREFIX = "gg-tmp"


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


def parse_hash_hash_hash(stderr: str) -> list[Stage]:
    """Stage commands from ``gcc -###`` output, with temp files given stable names."""
    stages: list[Stage] = []
    temps: dict[str, str] = {}
    for line in stderr.splitlines():
        if not line.startswith(" "):
            continue
        words = shlex.split(line)
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


class Driver:
    """Cached questions to the real gcc driver for one gg-infer run."""

    def __init__(self, cache_dir: Path, real_path: str):
        self.cache_dir = cache_dir
        self.real_path = real_path
        self._lock = threading.Lock()
        self._memo: dict[str, object] = {}

    def _cached(self, key_parts: list[str], compute):
        key = xxhash.xxh3_128_hexdigest("\0".join(key_parts).encode())
        with self._lock:
            if key in self._memo:
                return self._memo[key]
        path = self.cache_dir / key
        try:
            value = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            value = compute()
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, json.dumps(value).encode())
        with self._lock:
            self._memo[key] = value
        return value

    def _run(self, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(prefix="gg-infer-") as empty:
            return subprocess.run(argv, cwd=empty, env=_clean_env(env, self.real_path),
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL)

    def stages(self, driver: str, args: list[str], env: dict[str, str]) -> list[Stage]:
        """The commands ``driver args`` would run (``driver`` is an absolute path)."""

        def compute():
            result = self._run([driver, "-###", *args], env)
            if result.returncode != 0:
                raise DriverError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed")
            return [list(stage.argv) for stage in parse_hash_hash_hash(result.stderr)]

        stat = os.stat(driver)
        raw = self._cached(["stages", driver, str(stat.st_mtime_ns), *args], compute)
        return [Stage(tuple(words)) for words in raw]

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

        stat = os.stat(driver)
        return self._cached(["incdirs", driver, str(stat.st_mtime_ns), lang, *flags], compute)

    def linker_search_dirs(self, ld: str) -> list[str]:
        """ld's built-in ``SEARCH_DIR``s (sysroot-relative), from ``ld --verbose``."""

        def compute():
            result = self._run([ld, "--verbose"], {})
            return [d.lstrip("=") for d in re.findall(r'SEARCH_DIR\("([^"]+)"\)', result.stdout)]

        return self._cached(["ldsearch", ld, str(os.stat(ld).st_mtime_ns)], compute)
