"""Run one thunk: the single execution core of the local engine and the Lambda handler.

The caller guarantees that every input blob is in ``store`` (a :class:`LocalStore`;
on Lambda it is a store in ``/tmp``) and that the thunk has no thunk inputs left (the
scheduler rewrites them to values first). :func:`execute` then

1. lays the inputs out under their names in a fresh work directory — hard links to
   the read-only blobs, so no bytes are copied; an input whose name is also an output
   tag is copied, because the function is expected to change it;
2. runs the function blob with argv = the thunk's args and **only** the thunk's
   environment plus documented ``GG_*`` variables: ``GG_DIR`` (a fresh, empty store
   the function may put the thunks of a tail call into) and what the host passes as
   ``runtime_env`` (``GG_PYTHON``: an interpreter that can import the gg runtime);
   ``@{GGHASH:ID}`` is replaced by the blob's path;
3. kills the whole process group on the thunk's timeout or on cancellation;
4. moves every output (and every blob the function left in ``GG_DIR``) into the store,
   verified, and reports their IDs.

It writes no reductions: recording what a thunk reduced to is the caller's decision.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import re
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ir.hashing import hash_file
from ir.ids import InvalidId, parse_id
from ir.store import LocalStore, MissingBlob
from ir.thunk import MalformedThunk, Thunk, parse_thunk

GGHASH_RE = re.compile(r"@\{GGHASH:([^}#]+)(?:#([^}]+))?\}")
STDERR_TAIL = 2000


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


def substitute(text: str, store: LocalStore) -> str:
    """Replace ``@{GGHASH:ID}`` with the path of blob ``ID`` in ``store``."""

    def path_of(match: re.Match[str]) -> str:
        if match.group(2):
            raise InvalidId(f"reference {match.group(0)} was not rewritten before execution")
        return str(store.blob_path(match.group(1)))

    return GGHASH_RE.sub(path_of, text)


def _check_ready(thunk_id: str, thunk: Thunk, store: LocalStore) -> None:
    if thunk.thunks:
        raise ExecutionFailed(thunk_id, f"thunk input {thunk.thunks[0].ref} was not reduced first")
    for item in (*thunk.values, *thunk.executables):
        if not store.has(item.id):
            raise MissingBlob(item.id, str(store.blobs))


def _lay_out(thunk_id: str, thunk: Thunk, store: LocalStore, workdir: Path) -> list[tuple[Path, os.stat_result]]:
    """Place the inputs; return the hard-linked ones with their stat, to check later."""
    linked: list[tuple[Path, os.stat_result]] = []
    outputs = set(thunk.outputs)
    for item in thunk.executables:
        store.mark_executable(item.id)
    for item in (*thunk.values, *thunk.executables):
        if not item.name:
            continue
        target = workdir / item.name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExecutionFailed(thunk_id, f"cannot lay out input {item.name!r}: {exc.strerror}") from None
        source = store.blob_path(item.id)
        if item.name in outputs:
            shutil.copyfile(source, target)
            os.chmod(target, os.stat(source).st_mode | stat.S_IWUSR)
            continue
        try:
            os.link(source, target)
        except FileExistsError:
            raise ExecutionFailed(thunk_id, f"two inputs are both laid out at {item.name!r}") from None
        except OSError:  # another file system: fall back to a read-only copy
            shutil.copyfile(source, target)
            os.chmod(target, os.stat(source).st_mode & ~0o222)
            continue
        linked.append((source, os.stat(source)))
    for link in thunk.links:
        path = workdir / link.name
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(link.target, path)
    return linked


_GROUP_XATTR = "user.gg.group"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _record_group(rundir: Path, pid: int) -> None:
    """Note the function's process group, so a later run can kill it if we die.

    A child cannot be tied to our lifetime without ``preexec_fn`` (which forces a slow
    fork per thunk), so after a ``kill -9`` of the executor its orphans are killed by
    the next :func:`sweep_stale_runs` instead. The start time guards against PID reuse.
    """
    record = f"{pid} {_start_time(pid)}".encode()
    try:
        os.setxattr(rundir, _GROUP_XATTR, record)  # no file to create
    except OSError:  # a file system without user xattrs
        (rundir / ".group").write_bytes(record)


def _kill_recorded_group(rundir: Path) -> None:
    try:
        try:
            record = os.getxattr(rundir, _GROUP_XATTR)
        except OSError:
            record = (rundir / ".group").read_bytes()
        pid_text, started = record.decode().split()
    except (OSError, ValueError):
        return
    pid = int(pid_text)
    if _start_time(pid) == started:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _kill_group(process: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
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
) -> ExecutionResult:
    """Run ``thunk`` once and store its outputs; see the module docstring.

    ``runtime_env`` holds the documented ``GG_*`` variables the host offers to every
    function (e.g. ``GG_PYTHON``, an interpreter that can import the gg runtime); only
    ``GG_`` names are accepted, so a host cannot leak its own environment into a thunk.
    """
    _check_ready(thunk_id, thunk, store)
    scratch = Path(scratch or store.root / "work")
    scratch.mkdir(parents=True, exist_ok=True)
    rundir = Path(tempfile.mkdtemp(dir=scratch, prefix="run-"))
    lock = _hold_lock(rundir)
    # GG_DIR gets its blobs/ and tmp/ only if the function stores something
    # (LocalStore creates them on demand): on many disks every mkdir costs ~1 ms.
    workdir, outstore = rundir / "w", LocalStore(rundir / "gg")
    workdir.mkdir()
    outstore.root.mkdir()
    started = time.monotonic()
    try:
        linked = _lay_out(thunk_id, thunk, store, workdir)
        try:
            argv = [substitute(arg, store) for arg in thunk.args]
            env = dict(entry.split("=", 1) for entry in (substitute(e, store) for e in thunk.envars))
        except InvalidId as exc:
            raise ExecutionFailed(thunk_id, str(exc)) from None
        for name, value in (runtime_env or {}).items():
            if not name.startswith("GG_"):
                raise ValueError(f"runtime variable {name} is not a GG_ variable")
            env[name] = value
        env["GG_DIR"] = str(outstore.root)
        timeout = thunk.timeout_ms / 1000 if thunk.timeout_ms else default_timeout
        await _run(thunk_id, argv, str(store.blob_path(thunk.function_hash)), env, workdir, rundir, timeout)
        _check_inputs_intact(thunk_id, linked, store)
        outputs = _collect_outputs(thunk_id, thunk, workdir, store)
        created = _collect_created(thunk_id, outstore, store)
        return ExecutionResult(thunk_id, outputs, created, time.monotonic() - started)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ResourceExhausted(f"thunk {thunk_id}: no space left on the worker's disk "
                                    f"({exc.strerror}: {exc.filename or scratch})") from None
        raise
    finally:
        _remove_tree(rundir)
        os.close(lock)


def _hold_lock(rundir: Path) -> int:
    """Lock a run directory for as long as this process uses it (see sweep_stale_runs).

    The lock is on the directory itself, so it costs no file. A sweeper can only take it
    in the instant between mkdtemp and here; the run then fails to lay out its inputs,
    which is an infrastructure error and retried.
    """
    fd = os.open(rundir, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


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
        _remove_tree(rundir)


async def _run(
    thunk_id: str, argv: list[str], program: str, env: dict[str, str], workdir: Path, rundir: Path,
    timeout: float | None,
) -> None:
    # stdout and stderr share one pipe: a failure report shows them interleaved, as a
    # terminal would. Only the tail is kept, in memory: a log file would need a file
    # creation per thunk, and on a full disk it would lose exactly the lines that say so.
    oom_before = _oom_kills()
    try:
        process = await asyncio.create_subprocess_exec(
            argv[0], *argv[1:], executable=program, cwd=workdir, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        raise ExecutionFailed(thunk_id, f"cannot start function: {exc.strerror}", argv) from None
    _record_group(rundir, process.pid)
    tail = bytearray()
    reader = asyncio.ensure_future(_keep_tail(process.stdout, tail))
    try:
        code = await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        _kill_group(process)
        await process.wait()
        await _drain(reader)
        raise ExecutionFailed(thunk_id, f"timed out after {timeout:g} s", argv, _text(tail)) from None
    except BaseException:
        _kill_group(process)
        await asyncio.shield(process.wait())
        reader.cancel()
        raise
    _kill_group(process)  # nothing the function started may outlive it
    await _drain(reader)
    if code != 0:
        if _disk_full(workdir) or b"No space left on device" in tail:
            raise ResourceExhausted(f"thunk {thunk_id}: {_describe_status(code)} with the worker's disk full "
                                    "(no space left on device)", _text(tail))
        if code == -signal.SIGKILL and _oom_kills() > oom_before:
            raise ResourceExhausted(f"thunk {thunk_id}: killed by the out-of-memory killer", _text(tail))
        raise ExecutionFailed(thunk_id, _describe_status(code), argv, _text(tail))


async def _keep_tail(stream: asyncio.StreamReader | None, tail: bytearray) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        tail += chunk
        del tail[:-STDERR_TAIL]


async def _drain(reader: asyncio.Future) -> None:
    """The group is dead, so EOF comes at once, unless something escaped the group
    still holds the pipe: then stop reading after a moment."""
    try:
        await asyncio.wait_for(reader, 1.0)
    except TimeoutError:
        pass


def _text(tail: bytearray) -> str:
    return bytes(tail).decode(errors="replace")


def _disk_full(path: Path) -> bool:
    """True when the file system under ``path`` has (almost) no room left: a function
    that failed then most likely failed for want of space, not through its own fault.
    (A tool that deletes its partial output on error frees the space again; its
    message, "No space left on device", is the other sign _run looks for.)"""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 4 << 20


def _oom_kills() -> int:
    """The cgroup's count of out-of-memory kills (cgroup v2, else v1), 0 where unknown."""
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        try:
            with open(path, "rb") as handle:
                for line in handle:
                    if line.startswith(b"oom_kill "):
                        return int(line.split()[1])
        except (OSError, ValueError):
            continue
    return 0


