"""Leases in the shared store: one forcer runs a thunk while its peers wait for the result.

A lease is a small object ``leases/<THUNK>`` next to the blobs holding who runs the thunk
(``owner``), since when (``start``) and until when (``expiry``), as wall-clock seconds.
It is created only if absent (S3: a conditional ``PUT`` with ``If-None-Match: *``; a
directory: ``O_CREAT|O_EXCL``), renewed by its owner while the thunk runs, and deleted
once the reduction is written. A lease past its expiry belongs to nobody: a peer takes
it over with a compare-and-swap on the exact object it read (S3: ``If-Match`` on the
ETag; a directory: a rename, which only one taker wins). So a crashed owner delays its
peers by at most one lease period, never forever.

Clocks: expiry is compared with the reader's wall clock, so hosts whose clocks differ by
more than a small fraction of the lease period can take over a live lease early (the
thunk then runs twice -- wasted work, never a wrong result, since reductions of one thunk
agree). Keep hosts NTP-synchronised and the period well above their skew.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

LEASES = "leases"  # the namespace of lease objects, next to the blobs and reductions
MAX_LEASE = 4096  # a lease object is tiny; anything bigger is not one of ours


@dataclass(frozen=True)
class Lease:
    """One lease as read or written. ``token`` identifies the exact object version (the
    S3 ETag, or the file's content) so renew/release/takeover act on it and nothing newer."""

    thunk_id: str
    owner: str
    start: float
    expiry: float
    token: str = ""

    def expired(self, now: float) -> bool:
        """True once the owner's time is up (then anyone may take it over)."""
        return now >= self.expiry


def encode_lease(owner: str, start: float, expiry: float) -> bytes:
    """The stored form: one JSON object (readable with ``cat`` when debugging a stall)."""
    return json.dumps({"owner": owner, "start": start, "expiry": expiry}, sort_keys=True).encode()


def decode_lease(thunk_id: str, data: bytes, token: str = "") -> Lease | None:
    """The lease in ``data``, or None if it is not a well-formed lease (treated as expired
    by callers: an unreadable lease must never block a peer forever)."""
    if len(data) > MAX_LEASE:
        return None
    try:
        fields = json.loads(data)
        return Lease(thunk_id, str(fields["owner"]), float(fields["start"]), float(fields["expiry"]), token)
    except (ValueError, KeyError, TypeError):
        return None
