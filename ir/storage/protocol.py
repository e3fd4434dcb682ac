"""The remote storage contract: where blobs live when thunks run elsewhere.

The scheduler, the engines and the remote worker only see :class:`RemoteStorage`;
``open_storage(uri)`` (``ir.storage``) picks the backend by the URI's scheme. Blobs
are keyed by content ID, so every write is idempotent and two writers of one ID never
conflict. Next to the blobs, a ``reductions/`` namespace holds reduction records
(``THUNK[#tag] -> RESULT``, the local store's record format) shared by everyone who uses
the store: a record is a *claim* by whoever could write there, never a fact (its values
are verified when downloaded; see docs/trust.md).

Errors a backend raises (callers rely on these classes, not on a backend's own):

* :class:`~ir.store.MissingBlob` -- the object is not there (a download of it);
* :class:`~ir.store.CorruptBlob` -- it is there but does not hash to its ID (after the
  backend discarded the bad copy and read it once more);
* :class:`StorageConfigError` (a :class:`~ir.errors.ConfigError`) -- a setting is wrong
  (no such bucket or directory, no permission, bad credentials): the run stops with
  its one line, which names the setting to fix;
* :class:`StorageError` -- anything else that failed for good after the backend's own
  retries (throttling beyond its attempts, an endpoint that does not answer, an I/O
  error): one line saying what, where and why.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigError
from ..store import LocalStore, StoreError
from .lease import Lease


class StorageError(StoreError):
    """A storage operation that failed for good; the message is one line: what, where, why."""


class StorageConfigError(StorageError, ConfigError):
    """The storage refused because a setting is wrong; never retried, the run stops."""


@dataclass(frozen=True)
class StorageContext:
    """What a caller may share with the backend it opens; a backend ignores what it does
    not use, so new fields never break a plug-in.

    ``aws_session``: an aiobotocore session (the Lambda worker keeps one per sandbox so
    each S3 client reuses its loaded service model, about 0.1 s per client).
    """

    aws_session: Any = None


@runtime_checkable
class RemoteStorage(Protocol):
    """A content-addressed blob store shared by the client and remote workers.

    Rules every backend keeps (the parametrised suite in tests/test_storage.py checks
    them against each built-in backend):

    * **Atomic writes**: an object appears complete under its ID or not at all (a temp
      object then a rename, or a single PUT); a reader never sees a partial object.
    * **Verify on upload and download**: the local blob is hashed against its ID before
      it is sent, and a download is hashed while it streams in; a mismatch is never
      installed in the local store.
    * **The execute bit travels with the object** (an ID names content only; a linked
      program must come back executable).
    * **No persisted beliefs**: what :meth:`has` and :meth:`upload` may cache is only
      what this object saw in this process (its own uploads and checks, and what
      :meth:`remember` was told). :meth:`forget` and :meth:`forget_all` drop it.
    * **Concurrent calls are safe**: one object may be used by many coroutines of one
      event loop at once.
    """

    @property
    def uri(self) -> str:
        """The canonical URI of this storage: opening it again (in a remote worker, from
        the event) gives the same storage."""
        ...

    async def probe(self) -> None:
        """Pre-flight: write and read back one tiny blob, as a run does (the same
        permissions). Raises :class:`StorageConfigError` for a setting to fix and
        :class:`StorageError` when the storage cannot be used now."""
        ...

    async def connect(self) -> None:
        """Open connections now (e.g. a warm worker before its first event), so the
        first request does not pay for it. Touches no object; may do nothing."""
        ...

    async def has(self, ident: str) -> bool:
        """True if object ``ident`` exists. A True may come from this process's own
        knowledge (see the class docstring); a False is always a fresh check."""
        ...

    async def upload(self, store: LocalStore, ident: str, overwrite: bool = False) -> None:
        """Make sure blob ``ident`` from ``store`` is in the storage; concurrent calls
        share one upload. Without ``overwrite`` an object believed present is not sent
        again; ``overwrite`` (a producer that just made the blob) writes it even so, so a
        corrupt copy left by anyone is replaced, not trusted. A blob absent from ``store``
        is fine if the storage has it, else :class:`~ir.store.MissingBlob`."""
        ...

    async def download(self, store: LocalStore, ident: str) -> None:
        """Fetch blob ``ident`` into ``store`` (no-op if there), verified against its ID
        before it is installed, with its execute bit; concurrent calls share one fetch."""
        ...

    def forget(self, ident: str) -> None:
        """Someone found ``ident`` missing or corrupt: drop the belief that it is stored,
        and make the next :meth:`upload` write it even if an object is there."""
        ...

    def forget_all(self) -> None:
        """Drop every belief about what is stored (e.g. a new warm invocation: the
        storage may have been emptied since)."""
        ...

    def remember(self, ident: str, executable: bool = False) -> None:
        """A remote worker just stored ``ident``: believe it present, and that it is a
        program if ``executable`` (so a later download of it is executable)."""
        ...

    async def put_reduction(self, ref: str, result: str) -> None:
        """Record (atomically) that ``ref`` (``THUNK`` or ``THUNK#tag``) reduced to
        ``result``, under ``reductions/`` in the local store's format. The caller has
        already made sure the blob ``result`` names is in the storage."""
        ...

    async def get_reductions(self, refs: Collection[str]) -> dict[str, str]:
        """The records of ``refs`` that exist and carry the verified mark: ref -> result.
        One batch (bounded concurrency, not a round trip per ref in sequence); a ref
        with no record, or an untrusted one, is simply absent from the answer."""
        ...

    async def close(self) -> None:
        """Release connections and threads; the object is not used afterwards."""
        ...


@runtime_checkable
class LeasingStorage(Protocol):
    """A :class:`RemoteStorage` that can also hold leases (``leases/<THUNK>``, see
    ir/storage/lease.py): both built-in backends do. A separate protocol so a plug-in
    backend without leases still works -- forcers sharing it then may run a thunk twice
    (wasted work, never a wrong result)."""

    async def try_lease(self, thunk_id: str, owner: str, ttl: float) -> Lease | None:
        """Take the lease ``leases/<thunk_id>`` for ``ttl`` seconds if nobody holds a live
        one (created only if absent; an expired one is taken over with a compare-and-swap
        on the exact version read). None: a peer holds it (or won the race for it)."""
        ...

    async def read_lease(self, thunk_id: str) -> Lease | None:
        """The current lease of ``thunk_id`` (owner, start, expiry), None if there is none;
        an unreadable one comes back expired."""
        ...

    async def renew(self, lease: Lease, ttl: float) -> Lease | None:
        """Extend our ``lease`` to ``ttl`` seconds from now; None if it is no longer ours
        (expired or taken over): the owner may finish its run, a peer may run it too."""
        ...

    async def release(self, lease: Lease) -> None:
        """Remove ``lease`` if it is still ours (after the reduction is written)."""
        ...
