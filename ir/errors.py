"""The error class every layer shares for "a setting is wrong".

Credentials, an unknown bucket or function, access denied, an invalid name, https
against an http endpoint, an invalid option: retrying cannot help, and quietly running
the work somewhere else would hide the mistake. Anything that raises
:class:`ConfigError` stops the whole run at once with its message as the one line the
user sees, so the message must name the setting to fix.
"""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration or permission problem; the message is one line naming the setting."""


def first_line(text: object) -> str:
    """The first non-blank line of ``text`` (an exception, a service's message): what an
    error line quotes, so a multi-line message never breaks the one-line rule."""
    lines = str(text).strip().splitlines()
    return lines[0] if lines else (type(text).__name__ if isinstance(text, BaseException) else "")


class UsageError(Exception):
    """A bad option, argument or environment variable: one line, exit status 2.

    Raised by library code too (an unknown engine name, say); only the command-line
    layer (:mod:`ir.cli_errors`) turns it into an exit status.
    """


class UserError(Exception):
    """A failure the user can act on (a failed thunk, a missing target): one line, exit 1.

    The base of the higher layers' own errors, so the command-line layer in ``ir`` can
    print them without importing those layers. A subclass may define ``messages()``
    returning several lines (one per failed thunk, say).
    """
