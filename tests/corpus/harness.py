"""Build a corpus project plainly and through gg-infer + gg-force, and compare.

Both builds run in the *same* directory, one after the other (the plain outputs are
copied aside first), so absolute paths that builds embed (rpaths, libtool wrapper
scripts, CMake's cache) are equal and every remaining difference means something.

What the comparison looks at:

* **configure results**: the files a project lists (``config.h``, ``zconf.h``,
  generated Makefiles) byte for byte, and ``CMakeCache.txt`` entry by entry;
* **outputs**: every library (``.a``, ``.so``) and program the plain build made, byte
  for byte, unless ``known-differences.toml`` lists it with a cause whose check passes
  (``debug-info``: equal once debug sections and the build-id note are removed);
* **the thunk share**: of the compile/link/archive commands the build (not configure)
  ran, how many became thunks (``model`` lines in ``.gg/infer/log``) rather than real
  runs (``real`` or ``error`` lines).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from tests.corpus.fetch import ensure_tools, extract, orig_tarball
from tests.corpus.projects import Command, Project
from tests.hidden_toolchain import run_hidden
from tests.test_infer_support import VENV_BIN, gg_infer, tool_env

KNOWN_DIFFERENCES = Path(__file__).with_name("known-differences.toml")
CAUSES = {
    "debug-info": "built with -g: thunks record the compile directory as '.', a plain build the absolute "
                  "build directory (DW_AT_comp_dir); the build-id note hashes the debug sections too",
}
GCC_TOOLS = {"gcc", "cc", "c89", "c99", "g++", "c++", "x86_64-linux-gnu-gcc", "x86_64-linux-gnu-g++",
             "gcc-12", "g++-12", "x86_64-linux-gnu-gcc-12", "x86_64-linux-gnu-g++-12"}
BINUTILS = {"ar", "ranlib", "strip", "objcopy", "ld", "as", "x86_64-linux-gnu-ar", "x86_64-linux-gnu-ranlib"}
QUERY_OPTIONS = {"-E", "-M", "-MM", "-v", "--version", "-###", "--help", "-fsyntax-only", "-V"}


@dataclass
class Build:
    """One build of a project in ``tree``."""

    tree: Path
    seconds: dict[str, float] = field(default_factory=dict)
    configured: dict[str, object] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # rel path -> kind
    log_mark: int = 0  # size of .gg/infer/log when the build (not configure) started


@dataclass(frozen=True)
class Share:
    """Compile/link/archive commands of the build step: as thunks and run for real."""

    modelled: int
    real: list[str]  # the log lines of those that ran for real

    @property
    def total(self) -> int:
        return self.modelled + len(self.real)

    @property
    def percent(self) -> float:
        return 100.0 * self.modelled / self.total if self.total else 0.0


def prepared_source(project: Project, base: Path) -> Path:
    """The unpacked sources with ``prepare`` run, in ``base/pristine`` (made once per test)."""
    ensure_tools(list(project.tools))
    tree = base / "pristine"
    if tree.exists():
        return tree
    extract(orig_tarball(project.package, project.version), tree)
    for rel, text in project.extra_files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    for command in project.prepare:
        _checked(list(command), tree, "prepare")
    return tree


def _checked(command: list[str], cwd: Path, step: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=tool_env(), check=False)
    if result.returncode != 0:
        raise AssertionError(f"{step}: `{' '.join(command)}` exited {result.returncode}:\n{_tail(result)}")
    return result


def _tail(result: subprocess.CompletedProcess, lines: int = 25) -> str:
    return "\n".join((result.stdout + result.stderr).splitlines()[-lines:])


def fresh_tree(source: Path, work: Path) -> Path:
    """A copy of ``source`` at ``work`` (timestamps kept, so make sees a fresh unpack)."""
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(source, work, symlinks=True)
    return work


def file_kind(path: Path) -> str | None:
    """'archive', 'object', 'program' or 'shared' for build outputs; None for other files."""
    if path.is_symlink() or not path.is_file():
        return None
    with open(path, "rb") as handle:
        head = handle.read(18)
    if head.startswith(b"!<arch>\n"):
        return "archive"
    if not head.startswith(b"\x7fELF") or len(head) < 18:
        return None
    e_type = int.from_bytes(head[16:18], "little")
    if e_type == 1:
        return "object"
    if e_type == 3 and ".so" in path.name:
        return "shared"
    return "program" if e_type in (2, 3) else None


def tree_files(tree: Path) -> set[str]:
    skip = {".gg", "gg-check"}
    found = set()
    for directory, dirs, files in os.walk(tree):
        dirs[:] = [d for d in dirs if not (Path(directory) == tree and d in skip)]
        found.update(os.path.relpath(os.path.join(directory, f), tree) for f in files)
    return found


def configure_results(project: Project, tree: Path) -> dict[str, object]:
    results: dict[str, object] = {}
    for rel in project.configured:
        path = tree / rel
        results[rel] = path.read_bytes() if path.exists() else None
    if project.cmake_cache:
        results[project.cmake_cache] = cmake_cache_entries(tree / project.cmake_cache)
    return results


def cmake_cache_entries(path: Path) -> dict[str, str] | None:
    """``KEY:TYPE`` -> value of every entry in a CMakeCache.txt."""
    if not path.exists():
        return None
    entries = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith(("#", "//")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        entries[key] = value
    return entries


def configure_differences(plain: dict[str, object], gg: dict[str, object]) -> list[str]:
    """One line per configure result that differs."""
    problems = []
    for rel, expected in plain.items():
        got = gg.get(rel)
        if isinstance(expected, dict) and isinstance(got, dict):
            for key in sorted(set(expected) | set(got)):
                if expected.get(key) != got.get(key):
                    problems.append(f"configure: {rel}: {key}: plain {expected.get(key)!r}, gg {got.get(key)!r}")
        elif expected != got:
            problems.append(f"configure: {rel} differs from a plain configure" +
                            (" (missing)" if got is None else _first_diff(expected, got)))
    return problems


def _first_diff(expected: object, got: object) -> str:
    if not isinstance(expected, bytes) or not isinstance(got, bytes):
        return ""
    for a, b in zip(expected.decode(errors="replace").splitlines(), got.decode(errors="replace").splitlines(),
                    strict=False):
        if a != b:
            return f": plain {a.strip()!r}, gg {b.strip()!r}"
    return ": one is longer"


def run_steps(commands: tuple[Command, ...], tree: Path, step: str, infer: bool) -> float:
    started = time.perf_counter()
    for command in commands:
        if infer:
            result = gg_infer(tree, *command)
            if result.returncode != 0:
                raise AssertionError(f"{step}: `gg-infer {' '.join(command)}` exited {result.returncode}:\n"
                                     f"{_tail(result)}")
        else:
            _checked(list(command), tree, step)
    return time.perf_counter() - started


def build_plain(project: Project, source: Path, work: Path, keep: Path) -> Build:
    """Configure and build plainly in ``work``; copy the outputs to ``keep``."""
    build = Build(fresh_tree(source, work))
    build.seconds["configure"] = run_steps(project.configure, work, "plain configure", infer=False)
    build.configured = configure_results(project, work)
    before = tree_files(work)
    build.seconds["build"] = run_steps(project.build, work, "plain build", infer=False)
    for rel in sorted(tree_files(work) - before):
        kind = file_kind(work / rel)
        if kind:
            build.outputs[rel] = kind
            if kind != "object":
                (keep / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(work / rel, keep / rel)
    return build


def infer_log(tree: Path) -> Path:
    return tree / ".gg" / "infer" / "log"


def build_gg(project: Project, source: Path, work: Path) -> Build:
    """``gg-infer`` the configure and build steps in a fresh ``work`` (forcing is separate)."""
    build = Build(fresh_tree(source, work))
    build.seconds["configure"] = run_steps(project.configure, work, "gg-infer configure", infer=True)
    build.configured = configure_results(project, work)
    log = infer_log(work)
    build.log_mark = log.stat().st_size if log.exists() else 0
    build.seconds["infer"] = run_steps(project.build, work, "gg-infer build", infer=True)
    return build


def force(build: Build, targets: list[str], trace: Path) -> subprocess.CompletedProcess:
    """``gg-force -j2 --keep-going`` on ``targets`` with the toolchain hidden (so one failed
    thunk does not hide the state of the others)."""
    started = time.perf_counter()
    command = [str(VENV_BIN / "gg-force"), "-q", "-j", "2", "--keep-going", "--trace", str(trace), *targets]
    result = run_hidden(command, cwd=build.tree, env=tool_env(), capture_output=True, text=True)
    build.seconds["force"] = time.perf_counter() - started
    return result


def log_entries(tree: Path, start: int = 0) -> list[tuple[str, str, str, list[str]]]:
    """(kind, tool, detail, argv words) of each call logged from byte ``start`` on.

    Kinds: ``model`` (a thunk), ``real`` (the real tool ran, with the reason), ``error``
    (a model bug; the real tool ran), ``fail`` (a local run whose inputs could not be forced).
    """
    log = infer_log(tree)
    if not log.exists():
        return []
    with open(log, "rb") as handle:
        handle.seek(start)
        text = handle.read().decode(errors="replace")
    entries = []
    for line in text.splitlines():
        fields = line.split("\t")
        if fields[0] == "model" and len(fields) >= 4:
            entries.append(("model", fields[1], fields[2], fields[3].split()))
        elif fields[0] == "real" and len(fields) >= 4:
            entries.append(("real", fields[1], fields[2], fields[3].split()))
        elif fields[0] == "error" and len(fields) >= 3:
            entries.append(("error", fields[1], "model error", fields[2].split()))
        elif fields[0] == "fail" and len(fields) >= 4:  # the inputs of a local run could not be forced
            entries.append(("fail", fields[1], " ".join(fields[2:-1]), fields[-1].split()))
    return entries


def is_build_command(tool: str, argv: list[str]) -> bool:
    """True for a compile, link or archive command (not a query such as ``gcc -v``)."""
    base = os.path.basename(tool)
    words = argv[1:]
    if base in GCC_TOOLS:
        return bool(words) and not any(w in QUERY_OPTIONS or (w.startswith(("-print-", "-dump")) and
                                                            not w.startswith(("-dumpbase", "-dumpdir")))
                                       for w in words)
    if base in BINUTILS:
        if not words or words[0] in QUERY_OPTIONS:
            return False
        if base.endswith("ar") and not base.endswith("ranlib"):
            operation = words[0].lstrip("-")
            return any(letter in operation for letter in "rqdms") and not any(c in operation for c in "tpx")
        return True
    return False


def configure_calls(build: Build) -> tuple[int, int]:
    """(modelled, real) tool calls logged while configure ran (they do not count in the share)."""
    entries: list[str] = []
    log = infer_log(build.tree)
    if log.exists():
        with open(log, "rb") as handle:
            head = handle.read(build.log_mark).decode(errors="replace")
        entries = [line.split("\t", 1)[0] for line in head.splitlines()]
    return entries.count("model"), entries.count("real") + entries.count("error") + entries.count("fail")


def thunk_share(build: Build) -> Share:
    """The share of the build step's compile/link/archive commands that became thunks.

    Calls logged with a reason that mentions configure (probes run for real while a
    build step re-runs configure) are not build commands and do not count.
    """
    modelled, real = 0, []
    for kind, tool, detail, argv in log_entries(build.tree, build.log_mark):
        if not is_build_command(tool, argv) or "configure" in detail:
            continue
        if kind == "model":
            modelled += 1
        else:
            real.append(f"{kind}\t{tool}\t{detail}\t{' '.join(argv)}")
    return Share(modelled, real)


@dataclass(frozen=True)
class Allowed:
    cause: str
    why: str


def known_differences(project: str) -> dict[str, Allowed]:
    """Path patterns -> listed cause, for ``project`` (the file is checked: causes must be known)."""
    data = tomllib.loads(KNOWN_DIFFERENCES.read_text())
    allowed = {}
    for entry in data.get("difference", []):
        if entry["cause"] not in CAUSES:
            raise AssertionError(f"{KNOWN_DIFFERENCES.name}: unknown cause {entry['cause']!r} "
                                 f"(known: {', '.join(CAUSES)})")
        if not entry.get("why", "").strip():
            raise AssertionError(f"{KNOWN_DIFFERENCES.name}: {entry['project']}: a difference needs its why")
        if entry["project"] == project:
            for pattern in entry["paths"]:
                allowed[pattern] = Allowed(entry["cause"], entry["why"])
    return allowed


def _allowed_for(rel: str, allowed: dict[str, Allowed]) -> Allowed | None:
    for pattern, entry in allowed.items():
        if fnmatch.fnmatchcase(rel, pattern):
            return entry
    return None


def without_debug_info(path: Path, scratch: Path) -> bytes:
    """``path`` with debug sections and the build-id note removed (objcopy, on a copy)."""
    scratch.mkdir(parents=True, exist_ok=True)
    out = scratch / f"{path.name}.{os.getpid()}.{time.monotonic_ns()}"
    subprocess.run(["objcopy", "--strip-debug", "--remove-section=.note.gnu.build-id", str(path), str(out)],
                   check=True, capture_output=True)
    data = out.read_bytes()
    out.unlink()
    return data


def compare_outputs(project: Project, plain: Build, keep: Path, gg: Build, scratch: Path) -> tuple[list[str],
                                                                                                   list[str]]:
    """(problems, notes): each output of the plain build against the gg one."""
    allowed = known_differences(project.name)
    problems, notes = [], []
    for rel, kind in sorted(plain.outputs.items()):
        if kind == "object":
            continue
        mine = gg.tree / rel
        if not mine.exists():
            problems.append(f"output {rel} ({kind}): missing after gg-force")
            continue
        if mine.read_bytes() == (keep / rel).read_bytes():
            if _allowed_for(rel, allowed):
                notes.append(f"{rel} is now identical; its entry in {KNOWN_DIFFERENCES.name} can go")
            continue
        entry = _allowed_for(rel, allowed)
        if entry is None:
            problems.append(f"output {rel} ({kind}): differs from the plain build "
                            f"(gg {mine.stat().st_size} bytes{_placeholder_note(mine)}, plain "
                            f"{(keep / rel).stat().st_size}), not listed in {KNOWN_DIFFERENCES.name}")
        elif entry.cause == "debug-info" and \
                without_debug_info(mine, scratch) != without_debug_info(keep / rel, scratch):
            problems.append(f"output {rel} ({kind}): differs beyond its listed cause ({entry.cause})")
    return problems, notes


def is_placeholder(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(64)
    return head.startswith((b"#!/usr/bin/env gg-force-and-run", b'OUTPUT_FORMAT("elf64-x86-64")/*'))


def real_outputs(plain: Build, gg: Build) -> list[str]:
    """Outputs of the plain build that the gg-infer build made as real files, not placeholders.

    This does not depend on the log: a tool that never reached gg-infer (called by a
    path it does not intercept) shows up here.
    """
    return [rel for rel in sorted(plain.outputs) if (gg.tree / rel).exists() and not is_placeholder(gg.tree / rel)]


def _placeholder_note(path: Path) -> str:
    return ", still a placeholder" if is_placeholder(path) else ""
