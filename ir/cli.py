"""``gg`` utilities over the IR: init, hash, collect, create-thunk, describe.

Each ``add_*`` function registers one subcommand on the ``gg`` parser; the handler
returns an exit code. Errors the user can act on are raised as :class:`CliError` (or
one of the IR's own error types) and printed as one line by :func:`run_handler`, which
is the one mapping of :mod:`ir.cli_errors`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .cli_errors import USER_ERRORS, CliError, run_command
from .hashing import hash_file
from .ids import InvalidId, parse_id, parse_ref
from .placeholder import read_placeholder, write_placeholder
from .store import LocalStore
from .thunk import Input, Link, Resources, Thunk

__all__ = ["USER_ERRORS", "CliError", "SUBCOMMANDS", "run_handler"]


def run_handler(handler, args: argparse.Namespace, prog: str = "gg") -> int:
    """Run a subcommand handler; its errors become one line and an exit status."""
    return run_command(prog, lambda: handler(args), args)


def _store(create: bool = False) -> LocalStore:
    return LocalStore.locate(create=create)


# -- init ---------------------------------------------------------------------------

def _init(args: argparse.Namespace) -> int:
    store = LocalStore.init(Path(args.directory) / ".gg") if args.directory else _store(create=True)
    print(store.root)
    return 0


def add_init(sub) -> None:
    parser = sub.add_parser("init", help="create a .gg store", description=(
        "Create a .gg store in DIRECTORY (default: $GG_DIR, or ./.gg). Harmless if it exists."))
    parser.add_argument("directory", nargs="?", help="where to create .gg/")
    parser.set_defaults(handler=_init)


# -- hash / collect -----------------------------------------------------------------

def _hash(args: argparse.Namespace) -> int:
    for name in args.files:
        print(f"{hash_file(Path(name))}  {name}" if len(args.files) > 1 else hash_file(Path(name)))
    return 0


def add_hash(sub) -> None:
    parser = sub.add_parser("hash", help="print content IDs of files", description=(
        "Print the content ID of each FILE (V for a value, T for a thunk file). "
        "Does not need or touch a store."))
    parser.add_argument("files", nargs="+", metavar="FILE", help="files to hash")
    parser.set_defaults(handler=_hash)


def _collect(args: argparse.Namespace) -> int:
    store = _store(create=True)
    for name in args.files:
        ident = store.put_file(Path(name))
        print(f"{ident}  {name}" if len(args.files) > 1 else ident)
    return 0


def add_collect(sub) -> None:
    parser = sub.add_parser("collect", help="store files and print their IDs", description=(
        "Copy each FILE into the store (streamed, hashed on the way) and print its ID. "
        "Executable files are stored executable."))
    parser.add_argument("files", nargs="+", metavar="FILE", help="files to store")
    parser.set_defaults(handler=_collect)


# -- create-thunk -------------------------------------------------------------------

def _input(store: LocalStore, text: str, executable: bool) -> Input:
    """``ID[=name]``, or ``PATH[=name]`` of a file to collect (named by its base name)."""
    ref, sep, name = text.partition("=")
    try:
        parse_ref(ref)
    except InvalidId as exc:
        path = Path(ref)
        if not path.is_file():
            raise CliError(f"{ref!r} is neither an ID nor a file ({exc})") from None
        ref = store.put_file(path, executable or None)
        name = name if sep else path.name
    return Input.parse(f"{ref}={name}" if name or sep else ref)


def _thunk_input(text: str) -> Input:
    """``THUNK[#TAG][=name]``, or ``PLACEHOLDER[=name]`` (named by its base name)."""
    ref, sep, name = text.partition("=")
    try:
        parse_ref(ref)
    except InvalidId as exc:
        placeholder = read_placeholder(Path(ref))
        if placeholder is None:
            raise CliError(f"{ref!r} is neither a thunk ID nor a placeholder file ({exc})") from None
        ref, name = placeholder.ref, (name if sep else Path(ref).name)
    return Input.parse(f"{ref}={name}" if name or sep else ref)


def _create_thunk(args: argparse.Namespace) -> int:
    store = _store(create=True)
    executables = [_input(store, text, True) for text in args.executable]
    function = args.function
    try:
        parse_id(function)
    except InvalidId:
        function_input = _input(store, function, True)
        function = function_input.id
        if function not in {item.id for item in executables}:
            executables.append(function_input)
    if function not in {item.id for item in executables}:
        executables.append(Input(function))
    links = []
    for text in args.link:
        name, sep, target = text.partition("=")
        if not sep:
            raise CliError(f"--link {text!r} is not NAME=TARGET")
        links.append(Link(name, target))
    thunk = Thunk(
        function_hash=function,
        args=tuple(args.args) or (Path(args.function).name,),
        envars=tuple(args.envar),
        values=tuple(_input(store, text, False) for text in args.value),
        thunks=tuple(_thunk_input(text) for text in args.thunk),
        executables=tuple(executables),
        outputs=tuple(args.output),
        timeout_ms=args.timeout,
        links=tuple(links),
        resources=Resources(args.memory, args.cpus, args.disk),
    )
    ident = store.put_thunk(thunk)
    if args.placeholder:
        write_placeholder(Path(args.placeholder), ident)
    print(ident)
    return 0


def add_create_thunk(sub) -> None:
    parser = sub.add_parser(
        "create-thunk", help="write a thunk into the store",
        description=(
            "Create a thunk that runs FUNCTION with ARGS (args[0] is argv0) and store it. "
            "FUNCTION and the --value/--executable inputs are IDs or files (files are "
            "collected and named by their base name unless =NAME is given)."),
        epilog=("example: gg create-thunk --value in.txt --output out.txt /bin/sh -- "
                "sh -c 'wc -l in.txt > out.txt'"),
    )
    parser.add_argument("--envar", "-e", action="append", default=[], metavar="NAME=VALUE",
                        help="environment variable of the function (repeatable; nothing else is set)")
    parser.add_argument("--value", "-v", action="append", default=[], metavar="ID|FILE[=NAME]",
                        help="a value input, placed in the working directory as NAME (repeatable)")
    parser.add_argument("--thunk", "-t", action="append", default=[], metavar="THUNK[#TAG]|PLACEHOLDER[=NAME]",
                        help="a thunk input: forced first, its output (or output TAG) placed as NAME "
                             "(repeatable)")
    parser.add_argument("--executable", "-x", action="append", default=[], metavar="ID|FILE[=NAME]",
                        help="an input placed executable, e.g. a program the function runs (repeatable); "
                             "FUNCTION is added here if missing")
    parser.add_argument("--output", "-o", action="append", default=[], required=True, metavar="TAG",
                        help="a file the function writes, by its path in the working directory; the first "
                             "is the thunk's value (repeatable, at least one)")
    parser.add_argument("--timeout", "-T", type=int, default=0, metavar="MS",
                        help="time limit in milliseconds (0: the engine's default timeout; part of the ID)")
    parser.add_argument("--link", "-l", action="append", default=[], metavar="NAME=TARGET",
                        help="a symlink NAME -> TARGET in the working directory; TARGET must name an input "
                             "(repeatable)")
    parser.add_argument("--memory", type=int, default=0, metavar="MIB",
                        help="resource hint: memory in MiB (part of the ID)")
    parser.add_argument("--cpus", type=int, default=0, help="resource hint: CPUs (part of the ID)")
    parser.add_argument("--disk", type=int, default=0, metavar="MIB",
                        help="resource hint: scratch space in MiB (part of the ID)")
    parser.add_argument("--placeholder", "-C", metavar="PATH", help="also write a placeholder here")
    parser.add_argument("function", metavar="FUNCTION", help="the program to run: an ID or a file")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                        help="its argv, argv[0] first (default: FUNCTION's base name)")
    parser.set_defaults(handler=_create_thunk)


