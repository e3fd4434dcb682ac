"""Run one thunk: the single execution core of the local engine and the Lambda handler.

The caller guarantees that every input blob is in ``store`` (a :class:`LocalStore`;
on Lambda it is a store in ``/tmp``) and that the thunk has no thunk inputs left (the
scheduler rewrites them to values first). :func:`execute` then

1. verifies every input against its ID (:meth:`LocalStore.verify_for_use`: one
   ``lstat`` for a blob already verified and unchanged since, a hash otherwise) and
   lays the inputs out under their names in an empty work directory (a run
   directory of the engine's :class:`~executor.rundirs.RunDirs`) — hard links to
   the read-only blobs, so no bytes are copied; an input whose name is also an output
   tag is copied, because the function is expected to change it;
2. runs the function blob with argv = the thunk's args and **only** the thunk's
   environment plus documented ``GG_*`` variables: ``GG_DIR`` (a fresh, empty store
   the function may put the thunks of a tail call into) and what the host passes as
   ``runtime_env`` (``GG_PYTHON``: an interpreter that can import the gg runtime);
   ``@{GGHASH:ID}`` is replaced by the blob's path;
3. kills the whole process group on the thunk's timeout or on cancellation
   (:mod:`executor.spawn`: one ``vfork``/``exec``, the exit watched through a pidfd);
4. verifies the inputs again (the function runs as the same user and could have
   rewritten a blob), then moves every output (and every blob the function left in
   ``GG_DIR``) into the store, verified, and reports their IDs, with what the
   function printed (stdout and stderr, the first :data:`KEPT_OUTPUT` bytes): a
   successful compile's warnings are shown and kept like ccache keeps them.

Every path it creates, moves or removes in the work directory is resolved beneath it
without following symbolic links (:mod:`executor.confine`): whatever the function
leaves there, nothing outside is touched.

It writes no reductions: recording what a thunk reduced to is the caller's decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import re
import signal
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ir.ids import InvalidId, parse_id
from ir.store import CorruptBlob, DroppedCorruptBlob, LocalStore, MissingBlob, NotRegularFile
from ir.thunk import MalformedThunk, Thunk, parse_thunk, validate_links

from . import confine, layout, spawn
from .rundirs import RunDir, RunDirs, remove_tree

GGHASH_RE = re.compile(r"@\{GGHASH:([^}#]+)(?:#([^}]+))?\}")


class ExecutionFailed(Exception):
    """The function itself failed: re-running it elsewhere would fail the same way."""

    def __init__(self, thunk_id: str, reason: str, argv: list[str] | None = None, stderr_tail: str = ""):
        self.thunk_id = thunk_id
        self.reason = reason
        self.argv = argv or []
        self.stderr_tail = stderr_tail
        super().__init__(f"thunk {thunk_id} failed: {reason}")

    def describe(self) -> str:
        """A multi-line report: what failed, the command, and the tail of its output."""
        lines = [str(self)]
        if self.argv:
            lines.append("  command: " + " ".join(self.argv))
        if self.stderr_tail.strip():
            lines.append("  output (tail of stdout and stderr):")
            lines.extend("    " + line for line in self.stderr_tail.rstrip().splitlines()[-20:])
        return "\n".join(lines)


def describe_output(thunk_id: str, thunk: Thunk, output: bytes) -> str:
    """What a successful run printed, for the user: one line naming the thunk (its ID, as
    a failure's report names it, :meth:`ExecutionFailed.describe`) and, briefly, what it
    ran (:func:`short_command`: a warning is read next to the file it is about, and a
    compile's full command is a hundred words), then the output as the tool wrote it (not
    indented: ``file:line:`` stays where editors and IDEs look for it), ending in a
    newline."""
    text = output.decode(errors="replace")
    return f"thunk {thunk_id} ({short_command(thunk)}) succeeded with output:\n" + \
        (text if text.endswith("\n") else text + "\n")


SHORT_COMMAND_FILES = 3
_LOADER_OPTIONS_WITH_VALUE = frozenset({"--library-path", "--preload", "--argv0", "--audit"})


def short_command(thunk: Thunk) -> str:
    """The program's name and the input files its arguments name (at most
    ``SHORT_COMMAND_FILES``), e.g. ``cc1 r/lapi.c``; the dynamic loader the toolchain is
    run through (``ld-linux… --library-path gg/lib PROGRAM``) is skipped."""
    args = list(thunk.args)
    if args and os.path.basename(args[0]).startswith(("ld-linux", "ld.so", "ld64.so")):
        i = 1
        while i < len(args) and args[i].startswith("--"):
            i += 2 if args[i] in _LOADER_OPTIONS_WITH_VALUE else 1
        args = args[i:]
    if not args:
        return "no command"
    named = {item.name for item in (*thunk.values, *thunk.thunks) if item.name}
    files = [arg for arg in args[1:] if arg in named]
    shown = " ".join([os.path.basename(args[0]), *files[:SHORT_COMMAND_FILES]])
    return shown + (f" and {len(files) - SHORT_COMMAND_FILES} more" if len(files) > SHORT_COMMAND_FILES else "")


class InfrastructureError(Exception):
    """Something around the function failed (missing blob, disk, ...): worth a retry."""


class ResourceExhausted(InfrastructureError):
    """The worker ran out of disk or memory (or an invocation out of time) under the
    function: not the thunk's fault, and another attempt on the same kind of worker
    would run out again, so the scheduler moves it to the fallback engine at once.
    ``output_tail`` is what the function printed last (kept in memory: the disk the
    log would be on may be the one that is full)."""

    def __init__(self, message: str, output_tail: str = ""):
        super().__init__(message)
        self.output_tail = output_tail


@dataclass(frozen=True)
class Output:
    tag: str
    id: str
    executable: bool


@dataclass
class ExecutionResult:
    thunk_id: str
    outputs: list[Output]
    created: list[str] = field(default_factory=list)  # blobs the function wrote to GG_DIR
    duration: float = 0.0
    # What the function printed (stdout and stderr interleaved, see kept_output); empty
    # for most thunks, which is what keeps a silent thunk free of any extra cost.
    output: bytes = b""


# A successful run's output is kept up to this size (its start, as a terminal shows it),
# then a line says it was cut: a compile's warnings fit many times over, and a thunk
# that floods its output must not fill the store or the terminal on every warm build.
KEPT_OUTPUT = 64 << 10
TRUNCATED = "(output truncated: {total} bytes in all, the first {kept} kept)\n"


def kept_output(head: bytes, total: int) -> bytes:
    """The output to keep and show for a successful run that printed ``total`` bytes,
    of which ``head`` are the first: all of it, or the start and a line saying so."""
    if total <= len(head):
        return head
    cut = head if head.endswith(b"\n") else head + b"\n"
    return cut + TRUNCATED.format(total=total, kept=len(head)).encode()


def substitute(text: str, store: LocalStore, inputs: frozenset[str] | None = None) -> str:
    """Replace ``@{GGHASH:ID}`` with the path of blob ``ID`` in ``store``.

    With ``inputs``, only those IDs may be referenced: a blob that is not an input is
    neither verified nor sent to a remote worker.
    """

    def path_of(match: re.Match[str]) -> str:
        if match.group(2):
            raise InvalidId(f"reference {match.group(0)} was not rewritten before execution")
        if inputs is not None and match.group(1) not in inputs:
            raise InvalidId(f"reference {match.group(0)} names a blob that is not an input")
        return str(store.blob_path(match.group(1)))

    return GGHASH_RE.sub(path_of, text)


def _input_names(thunk: Thunk) -> dict[str, str]:
    """Blob ID -> the name it is laid out under (for messages), for every value input."""
    names: dict[str, str] = {}
    for item in (*thunk.values, *thunk.executables):
        if item.name or item.id not in names:
            names[item.id] = item.name
    return names


def _verify_inputs(names: dict[str, str], store: LocalStore) -> dict[str, os.stat_result]:
    """Verify every input (``names``: see :func:`_input_names`) against its ID; a corrupt one is dropped.

    Returns each blob's stat as verified. Raises :class:`DroppedCorruptBlob` (a
    :class:`MissingBlob`: it is gone now, so it is fetched again or rebuilt by its
    producer) with one line naming the input.
    """
    checked = {}
    for ident, name in names.items():
        try:
            checked[ident] = store.verify_for_use(ident)
        except CorruptBlob as exc:
            raise _dropped(ident, name, exc) from None
    return checked


def _dropped(ident: str, name: str, exc: CorruptBlob) -> DroppedCorruptBlob:
    label = f"input {name!r} ({ident})" if name else f"input {ident}"
    return DroppedCorruptBlob(ident, (
        f"{label} is corrupt in {exc.where} (its content hashes to {exc.actual}) and was dropped; "
        "if it is a source file, store it again with 'gg collect FILE' (a gg-infer run stores only "
        "what the build runs again)"))


def _check_ready(thunk_id: str, thunk: Thunk, store: LocalStore, names: dict[str, str]) -> dict[str, os.stat_result]:
    if thunk.thunks:
        raise ExecutionFailed(thunk_id, f"thunk input {thunk.thunks[0].ref} was not reduced first")
    try:
        validate_links(thunk)
    except MalformedThunk as exc:
        raise ExecutionFailed(thunk_id, str(exc)) from None
    checked = _verify_inputs(names, store)
    for item in thunk.executables:
        st = checked[item.id]
        if not st.st_mode & stat.S_IXUSR:
            # The chmod moves the ctime, so the blob is hashed again (once: the bit stays).
            store.mark_executable(item.id)
            checked[item.id] = _verify_inputs({item.id: names[item.id]}, store)[item.id]
    return checked


def _lay_out(thunk_id: str, rundirs: RunDirs, want: layout.Plan, store: LocalStore,
             checked: dict[str, os.stat_result], names: dict[str, str]) -> RunDir:
    """A run directory with the inputs (verified once more as they are linked) and the
    links laid out in ``w`` (:mod:`executor.layout`).

    A reused directory that cannot be reconciled (the function left something that
    cannot be removed, or a name changed under the walk) is removed and the layout made
    once more in a fresh one; only a fresh directory's failure is the thunk's.
    """
    run = rundirs.take(want.inputs)
    while True:
        reused = run.layout.used
        try:
            run.layout.apply(want, store, checked)
            return run
        except CorruptBlob as exc:
            rundirs.give_back(run)
            raise _dropped(exc.ident, names.get(exc.ident, ""), exc) from None
        except (OSError, confine.Escape) as exc:
            rundirs.discard(run)
            if not reused:
                if isinstance(exc, confine.Escape):
                    raise ExecutionFailed(thunk_id, f"cannot lay out the inputs: {exc}") from None
                raise
            run = rundirs.make()
        except BaseException:
            rundirs.give_back(run)
            raise


_GROUP_XATTR = "user.gg.group"


def _start_ticks(pid: int) -> int | None:
    """The kernel's start time of ``pid`` in clock ticks since boot (field 22 of
    /proc/PID/stat), or None. Only the sweeper reads it: read just after the spawn it
    blocks until the child's ``exec`` is through (0.1-1 ms)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _boot_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def _record_group(rundir_fd: int, pid: int, spawned_after_ns: int) -> None:
    """Note the function's process group, so a later run can kill it if we die.

    A child cannot be tied to our lifetime without ``preexec_fn`` (which would force a
    slow fork per thunk; :mod:`executor.spawn` relies on ``vfork``), so after a
    ``kill -9`` of the executor its orphans are killed by the next
    :func:`sweep_stale_runs` instead. The record is the PID and the window (boot-time
    clock, ns) in which the child was started: a process that later has the same PID
    but started outside the window is not ours (PID reuse); the kernel's start time
    has a resolution of one clock tick, so the guard is as tight as comparing start
    times, without reading /proc while the child execs. The function is already
    running: the record goes through the run directory's descriptor and never follows
    a link it may have planted.
    """
    record = f"{pid} {spawned_after_ns} {_boot_ns()}".encode()
    try:
        os.setxattr(rundir_fd, _GROUP_XATTR, record)  # no file to create
    except OSError:  # a file system without user xattrs
        try:
            with contextlib.suppress(FileNotFoundError):  # a reused run directory's last record
                os.unlink(".group", dir_fd=rundir_fd)
            fd = os.open(".group", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=rundir_fd)
        except OSError:
            return
        with os.fdopen(fd, "wb") as handle:
            handle.write(record)


