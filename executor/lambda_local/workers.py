"""How one local Lambda worker process is started: argv, environment, isolation.

A worker is ``python -m awslambdaric lambda_handler.handler.handle`` talking to its own
Runtime API address. Two modes:

* development (no ``code_dir``): the worker imports the handler from this checkout
  with this interpreter and its site-packages;
* deployment (``code_dir``, e.g. an unpacked deployment zip): the interpreter runs
  with ``-I -S`` (no environment variables like PYTHONPATH honoured, no user or
  site-packages) and ``sys.path`` = the code directory, the standard library, and a
  small "runtime" directory holding only ``awslambdaric`` and its own dependencies —
  what the Lambda runtime provides. Anything else the handler imports must be in the
  code directory, exactly as on real Lambda.

The environment is built from scratch (PATH, locale, the AWS credentials and region
the endpoint has, the Lambda variables, and the function's variables), so nothing
else from the developer's shell leaks into the function.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
RUNTIME_MODULES = ("awslambdaric", "runtime_client", "simplejson", "snapshot_restore_py")
PASSED_THROUGH = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
)
BOOT = (
    "import sys, runpy; sys.path[:0] = [sys.argv[1]]; sys.path.append(sys.argv[2]); "
    "sys.argv = ['awslambdaric', sys.argv[3]]; "
    "runpy.run_module('awslambdaric', run_name='__main__', alter_sys=True)"
)


def make_runtime_dir() -> Path:
    """A directory with symlinks to awslambdaric and its dependencies only."""
    directory = Path(tempfile.mkdtemp(prefix="gg-lambda-runtime-"))
    for name in RUNTIME_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"the local Lambda runtime needs {name!r} (pip install awslambdaric)")
        origin = Path(spec.origin)
        source = origin.parent if spec.submodule_search_locations else origin
        os.symlink(source, directory / source.name)
    return directory


# Mounts a size-capped tmpfs over the worker's cache directory in a mount namespace of
# its own, then runs the worker: Lambda's limited /tmp, for real (needs root).
CAPPED_TMP = 'mount -t tmpfs -o "size=${0}m,mode=0700" gg-lambda-tmp "$1" && shift && exec "$@"'


def worker_argv(handler: str, code_dir: Path | None, runtime_dir: Path | None,
                sandbox_command: tuple[str, ...] = (), tmp_dir: Path | None = None, tmp_mib: int = 0) -> list[str]:
    prefix = list(sandbox_command)
    if tmp_dir is not None and tmp_mib > 0:
        prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c", CAPPED_TMP, str(tmp_mib), str(tmp_dir),
                  *prefix]
    if code_dir is None:
        return [*prefix, sys.executable, "-m", "awslambdaric", handler]
    assert runtime_dir is not None
    return [*prefix, sys.executable, "-I", "-S", "-c", BOOT, str(code_dir), str(runtime_dir), handler]


def worker_env(
    runtime_api: str, function_name: str, handler: str, memory_mib: int, timeout: float,
    code_dir: Path | None, cache_dir: Path, function_env: Mapping[str, str], host_env: Mapping[str, str],
) -> dict[str, str]:
    task_root = str(code_dir or REPO)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(cache_dir.parent),
        "TZ": ":UTC",
        "PYTHONPATH": task_root,
        "LAMBDA_TASK_ROOT": task_root,
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mib),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(int(timeout)),
        "AWS_EXECUTION_ENV": "gg-lambda-local",
        "_HANDLER": handler,
        "GG_CACHE_DIR": str(cache_dir),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for name in PASSED_THROUGH:
        if host_env.get(name):
            env[name] = host_env[name]
    env.update(function_env)
    return env
