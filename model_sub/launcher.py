"""The native helpers of gg-infer: the model shim, its PATH directory, the preload library.

Every tool name in the shim directory is a symlink to one small C program
(``shim.c``); ``preload.c`` is the exec interposition library gg-infer puts in
``LD_PRELOAD``. Both are compiled with the host compiler the first time and cached
under ``.gg/infer/`` by the hash of their source and compile flags, so the cost of a
model call is one connect + write + read on a unix socket, not a Python start.
"""

from __future__ import annotations

import os
from pathlib import Path

import xxhash

from ir.atomic import atomic_write_bytes
from ir.errors import UserError
from ir.placeholder_format import LINKER_PREFIX, MAX_PLACEHOLDER_SIZE, SHEBANG_PREFIX
from ir.user_cache import user_cache_dir

from .toolnames import SHIM_NAMES, which

SHIM_SOURCE = Path(__file__).with_name("shim.c")
_ELF = b"\x7fELF"  # what a compiled helper starts with
PRELOAD_SOURCE = Path(__file__).with_name("preload.c")


class ShimBuildError(UserError):
    """A helper could not be compiled (no host C compiler?)."""


def _c_string(data: bytes) -> str:
    """``data`` as a C string literal (for -D on the compiler's command line)."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else f"\\{b:03o}" for b in data) + '"'


def _build(source: Path, target_stem: str, flags: list[str], cache_dir: Path, real_path: str) -> Path:
    """Compile ``source`` once into ``cache_dir`` (named by the hash of source + flags).

    A store's first run takes the build from the per-user cache (``~/.cache/gg-py/native``,
    named by source, flags and the compiler's identity) when it is there: compiling the
    two helpers cost a fresh store's first gg-infer ~0.4 s before the build could start."""
    recipe = source.read_bytes() + "\0".join(flags).encode()
    digest = xxhash.xxh3_64_hexdigest(recipe)
    suffix = ".so" if "-shared" in flags else ""
    target = cache_dir / f"{target_stem}-{digest}{suffix}"
    if target.exists():
        return target
    compiler = which("cc", real_path) or which("gcc", real_path)
    if compiler is None:
        raise ShimBuildError(f"gg-infer needs a host C compiler (cc) to build {source.name}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    shared = _user_copy(recipe, compiler, target.name)
    if shared is not None and _copy_if_elf(shared, target):
        return target
    import subprocess  # only the first run compiles: every later start finds the cached build

    temp = cache_dir / f".build-{target_stem}-{os.getpid()}"
    # a real compile even under an outer gg-infer: without its variables, its library is inert
    env = {k: v for k, v in os.environ.items() if not k.startswith("GG_INFER") and k != "LD_PRELOAD"}
    result = subprocess.run([compiler, "-O2", *flags, "-o", str(temp), str(source), "-ldl"],
                            capture_output=True, text=True, env={**env, "PATH": real_path})
    if result.returncode != 0:
        raise ShimBuildError(f"cannot compile {source.name}: {result.stderr.strip().splitlines()[-1:]}")
    with open(temp, "rb") as handle:
        if handle.read(len(_ELF)) != _ELF:
            temp.unlink()
            raise ShimBuildError(f"compiling {source.name} did not produce a program (an outer gg-infer?)")
    os.replace(temp, target)
    if shared is not None:
        _copy_if_elf(target, shared)  # for the next store (a cache: a failure costs a compile)
    return target


def _user_copy(recipe: bytes, compiler: str, name: str) -> Path | None:
    """Where the per-user cache keeps the build of ``recipe`` (source and flags) with
    ``compiler`` (None: no usable home directory)."""
    try:
        st = os.stat(compiler)
        identity = f"{os.path.realpath(compiler)}\0{st.st_size}\0{st.st_mtime_ns}"
        digest = xxhash.xxh3_64_hexdigest(recipe + identity.encode())
        return user_cache_dir("native") / f"{digest}-{name}"
    except (OSError, RuntimeError):  # RuntimeError: no home directory to expand ~ with
        return None


def _copy_if_elf(source: Path, target: Path) -> bool:
    """Copy a built helper atomically (mode kept); False if ``source`` is missing or not ELF."""
    try:
        data = source.read_bytes()
        if not data.startswith(_ELF):
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data, 0o755)
        return True
    except OSError:
        return False


