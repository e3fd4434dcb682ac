"""Sharing reductions through the remote store: the mode a run uses, and what it shares.

Everyone who can write a storage prefix can write reduction records that everyone
else using it will follow, so one prefix is one trust domain (docs/trust.md). The mode
says how much of that a run takes part in:

* ``read-write`` (the default): use the records others wrote, and write one for every
  thunk this run executes (after the values it names are in the store);
* ``read-only``: use them, never write any (an untrusted runner such as a fork's CI:
  it gets the team's cache hits but cannot poison the cache);
* ``off``: neither (``--no-remote-results``): only this machine's reductions count.

A record is a claim, not a fact: its values are verified when they are downloaded and
used, and a value that is gone or corrupt is rebuilt by running the thunk again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import Enum
from typing import TYPE_CHECKING, NamedTuple

from ir.errors import UsageError

if TYPE_CHECKING:  # a type only: a run with nothing to share never imports the storage layer
    from ir.storage import RemoteStorage

ENV = "GG_REMOTE_RESULTS"


class RemoteResultsMode(Enum):
    READ_WRITE = "read-write"
    READ_ONLY = "read-only"
    OFF = "off"

    @property
    def reads(self) -> bool:
        return self is not RemoteResultsMode.OFF

    @property
    def writes(self) -> bool:
        return self is RemoteResultsMode.READ_WRITE


def parse_mode(text: str, origin: str = "--remote-results ") -> RemoteResultsMode:
    """The mode ``text`` names, else a one-line usage error naming ``origin``."""
    try:
        return RemoteResultsMode(text)
    except ValueError:
        choices = ", ".join(m.value for m in RemoteResultsMode)
        raise UsageError(f"{origin}{text!r} is not a remote-results mode (choose from {choices})") from None


def resolve_mode(flag: str | None, no_remote: bool = False,
                 environ: Mapping[str, str] = os.environ) -> RemoteResultsMode:
    """``--no-remote-results``, else ``--remote-results MODE``, else ``$GG_REMOTE_RESULTS``,
    else read-write; a bad value is a usage error naming where it came from."""
    if no_remote:
        if flag is not None and parse_mode(flag) is not RemoteResultsMode.OFF:
            raise UsageError(f"--no-remote-results contradicts --remote-results {flag}")
        return RemoteResultsMode.OFF
    if flag is not None:
        return parse_mode(flag)
    text = environ.get(ENV)
    return parse_mode(text, f"{ENV}=") if text else RemoteResultsMode.READ_WRITE


class SharedResults(NamedTuple):
    """The storage a run shares reductions through, and whether it may write there."""

    storage: RemoteStorage
    writes: bool