def _is_recorded_process(pid: int, window: list[str]) -> bool:
    """True if ``pid`` is still the process recorded (see :func:`_record_group`)."""
    ticks = _start_ticks(pid)
    if ticks is None:
        return False
    if len(window) == 1:  # a record from before the window: the start time itself
        return str(ticks) == window[0]
    tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    started_ns = ticks * tick_ns  # rounded down to a tick
    return int(window[0]) - tick_ns <= started_ns <= int(window[1])


def _kill_recorded_group(rundir: Path) -> None:
    try:
        try:
            record = os.getxattr(rundir, _GROUP_XATTR)
        except OSError:
            record = (rundir / ".group").read_bytes()
        pid_text, *window = record.decode().split()
        pid = int(pid_text)
        if len(window) not in (1, 2) or not _is_recorded_process(pid, window):
            return
    except (OSError, ValueError):
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _describe_status(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


async def execute(
    thunk_id: str,
    thunk: Thunk,
    store: LocalStore,
    scratch: Path | None = None,
    default_timeout: float | None = None,
    runtime_env: Mapping[str, str] | None = None,
    rundirs: RunDirs | None = None,
) -> ExecutionResult:
    """Run ``thunk`` once and store its outputs; see the module docstring.

    ``runtime_env`` holds the documented ``GG_*`` variables the host offers to every
    function (e.g. ``GG_PYTHON``, an interpreter that can import the gg runtime); only
    ``GG_`` names are accepted, so a host cannot leak its own environment into a thunk.
    ``rundirs`` is the engine's pool of run directories (:mod:`executor.rundirs`),
    reused between thunks; without it, a run directory is made under ``scratch``
    (default ``STORE/work``) for this call and removed after it.
    """
    names = _input_names(thunk)
    checked = _check_ready(thunk_id, thunk, store, names)
    try:
        want = layout.plan(thunk)
    except layout.LayoutError as exc:
        raise ExecutionFailed(thunk_id, str(exc)) from None
    own = rundirs is None
    if rundirs is None:
        rundirs = RunDirs(scratch or store.root / "work", reuse=False)
    run: RunDir | None = None
    started = time.monotonic()
    try:
        run = _lay_out(thunk_id, rundirs, want, store, checked, names)
        inputs = frozenset(names)
        try:
            argv = [substitute(arg, store, inputs) for arg in thunk.args]
            env = dict(entry.split("=", 1) for entry in (substitute(e, store, inputs) for e in thunk.envars))
        except InvalidId as exc:
            raise ExecutionFailed(thunk_id, str(exc)) from None
        for name, value in (runtime_env or {}).items():
            if not name.startswith("GG_"):
                raise ValueError(f"runtime variable {name} is not a GG_ variable")
            env[name] = value
        env["GG_DIR"] = run.gg
        timeout = thunk.timeout_ms / 1000 if thunk.timeout_ms else default_timeout
        output = await _run(thunk_id, argv, str(store.blob_path(thunk.function_hash)), env, run, rundirs, timeout)
        _check_inputs_intact(thunk_id, names, store)
        if _large_outputs(thunk, run.work_fd):  # hashing them would hold up every other thunk
            collecting = asyncio.ensure_future(asyncio.to_thread(_collect, thunk_id, thunk, run, store))
            try:
                outputs, created = await asyncio.shield(collecting)
            except asyncio.CancelledError:  # the thread cannot be stopped: let it finish first
                await asyncio.wait([collecting])
                raise
        else:
            outputs, created = _collect(thunk_id, thunk, run, store)
        return ExecutionResult(thunk_id, outputs, created, time.monotonic() - started, output)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ResourceExhausted(f"thunk {thunk_id}: no space left on the worker's disk "
                                    f"({exc.strerror}: {exc.filename or rundirs.scratch})") from None
        raise
    finally:
        if run is not None:
            if own:  # removed next: unlink the blobs first, keeping their verified state
                with contextlib.suppress(OSError, confine.Escape):
                    run.layout.clear(store)
            rundirs.give_back(run)
        if own:
            rundirs.close()


# Outputs larger than this in total are hashed and moved in a worker thread.
LARGE_OUTPUTS = 1 << 20


def _large_outputs(thunk: Thunk, work_fd: int) -> bool:
    """True if the outputs add up to more than :data:`LARGE_OUTPUTS` (a size estimate
    only: nothing is opened or collected here, and a path that is not there counts 0)."""
    total = 0
    for tag in thunk.outputs:
        try:
            total += os.stat(tag, dir_fd=work_fd, follow_symlinks=False).st_size
        except (OSError, ValueError):
            continue
    return total > LARGE_OUTPUTS


def _collect(thunk_id: str, thunk: Thunk, run: RunDir, store: LocalStore) -> tuple[list[Output], list[str]]:
    return _collect_outputs(thunk_id, thunk, run.work_fd, store), _collect_created(thunk_id, run.fd, store)


def sweep_stale_runs(scratch: Path) -> None:
    """Remove run directories left by a killed process (their lock is no longer held).

    Several processes may share one store; a directory whose lock someone still
    holds is in use and is left alone.
    """
    if not scratch.is_dir():
        return
    for rundir in scratch.glob("run-*"):
        try:
            fd = os.open(rundir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        finally:
            os.close(fd)
        _kill_recorded_group(rundir)
        remove_tree(str(rundir))


async def _run(thunk_id: str, argv: list[str], program: str, env: dict[str, str], run: RunDir,
               rundirs: RunDirs, timeout: float | None) -> bytes:
    """Run the function; return what it printed (:func:`kept_output`) if it succeeded."""
    oom_before = rundirs.oom_kills()
    spawned_after = _boot_ns()
    try:
        finished = await spawn.run(argv, program, env, run.work, timeout, stdin=rundirs.devnull(),
                                   on_start=lambda pid: _record_group(run.fd, pid, spawned_after),
                                   keep_head=KEPT_OUTPUT)
    except OSError as exc:
        raise ExecutionFailed(thunk_id, f"cannot start function: {exc.strerror}", argv) from None
    code = finished.code
    if finished.timed_out:
        raise ExecutionFailed(thunk_id, f"timed out after {timeout:g} s", argv, _text(finished.tail))
    if code != 0:
        if _disk_full(run.work) or b"No space left on device" in finished.tail:
            raise ResourceExhausted(f"thunk {thunk_id}: {_describe_status(code)} with the worker's disk full "
                                    "(no space left on device)", _text(finished.tail))
        if code == -signal.SIGKILL and rundirs.oom_kills() > oom_before:
            raise ResourceExhausted(f"thunk {thunk_id}: killed by the out-of-memory killer", _text(finished.tail))
        raise ExecutionFailed(thunk_id, _describe_status(code), argv, _text(finished.tail))
    return kept_output(finished.head, finished.total)


def _text(tail: bytes) -> str:
    return tail.decode(errors="replace")


def _disk_full(path: str) -> bool:
    """True when the file system under ``path`` has (almost) no room left: a function
    that failed then most likely failed for want of space, not through its own fault.
    (A tool that deletes its partial output on error frees the space again; its
    message, "No space left on device", is the other sign _run looks for.)"""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 4 << 20


def _check_inputs_intact(thunk_id: str, names: dict[str, str], store: LocalStore) -> None:
    """Verify the inputs again: the function could reach and rewrite any blob.

    One ``lstat`` each when nothing changed; a blob whose stat moved is hashed again,
    and one that no longer matches its ID is dropped and fails the thunk (its result
    may have been computed from the changed bytes).
    """
    for ident, name in names.items():
        try:
            store.verify_for_use(ident)
        except CorruptBlob:
            label = f"{name!r} ({ident})" if name else ident
            raise ExecutionFailed(thunk_id, f"input {label} was modified in the store while the function ran; "
                                  "the blob was dropped") from None
        except MissingBlob:
            raise InfrastructureError(f"input {ident} vanished from {store.blobs} while thunk {thunk_id} ran") \
                from None


def _collect_outputs(thunk_id: str, thunk: Thunk, work_fd: int, store: LocalStore) -> list[Output]:
    outputs = []
    for tag in thunk.outputs:
        if "/" in tag or tag in ("", ".", ".."):
            try:
                parent_fd, leaf = confine.open_parent(work_fd, tag)
            except FileNotFoundError:
                raise ExecutionFailed(thunk_id, f"output {tag!r} was not produced") from None
            except confine.Escape as exc:
                raise ExecutionFailed(thunk_id, f"output {tag!r} was not collected: {exc}") from None
        else:  # a plain name in the work directory itself: no walk, no descriptor to open
            parent_fd, leaf = work_fd, tag
        try:
            ident, executable = store.adopt_at(parent_fd, leaf)
        except FileNotFoundError:
            raise ExecutionFailed(thunk_id, f"output {tag!r} was not produced") from None
        except NotRegularFile as exc:
            raise ExecutionFailed(thunk_id, f"output {tag!r} {exc}") from None
        finally:
            if parent_fd != work_fd:
                os.close(parent_fd)
        if parse_id(ident).is_thunk:
            try:
                parse_thunk(store.read_bytes(ident), where=f"output {tag!r}")
            except MalformedThunk as exc:
                raise ExecutionFailed(thunk_id, f"returned a malformed thunk: {exc}") from None
        outputs.append(Output(tag, ident, executable))
    return outputs


def _collect_created(thunk_id: str, rundir_fd: int, store: LocalStore) -> list[str]:
    """Blobs the function stored in ``GG_DIR/blobs`` (opened beneath the run directory)."""
    created: list[str] = []
    try:
        gg_fd = confine.open_dir(rundir_fd, "gg")
        try:
            blobs_fd = confine.open_dir(gg_fd, "blobs")
        finally:
            os.close(gg_fd)
    except FileNotFoundError:
        return created
    except confine.Escape as exc:
        raise ExecutionFailed(thunk_id, f"GG_DIR is not inside the run directory: {exc}") from None
    try:
        for name in sorted(os.listdir(blobs_fd)):
            try:
                parse_id(name)
            except InvalidId:
                raise ExecutionFailed(thunk_id, f"function left a blob with a malformed name {name!r}") from None
            try:
                actual, _executable = store.adopt_at(blobs_fd, name)
            except NotRegularFile as exc:
                raise ExecutionFailed(thunk_id, f"GG_DIR blob {name} {exc}") from None
            if actual != name:
                raise ExecutionFailed(thunk_id, f"function stored blob {name} whose content hashes to {actual}")
            created.append(name)
    finally:
        os.close(blobs_fd)
    return created