def shim_binary(cache_dir: Path, real_path: str) -> Path:
    """The compiled shim for the current ``shim.c``, built once into ``cache_dir``."""
    return _build(SHIM_SOURCE, "gg-shim", [], cache_dir, real_path)


def preload_library(cache_dir: Path, real_path: str) -> Path:
    """The exec interposition library, built once into ``cache_dir``.

    The placeholder headers come from ``ir.placeholder_format`` at compile time, so the C
    check for "is this argument a placeholder" cannot drift from the Python one."""
    flags = ["-shared", "-fPIC", f"-DGG_MAX_PLACEHOLDER={MAX_PLACEHOLDER_SIZE}",
             f"-DGG_SHEBANG_PREFIX={_c_string(SHEBANG_PREFIX)}", f"-DGG_LINKER_PREFIX={_c_string(LINKER_PREFIX)}"]
    return _build(PRELOAD_SOURCE, "gg-preload", flags, cache_dir, real_path)


def make_shim_dir(directory: Path, binary: Path, real_path: str) -> Path:
    """Fill ``directory`` with one hard link to ``binary`` per tool name.

    Why hard links and the ``lib/gcc`` links next to the directory: a program that
    runs the real gcc by absolute path with a bare ``argv[0]`` (``execl("/usr/bin/cc",
    "cc", ...)``) while the shim directory is on PATH (only static programs get it)
    makes gcc look for itself on PATH, find the shim, and search for cc1 relative to
    the directory it found (following symlinks). With hard links that directory is
    ``.gg/infer/bin``, and ``.gg/infer/lib/gcc`` (and ``libexec/gcc``) point at the
    real gcc's, so gcc still finds its programs."""
    directory.mkdir(parents=True, exist_ok=True)
    # which names already are hard links to ``binary``: one directory read (inode numbers
    # and types come with the entries) instead of three stats per name on every start
    target = os.stat(binary)
    linked: set[str] = set()
    if os.stat(directory).st_dev == target.st_dev:
        with os.scandir(directory) as entries:
            linked = {e.name for e in entries if e.inode() == target.st_ino and not e.is_symlink()}
    for name in SHIM_NAMES:
        if name in linked:
            continue
        link = directory / name
        temp = directory / f".{name}.tmp"
        if temp.is_symlink() or temp.exists():
            temp.unlink()
        try:
            os.link(binary, temp)
        except OSError:
            import shutil  # a file system without hard links: rare, so not imported at start

            shutil.copy2(binary, temp)
        os.replace(temp, link)
    if not (directory / "README").exists():
        atomic_write_bytes(directory / "README", b"gg-infer model shims; safe to delete.\n", 0o644)
    _link_gcc_dirs(directory.parent, real_path)
    return directory


def _link_gcc_dirs(prefix: Path, real_path: str) -> None:
    """``prefix/lib/gcc`` -> the real gcc's ``lib/gcc`` (and ``libexec/gcc``), see above."""
    gcc = which("gcc", real_path)
    if gcc is None:
        return
    real_prefix = Path(os.path.realpath(gcc)).parent.parent
    for sub in ("lib/gcc", "libexec/gcc"):
        target, link = real_prefix / sub, prefix / sub
        if not target.is_dir() or (link.is_symlink() and os.readlink(link) == str(target)):
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        temp = link.parent / f".gcc.tmp.{os.getpid()}"  # per process: concurrent runs share the store
        if temp.is_symlink():
            temp.unlink()
        os.symlink(target, temp)
        os.replace(temp, link)
