"""The shim directory gg-infer puts first on PATH.

Every tool name is a symlink to one small C program (``shim.c``), compiled with the
host compiler the first time and cached by the hash of its source, so the cost of a
model call is one connect + write + read on a unix socket, not a Python start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import xxhash

from ir.atomic import atomic_write_bytes

# Tool names the shims answer to. cpp and the binutils without a model still get a shim
# so that a placeholder met by them can be reported clearly; they exec the real tool.
GCC_NAMES = ("gcc", "cc", "c89", "c99", "x86_64-linux-gnu-gcc", "gcc-12", "x86_64-linux-gnu-gcc-12")
GXX_NAMES = ("g++", "c++", "x86_64-linux-gnu-g++", "g++-12", "x86_64-linux-gnu-g++-12")
OTHER_NAMES = ("cpp", "as", "ld", "ar", "ranlib", "strip", "objcopy", "nm", "objdump", "size", "readelf")
SHIM_NAMES = GCC_NAMES + GXX_NAMES + OTHER_NAMES

SHIM_SOURCE = Path(__file__).with_name("shim.c")


class ShimBuildError(Exception):
    """The shim could not be compiled (no host C compiler?)."""


def shim_binary(cache_dir: Path, real_path: str) -> Path:
    """The compiled shim for the current ``shim.c``, built once into ``cache_dir``."""
    source = SHIM_SOURCE.read_bytes()
    target = cache_dir / f"gg-shim-{xxhash.xxh3_64_hexdigest(source)}"
    if target.exists():
        return target
    compiler = shutil.which("cc", path=real_path) or shutil.which("gcc", path=real_path)
    if compiler is None:
        raise ShimBuildError("gg-infer needs a host C compiler (cc) to build its model shim")
    cache_dir.mkdir(parents=True, exist_ok=True)
    temp = cache_dir / f".build-{os.getpid()}"
    result = subprocess.run(
        [compiler, "-O2", "-o", str(temp), str(SHIM_SOURCE)],
        capture_output=True, text=True, env={**os.environ, "PATH": real_path},
    )
    if result.returncode != 0:
        raise ShimBuildError(f"cannot compile the model shim: {result.stderr.strip().splitlines()[-1:]}")
    os.replace(temp, target)
    return target


def make_shim_dir(directory: Path, binary: Path) -> Path:
    """Fill ``directory`` with one symlink per tool name, all pointing at ``binary``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in SHIM_NAMES:
        link = directory / name
        if link.is_symlink() and os.readlink(link) == str(binary):
            continue
        temp = directory / f".{name}.tmp"
        if temp.is_symlink() or temp.exists():
            temp.unlink()
        os.symlink(binary, temp)
        os.replace(temp, link)
    if not (directory / "README").exists():
        atomic_write_bytes(directory / "README", b"gg-infer model shims; safe to delete.\n", 0o644)
    return directory