def _check_inputs_intact(thunk_id: str, linked: list[tuple[Path, os.stat_result]], store: LocalStore) -> None:
    """A function that changed a hard-linked input changed the store's blob: drop it."""
    for source, before in linked:
        after = os.stat(source)
        # Mode is compared only for write permission: another run may legitimately
        # add the execute bit to a shared blob meanwhile (LocalStore.mark_executable).
        changed = (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
        if changed or after.st_mode & 0o222:
            store.remove_corrupt(source.name)
            raise ExecutionFailed(thunk_id, f"the function modified its input {source.name} in place")


def _collect_outputs(thunk_id: str, thunk: Thunk, workdir: Path, store: LocalStore) -> list[Output]:
    outputs = []
    for tag in thunk.outputs:
        path = workdir / tag
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise ExecutionFailed(thunk_id, f"output {tag!r} was not produced") from None
        if not stat.S_ISREG(st.st_mode):
            raise ExecutionFailed(thunk_id, f"output {tag!r} is not a regular file")
        executable = bool(st.st_mode & stat.S_IXUSR)
        if st.st_nlink > 1:  # an input passed through unchanged: do not move the blob
            ident = hash_file(path)
            if not store.has(ident):
                ident = store.put_file(path, executable)
        else:
            ident = store.adopt(path, executable)
        if parse_id(ident).is_thunk:
            try:
                parse_thunk(store.read_bytes(ident), where=f"output {tag!r}")
            except MalformedThunk as exc:
                raise ExecutionFailed(thunk_id, f"returned a malformed thunk: {exc}") from None
        outputs.append(Output(tag, ident, executable))
    return outputs


def _collect_created(thunk_id: str, outstore: LocalStore, store: LocalStore) -> list[str]:
    created = []
    if not outstore.blobs.is_dir():
        return created
    for path in sorted(outstore.blobs.iterdir()):
        ident = path.name
        try:
            parse_id(ident)
        except InvalidId:
            raise ExecutionFailed(thunk_id, f"function left a blob with a malformed name {ident!r}") from None
        actual = store.adopt(path, bool(os.stat(path).st_mode & stat.S_IXUSR))
        if actual != ident:
            raise ExecutionFailed(thunk_id, f"function stored blob {ident} whose content hashes to {actual}")
        created.append(ident)
    return created


def _remove_tree(path: Path) -> None:
    """Remove a run directory even where the function left read-only subdirectories."""

    def make_writable_and_retry(function, target, _excinfo):
        os.chmod(os.path.dirname(target), 0o700)
        if os.path.isdir(target) and not os.path.islink(target):
            os.chmod(target, 0o700)
        function(target)

    shutil.rmtree(path, onerror=make_writable_and_retry)