# -- describe -----------------------------------------------------------------------

def describe_thunk(ident: str, thunk: Thunk) -> dict:
    """A JSON-ready view of a thunk with stable field names."""

    def inputs(items):
        return [{"ref": item.ref, "name": item.name} for item in items]

    return {
        "id": ident,
        "kind": "thunk",
        "function": {"hash": thunk.function_hash, "args": list(thunk.args), "envars": list(thunk.envars)},
        "values": inputs(thunk.values),
        "thunks": inputs(thunk.thunks),
        "executables": inputs(thunk.executables),
        "outputs": list(thunk.outputs),
        "timeout_ms": thunk.timeout_ms,
        "links": [{"name": link.name, "target": link.target} for link in thunk.links],
        "resources": {
            "memory_mib": thunk.resources.memory_mib,
            "cpus": thunk.resources.cpus,
            "disk_mib": thunk.resources.disk_mib,
        },
    }


def _describe(args: argparse.Namespace) -> int:
    store = _store()
    target = args.target
    placeholder = read_placeholder(Path(target)) if os.path.exists(target) else None
    ref = placeholder.ref if placeholder else target
    try:
        parsed = parse_ref(ref)
    except InvalidId as exc:
        raise CliError(f"{target!r} is neither an ID nor a placeholder file ({exc})") from None
    if parsed.is_thunk:
        report = describe_thunk(parsed.id, store.load_thunk(parsed.id))
        if parsed.tag:
            report["tag"] = parsed.tag
        report["reduces_to"] = store.resolve(ref)
    else:
        oid = parse_id(parsed.id)
        path = store.blob_path(parsed.id)
        report = {"id": parsed.id, "kind": "value", "size": oid.size, "stored": path.exists(),
                  "executable": path.exists() and os.access(path, os.X_OK)}
    if placeholder:
        report["placeholder"] = {"path": target, "form": "linker" if placeholder.linker_form else "shebang"}
    print(json.dumps(report, indent=2))
    return 0


def add_describe(sub) -> None:
    parser = sub.add_parser("describe", help="show a thunk or value as JSON", description=(
        "Print what an ID (or the ID in a placeholder file) stands for, as JSON."))
    parser.add_argument("target", metavar="ID|PLACEHOLDER", help="an ID, THUNK#TAG or placeholder file")
    parser.set_defaults(handler=_describe)


SUBCOMMANDS = (add_init, add_hash, add_collect, add_create_thunk, add_describe)
