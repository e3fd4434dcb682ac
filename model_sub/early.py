"""Early forcing: the build's outputs are forced while gg-infer still runs the build.

Why: gg-infer alone runs the build's commands through the models, which is mostly
waiting (on make, on the preprocessor's header scans); ``gg-force`` afterwards does the
work. A cold build pays both in series. With ``GG_INFER_EARLY`` (or ``gg-infer
--early``), every placeholder a model writes is also handed, as it is written, to one
``gg-force --stdin`` started by gg-infer, so compiles run while the build goes on; when
the build is over gg-infer says ``end``, waits for that forcing to finish, and says in
one line what it did. ``gg-force`` then finds the targets reduced. Nothing else changes:
the placeholders stay placeholders until ``gg-force`` writes them, and a thunk that
fails early is simply not recorded, so ``gg-force`` runs it again and reports it.

The hand-over is a FIFO in gg-infer's private socket directory, named to the models by
``GG_INFER_EARLY_FIFO`` (the model server's worker gets gg-infer's environment): each
model writes one line per placeholder (a thunk ID, shorter than ``PIPE_BUF``, so lines
never interleave). gg-infer holds the FIFO open for writing for the whole run, so the
reader sees end-of-input only when gg-infer is gone, and ``gg-force --stdin`` takes
end-of-input without ``end`` as "stop" (an interrupted gg-infer stops its forcing too).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path

from ir.cli_errors import shown_path
from ir.errors import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (gg-infer's start imports this)
if TYPE_CHECKING:
    import subprocess

EARLY_ENV = "GG_INFER_EARLY"  # off (default), on (one job per core) or a number of jobs
FIFO_ENV = "GG_INFER_EARLY_FIFO"  # set by gg-infer for the models: where placeholders go
_RUN_COUNT = r"(\d+) thunk\(s\) run"  # in gg-force's summary line


def early_jobs(environ: Mapping[str, str]) -> int | None:
    """Jobs for early forcing from ``GG_INFER_EARLY``; None when it is off."""
    value = environ.get(EARLY_ENV, "").strip().lower()
    if value in ("", "off", "0", "no", "false"):
        return None
    if value in ("on", "yes", "true", "auto"):
        return os.cpu_count() or 1
    if value.isdigit():
        return int(value)
    raise UsageError(f"{EARLY_ENV}={environ[EARLY_ENV]!r}: expected off, on, or a number of jobs")


class EarlyForcing:
    """gg-infer's side: the FIFO and the ``gg-force --stdin`` reading it."""

    def __init__(self, directory: str, store_root: Path, build_root: str, environ: Mapping[str, str], jobs: int):
        import subprocess  # here: a gg-infer without early forcing never imports it
        import sys

        self._writer = -1
        self.fifo = os.path.join(directory, "early")
        self.log_path = store_root / "infer" / "early.log"
        os.mkfifo(self.fifo, 0o600)
        reader = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self._writer = os.open(self.fifo, os.O_WRONLY | os.O_CLOEXEC)
            os.set_blocking(reader, True)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "wb") as log:
                self._process: subprocess.Popen[bytes] = subprocess.Popen(
                    [sys.executable, "-c", "import sys; from executor.force_cli import main; sys.exit(main())",
                     "--stdin", "--keep-going", "--progress", "lines", "-j", str(jobs)],
                    stdin=reader, stdout=log, stderr=subprocess.STDOUT, cwd=build_root,
                    env={**environ, "GG_DIR": str(store_root)})
        except BaseException:
            self._close_writer()
            raise
        finally:
            os.close(reader)
        self.jobs = jobs

    def environment(self) -> dict[str, str]:
        """What the models need to find the FIFO."""
        return {FIFO_ENV: self.fifo}

    def finish(self) -> str | None:
        """Say ``end``, wait for the forcing to finish, and return the line gg-infer prints
        (none when it ran nothing: no output named, or all of them reduced already)."""
        try:
            os.write(self._writer, b"end\n")
        except OSError:
            pass  # the reader is gone: its status says why
        self._close_writer()
        status = self._process.wait()
        import re

        text = self._log_tail()
        counted = re.findall(_RUN_COUNT, text)
        ran = f"{counted[-1]} thunk(s)" if counted else "the thunks"
        if status == 0 and counted and counted[-1] == "0":
            return None
        if status == 0:
            return (f"gg-infer: forced {ran} early, while the build ran ({EARLY_ENV}, -j{self.jobs}); "
                    f"gg-force finds them reduced")
        last = next((line for line in reversed(text.splitlines()) if line.strip()), f"exit status {status}")
        return (f"gg-infer: early forcing did not finish ({last.strip()[:200]}); gg-force runs what is left "
                f"and reports any failure (see {shown_path(self.log_path)})")

    def stop(self) -> None:
        """The run was interrupted: end the forcing without ``end`` (it stops)."""
        import subprocess

        self._close_writer()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _close_writer(self) -> None:
        if self._writer >= 0:
            os.close(self._writer)
            self._writer = -1
            try:
                os.unlink(self.fifo)  # the models opened it at their start; gg-infer removes its directory
            except OSError:
                pass

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(max(0, os.fstat(handle.fileno()).st_size - 8192))
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""


class Placements:
    """The models' side: one line per placeholder written, to gg-infer's FIFO."""

    def __init__(self, fifo: str):
        self._fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(self._fd, True)  # a full pipe waits for the reader (it reads lines as they come)
        self._lock = threading.Lock()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Placements | None:
        """The sink gg-infer named, or None (early forcing off, or its reader gone:
        early forcing is an optimisation, and gg-force does the work either way)."""
        fifo = environ.get(FIFO_ENV)
        if not fifo:
            return None
        try:
            return cls(fifo)
        except OSError:
            return None

    def send(self, ref: str) -> None:
        with self._lock:
            if self._fd < 0:
                return
            try:
                os.write(self._fd, ref.encode() + b"\n")
            except OSError:  # the reader is gone; gg-infer says why at the end
                self._close()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
