"""Get what the corpus needs on a fresh machine: Debian source packages and build tools.

Sources come from the Debian archive the machine already uses (``apt-get source
--download-only``), so no other host is needed. A machine without a ``deb-src`` entry
gets one: the ``Types: deb`` stanzas of the system's sources file copied with
``Types: deb-src`` into a file of our own beside it. The upstream ``.orig.tar.*`` is
kept under ``$GG_TEST_CACHE/corpus`` (default ``~/.cache/gg-py/corpus``), so a rerun
downloads nothing. Missing build tools (cmake, ninja, autotools, libtool) are
installed with ``apt-get``.

Every step holds a file lock, so parallel test processes neither race on the cache
nor on apt's own locks. A step that cannot be done raises :class:`FetchError` with one
line saying what failed: a corpus test must fail loudly, never be skipped.
"""

from __future__ import annotations

import fcntl
import glob
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CACHE = Path(os.environ.get("GG_TEST_CACHE", Path.home() / ".cache" / "gg-py")) / "corpus"
SOURCES_DIR = Path("/etc/apt/sources.list.d")
DEB_SRC_FILE = SOURCES_DIR / "gg-py-deb-src.sources"
# program -> the Debian package that provides it
TOOL_PACKAGES = {
    "cmake": "cmake",
    "ninja": "ninja-build",
    "autoreconf": "autoconf",
    "automake": "automake",
    "aclocal": "automake",
    "libtoolize": "libtool",
    "ccache": "ccache",
    "strace": "strace",
}
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
APT_LOCK = ["-o", "DPkg::Lock::Timeout=600"]


class FetchError(Exception):
    """A source or tool the corpus needs could not be had (one line, for the test report)."""


@contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Exclusive lock ``CACHE/name.lock`` held for the block (across processes)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(command, cwd=cwd, env={**os.environ, **APT_ENV}, capture_output=True, text=True,
                                check=False)
    except FileNotFoundError as exc:
        raise FetchError(f"{what}: {command[0]} not found") from exc
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise FetchError(f"{what}: `{' '.join(command)}` exited {result.returncode}: {last}")
    return result.stdout


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise FetchError(f"{what} needs root (apt-get); run the corpus tests as root or install it by hand")


def _has_deb_src() -> bool:
    for path in [Path("/etc/apt/sources.list"), *SOURCES_DIR.glob("*.list"), *SOURCES_DIR.glob("*.sources")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        if re.search(r"^\s*deb-src\s", text, re.M) or re.search(r"^Types:.*\bdeb-src\b", text, re.M):
            return True
    return False


def deb_src_stanzas(text: str) -> str:
    """The ``Types: deb`` stanzas of a deb822 sources file, as ``Types: deb-src``."""
    stanzas = [s for s in re.split(r"\n\s*\n", text) if re.search(r"^Types:.*\bdeb\b", s, re.M)]
    return "\n\n".join(re.sub(r"^Types:.*$", "Types: deb-src", s.strip(), count=1, flags=re.M)
                       for s in stanzas) + "\n"


def _add_deb_src() -> None:
    system = SOURCES_DIR / "debian.sources"
    if system.exists():
        content = deb_src_stanzas(system.read_text())
        name = DEB_SRC_FILE
    else:  # one-line format
        lines = Path("/etc/apt/sources.list").read_text().splitlines() if Path("/etc/apt/sources.list").exists() \
            else []
        content = "".join(re.sub(r"^deb\s", "deb-src ", line) + "\n" for line in lines if line.startswith("deb "))
        name = SOURCES_DIR / "gg-py-deb-src.list"
    if not content.strip():
        raise FetchError("no Debian archive is configured in /etc/apt to copy a deb-src entry from")
    tmp = name.with_suffix(".tmp")
    tmp.write_text(content)
    os.replace(tmp, name)


def _sources_indexed() -> bool:
    return bool(glob.glob("/var/lib/apt/lists/*_source_Sources*"))


def ensure_deb_src() -> None:
    """A ``deb-src`` entry and its index, so ``apt-get source`` works."""
    with cache_lock("apt"):
        if _has_deb_src() and _sources_indexed():
            return
        _require_root("adding a deb-src entry")
        if not _has_deb_src():
            _add_deb_src()
        _run(["apt-get", *APT_LOCK, "update", "-qq"], "apt-get update")
        if not _sources_indexed():
            raise FetchError("apt-get update fetched no source index (is the deb-src entry right?)")


def ensure_tools(programs: list[str]) -> None:
    """Install the Debian packages providing ``programs`` that are not on PATH."""
    missing = sorted({TOOL_PACKAGES[p] for p in programs if shutil.which(p) is None})
    if not missing:
        return
    with cache_lock("apt"):
        missing = sorted({TOOL_PACKAGES[p] for p in programs if shutil.which(p) is None})
        if not missing:
            return
        _require_root(f"installing {', '.join(missing)}")
        if not glob.glob("/var/lib/apt/lists/*_Packages*"):
            _run(["apt-get", *APT_LOCK, "update", "-qq"], "apt-get update")
        try:
            _run(["apt-get", *APT_LOCK, "install", "-y", "-qq", "--no-install-recommends", *missing],
                 f"installing {', '.join(missing)}")
        except FetchError:  # an old package list: refresh once and retry
            _run(["apt-get", *APT_LOCK, "update", "-qq"], "apt-get update")
            _run(["apt-get", *APT_LOCK, "install", "-y", "-qq", "--no-install-recommends", *missing],
                 f"installing {', '.join(missing)}")
    still = [p for p in programs if shutil.which(p) is None]
    if still:
        raise FetchError(f"{', '.join(still)} still not on PATH after installing {', '.join(missing)}")


def orig_tarball(package: str, version: str) -> Path:
    """The upstream tarball of Debian source package ``package`` at ``version``, cached.

    ``version`` is the Debian version (as ``apt-get source NAME=VERSION`` takes it), so
    every machine builds the same sources.
    """
    directory = CACHE / package / version.replace(":", "_")
    found = sorted(directory.glob("*.orig.tar.*"))
    if found:
        return found[0]
    ensure_deb_src()
    with cache_lock(package):
        found = sorted(directory.glob("*.orig.tar.*"))
        if found:
            return found[0]
        _require_root(f"apt-get source {package}")
        directory.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=directory.parent, prefix=".download-") as tmp:
            # apt drops privileges to _apt for the download unless the directory is its
            _run(["apt-get", "source", "--download-only", "-qq", f"{package}={version}"],
                 f"downloading Debian source {package}={version}", cwd=Path(tmp))
            origs = sorted(Path(tmp).glob("*.orig.tar.*"))
            if not origs:
                raise FetchError(f"apt-get source {package}={version} gave no .orig.tar.* file")
            staged = Path(tmp) / "keep"
            staged.mkdir()
            for path in Path(tmp).iterdir():
                if path.is_file():
                    shutil.copy2(path, staged / path.name)
            os.replace(staged, directory)
        return sorted(directory.glob("*.orig.tar.*"))[0]


def extract(tarball: Path, target: Path) -> Path:
    """Unpack ``tarball`` (one top directory) as ``target``; return ``target``."""
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".unpack-") as tmp:
        with tarfile.open(tarball) as archive:
            archive.extractall(tmp, filter="tar")
        entries = list(Path(tmp).iterdir())
        if len(entries) != 1 or not entries[0].is_dir():
            raise FetchError(f"{tarball.name}: expected one top directory, found {len(entries)} entries")
        os.replace(entries[0], target)
    return target
