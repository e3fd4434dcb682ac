"""``force(targets, engines=...)``: the library call behind ``gg-force``.

The CLI, the examples and the benches all call this instead of building an argv. It
opens the engines by name through the registry (:mod:`executor.engines`), runs the
scheduler, writes every target that reduced, and closes what it opened. Errors are
raised, never printed as exit codes: :class:`~ir.errors.UsageError` (a bad option or
engine name), :class:`~ir.errors.ConfigError` (a wrong setting), :class:`ForceFailed`
(a thunk failed), :class:`~executor.targets.TargetError`, store errors;
``asyncio.CancelledError`` when a signal stopped the run. Work that ran on the fallback
engine is said in one line per reason on stderr, even when ``quiet``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ir.errors import UsageError
from ir.storage import RemoteStorage, open_storage
from ir.store import CorruptBlob, LocalStore, MissingBlob

from .critical_path import DurationEstimates
from .engine import DEFAULT_THUNK_TIMEOUT, Engine
from .engines import ENGINES, EngineOptions, EngineRegistry
from .observe import RunObserver
from .progress import ProgressDisplay
from .remote_results import RemoteResultsMode, SharedResults
from .scheduler import ForceConfig, ForceFailed, Scheduler
from .targets import Target, materialize, parse_target, thin_archive_placeholders
from .trace import TraceWriter

__all__ = ["ForceFailed", "ForceOptions", "Summary", "force", "force_async", "run"]


@dataclass(frozen=True)
class ForceOptions:
    """Everything a run can be told; the defaults are gg-force's."""

    # Engines in order of preference (a thunk goes to the first that does not refuse it).
    engines: tuple[str, ...] = ("local",)
    # Where work goes that every engine refused or that an engine could not run
    # (unavailable, out of resources). None: fail instead. Ignored when it is one of
    # ``engines`` (there is nothing to fall back to).
    fallback: str | None = "local"
    jobs: int | None = None
    default_timeout: float = DEFAULT_THUNK_TIMEOUT
    keep_going: bool = False
    trace: Path | None = None
    quiet: bool = True
    progress: str = "auto"
    max_attempts: int = 4
    speculate: bool = True
    speculate_after: float = 5.0
    prog: str = "gg-force"  # names the lines said on stderr
    # The settings engines read (GG_STORAGE_URI, GG_LAMBDA_*); None: this process's.
    environ: Mapping[str, str] | None = field(default=None, compare=False)
    registry: EngineRegistry = field(default=ENGINES, compare=False)
    # Share reductions through the remote store (the engines' storage, else
    # GG_STORAGE_URI): read-write, read-only or off (executor/remote_results.py).
    remote_results: RemoteResultsMode = RemoteResultsMode.READ_WRITE

    def checked(self) -> ForceOptions:
        """Raise :class:`UsageError` for a value no run can use."""
        if not self.engines:
            raise UsageError("at least one engine is needed")
        if not self.default_timeout > 0:
            raise UsageError(f"--default-timeout {self.default_timeout:g} must be a positive number of seconds")
        for name in self.engines:
            self.registry.check(name, "--engine ")
        if self.fallback is not None:
            self.registry.check(self.fallback, "--fallback-engine ")
        if not isinstance(self.remote_results, RemoteResultsMode):
            raise UsageError(f"remote_results {self.remote_results!r} is not a RemoteResultsMode")
        return self


@dataclass
class Summary:
    targets: int
    written: int
    executed: int
    elapsed: float
    fallback: list[str]
    results: dict[str, str] = field(default_factory=dict)  # target text -> value ID
    remote_hits: int = 0  # thunks reduced by a record in the remote store
    shared: int = 0  # reductions this run wrote to the remote store


def _results_storage(options: ForceOptions, environ: Mapping[str, str]) -> RemoteStorage | None:
    """The storage GG_STORAGE_URI names when the run shares results (None if it is not
    set or sharing is off). Engines without storage of their own (local) are given it,
    so they fetch the values that remote records name; nothing is contacted yet."""
    uri = environ.get("GG_STORAGE_URI")
    if not uri or not options.remote_results.reads:
        return None
    return open_storage(uri)


async def _open_engines(options: ForceOptions, store: LocalStore,
                        shared: RemoteStorage | None) -> tuple[list[Engine], Engine | None]:
    """(engines in order of preference, fallback engine). On failure, closes what opened."""
    opened: list[Engine] = []
    environ = dict(os.environ if options.environ is None else options.environ)
    try:
        for name in options.engines:
            opened.append(await options.registry.open(name, EngineOptions(store, options.jobs, environ, shared)))
        fallback = None
        if options.fallback is not None and options.fallback not in options.engines:
            fallback = await options.registry.open(
                options.fallback, EngineOptions(store, None, environ, remote=_first_remote(opened) or shared))
    except BaseException:
        await _close(opened, shared)
        raise
    return opened, fallback


async def _close(engines: Sequence[Engine], shared: RemoteStorage | None = None) -> None:
    """Close every engine once, then every remote storage they left results in (and the
    one opened for sharing results)."""
    unique = list({id(e): e for e in engines}.values())
    for engine in unique:
        await engine.close()
    remotes = [*(e.remote for e in unique if e.remote is not None), *([shared] if shared else [])]
    for remote in {id(r): r for r in remotes}.values():
        await remote.close()


def _first_remote(engines: Sequence[Engine]):
    return next((e.remote for e in engines if e.remote is not None), None)


