"""Identical work merged in flight: claim a thunk before running it, or wait for a peer.

Two forcers that reach the same thunk at the same time (two ``gg-force`` on one ``.gg``
store, or ten CI runners on one bucket) should run it once between them. Before the
scheduler dispatches a thunk it asks :meth:`InFlight.claim`:

* the **local lock** (:mod:`ir.thunk_lock`, a byte of ``.gg/thunk-locks``) merges forcers
  that share a ``.gg`` store; the kernel drops it when its holder dies, so a local
  takeover is immediate;
* the **remote lease** (:mod:`ir.storage.lease`, ``leases/<THUNK>`` in the store) merges
  forcers that share results read-write through one bucket; its owner renews it every
  third of the lease period while the thunk runs, and a peer takes it over once it
  expires, so a crashed owner delays the others by at most one lease period.

A claim that is taken checks the reductions once more (a peer may have finished just
before) and is released after the reduction is recorded (the lease only after it is in
the remote store, so a peer that finds the lease gone finds the reduction). A claim that
is not taken *waits on the peer*: it polls for the reduction with the one back-off policy
(:mod:`ir.retry`) -- the local store for the local lock, and for leases one batched
``get_reductions`` per round for every waiting thunk at once -- and takes over when the
lock is free or the lease expired without a reduction.

Read-only runners (``--remote-results read-only``) take no leases and wait on none: they
must not write to the bucket at all, and their results are never shared, so there is
nothing for the team to merge -- they use every reduction that exists when they look and
run the rest themselves. The local lock still merges forcers on their own ``.gg``.

Claims are limited to the engines' slots: a thunk is claimed when it can run, not when it
is queued, so concurrent forcers split a wide graph between them instead of the first
one claiming all of it and the others idling.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sized
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from ir.errors import ConfigError
from ir.retry import backoff_delay
from ir.storage import LeasingStorage, StorageError
from ir.storage.lease import Lease
from ir.store import LocalStore, StoreError
from ir.thunk import Thunk
from ir.thunk_lock import LockFile, ThunkLock

from .critical_path import PrioritySlots
from .observe import RunObserver

ENV = "GG_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 60.0
LOCAL_OWNER = "another gg-force on this .gg store"

T = TypeVar("T")
Outputs = dict[str, str]
# The scheduler's view of reductions: (run ID, thunk) -> usable outputs or None.
LocalHit = Callable[[str, Thunk], "Outputs | None"]
# Records fetched from the store (ref -> result) -> usable outputs of (run ID, thunk).
RemoteHit = Callable[[Mapping[str, str], str, Thunk], Awaitable["Outputs | None"]]


def lease_seconds(environ: Mapping[str, str] = os.environ, default: float = DEFAULT_LEASE_SECONDS) -> float:
    """``$GG_LEASE_SECONDS`` (a positive number), else ``default``; a bad value is a
    one-line configuration error naming the variable."""
    text = environ.get(ENV)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ConfigError(f"{ENV}={text!r} must be a positive number of seconds")
    return value


def owner_name() -> str:
    """Who holds a lease, as peers see it: host, process and a nonce (a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(slots=True)
class Claim:
    """The outcome of :meth:`InFlight.claim`: a peer's ``outputs`` (do not run), or the
    right to run (``outputs`` is None) until :meth:`InFlight.done` / :meth:`InFlight.abandon`."""

    run_id: str
    outputs: Outputs | None = None
    lock: ThunkLock | None = None
    lease: Lease | None = None
    renewer: asyncio.Task[None] | None = None
    slot: bool = False
    stop: asyncio.Event | None = None  # tells the renewer to stop (made with the renewer: most claims have none)


@dataclass
class _Waiter:
    thunk: Thunk
    expiry: float
    result: asyncio.Future[Outputs | None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class InFlight:
    """Claims for one run. ``leases`` is the store to lease in (None: local lock only);
    ``slots`` bounds the claims held at once (the engines' total slots)."""

    def __init__(self, store: LocalStore, leases: LeasingStorage | None, observer: RunObserver,
                 local_hit: LocalHit, remote_hit: RemoteHit, *, slots: int, period: float = DEFAULT_LEASE_SECONDS,
                 on_error: Callable[[str], None] = lambda _: None, owner: str | None = None):
        self.store = store
        self._root = os.fspath(store.root)  # a string once, not per claim
        self.leases = leases
        self.observer = observer
        self.local_hit = local_hit
        self.remote_hit = remote_hit
        self.period = period
        self.owner = owner or owner_name()
        self.on_error = on_error
        self.poll_cap = max(0.05, min(2.0, period / 4))  # well inside one lease period
        self.peer_reduced = 0  # thunks a concurrent run reduced while this one waited
        self.takeovers = 0
        self._slots = PrioritySlots(max(1, slots))  # granted critical path first, as dispatch is
        self._waiters: dict[str, _Waiter] = {}
        self._poller: asyncio.Task[None] | None = None
        self._poll_round = 0
        self._pending: set[asyncio.Task[None]] = set()  # lease releases, off the critical path
        # Every local lock of this run is a byte of one open lock file (ir/thunk_lock.py).
        self._lock_file = LockFile(self._root)

    # -- claiming ---------------------------------------------------------------------

    def when_free(self, priority: float, start: Callable[[T], None], arg: T) -> None:
        """Call ``start(arg)`` once a claim slot is free (highest ``priority`` first); the
        slot is its to pass to :meth:`claim` (``slot=True``) or to :meth:`give_back_slot`.
        This is the scheduler's ready queue: a ready node waits here as a callback."""
        self._slots.call_when_free(priority, start, arg)

    def next_ready(self, start: Callable[[T], None]) -> T | None:
        """The argument of the best node waiting in :meth:`when_free` with ``start`` if a
        slot is free for it now, the slot taken (see ``PrioritySlots.take_next``)."""
        return self._slots.take_next(start)

    @property
    def ready_queue(self) -> Sized:
        """What waits for a slot, for ``len()`` (the same object for the whole run: a
        caller checking it per node keeps it instead of asking :attr:`queued`)."""
        return self._slots.queue

    @property
    def queued(self) -> int:
        """Ready nodes and claims waiting for a slot."""
        return self._slots.waiting

    def give_back_slot(self) -> None:
        """Return a slot :meth:`when_free` granted, unused."""
        self._slots.release()

    def lend_slot(self, claim: Claim) -> None:
        """``claim`` waits on other work of this run (a lost input being rebuilt) and
        must not hold a slot that work needs; it runs on without one."""
        self._release_slot(claim)

    def try_claim(self, node_id: str, run_id: str, thunk: Thunk) -> Claim | None:
        """:meth:`claim` without waiting, for a caller holding a slot (:meth:`when_free`):
        the claim -- taken, or a peer's outputs -- when the local lock is free and no
        lease is needed (the slot is then the claim's); None otherwise, the slot still
        the caller's to pass to :meth:`claim`. Nearly every claim of a run that shares no
        results is decided here, without a coroutine."""
        if self.leases is not None:
            return None
        claim = Claim(run_id, lock=ThunkLock(self._root, run_id, self._lock_file))
        if not claim.lock.try_acquire():  # type: ignore[union-attr]
            return None
        claim.slot = True
        try:
            outputs = self.local_hit(run_id, thunk)  # a peer may have finished just before
        except BaseException:
            self.abandon(claim)
            raise
        if outputs is not None:
            return self._peer_done(node_id, claim, outputs, False)
        return claim

    async def claim(self, node_id: str, run_id: str, thunk: Thunk, priority: float = 0.0,
                    slot: bool = False) -> Claim:
        """Claim ``run_id`` (the thunk about to be dispatched), or wait for a peer's result.
        Waiting claims get a free slot highest ``priority`` first (the scheduler's dispatch
        order: executor/critical_path.py); ``slot``: the caller holds one already
        (:meth:`when_free`), which the claim now owns."""
        claim = Claim(run_id, lock=ThunkLock(self._root, run_id, self._lock_file), slot=slot)
        waited = False
        try:
            while True:
                if not claim.slot:
                    await self._slots.acquire(priority)
                    claim.slot = True
                assert claim.lock is not None
                if not claim.lock.try_acquire():
                    self._release_slot(claim)
                    self._waiting(node_id, run_id, LOCAL_OWNER, waited)
                    waited = True
                    if (outputs := await self._wait_local(run_id, thunk, claim.lock)) is not None:
                        return self._peer_done(node_id, claim, outputs)
                    continue  # the lock is free and nothing was recorded: its holder died
                if (outputs := self.local_hit(run_id, thunk)) is not None:  # finished just before
                    return self._peer_done(node_id, claim, outputs, waited)
                if self.leases is None:
                    return self._taken(node_id, claim, waited)
                lease = await self._try_lease(run_id)
                if lease is False:  # the store cannot lease: run (maybe twice, never wrong)
                    return self._taken(node_id, claim, waited)
                if lease is not None:
                    claim.lease = lease
                    if (outputs := await self._remote_now(run_id, thunk)) is not None:
                        return self._peer_done(node_id, claim, outputs, waited)
                    claim.stop = asyncio.Event()
                    claim.renewer = asyncio.get_running_loop().create_task(self._renew(claim))
                    return self._taken(node_id, claim, waited)
                current = await self._read_lease(run_id)
                if current is None:
                    continue  # released meanwhile: race for it again
                # Keep the local lock (forcers on this store wait on us), not the slot.
                self._release_slot(claim)
                self._waiting(node_id, run_id, current.owner, waited)
                waited = True
                if (outputs := await self._wait_remote(run_id, thunk, current.expiry)) is not None:
                    return self._peer_done(node_id, claim, outputs)
                # Expired (or released) without a reduction: take it over on the next turn.
        except BaseException:
            self._stop_waiting(waited and claim.outputs is None)
            self.abandon(claim)
            raise

    def _waiting(self, node_id: str, run_id: str, owner: str, already: bool) -> None:
        if not already:
            self.observer.counts.waiting += 1
        self.observer.event("waiting", thunk=node_id, ran=run_id, owner=owner)

    def _stop_waiting(self, waited: bool) -> None:
        if waited:
            self.observer.counts.waiting -= 1

    def _taken(self, node_id: str, claim: Claim, waited: bool) -> Claim:
        if waited:
            self._stop_waiting(True)
            self.takeovers += 1
            self.observer.event("takeover", thunk=node_id, ran=claim.run_id)
        return claim

    def _peer_done(self, node_id: str, claim: Claim, outputs: Outputs, waited: bool = True) -> Claim:
        self._stop_waiting(waited)
        self.abandon(claim)
        claim.outputs = outputs
        self.peer_reduced += 1
        self.observer.counts.peer += 1
        self.observer.event("peer_done", thunk=node_id, ran=claim.run_id, result=outputs[""])
        return claim

    # -- finishing --------------------------------------------------------------------

    def ran(self, claim: Claim) -> None:
        """The claimed thunk ran and its records are queued: this run may claim another
        (the slot is free); the lock stays until :meth:`recorded`."""
        self._release_slot(claim)

    def recorded(self, claim: Claim) -> None:
        """The reduction is in the local store: local waiters may have the thunk (and this
        run may claim another). The lease stays until :meth:`done`."""
        self._release_slot(claim)
        if claim.lock is not None:
            claim.lock.release()

    async def done(self, claim: Claim) -> None:
        """The reduction is in the remote store too (or could not be put there): release
        the lease, so a peer that finds it gone finds the reduction."""
        self.recorded(claim)
        await self._drop_lease(claim)

    def abandon(self, claim: Claim) -> None:
        """Give the claim up without a reduction (a failure, a cancellation, a peer's
        result): peers take the thunk over at once (the lease is deleted in the background)."""
        self.recorded(claim)
        if claim.renewer is not None or claim.lease is not None:
            task = asyncio.get_running_loop().create_task(self._drop_lease(claim))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def close(self) -> None:
        """Wait for lease releases still under way and stop polling (end of the run)."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        while pending := [task for task in self._pending if not task.done()]:
            await asyncio.gather(*pending, return_exceptions=True)
        self._lock_file.close()  # every claim has been released by now

    def _release_slot(self, claim: Claim) -> None:
        if claim.slot:
            claim.slot = False
            self._slots.release()

    async def _drop_lease(self, claim: Claim) -> None:
        renewer, claim.renewer = claim.renewer, None
        if renewer is not None:
            # Stopped, not cancelled: a renewal already sent completes and its new ETag is
            # kept, so the release below deletes the lease instead of missing it.
            if claim.stop is not None:
                claim.stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        lease, claim.lease = claim.lease, None
        if lease is None or self.leases is None:
            return
        try:
            await self.leases.release(lease)
        except (StorageError, StoreError) as exc:  # it expires by itself: peers wait one period at most
            self.on_error(f"releasing the lease of {lease.thunk_id}: {exc}")

    # -- leases -----------------------------------------------------------------------

    async def _try_lease(self, run_id: str) -> Lease | Literal[False] | None:
        """The lease, None if a peer holds it, False if the store failed (said at the end)."""
        assert self.leases is not None
        try:
            return await self.leases.try_lease(run_id, self.owner, self.period)
        except ConfigError:
            raise
        except (StorageError, StoreError) as exc:
            self.on_error(f"taking the lease of {run_id}: {exc}")
            return False

    async def _read_lease(self, run_id: str) -> Lease | None:
        assert self.leases is not None
        try:
            return await self.leases.read_lease(run_id)
        except (StorageError, StoreError) as exc:
            self.on_error(f"reading the lease of {run_id}: {exc}")
            return None

    async def _renew(self, claim: Claim) -> None:
        """Keep the lease alive while the thunk runs: renew every third of the period, so
        two renewals may fail (a slow store) before a peer may take it over."""
        assert self.leases is not None and claim.stop is not None
        stop = claim.stop
        while claim.lease is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.period / 3)
            lease = claim.lease
            if lease is None or stop.is_set():
                return
            try:
                renewed = await self.leases.renew(lease, self.period)
            except (StorageError, StoreError) as exc:
                self.on_error(f"renewing the lease of {lease.thunk_id}: {exc}")
                continue
            if renewed is None:  # taken over: finish anyway (the same result), stop renewing
                self.observer.event("lease_lost", thunk=lease.thunk_id)
                return
            claim.lease = renewed

    # -- waiting ----------------------------------------------------------------------

    async def _wait_local(self, run_id: str, thunk: Thunk, lock: ThunkLock) -> Outputs | None:
        """Poll this store until the holder's reduction appears (its outputs) or the lock
        is free without one (None: the holder died or gave up)."""
        attempt = 0
        while True:
            if (outputs := self.local_hit(run_id, thunk)) is not None:
                return outputs
            if lock.try_acquire():
                lock.release()  # claim() takes it again, checking the reductions first
                return self.local_hit(run_id, thunk)
            attempt += 1
            await asyncio.sleep(backoff_delay(attempt, 0.02, self.poll_cap))

    async def _remote_now(self, run_id: str, thunk: Thunk) -> Outputs | None:
        """The remote store's reduction of ``run_id``, asked now (one request)."""
        if self.leases is None:
            return None
        try:
            found = await self.leases.get_reductions(self._refs(run_id, thunk))  # type: ignore[attr-defined]
        except ConfigError:
            raise
        except (StorageError, StoreError) as exc:
            self.on_error(f"looking up the reduction of {run_id}: {exc}")
            return None
        return await self.remote_hit(found, run_id, thunk) if found else None

    async def _wait_remote(self, run_id: str, thunk: Thunk, expiry: float) -> Outputs | None:
        """Wait for the lease holder's reduction (its outputs), or None once the lease is
        gone or expired without one. Every waiting thunk is polled in one batch per round."""
        waiter = _Waiter(thunk, expiry)
        self._waiters[run_id] = waiter
        self._poll_round = 0  # a new waiter: look soon, then back off again
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        try:
            return await waiter.result
        finally:
            self._waiters.pop(run_id, None)

    async def _poll(self) -> None:
        """Poll until nobody waits; if polling itself breaks, every waiter gets the error
        (a waiter must never hang on a poller that is gone)."""
        try:
            await self._poll_rounds()
        except BaseException as exc:
            for waiter in self._waiters.values():
                if not waiter.result.done():
                    waiter.result.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            raise

    async def _poll_rounds(self) -> None:
        assert self.leases is not None
        while self._waiters:
            self._poll_round += 1
            await asyncio.sleep(backoff_delay(self._poll_round, 0.05, self.poll_cap))
            waiting = {run_id: w for run_id, w in self._waiters.items() if not w.result.done()}
            if not waiting:
                continue
            try:
                # The bare ID's record is written last, so it alone says a reduction is complete.
                found = await self.leases.get_reductions(list(waiting))  # type: ignore[attr-defined]
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - said at the end; the leases still expire
                self.on_error(f"polling for reductions of peers: {exc}")
                found = {}
            now = time.time()
            for run_id, waiter in waiting.items():
                if waiter.result.done():
                    continue
                if run_id in found:
                    outputs = await self._remote_now(run_id, waiter.thunk)
                    if outputs is not None:
                        waiter.result.set_result(outputs)
                        continue
                if now >= waiter.expiry:
                    current = await self._read_lease(run_id)
                    if current is None or current.expired(time.time()):
                        if not waiter.result.done():
                            waiter.result.set_result(None)
                    else:
                        waiter.expiry = current.expiry  # renewed: the owner is alive

    @staticmethod
    def _refs(run_id: str, thunk: Thunk) -> list[str]:
        return [run_id, *(f"{run_id}#{tag}" for tag in thunk.outputs)]
