"""Bytes a storage moved, counted where they cross the wire.

With a remote engine, intermediate values stay in the store and only what a target or
a local run needs comes down (docs/storage.md). That is a claim worth checking on
every run, so each built-in backend counts its own transfers in one :class:`Traffic`
and ``gg-force`` prints the totals at the end of a run (and writes them to the trace).

What counts is the body bytes of the requests this process made, as they travelled:

* S3: the bytes of every PUT and UploadPart body (after zstd, so a compressible blob
  counts what was sent, not its size), and of every GET body read (before
  decompression) -- blobs, reduction records and leases alike. Not counted: HTTP
  headers, HEADs, DELETEs, the few hundred bytes of XML that start and complete a
  multipart upload, and bodies of attempts that failed and were retried.
* file://: the bytes written into and read from the shared directory (a network file
  system carries those).

Counters are updated from worker threads (file://) as well as the event loop, hence
the lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass
class Traffic:
    """Running totals of one storage object's transfers (this process only)."""

    up: int = 0  # bytes sent
    down: int = 0  # bytes received
    objects_up: int = 0  # write requests that carried a body (PUT, UploadPart)
    objects_down: int = 0  # GETs whose body was read
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def sent(self, size: int, objects: int = 1) -> None:
        with self._lock:
            self.up += size
            self.objects_up += objects

    def received(self, size: int, objects: int = 1) -> None:
        with self._lock:
            self.down += size
            self.objects_down += objects

    def add(self, other: Traffic) -> None:
        with self._lock:
            self.up += other.up
            self.down += other.down
            self.objects_up += other.objects_up
            self.objects_down += other.objects_down

    def as_dict(self) -> dict[str, int]:
        return {"bytes_up": self.up, "bytes_down": self.down,
                "objects_up": self.objects_up, "objects_down": self.objects_down}

    def describe(self) -> str:
        """``12.3 MB up, 0.4 MB down``: what the run's summary says."""
        return f"{human_bytes(self.up)} up, {human_bytes(self.down)} down"


def human_bytes(size: int) -> str:
    """Decimal units, one decimal place above a kilobyte (``812 B``, ``12.3 MB``)."""
    if size < 1000:
        return f"{size} B"
    scaled = float(size)
    for unit in ("kB", "MB", "GB", "TB"):
        scaled /= 1000
        if scaled < 1000 or unit == "TB":
            break
    return f"{scaled:.1f} {unit}"


@runtime_checkable
class Metered(Protocol):
    """Something that counts the bytes it moves: both built-in storage backends, and the
    Lambda engine for the blobs that travel inside its invocations (small inputs in the
    event, small outputs in the answer: no storage request at all). A separate protocol
    so a plug-in backend or engine without counters still works: the run then says it
    could not count its storage's transfers."""

    @property
    def traffic(self) -> Traffic:
        ...