async def _materialize_or_rebuild(store: LocalStore, scheduler: Scheduler, target: Target, value_id: str,
                                  remote) -> bool:
    """Write a target; a value gone from every store is rebuilt by its producer first
    (a bucket's expiry rule makes that normal), as the scheduler does for inputs."""
    local = store.has(value_id)
    try:
        return await materialize(store, target, value_id, remote)
    except (MissingBlob, CorruptBlob) as missing:
        # Corrupt in the remote store: as good as gone. (Corrupt locally: reported, and
        # the next run rebuilds it, as before.)
        if (isinstance(missing, CorruptBlob) and local) or not await scheduler.rebuild(missing.ident):
            raise
    return await materialize(store, target, value_id, remote)


def _expand(texts: Sequence[str], options: ForceOptions) -> list[Target]:
    """Targets as given, plus the placeholder members of thin archives among them."""
    targets: list[Target] = [parse_target(text) for text in texts]
    for target in [t for t in targets if t.ref is None]:
        members = thin_archive_placeholders(target)
        targets += members
        if options.quiet:
            continue
        if members:
            print(f"{options.prog}: {target.text} is a thin archive; forcing its {len(members)} placeholder "
                  "member(s)", file=sys.stderr)
        else:
            print(f"{options.prog}: {target.text} is already a real file", file=sys.stderr)
    return targets


async def force_async(targets: Sequence[str], options: ForceOptions, store: LocalStore) -> Summary:
    """Force ``targets`` (placeholder paths, thunk IDs, ``THUNK#tag``) with ``options``."""
    started = time.monotonic()
    options.checked()
    expanded = _expand(targets, options)
    refs = sorted({t.ref for t in expanded if t.ref is not None})
    environ = os.environ if options.environ is None else options.environ
    own_storage = _results_storage(options, environ)
    engines, fallback = await _open_engines(options, store, own_storage)
    every = [*engines, *([fallback] if fallback else [])]
    remote = _first_remote(every) or own_storage
    if remote is own_storage and own_storage is not None and options.remote_results.writes:
        # A wrong GG_STORAGE_URI stops the run with its line before anything runs (the
        # Lambda engine probes its own storage the same way); read-only writes nothing.
        try:
            await own_storage.probe()
        except BaseException:
            await _close(every, own_storage)
            raise
    shared = SharedResults(remote, options.remote_results.writes) if remote and options.remote_results.reads else None
    progress = None if options.quiet or not refs else ProgressDisplay(options.progress)
    observer = RunObserver(TraceWriter(options.trace), progress)
    config = ForceConfig(keep_going=options.keep_going, max_attempts=max(1, options.max_attempts),
                         speculate=options.speculate, speculate_min=options.speculate_after,
                         default_timeout=options.default_timeout)
    # Run times of earlier runs order the dispatch (critical path first); this run's are
    # added to them at the end, whatever the outcome.
    estimates = DurationEstimates.of_store(store.root)
    scheduler = Scheduler(store, engines, fallback, config, observer, shared, estimates)
    written = 0
    status = "failed"
    values: dict[str, str] = {}
    try:
        try:
            results = await scheduler.force(refs)
        except ForceFailed as failed:
            # Targets that did reduce are still written: nothing done is thrown away.
            for target in expanded:
                if target.ref in failed.results:
                    await _materialize_or_rebuild(store, scheduler, target, failed.results[target.ref], remote)
            raise
        for target in expanded:
            if target.ref is not None:
                written += await _materialize_or_rebuild(store, scheduler, target, results[target.ref], remote)
                values[target.text] = results[target.ref]
        status = "ok"
    finally:
        fallback_lines = scheduler.fallback_summary()
        for line in fallback_lines:  # said even when quiet: the result came by another path
            print(f"{options.prog}: {line}", file=sys.stderr)
        if scheduler.share_errors:  # slower for the next user, not wrong: said once
            more = f" (and {len(scheduler.share_errors) - 1} more)" if len(scheduler.share_errors) > 1 else ""
            print(f"{options.prog}: remote results: {scheduler.share_errors[0]}{more}", file=sys.stderr)
        observer.event("done", elapsed=round(time.monotonic() - started, 6), status=status,
                       executed=scheduler.executed, ran_on=scheduler.ran_on, fallback=fallback_lines)
        observer.close()
        try:
            estimates.save()
        except OSError as exc:  # costs the next run its dispatch order, nothing else: said once
            print(f"{options.prog}: could not record run times for the next run's order: {exc}", file=sys.stderr)
        await _close(every, own_storage)
    return Summary(len(expanded), written, scheduler.executed, time.monotonic() - started, fallback_lines, values,
                   scheduler.remote_hits, scheduler.shared_written)


async def _run_cancellable(coro):
    """Run ``coro``; SIGINT/SIGTERM cancel it, which kills every running thunk."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        return await task
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def force(targets: Sequence[str], engines: Sequence[str] = ("local",), *, store: LocalStore | None = None,
          **options) -> Summary:
    """Force ``targets`` on ``engines`` (names in the registry) and write them.

    ``options`` are the fields of :class:`ForceOptions` (``jobs``, ``fallback``,
    ``trace``, ``quiet`` ...); ``store`` defaults to the one ``gg`` would use
    ($GG_DIR, or .gg/ here or above). SIGINT/SIGTERM stop the run (finished
    reductions are kept) and raise ``asyncio.CancelledError``.
    """
    return run(targets, ForceOptions(engines=tuple(engines), **options), store)


def run(targets: Sequence[str], options: ForceOptions, store: LocalStore | None = None) -> Summary:
    """:func:`force` with the options as one object (what gg-force builds from its argv)."""
    options.checked()
    return asyncio.run(_run_cancellable(force_async(targets, options, store or LocalStore.locate())))
