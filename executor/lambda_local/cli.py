"""``gg lambda-local``: run the local Lambda endpoint in the foreground."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

FORWARDED_ENV = ("GG_STORAGE_URI", "GG_CACHE_MAX_MIB", "GG_THUNK_PARALLELISM")


def _parse_env(items: list[str]) -> dict[str, str]:
    from ir.cli import CliError

    env = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"--env {item!r} is not NAME=VALUE")
        env[name] = value
    return env


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from ir.cli import CliError

    from .server import EndpointConfig, serve

    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    if args.tmp_mib < 0:
        raise CliError("--tmp-mib must not be negative")
    if args.tmp_mib and os.geteuid() != 0:
        raise CliError("--tmp-mib mounts a tmpfs per worker and needs root (and unshare -m)")
    if args.code_dir and not Path(args.code_dir, *args.function_handler.split(".")[:-1]).with_suffix(".py").exists():
        raise CliError(f"--code-dir {args.code_dir} has no module for handler {args.function_handler}")
    config = EndpointConfig(
        host=args.host, port=args.port, workers=args.workers, function_name=args.function_name,
        timeout=args.timeout, memory_mib=args.memory, queue_limit=args.queue_limit, handler=args.function_handler,
        code_dir=Path(args.code_dir).absolute() if args.code_dir else None,
        sandbox_command=tuple(shlex.split(args.sandbox_command)) if args.sandbox_command else (),
        function_env=_parse_env(args.env),
        cache_root=Path(args.cache_root).absolute() if args.cache_root else None,
        tmp_mib=args.tmp_mib, enforce_memory=args.enforce_memory,
    )
    try:
        asyncio.run(serve(config, Path(args.ready_file) if args.ready_file else None, args.quiet))
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    return 0


def add(sub) -> None:
    parser = sub.add_parser(
        "lambda-local", help="run a local AWS Lambda endpoint (Invoke + Runtime API)",
        description=(
            "Serve the AWS Lambda Invoke API on HOST:PORT, backed by WORKERS long-lived "
            "'python -m awslambdaric HANDLER' processes, so that 'gg-force --engine lambda' (with "
            "GG_LAMBDA_ENDPOINT=http://HOST:PORT) runs against real Lambda code paths on this machine."),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9001, help="0 = any free port (default 9001)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="concurrent executions")
    parser.add_argument("--function-name", default="gg", help="the function name Invoke calls (default gg)")
    parser.add_argument("--timeout", type=float, default=300.0, help="function timeout in seconds")
    parser.add_argument("--memory", type=int, default=3008, help="memory size reported to the function (MiB)")
    parser.add_argument("--queue-limit", type=int, default=1000,
                        help="invocations that may wait when all workers are busy; more get 429")
    parser.add_argument("--handler", dest="function_handler", default="lambda_handler.handler.handle",
                        help="MODULE.FUNCTION the workers run")
    parser.add_argument("--code-dir", help="run the handler from this directory only (an unpacked zip)")
    parser.add_argument("--sandbox-command", help="prefix for each worker's command line (shell words)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="function environment variable (repeatable); GG_STORAGE_URI, "
                             "GG_CACHE_MAX_MIB and GG_THUNK_PARALLELISM are forwarded when set")
    parser.add_argument("--cache-root", help="parent of each worker's GG_CACHE_DIR (default: a temp dir)")
    parser.add_argument("--enforce-memory", action="store_true",
                        help="kill a worker using more than --memory MiB (with its functions) and answer "
                             "Runtime.OutOfMemory, as Lambda does")
    parser.add_argument("--tmp-mib", type=int, default=0, metavar="MIB",
                        help="cap each worker's GG_CACHE_DIR (its /tmp) with a tmpfs of MIB MiB, like "
                             "Lambda's ephemeral storage (needs root; default: no cap)")
    parser.add_argument("--ready-file", help="write the endpoint URL here once every worker is polling")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.set_defaults(handler=_run)
