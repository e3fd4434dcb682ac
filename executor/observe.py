"""One place where the scheduler reports what happens: trace, counters and progress."""

from __future__ import annotations

import sys

from .progress import Counts, ProgressDisplay
from .trace import TraceWriter


class RunObserver:
    """Fans scheduler events out to the trace file and the progress display."""

    def __init__(self, trace: TraceWriter | None = None, progress: ProgressDisplay | None = None,
                 prog: str = "gg-force"):
        self.trace = trace or TraceWriter(None)
        self.progress = progress
        self.prog = prog  # names the lines said on stderr
        self.counts = Counts()

    def thunk_output(self, text: str) -> None:
        """Show what a successful thunk printed (a whole report, see
        ``execution.describe_output``): one write on stderr, above the progress bar if
        any, so no other line cuts into it. Shown with ``--quiet`` too, as ``make -s``
        still shows a compiler's warnings."""
        text = f"{self.prog}: {text}"
        if self.progress is not None:
            self.progress.write_above(text)
        else:
            sys.stderr.write(text)
            sys.stderr.flush()

    @property
    def tracing(self) -> bool:
        """True if events are written somewhere: the scheduler builds per-thunk events
        (a dict each) only then, and calls :meth:`tick` instead otherwise."""
        return self.trace.active

    def tick(self) -> None:
        """The counts changed (no event worth writing): refresh the progress display."""
        if self.progress is not None:
            self.progress.update(self.counts)

    def event(self, name: str, **fields) -> None:
        self.trace.write(name, fields)
        if self.progress is not None:
            self.progress.update(self.counts)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close(self.counts)
        self.trace.close()
