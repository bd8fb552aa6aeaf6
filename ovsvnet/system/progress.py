"""Progress of a long command on stderr: a bar on a terminal, plain lines otherwise, nothing
for JSON output, so stdout stays what scripts parse.

The CLI opens a :func:`task` around an operation that can take seconds (a batch ``create``,
a ``sync`` of a big host); the layers below say where the time goes with :func:`phase` (and
:func:`tick` while they wait), which do nothing when no task is open: the agent's own
passes, library callers and short commands print nothing.

How a task shows (``OVSVNET_PROGRESS=bar|lines|off`` overrides):

* stderr is a terminal: one bar line, redrawn in place, drawn only once the task has run
  :data:`DELAY` seconds (a quick command never flashes one) and erased at the end;
* not a terminal (a pipe, a log, a command the agent runs for a client, whose stderr is a
  buffer): one plain line per phase, for a *large* task (the caller decides: a create of
  :data:`LARGE` vnets or more) or one that has run :data:`LINES_AFTER` seconds (the lines
  held until then come out first), so hooks and scripts doing quick things see no new
  output;
* ``quiet`` (``--json``, ``--format json``): nothing.

Phases, not invented percentages: the bar moves one step per phase the task announced.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

#: Tasks on at least this many vnets are "large": they print plain lines off a terminal.
LARGE = 100
#: A bar appears only after this long (seconds); plain lines of a task that is not large
#: only after LINES_AFTER.
DELAY = 0.3
LINES_AFTER = 1.0
#: How often a wait redraws the bar (seconds); plain lines repeat a wait every EVERY s.
TICK = 0.25
EVERY = 10.0
MODES = ("bar", "lines", "off")


def choose_mode(isatty: bool, quiet: bool, forced: str = "") -> str:
    """How a task shows: ``forced`` ($OVSVNET_PROGRESS) wins, then quiet, then the stream."""
    if forced in MODES:
        return forced
    if quiet:
        return "off"
    return "bar" if isatty else "lines"


def bar_line(title: str, label: str, step: int, steps: int, elapsed: float,
             width: int = 80) -> str:
    """``create 500 vnets [######......] 2/4 1.2s waiting for ovs-vswitchd``, cut to
    ``width`` columns."""
    steps = max(steps, 1)
    step = min(max(step, 0), steps)
    cells = 20
    filled = round(cells * step / steps)
    text = (f"{title} [{'#' * filled}{'.' * (cells - filled)}] {step}/{steps} "
            f"{elapsed:.1f}s {label}")
    return text if len(text) < width else text[:max(width - 2, 0)] + "…"


def plain_line(title: str, label: str, elapsed: float) -> str:
    """``create 500 vnets: waiting for ovs-vswitchd [1.2 s]``"""
    return f"{title}: {label} [{elapsed:.1f} s]"


class Progress:
    """One task's display; see the module's docstring."""

    def __init__(self, title: str, steps: int, stream: TextIO, mode: str,
                 large: bool = True, clock: Callable[[], float] = time.monotonic):
        self.title, self.steps, self.stream, self.mode = title, steps, stream, mode
        self._now = clock
        self.start = self._now()
        self.step = 0
        self.label = "starting"
        self._drawn: tuple[int, str] | None = None  # what the bar shows
        self._last = self.start  # when the last line or frame was written
        #: plain lines held back while a task that is not large may still end quickly
        self._held: list[str] | None = None if large else []

    def elapsed(self) -> float:
        return self._now() - self.start

    def phase(self, label: str) -> None:
        """A new phase begins (each moves the bar one step)."""
        self.step += 1
        self.label = label
        if self.mode == "lines":
            self._line(plain_line(self.title, label, self.elapsed()))
        else:
            self.tick()

    def _line(self, line: str | None) -> None:
        """Write a plain line (None: nothing new), or hold it while the task may still
        turn out quick; once it has not, the held lines come first."""
        if self._held is not None:
            self._held += [line] if line is not None else []
            if not self._held or self.elapsed() < LINES_AFTER:
                return
            lines, self._held = self._held, None
        else:
            lines = [line] if line is not None else []
        if lines:
            self._write("".join(x + "\n" for x in lines))

    def tick(self) -> None:
        """Still in the same phase: redraw the bar (its clock), or in plain lines say so
        every :data:`EVERY` seconds."""
        now = self._now()
        if self.mode == "bar" and now - self.start >= DELAY:
            if self._drawn == (self.step, self.label) and now - self._last < TICK / 2:
                return  # a wait woken often by the database: redraw at a human pace
            self._write("\r\x1b[K" + bar_line(self.title, self.label, self.step, self.steps,
                                               now - self.start, self._width()))
            self._drawn = (self.step, self.label)
        elif self.mode == "lines" and self._held is not None:
            self._line(None)  # the held lines, once the task has run LINES_AFTER
        elif self.mode == "lines" and now - self._last >= EVERY:
            self._line(plain_line(self.title, f"still {self.label}", now - self.start))

    def close(self, ok: bool) -> None:
        if self.mode == "bar" and self._drawn is not None:
            self._write("\r\x1b[K")  # leave the terminal as the command's output left it
        elif self.mode == "lines" and ok:
            self._line(plain_line(self.title, "done", self.elapsed()))

    def _width(self) -> int:
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            return 80

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.mode = "off"  # a closed or broken stderr never fails the command
        self._last = self._now()


_current: ContextVar[Progress | None] = ContextVar("ovsvnet_progress", default=None)


@contextmanager
def task(title: str, steps: int, large: bool = False, quiet: bool = False,
         stream: TextIO | None = None) -> Iterator[Progress]:
    """Show the progress of the enclosed operation (``steps``: the phases it announces).
    ``stream`` defaults to the current ``sys.stderr`` (the agent's capture buffer when it
    runs a command for a client: not a terminal)."""
    out = stream if stream is not None else sys.stderr
    try:
        isatty = out.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        isatty = False
    mode = choose_mode(isatty, quiet, os.environ.get("OVSVNET_PROGRESS", ""))
    progress = Progress(title, steps, out, mode, large)
    token = _current.set(progress if mode != "off" else None)
    ok = False
    try:
        yield progress
        ok = True
    finally:
        _current.reset(token)
        progress.close(ok)


def phase(label: str) -> None:
    """Report a phase of the current task; nothing when no task shows."""
    progress = _current.get()
    if progress is not None:
        progress.phase(label)


def tick() -> float | None:
    """Redraw the current task (its clock) during a wait; returns how long the wait may
    sleep before the next redraw (None: no task shows, sleep as long as needed)."""
    progress = _current.get()
    if progress is None:
        return None
    progress.tick()
    return TICK


def active() -> bool:
    """Whether a task shows (a wait then wakes every :data:`TICK` s to redraw it)."""
    return _current.get() is not None
