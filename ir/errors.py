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
