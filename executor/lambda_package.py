"""``gg lambda package``: build the deployment zip of the Lambda function, reproducibly.

The zip holds exactly what the function imports, built for Lambda rather than for
the machine that builds it:

* first-party code: ``lambda_handler``, the whole ``ir`` package (thunk functions
  import ``ir.sdk`` through ``GG_PYTHON``) and the modules of ``executor`` that the
  handler reaches through its imports (the protocol, the worker core and the execution
  core; not the scheduler, the CLI or this build tool) — found by following ``import``
  statements;
* third-party code: the distributions that code imports, pinned to the versions
  installed here (what the tests ran against), plus their dependencies, as **wheels
  for Lambda's Python version and architecture** (``pip download --only-binary=:all: --platform
  manylinux... --python-version 3.11``), unpacked. Never the build machine's
  site-packages: its native extensions may be for another CPU, glibc or Python.
  boto3 is left out (the handler talks to S3 through aiobotocore), but botocore is
  included even though Lambda's runtime has one: aiobotocore needs its exact pin, and
  ``/var/task`` comes first on Lambda's ``sys.path``.

The zip is deterministic — same sources and wheels, same bytes: entries sorted, every
timestamp 1980-01-01, permissions normalized (0644, 0755 where a wheel marks a file
executable), no ``__pycache__``. Downloaded wheels are cached per target (default
``~/.cache/gg-py/wheels/<python>-<arch>``) and resolved from the cache alone when it
already satisfies the requirements, so re-runs are offline and pick the same wheels.
Lambda's size limits (50 MiB zipped for a direct upload, 250 MiB unzipped) are checked
before anything is written.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ir.atomic import atomic_write_bytes
from ir.cli import CliError
from ir.user_cache import user_cache_dir

HANDLER_MODULE = "lambda_handler.handler"
HANDLER = f"{HANDLER_MODULE}.handle"
FIRST_PARTY = ("lambda_handler", "ir", "executor")
# Packages shipped whole, whatever the handler imports: thunk functions use them too.
WHOLE_PACKAGES = ("ir", "lambda_handler")
# Build-time only: never imported at run time. (This tool lives in executor/, not in
# lambda_handler/: it is client-side, and executor must not import lambda_handler.)
EXCLUDED_MODULES = frozenset({"executor.lambda_package"})

ARCHITECTURES = {"x86_64": "x86_64", "arm64": "aarch64"}
# Lambda's python3.11+ runtimes run on Amazon Linux 2023 (glibc 2.34); any of these
# wheel tags loads there.
MANYLINUX = ("manylinux2014", "manylinux_2_17", "manylinux_2_28", "manylinux_2_34")

MIB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Lambda's deployment package quotas (AWS docs, "Lambda quotas")."""

    zipped: int = 50 * MIB  # direct upload, which is what Terraform's `filename` does
    unzipped: int = 250 * MIB  # function code plus layers, unpacked


LAMBDA_LIMITS = Limits()

FIXED_DATE = (1980, 1, 1, 0, 0, 0)
MANIFEST = "gg_lambda_manifest.json"


class PackageError(CliError):
    """The package cannot be built (or would not deploy); the message is one line."""


@dataclass(frozen=True)
class Target:
    """What the zip is built for: Lambda's Python version and CPU architecture."""

    python_version: str = "3.11"
    architecture: str = "x86_64"

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise PackageError(f"architecture {self.architecture!r}: use one of {', '.join(ARCHITECTURES)}")
        if not re.fullmatch(r"3\.\d+", self.python_version):
            raise PackageError(f"python version {self.python_version!r}: use MAJOR.MINOR, e.g. 3.11")

    @property
    def platforms(self) -> list[str]:
        machine = ARCHITECTURES[self.architecture]
        return [f"{tag}_{machine}" for tag in MANYLINUX]

    @property
    def abi(self) -> str:
        return "cp" + self.python_version.replace(".", "")

    @property
    def runtime(self) -> str:
        """The Lambda runtime identifier (Terraform's ``python_runtime``)."""
        return f"python{self.python_version}"

    @property
    def slug(self) -> str:
        return f"py{self.python_version}-{self.architecture}"


