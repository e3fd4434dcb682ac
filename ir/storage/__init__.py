"""Remote storage: one contract (:class:`RemoteStorage`), backends chosen by URI scheme.

``open_storage("s3://bucket/prefix?region=...")`` or ``open_storage("file:///shared/gg")``
gives a backend; ``register_storage`` (or the ``gg.storage`` entry-point group) adds one.
The modules: ``protocol`` (the contract and its errors), ``registry``, ``uri`` (parsing),
``s3`` with its ``aws_client``, ``file``, and ``traffic`` (bytes counted on the wire).
See docs/storage.md.
"""

from __future__ import annotations

from .lease import Lease
from .protocol import LeasingStorage, RemoteStorage, StorageConfigError, StorageContext, StorageError
from .registry import ENTRY_POINT_GROUP, open_storage, register_storage, unregister_storage
from .traffic import Metered, Traffic
from .uri import StorageUriError

__all__ = [
    "ENTRY_POINT_GROUP",
    "Lease",
    "LeasingStorage",
    "Metered",
    "RemoteStorage",
    "StorageConfigError",
    "StorageContext",
    "StorageError",
    "StorageUriError",
    "Traffic",
    "open_storage",
    "register_storage",
    "unregister_storage",
]
