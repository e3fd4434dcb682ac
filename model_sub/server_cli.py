"""``gg infer-server status|stop``: look at or stop the store's warm model server.

Why a command: the server outlives the gg-infer run that started it (that is its
point), so a user needs a way to see that one is running, for which store and code, and
to stop it without hunting for its pid (``stop`` lets running builds finish first).
"""

from __future__ import annotations

import argparse

from ir.errors import UsageError
from ir.store_root import locate_root


def _handle(args: argparse.Namespace) -> int:
    from .warm import code_fingerprint
    from .warm_client import query

    root, why = locate_root()
    if root is None:
        raise UsageError(why)
    answer = query(root, args.action)
    if answer is None:
        print(f"no model server running for {root}")
        return 1 if args.action == "status" else 0
    if args.action == "stop":
        print(answer.strip())
        return 0
    fields = dict(line.split(" ", 1) for line in answer.splitlines() if " " in line)
    current = "current" if fields.get("fingerprint") == code_fingerprint() else "stale (the next gg-infer restarts it)"
    workers = ", ".join(fields.get("workers", "").split()) or "none"
    print(f"model server for {root}: pid {fields.get('pid')}, runs {fields.get('runs')}, "
          f"active {fields.get('active')} (workers: {workers}), idle timeout {fields.get('idle')} s, code {current}")
    return 0


def add(subparsers) -> None:
    """The ``gg infer-server`` subcommand."""
    parser = subparsers.add_parser(
        "infer-server", help="status or stop of the store's warm gg-infer model server",
        description="The warm model server keeps gg-infer's models imported between runs (one per store; "
                    "it exits after GG_INFER_SERVER_IDLE seconds idle, default 600; GG_INFER_SERVER=off or "
                    "gg-infer --no-server do without it). status: whether one runs, its pid and runs served; "
                    "stop: it takes no new runs and exits when the running ones end.")
    parser.add_argument("action", choices=("status", "stop"), help="status: is one running; stop: end it")
    parser.set_defaults(handler=_handle)
