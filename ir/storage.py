"""The remote storage interface: where blobs live when thunks run elsewhere.

The scheduler and the engines only see this protocol; ``ir.s3store`` implements it
for S3 (and S3-compatible servers). Blobs are keyed by content ID. A remote store
never holds reductions: those stay in the local ``.gg`` store.
"""

from __future__ import annotations

from typing import Protocol

from .store import LocalStore


class RemoteStorage(Protocol):
    async def has(self, ident: str) -> bool:
        ...

    async def upload(self, store: LocalStore, ident: str) -> None:
        """Copy blob ``ident`` from ``store`` to the remote store (no-op if present)."""
        ...

    async def download(self, store: LocalStore, ident: str) -> None:
        """Fetch blob ``ident`` into ``store``, verified against its ID before install."""
        ...

    async def close(self) -> None:
        ...
