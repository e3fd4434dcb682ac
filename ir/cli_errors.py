"""The one exception -> exit status mapping of every gg command (``gg``, its
subcommands, ``gg-force``, ``gg-force-and-run``, ``gg-infer``).

Library code raises its own errors and never exits; this module, at the edge, turns
them into one paragraph on stderr and an exit status:

====================================  ======  ============================================
error                                 status  printed
====================================  ======  ============================================
:class:`~ir.errors.UsageError`        2       ``PROG: error: MESSAGE``
:class:`~ir.errors.ConfigError`       1       ``PROG: error: MESSAGE`` (names the setting)
:class:`~ir.errors.UserError`,        1       ``PROG: error: LINE`` per line of
store, thunk, ID and OS errors                ``messages()`` (or the message)
interrupted (SIGINT, cancelled)       130     ``PROG: interrupted[; HINT]``
a closed stdout (``| head``)          0       nothing
anything else (a bug)                 1       ``PROG: internal error: TYPE: MESSAGE ...``
====================================  ======  ============================================

One debug rule: with ``--debug`` or ``GG_DEBUG`` set (and not ``0``), the traceback is
printed before the line, for every error. Without it there is never a traceback.

It lives in ``ir/`` (the base layer) so that every layer above can use it without an
import cycle; it knows the higher layers' errors only through their bases in
:mod:`ir.errors`.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping

from .errors import ConfigError, UsageError, UserError, first_line

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: gg-infer's start uses this module
if TYPE_CHECKING:
    import argparse

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Errors the user can act on that the IR itself raises. The store's and the thunk's are
# named lazily (module ``__getattr__``, :func:`_user_errors`): importing them pulls in
# protobuf, and a command that never loaded them cannot have raised them.
_BASE_USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ConfigError, OSError)
_LAZY_USER_ERRORS = (("ir.store", "StoreError"), ("ir.thunk", "MalformedThunk"), ("ir.ids", "InvalidId"))


def _user_errors(load: bool) -> tuple[type[BaseException], ...]:
    """The user-error classes: all of them (``load``), or those of the modules already imported."""
    found = []
    for module, name in _LAZY_USER_ERRORS:
        if load:
            importlib.import_module(module)
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return (*_BASE_USER_ERRORS[:2], *found, *_BASE_USER_ERRORS[2:])


def __getattr__(name: str) -> object:
    if name == "USER_ERRORS":
        return _user_errors(load=True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _cancelled(exc: BaseException) -> bool:
    """An interrupt: ^C, or a cancelled asyncio task (only possible once asyncio is imported)."""
    asyncio = sys.modules.get("asyncio")
    return isinstance(exc, KeyboardInterrupt) or (asyncio is not None and isinstance(exc, asyncio.CancelledError))


class CliError(UserError):
    """A command-line handler's own user-facing failure: one line, exit status 1."""


def shown_path(path: str | os.PathLike[str]) -> str:
    """How a message names a file: relative to the current directory when that is short
    (not above its grandparent), else absolute."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if relative.startswith("../..") else relative


def add_debug_option(parser: argparse.ArgumentParser) -> None:
    import argparse

    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the traceback of an error (same as GG_DEBUG=1)")


def debug_enabled(args: object | None = None, environ: Mapping[str, str] = os.environ) -> bool:
    """``--debug`` on the command line, or ``GG_DEBUG`` set to anything but ``""``/``0``."""
    return bool(getattr(args, "debug", False)) or environ.get("GG_DEBUG", "") not in ("", "0")


def error_lines(exc: BaseException) -> list[str]:
    """What the user is told about a known error, one entry per line."""
    messages = getattr(exc, "messages", None)
    if callable(messages):
        return list(messages())
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return [f"{exc.strerror}: {exc.filename}"]
    return [str(exc) or type(exc).__name__]


def report(prog: str, exc: BaseException, debug: bool = False, interrupted_hint: str = "") -> int:
    """Print ``exc`` the one way and return the exit status it maps to."""
    if isinstance(exc, BrokenPipeError):  # e.g. `gg describe ID | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    if debug and not _cancelled(exc):
        import traceback  # only with --debug: a start that fails nothing never pays for it

        traceback.print_exception(exc)
    if _cancelled(exc):
        print(f"{prog}: interrupted" + (f"; {interrupted_hint}" if interrupted_hint else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(exc, UsageError):
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, _user_errors(load=False)):
        for line in error_lines(exc):
            print(f"{prog}: error: {line}", file=sys.stderr)
        return EXIT_FAILED
    hint = "" if debug else " (run with --debug or GG_DEBUG=1 for the traceback)"
    print(f"{prog}: internal error: {type(exc).__name__}: {first_line(exc)}{hint}", file=sys.stderr)
    return EXIT_FAILED


def run_command(prog: str, body: Callable[[], int], args: object | None = None,
                interrupted_hint: str = "") -> int:
    """``body()``'s exit status, or the status of the error it raised (see :func:`report`)."""
    try:
        return body()
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - this is the one place errors become statuses
        return report(prog, exc, debug_enabled(args), interrupted_hint)