@dataclass
class Package:
    """What went into a built zip, for the report and the size check."""

    path: Path
    zipped_bytes: int
    unzipped_bytes: int
    sha256: str
    wheels: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)


def default_cache_dir() -> Path:
    return user_cache_dir("wheels")


def default_output(source_root: Path, target: Target) -> Path:
    return source_root / "build" / f"gg-lambda-{target.architecture}.zip"


def project_root() -> Path:
    """The directory holding the first-party packages (this file is executor/lambda_package.py)."""
    return Path(__file__).resolve().parent.parent


# -- first-party sources --------------------------------------------------------------

def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _imports_of(path: Path, module: str) -> set[str]:
    """Every module named by an import anywhere in ``path`` (including inside functions:
    a lazy import is still an import the handler may execute)."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base_parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            # `from pkg import mod` may name a submodule.
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def first_party_modules(root: Path, entry: str = HANDLER_MODULE) -> list[str]:
    """The first-party modules the zip must hold: the import closure of ``entry``, the
    packages in :data:`WHOLE_PACKAGES`, and every parent package ``__init__``."""
    if _module_file(root, entry) is None:
        raise PackageError(f"{entry} not found under {root} (is the handler written?)")
    pending = [entry]
    for package in WHOLE_PACKAGES:  # subpackages too (e.g. storage backends loaded by name)
        for source in sorted((root / package).rglob("*.py")):
            names = source.relative_to(root).with_suffix("").parts
            pending.append(".".join(names[:-1] if names[-1] == "__init__" else names))
    seen: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen or module in EXCLUDED_MODULES:
            continue
        path = _module_file(root, module)
        if path is None or module.split(".")[0] not in FIRST_PARTY:
            continue
        seen.add(module)
        parts = module.split(".")
        pending.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        pending.extend(name for name in _imports_of(path, module) if name.split(".")[0] in FIRST_PARTY)
    return sorted(seen)


def first_party_files(root: Path, modules: Iterable[str]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for module in modules:
        path = _module_file(root, module)
        assert path is not None
        files[path.relative_to(root).as_posix()] = path.read_bytes()
    # Data files shipped next to the code (the package data of the wheel).
    for name in ("ir/thunk.proto", "ir/execution.proto"):
        if (root / name).is_file():
            files[name] = (root / name).read_bytes()
    return files


# -- third-party wheels ---------------------------------------------------------------

def third_party_imports(root: Path, modules: Iterable[str]) -> set[str]:
    """Dotted names of the non-standard-library, non-first-party modules imported by
    ``modules`` (anywhere in them, lazy imports included)."""
    names: set[str] = set()
    for module in modules:
        path = _module_file(root, module)
        assert path is not None
        for name in _imports_of(path, module):
            top = name.split(".")[0]
            if top and top != "__future__" and top not in FIRST_PARTY and top not in sys.stdlib_module_names:
                names.add(name)
    return names


def _owner(name: str, candidates: list[str]) -> list[str]:
    """Of the distributions providing top-level ``name``'s package, the ones that hold
    its subpackage (``google.protobuf`` -> protobuf, not another ``google.*``)."""
    if len(candidates) <= 1 or "." not in name:
        return candidates
    prefix = "/".join(name.split(".")[:2]) + "/"
    owners = [d for d in candidates
              if any(str(f).startswith(prefix) for f in importlib.metadata.files(d) or [])]
    return owners or candidates


def runtime_requirements(root: Path, modules: Iterable[str]) -> list[str]:
    """``dist==version`` for every distribution the shipped code imports, pinned to the
    version installed here (the one the tests ran against); pip adds their dependencies.
    boto3 is not imported, so it is not shipped."""
    providers = importlib.metadata.packages_distributions()
    pins: set[str] = set()
    for name in sorted(third_party_imports(root, modules)):
        candidates = providers.get(name.split(".")[0])
        if not candidates:
            raise PackageError(f"the handler's code imports {name}, which no installed distribution provides")
        for dist in _owner(name, sorted(set(candidates))):
            pins.add(f"{dist}=={importlib.metadata.version(dist)}")
    return sorted(pins)


def _pip_download(requirements: list[str], target: Target, dest: Path, offline: bool) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--progress-bar", "off",
        "--only-binary=:all:", "--implementation", "cp",
        "--python-version", target.python_version, "--abi", target.abi, "--abi", "abi3", "--abi", "none",
        "--dest", ".",
    ]
    for platform in target.platforms:
        command += ["--platform", platform]
    if offline:
        command += ["--no-index", "--find-links", "."]
    return subprocess.run([*command, *requirements], capture_output=True, text=True, cwd=dest)


# pip names every wheel it chose with one of these lines (cwd is the cache directory).
_CHOSEN = re.compile(r"^\s*(?:Saved|File was already downloaded)\s+(\S+\.whl)\s*$", re.MULTILINE)


def fetch_wheels(requirements: list[str], target: Target, cache_dir: Path) -> list[Path]:
    """Download (or find in the cache) the wheels of ``requirements`` and their
    dependencies for ``target``; return the ones pip chose, sorted by file name.

    The cache is tried alone first (``--no-index``), so a re-run needs no network
    and picks the same wheels; only when it cannot satisfy the requirements is the
    index asked."""
    dest = cache_dir / target.slug
    dest.mkdir(parents=True, exist_ok=True)
    result = _pip_download(requirements, target, dest, offline=True)
    if result.returncode != 0:
        result = _pip_download(requirements, target, dest, offline=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
        detail = lines[-1] if lines else (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise PackageError(f"cannot get wheels for Lambda {target.runtime} {target.architecture}: {detail}")
    wheels = {dest / PurePosixPath(match).name for match in _CHOSEN.findall(result.stdout)}
    if not wheels or not all(path.is_file() for path in wheels):
        raise PackageError(f"pip reported no usable wheels in {dest}")
    return sorted(wheels, key=lambda p: p.name)


def _wheel_entries(wheel: Path) -> Iterable[tuple[str, bytes, bool]]:
    """(path in the zip, bytes, executable) of every importable file of ``wheel``:
    the wheel root, and ``*.data/purelib|platlib``; scripts, headers and data files
    are not importable and are dropped, as are caches of compiled bytecode."""
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            name = info.filename
            parts = name.split("/")
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                name = "/".join(parts[2:])
            if "__pycache__" in name.split("/") or name.endswith((".pyc", ".pyo")):
                continue
            executable = bool((info.external_attr >> 16) & 0o111)
            yield name, zf.read(info), executable


# -- the zip --------------------------------------------------------------------------

def _zip_bytes(entries: dict[str, tuple[bytes, bool]]) -> bytes:
    """A zip of ``entries`` that depends on nothing but their names and contents."""
    with tempfile.SpooledTemporaryFile(max_size=256 * MIB) as buffer:
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for name in sorted(entries):
                data, executable = entries[name]
                info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
                info.create_system = 3  # Unix, so that the mode bits below are honoured
                info.external_attr = ((0o100755 if executable else 0o100644) & 0xFFFF) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
        buffer.seek(0)
        return buffer.read()


def build_package(
    output: Path,
    target: Target = Target(),
    cache_dir: Path | None = None,
    source_root: Path | None = None,
    requirements: list[str] | None = None,
    limits: Limits = LAMBDA_LIMITS,
) -> Package:
    """Build the deployment zip at ``output`` (atomically) and return what is in it."""
    root = source_root or project_root()
    modules = first_party_modules(root)
    entries: dict[str, tuple[bytes, bool]] = {
        name: (data, False) for name, data in first_party_files(root, modules).items()
    }
    requirements = runtime_requirements(root, modules) if requirements is None else requirements
    wheels = fetch_wheels(requirements, target, cache_dir or default_cache_dir())
    owner = {name: "gg-py sources" for name in entries}
    for wheel in wheels:
        for name, data, executable in _wheel_entries(wheel):
            if name in entries and entries[name][0] != data:
                raise PackageError(f"{name} comes from both {owner[name]} and {wheel.name} with different contents")
            entries[name] = (data, executable)
            owner[name] = wheel.name
    manifest = {
        "handler": HANDLER,
        "runtime": target.runtime,
        "architecture": target.architecture,
        "requirements": requirements,
        "wheels": {w.name: hashlib.sha256(w.read_bytes()).hexdigest() for w in wheels},
        "modules": modules,
    }
    entries[MANIFEST] = (json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n", False)

    unzipped = sum(len(data) for data, _ in entries.values())
    if unzipped > limits.unzipped:
        raise PackageError(
            f"package unpacks to {unzipped / MIB:.1f} MiB, over Lambda's {limits.unzipped / MIB:g} MiB "
            f"limit for unzipped code; {output} not written"
        )
    blob = _zip_bytes(entries)
    if len(blob) > limits.zipped:
        raise PackageError(
            f"package is {len(blob) / MIB:.1f} MiB zipped, over Lambda's {limits.zipped / MIB:g} MiB "
            f"direct-upload limit; {output} not written"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output, blob)
    return Package(
        path=output,
        zipped_bytes=len(blob),
        unzipped_bytes=unzipped,
        sha256=hashlib.sha256(blob).hexdigest(),
        wheels=[w.name for w in wheels],
        modules=modules,
    )


# -- CLI ------------------------------------------------------------------------------

def _package(args: argparse.Namespace) -> int:
    target = Target(python_version=args.python_version, architecture=args.arch)
    root = project_root()
    output = Path(args.output) if args.output else default_output(root, target)
    cache = Path(args.wheel_cache) if args.wheel_cache else default_cache_dir()
    package = build_package(output, target, cache_dir=cache, source_root=root)
    print(f"{package.path}")
    if not args.quiet:
        print(
            f"  {target.runtime} {target.architecture}, handler {HANDLER}: "
            f"{package.zipped_bytes / MIB:.1f} MiB zipped (limit {LAMBDA_LIMITS.zipped // MIB}), "
            f"{package.unzipped_bytes / MIB:.1f} MiB unzipped (limit {LAMBDA_LIMITS.unzipped // MIB}), "
            f"{len(package.wheels)} wheels, {len(package.modules)} gg-py modules",
            file=sys.stderr,
        )
        print(f"  sha256 {package.sha256}", file=sys.stderr)
    return 0


def add(sub) -> None:
    """Register ``gg lambda package`` (``gg lambda`` groups the Lambda deployment commands)."""
    parser = sub.add_parser(
        "lambda", help="deploy to AWS Lambda",
        description="Commands for running thunks on AWS Lambda: 'gg lambda package' builds the function's zip "
                    "(terraform/ deploys it; docs/deploy.md).")
    commands = parser.add_subparsers(dest="lambda_command", metavar="SUBCOMMAND", required=True)
    package = commands.add_parser(
        "package",
        help="build the function's deployment zip (deterministic; wheels for Lambda, not this machine)",
        description="Build the deployment zip Terraform deploys (terraform/: package_path).",
    )
    package.add_argument("-o", "--output", help="zip to write (default: build/gg-lambda-ARCH.zip)")
    package.add_argument("--arch", choices=sorted(ARCHITECTURES), default="x86_64",
                         help="Lambda architecture (must match terraform's `architecture`)")
    package.add_argument("--python-version", default="3.11",
                         help="Lambda's Python, MAJOR.MINOR (must match terraform's `python_runtime`)")
    package.add_argument("--wheel-cache", help="where downloaded wheels are kept (default: ~/.cache/gg-py/wheels)")
    package.add_argument("-q", "--quiet", action="store_true", help="print only the zip's path")
    package.set_defaults(handler=_package)
