"""Storage backends by URI scheme: ``open_storage(uri)`` and how a backend is added.

Three sources, in this order, so that a plug-in can add a scheme but never silently
replace one:

1. schemes registered in this process with :func:`register_storage` (tests, or an
   application that embeds gg);
2. the built-in backends (``s3``, ``file``), named here by import path rather than in
   package metadata, because the Lambda zip carries the code but no dist-info;
3. the ``gg.storage`` entry-point group of installed distributions: a separate package
   declares ``[project.entry-points."gg.storage"] myscheme = "mypkg.store:open_mine"``
   and ``GG_STORAGE_URI=myscheme://...`` works in ``gg-force``, the engines and the
   remote worker without any edit here (the worker must have the package installed).

A factory is ``factory(uri: str, context: StorageContext) -> RemoteStorage``; it parses
its own URI and raises :class:`~ir.storage.uri.StorageUriError` for a bad one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points

from .protocol import RemoteStorage, StorageContext
from .uri import StorageUriError, scheme_of

ENTRY_POINT_GROUP = "gg.storage"

StorageFactory = Callable[[str, StorageContext], RemoteStorage]

_BUILTIN: dict[str, str] = {
    "s3": "ir.storage.s3:open_s3",
    "file": "ir.storage.file:open_file",
}


class StorageRegistry:
    """Backends by scheme. One instance, :data:`REGISTRY`, serves the process; tests may
    make their own."""

    def __init__(self) -> None:
        self._registered: dict[str, StorageFactory] = {}

    def register(self, scheme: str, factory: StorageFactory) -> None:
        """Add ``scheme``; a built-in or already registered scheme is refused (replacing
        ``s3`` behind the user's back would be silently wrong)."""
        scheme = scheme.lower()
        if scheme in _BUILTIN or scheme in self._registered:
            raise ValueError(f"storage scheme {scheme!r} is already registered")
        self._registered[scheme] = factory

    def unregister(self, scheme: str) -> None:
        self._registered.pop(scheme.lower(), None)

    def schemes(self) -> list[str]:
        """Every scheme known now: registered, built in, and from entry points."""
        found = {ep.name.lower() for ep in entry_points(group=ENTRY_POINT_GROUP)}
        return sorted({*self._registered, *_BUILTIN, *found})

    def factory(self, scheme: str) -> StorageFactory:
        scheme = scheme.lower()
        if scheme in self._registered:
            return self._registered[scheme]
        target = _BUILTIN.get(scheme)
        if target is not None:
            module, _, name = target.partition(":")
            return getattr(importlib.import_module(module), name)
        matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name.lower() == scheme]
        if not matches:
            raise StorageUriError(f"GG_STORAGE_URI: unknown storage scheme {scheme + '://'!r} "
                                  f"(known: {', '.join(s + '://' for s in self.schemes())})")
        try:
            return matches[0].load()
        except Exception as exc:  # a broken plug-in is a setting to fix, said in one line
            raise StorageUriError(f"GG_STORAGE_URI: the {scheme}:// backend ({matches[0].value}) "
                                  f"cannot be loaded: {type(exc).__name__}: {exc}") from None

    def open(self, uri: str, context: StorageContext | None = None) -> RemoteStorage:
        """The backend for ``uri``'s scheme, opened (nothing is contacted yet)."""
        return self.factory(scheme_of(uri))(uri.strip(), context or StorageContext())


REGISTRY = StorageRegistry()


def open_storage(uri: str, context: StorageContext | None = None) -> RemoteStorage:
    """Open the storage ``uri`` names (``s3://...``, ``file:///...``, a plug-in's scheme).

    Raises :class:`~ir.storage.uri.StorageUriError` (a ``ConfigError``) for an unknown
    scheme or a malformed URI; nothing is contacted until the first operation (call
    ``probe()`` to check the settings up front).
    """
    return REGISTRY.open(uri, context)


def register_storage(scheme: str, factory: StorageFactory) -> None:
    """Add a backend for ``scheme`` in this process (see :class:`StorageRegistry`)."""
    REGISTRY.register(scheme, factory)


def unregister_storage(scheme: str) -> None:
    REGISTRY.unregister(scheme)
