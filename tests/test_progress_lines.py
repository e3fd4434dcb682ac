"""gg-force's progress lines (not on a terminal): "N running" is read when it is true.

A line falls due as often just after a thunk finished as at any other time; its slot's
next thunk starts on the next update. The line waits for that start, so a run at -j2
does not show "1 running" all along (it did), unless nothing starts for a second
interval (the last thunks of a run), when it is printed anyway."""

from __future__ import annotations

import io

from executor import progress
from executor.progress import Counts, ProgressDisplay


def test_a_line_due_at_a_finish_waits_for_the_next_start(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    stream = io.StringIO()
    display = ProgressDisplay("lines", stream, interval=2.0)
    counts = Counts(discovered=10, running=2)
    display.update(counts)  # the first line
    clock[0] += 2.5
    counts.running, counts.done = 1, 1  # a thunk finished: due, but one slot is free for an instant
    display.update(counts)
    assert len(stream.getvalue().splitlines()) == 1
    counts.running = 2  # its slot's next thunk started
    display.update(counts)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "2 running" in lines[1]

    clock[0] += 2.5
    counts.running, counts.done = 1, 2  # the tail: nothing starts any more
    display.update(counts)
    assert len(stream.getvalue().splitlines()) == 2
    clock[0] += 2.0  # a second interval without a start: said as it is
    counts.done = 2
    display.update(counts)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "1 running" in lines[2]
