"""Run a command where the host toolchain is hidden, to prove thunks are portable.

Real Lambda has no compiler, headers or binutils. As root, ``unshare -m`` gives the
command a private mount namespace in which an empty directory is bind-mounted over
gcc's directories and the system headers, and an empty file over every compiler and
binutils program and the libc development files (crt objects, ``libc.so``), so a
thunk that still reached for any of them would fail. Usable by any test:

    from tests.hidden_toolchain import available, run_hidden
    run_hidden(["gg-force", "prog"], cwd=...)
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

HIDDEN_DIRS = ("/usr/lib/gcc", "/usr/include", "/usr/libexec", "/usr/local/include", "/usr/x86_64-linux-gnu",
               "/usr/lib/bfd-plugins")
HIDDEN_PROGRAM_NAMES = ("gcc", "cc", "c89", "c99", "g++", "c++", "cpp", "as", "ld", "ld.bfd", "ld.gold", "ar",
                        "ranlib", "strip", "nm", "objcopy", "objdump", "readelf", "gcc-12", "g++-12", "cpp-12")
HIDDEN_FILE_GLOBS = ("/usr/bin/x86_64-linux-gnu-*", "/usr/lib/x86_64-linux-gnu/crt*.o",
                     "/usr/lib/x86_64-linux-gnu/Scrt1.o", "/usr/lib/x86_64-linux-gnu/libc.so",
                     "/usr/lib/x86_64-linux-gnu/libc_nonshared.a", "/usr/lib/x86_64-linux-gnu/libm.so",
                     "/usr/lib/x86_64-linux-gnu/libbfd*.so")


def available() -> bool:
    """True if this process may create mount namespaces (root with unshare)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


def hidden_paths() -> tuple[list[str], list[str]]:
    """(directories, files) to hide on this machine."""
    dirs = [d for d in HIDDEN_DIRS if os.path.isdir(d)]
    files = set()
    for directory in ("/usr/bin", "/bin", "/usr/local/bin"):
        for name in HIDDEN_PROGRAM_NAMES:
            path = os.path.join(directory, name)
            if os.path.lexists(path) and os.path.isfile(path):
                files.add(path)
    for pattern in HIDDEN_FILE_GLOBS:
        files.update(p for p in glob.glob(pattern) if os.path.isfile(p))
    # /bin is a symlink to /usr/bin on merged-/usr systems: mount once, on the target
    return dirs, sorted({os.path.realpath(f) for f in files} | files)


def hidden_command(command: list[str], empty_dir: str, empty_file: str) -> list[str]:
    """``unshare -m sh -c SCRIPT`` that hides the toolchain, then execs ``command``."""
    dirs, files = hidden_paths()
    lines = ["set -e", "mount --make-rprivate /"]
    lines += [f"mount --bind {shlex.quote(empty_dir)} {shlex.quote(d)}" for d in dirs]
    lines += [f"mount --bind {shlex.quote(empty_file)} {shlex.quote(f)} 2>/dev/null || true" for f in files]
    lines.append('exec "$@"')
    return ["unshare", "-m", "sh", "-c", "\n".join(lines), "hidden-toolchain", *command]


def run_hidden(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(command, **kwargs)`` with the host toolchain hidden."""
    with tempfile.TemporaryDirectory(prefix="gg-hidden-") as tmp:
        empty_dir = Path(tmp, "empty")
        empty_dir.mkdir()
        empty_file = Path(tmp, "empty-file")
        empty_file.write_bytes(b"")
        empty_file.chmod(0)
        return subprocess.run(hidden_command(command, str(empty_dir), str(empty_file)), **kwargs)
