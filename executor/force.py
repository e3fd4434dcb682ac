"""``force(targets, engines=...)``: the library call behind ``gg-force``.

The CLI, the examples and the benches all call this instead of building an argv. It
opens the engines by name through the registry (:mod:`executor.engines`), runs the
scheduler, writes every target that reduced, and closes what it opened. Errors are
raised, never printed as exit codes: :class:`~ir.errors.UsageError` (a bad option or
engine name), :class:`~ir.errors.ConfigError` (a wrong setting), :class:`ForceFailed`
(a thunk failed), :class:`~executor.targets.TargetError`, store errors;
``asyncio.CancelledError`` when a signal stopped the run. Work that ran on the fallback
engine is said in one line per reason on stderr, even when ``quiet``.

A run whose every target is already reduced locally takes the fast path
(:mod:`executor.cached`): no thunk is loaded and no engine opened. The scheduler path,
with asyncio, the engines and protobuf behind it, is imported only when a run needs it,
so that a fresh ``gg-force`` on a finished build costs little more than its reads and
writes.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from ir.errors import UsageError
from ir.store import CorruptBlob, LocalStore, MissingBlob

from .cached import resolve_cached
from .engines import DEFAULT_THUNK_TIMEOUT, ENGINES, EngineOptions, EngineRegistry
from .gc_pacing import fewer_collections
from .observe import RunObserver
from .progress import ProgressDisplay
from .remote_results import RemoteResultsMode, SharedResults
from .target_writer import TargetWriter
from .targets import Target, materialize, parse_target, thin_archive_placeholders
from .trace import TraceWriter

if TYPE_CHECKING:  # the scheduler path's types; imported where used (see the module docstring)
    import asyncio

    from ir.storage import RemoteStorage, Traffic

    from .engine import Engine
    from .scheduler import ForceFailed, Scheduler

# Allocations between young collections while targets are parsed and the cached path
# runs (the default is 700; the scheduler's run uses gc_pacing's own).
CACHED_PATH_YOUNG = 1_000_000

__all__ = ["ForceFailed", "ForceOptions", "Summary", "force", "force_async", "run"]


def __getattr__(name: str) -> object:
    if name == "ForceFailed":  # part of this module's interface; defined with the scheduler
        from .scheduler import ForceFailed

        return ForceFailed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ForceOptions(NamedTuple):
    """Everything a run can be told; the defaults are gg-force's. (Immutable; a named
    tuple, not a dataclass: a fresh gg-force on a finished build does not import
    dataclasses.)"""

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
    environ: Mapping[str, str] | None = None
    registry: EngineRegistry = ENGINES
    # Share reductions through the remote store (the engines' storage, else
    # GG_STORAGE_URI): read-write, read-only or off (executor/remote_results.py).
    remote_results: RemoteResultsMode = RemoteResultsMode.READ_WRITE
    # Seconds a lease on a running thunk lasts unless renewed (executor/inflight.py);
    # None: $GG_LEASE_SECONDS, else 60.
    lease_seconds: float | None = None

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
        if self.lease_seconds is not None and not self.lease_seconds > 0:
            raise UsageError(f"lease_seconds {self.lease_seconds:g} must be a positive number of seconds")
        if not isinstance(self.remote_results, RemoteResultsMode):
            raise UsageError(f"remote_results {self.remote_results!r} is not a RemoteResultsMode")
        return self


class Summary(NamedTuple):
    """What a run did (see :class:`ForceOptions` for why not a dataclass)."""

    targets: int
    written: int
    executed: int
    elapsed: float
    fallback: list[str]
    results: dict[str, str]  # target text -> value ID
    remote_hits: int = 0  # thunks reduced by a record in the remote store
    shared: int = 0  # reductions this run wrote to the remote store
    peer_reduced: int = 0  # thunks a concurrent run reduced while this one waited for them
    # Placeholders that were real files by the time this run came to write them (a
    # concurrent run on the same tree wrote them first).
    written_meanwhile: int = 0
    # Bytes this run moved to and from the remote storage (None: no remote storage was
    # used, or its backend does not count), and which storage that was.
    traffic: Traffic | None = None
    storage: str = ""
    # Blobs that travelled inside engine invocations instead (Lambda: small inputs and
    # outputs), None if no engine counts such.
    inline: Traffic | None = None

    def traffic_line(self) -> str | None:
        """``12.3 MB up, 0.4 MB down (s3://bucket/prefix); 1.1 MB up, 0.2 MB down inside
        invocations``, None without a remote storage."""
        if not self.storage:
            return None
        line = (f"{self.traffic.describe()} ({self.storage})" if self.traffic is not None
                else f"transfers not counted ({self.storage} does not count them)")
        if self.inline is not None and (self.inline.up or self.inline.down):
            line += f"; {self.inline.describe()} inside invocations"
        return line


def _results_storage(options: ForceOptions, environ: Mapping[str, str]) -> RemoteStorage | None:
    """The storage GG_STORAGE_URI names when the run shares results (None if it is not
    set or sharing is off). Engines without storage of their own (local) are given it,
    so they fetch the values that remote records name; nothing is contacted yet."""
    uri = environ.get("GG_STORAGE_URI")
    if not uri or not options.remote_results.reads:
        return None
    from ir.storage import open_storage

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


def _traffic(engines: Sequence[Engine],
             shared: RemoteStorage | None) -> tuple[Traffic | None, str, Traffic | None]:
    """What the run's remote storages counted (summed: an engine and the results may use
    separate objects on one store), which storage that was ("" if none was used), and
    what the engines carried inside their invocations (None if none counts that)."""
    from ir.storage import Metered, Traffic  # the scheduler path: see the module docstring

    remotes = {id(r): r for r in [*(e.remote for e in engines if e.remote is not None), *([shared] if shared else [])]}
    metered = [e for e in {id(e): e for e in engines}.values() if isinstance(e, Metered)]
    inline = None
    if metered:
        inline = Traffic()
        for engine in metered:
            inline.add(engine.traffic)
    if not remotes:
        return None, "", inline
    where = ", ".join(sorted({r.uri.partition("?")[0] for r in remotes.values()}))
    counters = [r for r in remotes.values() if isinstance(r, Metered)]
    if len(counters) < len(remotes):
        return None, where, inline
    total = Traffic()
    for counter in counters:
        total.add(counter.traffic)
    return total, where, inline


def _first_remote(engines: Sequence[Engine]):
    return next((e.remote for e in engines if e.remote is not None), None)


async def _materialize_or_rebuild(store: LocalStore, writer: TargetWriter, scheduler: Scheduler, target: Target,
                                  value_id: str, remote) -> tuple[bool, str]:
    """Write a target: (written, the value written). A value gone from every store is
    rebuilt by its producer first (a bucket's expiry rule makes that normal), as the
    scheduler does for inputs; if only a remote record vouched for it, the rebuilt
    value may be another one (the record was wrong), and that one is written."""
    local = store.has(value_id)
    try:
        return await materialize(store, writer, target, value_id, remote), value_id
    except (MissingBlob, CorruptBlob) as missing:
        # Corrupt in the remote store: as good as gone. (Corrupt locally: reported, and
        # the next run rebuilds it, as before.)
        rebuilt = None if isinstance(missing, CorruptBlob) and local else await scheduler.rebuild(missing.ident)
        if rebuilt is None:
            raise
        if missing.ident == value_id:
            value_id = rebuilt
    return await materialize(store, writer, target, value_id, remote), value_id


def _expand(texts: Sequence[str], options: ForceOptions) -> list[Target]:
    """Targets as given, plus the placeholder members of thin archives among them; a
    file named twice (``libz.so`` and the ``libz.so.1.2`` it links to) is one target."""
    targets: list[Target] = list({t.text: t for t in map(parse_target, texts)}.values())
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


def _force_cached(expanded: Sequence[Target], options: ForceOptions, store: LocalStore,
                  started: float) -> Summary | None:
    """The run, if every target resolves through local records (:mod:`executor.cached`);
    None, having written nothing, if one does not.

    Writes targets as the scheduler path does (each copy hashed: a corrupt value is
    reported and dropped, and the next run rebuilds it), and the trace events a reader
    needs: ``cached`` and ``tailcall`` per node, then ``done`` (no ``queued``: the
    dependencies of a cached node are never read, by either path)."""
    refs = sorted({t.ref for t in expanded if t.ref is not None})
    found = resolve_cached(store, refs)
    if found is None:
        return None
    progress = None if options.quiet or not refs else ProgressDisplay(options.progress)
    observer = RunObserver(TraceWriter(options.trace, started), progress, options.prog)
    observer.counts.discovered = observer.counts.cached = found.nodes
    if observer.tracing:
        for name, fields in found.events():
            observer.trace.write(name, fields)
    written = 0
    status = "failed"
    values: dict[str, str] = {}
    try:
        with TargetWriter(store) as writer:
            executable = found.executable
            for target in expanded:
                if target.ref is not None:
                    value = values[target.text] = found.values[target.ref]
                    written += writer.write(target, value, executable[value])
        status = "ok"
    finally:
        observer.event("done", elapsed=round(time.monotonic() - started, 6), status=status, executed=0,
                       ran_on={}, fallback=[])
        observer.close()
    return Summary(len(expanded), written, 0, time.monotonic() - started, [], values)


async def force_async(targets: Sequence[str], options: ForceOptions, store: LocalStore) -> Summary:
    """Force ``targets`` (placeholder paths, thunk IDs, ``THUNK#tag``) with ``options``
    on the scheduler path (:func:`run` tries the cached fast path first)."""
    started = time.monotonic()
    options.checked()
    return await _force_expanded(_expand(targets, options), options, store, started)


async def _force_expanded(expanded: Sequence[Target], options: ForceOptions, store: LocalStore,
                          started: float, arriving: asyncio.Queue[list[str] | None] | None = None) -> Summary:
    from .critical_path import DurationEstimates
    from .inflight import lease_seconds
    from .scheduler import ForceConfig, ForceFailed, Scheduler  # the scheduler path: see the module docstring

    refs = sorted({t.ref for t in expanded if t.ref is not None})
    environ = os.environ if options.environ is None else options.environ
    period = options.lease_seconds if options.lease_seconds is not None else lease_seconds(environ)
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
    progress = None if options.quiet or not (refs or arriving) else ProgressDisplay(options.progress)
    observer = RunObserver(TraceWriter(options.trace), progress, options.prog)
    config = ForceConfig(keep_going=options.keep_going, max_attempts=max(1, options.max_attempts),
                         speculate=options.speculate, speculate_min=options.speculate_after,
                         default_timeout=options.default_timeout, lease_seconds=period)
    # Run times of earlier runs order the dispatch (critical path first); this run's are
    # added to them at the end, whatever the outcome.
    estimates = DurationEstimates.of_store(store.root)
    scheduler = Scheduler(store, engines, fallback, config, observer, shared, estimates)
    written = 0
    mine: set[Path] = set()  # placeholders this run replaced ...
    theirs: set[Path] = set()  # ... and those already replaced when it came to them
    status = "failed"
    values: dict[str, str] = {}
    writer = TargetWriter(store)
    try:
        try:
            results = await scheduler.force(refs, arriving)
        except ForceFailed as failed:
            # Targets that did reduce are still written: nothing done is thrown away.
            for target in expanded:
                if target.ref in failed.results:
                    await _materialize_or_rebuild(store, writer, scheduler, target, failed.results[target.ref],
                                                  remote)
            raise
        for target in expanded:
            if target.ref is not None:
                wrote, results[target.ref] = await _materialize_or_rebuild(store, writer, scheduler, target,
                                                                           results[target.ref], remote)
                written += wrote
                if target.is_file:  # as a Path: "x.o" and "./x.o" are one file
                    (mine if wrote else theirs).add(Path(target.text))
                values[target.text] = results[target.ref]  # rebuilt: maybe not what a record claimed
        status = "ok"
    finally:
        writer.close()
        fallback_lines = scheduler.fallback_summary()
        for line in fallback_lines:  # said even when quiet: the result came by another path
            print(f"{options.prog}: {line}", file=sys.stderr)
        # Slower for the next user, not wrong: said once -- unless a wrong setting stopped the
        # run, whose one line already says why (lease releases denied meanwhile follow from it).
        if scheduler.share_errors and scheduler.config_error is None:
            more = f" (and {len(scheduler.share_errors) - 1} more)" if len(scheduler.share_errors) > 1 else ""
            print(f"{options.prog}: remote results: {scheduler.share_errors[0]}{more}", file=sys.stderr)
        traffic, storage, inline = _traffic(every, own_storage)
        if storage:
            observer.event("transfer", storage=storage, **(traffic.as_dict() if traffic else {"counted": False}),
                           **({f"inline_{k}": v for k, v in inline.as_dict().items()} if inline else {}))
        observer.event("done", elapsed=round(time.monotonic() - started, 6), status=status,
                       executed=scheduler.executed, ran_on=scheduler.ran_on, fallback=fallback_lines,
                       peer_reduced=scheduler.peer_reduced)
        observer.close()
        try:
            estimates.save()
        except OSError as exc:  # costs the next run its dispatch order, nothing else: said once
            print(f"{options.prog}: could not record run times for the next run's order: {exc}", file=sys.stderr)
        await _close(every, own_storage)
    return Summary(len(expanded), written, scheduler.executed, time.monotonic() - started, fallback_lines, values,
                   scheduler.remote_hits, scheduler.shared_written, scheduler.peer_reduced,
                   len(theirs - mine), traffic, storage, inline)


async def _run_cancellable(coro):
    """Run ``coro``; SIGINT/SIGTERM cancel it, which kills every running thunk."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        return await task
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops the cached path as it stops the scheduler path: as an interrupt
    (exit 130, "interrupted"; a target being written leaves no temp file), not by the
    signal's default of dying on the spot. Handlers belong to the main thread; a
    caller on another thread keeps its own."""
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (asked this way: importing threading costs a start more)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def force(targets: Sequence[str], engines: Sequence[str] = ("local",), *, store: LocalStore | None = None,
          **options) -> Summary:
    """Force ``targets`` on ``engines`` (names in the registry) and write them.

    ``options`` are the fields of :class:`ForceOptions` (``jobs``, ``fallback``,
    ``trace``, ``quiet`` ...); ``store`` defaults to the one ``gg`` would use
    ($GG_DIR, or .gg/ here or above). SIGINT/SIGTERM stop the run (finished
    reductions are kept) and raise ``asyncio.CancelledError``.
    """
    return run(targets, ForceOptions(engines=tuple(engines), **options), store)


def run_arriving(source: BinaryIO, options: ForceOptions, store: LocalStore | None = None) -> Summary:
    """Force thunk IDs as they arrive on ``source``, one per line, until a line ``end``
    (``gg-force --stdin``: how gg-infer's early forcing hands over each output the build
    names). Nothing is written: the placeholders stay for ``gg-force``, which then finds
    the reductions. End of input without ``end`` (the sender died) stops the run as an
    interrupt does; a line that is not a thunk ID is a usage error."""
    import asyncio

    started = time.monotonic()
    options.checked()
    store = store or LocalStore.locate()
    return asyncio.run(_run_cancellable(_force_arriving(source, options, store, started)))


async def _force_arriving(source: BinaryIO, options: ForceOptions, store: LocalStore, started: float) -> Summary:
    import asyncio
    import threading

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[list[str] | None] = asyncio.Queue()
    main = asyncio.current_task()
    assert main is not None
    refused: list[str] = []

    def arrived(text: str | None) -> None:  # on the loop
        if text == "end":
            queue.put_nowait(None)
        elif text is None or not _is_thunk_ref(text):
            if text is not None:
                refused.append(text)
            main.cancel()  # the sender went away without "end", or sent nonsense
        else:
            queue.put_nowait([text])

    def read() -> None:  # a thread: stdin may be a pipe, a file or a terminal
        try:
            for line in source:
                text = line.decode("utf-8", "replace").strip()
                if text:
                    loop.call_soon_threadsafe(arrived, text)
                    if text == "end":
                        return
        except (OSError, ValueError):
            pass
        with contextlib.suppress(RuntimeError):  # the loop may be closed already
            loop.call_soon_threadsafe(arrived, None)

    threading.Thread(target=read, name="gg-force-stdin", daemon=True).start()
    try:
        return await _force_expanded([], options, store, started, arriving=queue)
    except asyncio.CancelledError:
        if refused:
            raise UsageError(f"--stdin: not a thunk ID: {refused[0][:80]!r}") from None
        raise


def _is_thunk_ref(text: str) -> bool:
    from ir.ids import InvalidId, parse_ref

    try:
        return parse_ref(text).is_thunk
    except InvalidId:
        return False


def run(targets: Sequence[str], options: ForceOptions, store: LocalStore | None = None) -> Summary:
    """:func:`force` with the options as one object (what gg-force builds from its argv)."""
    started = time.monotonic()
    options.checked()
    store = store or LocalStore.locate()
    # Parsing the targets and the cached path keep a few objects per target alive to the
    # end and make almost no cycles: with the default pacing, collections that found
    # nothing took ~7% of a fresh gg-force on 10,000 cached targets (perf), and still 5%
    # with the scheduler's pacing. Collections are put off to the end of this step.
    with fewer_collections(CACHED_PATH_YOUNG):
        expanded = _expand(targets, options)
        with _sigterm_interrupts():
            summary = _force_cached(expanded, options, store, started)
    if summary is not None:
        return summary
    import asyncio

    return asyncio.run(_run_cancellable(_force_expanded(expanded, options, store, started)))
