"""Start a function as one child process and wait for it on the event loop.

Why not ``asyncio.create_subprocess_exec``: on Python 3.11 it waits for every child in
a thread of its own (``ThreadedChildWatcher``: a thread start, a lock hand-off and a
self-pipe wake-up per process) and wraps the pipes in transports and stream readers;
for a trivial thunk that was more than the fork/exec itself. Here the child is started
with :class:`subprocess.Popen` (``vfork`` + ``exec`` on Linux, no ``preexec_fn``), its
exit is watched through a pidfd registered with the loop's selector (``pidfd_open``,
Linux ≥ 5.3), and its output pipe is read by a plain reader callback. Where pidfds are
not available the wait runs in the loop's default thread pool instead.

The child leads a new session (its own process group): :func:`kill_group` reaches
everything it started that did not leave the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

OUTPUT_TAIL = 2000
# After the group is killed, EOF on the output pipe comes at once, unless something
# that escaped the group still holds it: then stop reading after this long.
DRAIN_SECONDS = 1.0


@dataclass
class Finished:
    """How a child ended: ``code`` as :attr:`subprocess.Popen.returncode` (negative:
    killed by that signal), the tail of its output, whether the timeout killed it;
    ``head``, the first ``keep_head`` bytes of its output, and ``total``, how many
    bytes it wrote in all (a successful run's output is kept from its start, like a
    terminal shows it; a failure's report wants the end)."""

    code: int
    tail: bytes
    timed_out: bool
    head: bytes = b""
    total: int = 0


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class _Child:
    """The loop-side state of one running child: exit and output callbacks."""

    def __init__(self, loop: asyncio.AbstractEventLoop, process: subprocess.Popen, output_fd: int,
                 keep_head: int = 0):
        self.loop = loop
        self.process = process
        self.output_fd = output_fd
        self.tail = bytearray()
        self.keep_head = keep_head
        self.head = bytearray()
        self.total = 0
        self.exited: asyncio.Future[int] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()
        self.pidfd = -1
        try:
            self.pidfd = os.pidfd_open(process.pid)
        except (AttributeError, OSError):  # no pidfds here: wait in a thread
            waiting = loop.run_in_executor(None, process.wait)
            waiting.add_done_callback(self._waited)
        else:
            loop.add_reader(self.pidfd, self._on_exit)
        loop.add_reader(output_fd, self._on_output)

    def _on_exit(self) -> None:
        code = self.process.poll()  # reaps it: the pidfd is readable once it is a zombie
        if code is None:
            return
        self.loop.remove_reader(self.pidfd)
        os.close(self.pidfd)
        self.pidfd = -1
        if not self.exited.done():
            self.exited.set_result(code)

    def _waited(self, waiting: asyncio.Future) -> None:
        if self.exited.done():
            return
        error = waiting.exception()
        if error is not None:
            self.exited.set_exception(error)
        else:
            self.exited.set_result(waiting.result())

    def _on_output(self) -> None:
        try:
            chunk = os.read(self.output_fd, 65536)
        except BlockingIOError:
            return
        if chunk:
            self.total += len(chunk)
            if len(self.head) < self.keep_head:
                self.head += chunk[:self.keep_head - len(self.head)]
            self.tail += chunk
            del self.tail[:-OUTPUT_TAIL]
            return
        self._stop_reading()
        if not self.eof.done():
            self.eof.set_result(None)

    def _stop_reading(self) -> None:
        if self.output_fd >= 0:
            self.loop.remove_reader(self.output_fd)
            os.close(self.output_fd)
            self.output_fd = -1

    def close(self) -> None:
        """Drop the loop's interest in this child (its exit status is reaped already,
        or by the thread that waits for it)."""
        self._stop_reading()
        if self.pidfd >= 0:
            self.loop.remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = -1


async def run(argv: list[str], program: str, env: dict[str, str], cwd: str, timeout: float | None,
              stdin: int | None = None, on_start: Callable[[int], None] | None = None,
              keep_head: int = 0) -> Finished:
    """Run ``program`` with ``argv`` in ``cwd`` with exactly ``env``, in a new session.

    stdout and stderr share one pipe (a failure report shows them interleaved, as a
    terminal would); only the last :data:`OUTPUT_TAIL` bytes are kept, in memory, and
    the first ``keep_head``.
    ``stdin`` is an open descriptor of ``/dev/null`` to reuse (default: opened per call).
    ``on_start`` is called with the pid as soon as the child runs. On ``timeout`` or
    cancellation the whole process group is killed and reaped before this returns
    (or re-raises); after a normal exit the group is killed too, so nothing the function
    started outlives it. Raises :class:`OSError` if the program cannot be started.
    """
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    try:
        process = subprocess.Popen(
            argv, executable=program, cwd=cwd, env=env, stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=write_fd, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    child = _Child(loop, process, read_fd, keep_head)
    timed_out = False

    def on_timeout() -> None:
        nonlocal timed_out
        timed_out = True
        kill_group(process.pid)

    timer = loop.call_later(timeout, on_timeout) if timeout is not None else None
    try:
        try:
            if on_start is not None:
                on_start(process.pid)
            code = await asyncio.shield(child.exited)
        except BaseException:  # cancelled: nothing of it may go on running
            kill_group(process.pid)
            await asyncio.shield(child.exited)
            raise
        kill_group(process.pid)
        if not child.eof.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(child.eof), DRAIN_SECONDS)
        # A function that exited by itself as the timer fired is not reported as timed out.
        return Finished(code, bytes(child.tail), timed_out and code != 0, bytes(child.head), child.total)
    finally:
        if timer is not None:
            timer.cancel()
        child.close()
