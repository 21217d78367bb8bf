"""One progress display for every long ``flask klaviyo`` command (replay, backfill, catalog sync).

In a terminal: click's progress bar with the position, the rate and an ETA. Anywhere else (a
log file, CI, cron, ``| tee``): a plain line every ``every`` seconds or every tenth of the way,
and one at the end, so a log shows progress without a line per item or a screen of redraws::

    from flask_klaviyo.progress import progress

    with progress(total, "backfill", "orders") as bar:   # total may be None (not known yet)
        for chunk in chunks:
            send(chunk)
            bar.update(len(chunk))

    # a callback that reports (done, total) itself, like the catalog sync's:
    with progress(None, "catalog", "operations applied") as bar:
        run_sync(progress=bar.goto)

That is the whole API: ``progress(total, label, unit, *, every=5.0, file=None)``, a context
manager yielding a ``Progress`` with ``update(n)``, ``goto(done, total=None)``, ``done`` and
``total``.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

import click

__all__ = ["PLAIN_EVERY", "Progress", "ProgressCallback", "progress"]

PLAIN_EVERY = 5.0  # seconds between plain lines when the output is not a terminal
PLAIN_STEP = 0.1  # ... or this fraction of the total, whichever comes first

# What a long operation reports to, e.g. ``Progress.goto``: (done, total or None when unknown).
ProgressCallback = Callable[[int, "int | None"], None]


class Progress:
    """What is done so far, shown as a bar in a terminal or as plain lines elsewhere."""

    def __init__(
        self,
        total: int | None,
        label: str,
        unit: str,
        *,
        every: float = PLAIN_EVERY,
        file: IO[str] | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.total = total
        self.done = 0
        self.label = label
        self.unit = unit
        self.every = every
        self.file = file
        self.clock = clock
        self.started = clock()
        self.terminal = _is_terminal(file)
        self._bar: Any = None
        self._last_line = self.started
        self._last_done = 0
        self._printed = 0

    def update(self, n: int = 1) -> None:
        """``n`` more are done."""
        self.goto(self.done + n)

    def goto(self, done: int, total: int | None = None) -> None:
        """``done`` are done in all (and the total is now ``total``, when given)."""
        if total is not None and total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.length = total
        step = done - self.done
        self.done = done
        if self.terminal:
            self._draw(step)
        else:
            self._maybe_line()

    def rate(self) -> float:
        """Done per second since the start."""
        return self.done / max(self.clock() - self.started, 1e-6)

    def eta(self) -> float | None:
        """Seconds left at the rate so far; None while it cannot be told."""
        if self.total is None or self.done <= 0:
            return None
        return max(0, self.total - self.done) / max(self.rate(), 1e-9)

    def line(self) -> str:
        """``label: done of total unit (rate/s, ETA)`` for logs and the final summary."""
        of = f" of {self.total:,}" if self.total is not None else ""
        eta = self.eta()
        left = (
            f", {_duration(eta)} left" if eta is not None and self.done < (self.total or 0) else ""
        )
        return f"{self.label}: {self.done:,}{of} {self.unit} ({self.rate():,.0f}/s{left})"

    def _draw(self, step: int) -> None:
        if self._bar is None:
            if self.total is None:
                return  # no length yet: the bar starts at the first known total
            self._bar = click.progressbar(
                length=self.total,
                label=self.label,
                show_eta=True,
                show_pos=True,
                item_show_func=lambda _: f"{self.rate():,.0f} {self.unit}/s",
                file=self.file,
            )
            self._bar.__enter__()
            step = self.done
        if step:
            self._bar.update(step)

    def _maybe_line(self) -> None:
        moved = self.done - self._last_done
        if moved <= 0:
            return
        due = self.clock() - self._last_line >= self.every
        far = self.total is not None and moved >= PLAIN_STEP * self.total
        finished = self.total is not None and self.done >= self.total
        if due or far or finished:
            self._echo()

    def _echo(self) -> None:
        self._last_line = self.clock()
        self._last_done = self.done
        self._printed += 1
        click.echo(self.line(), file=self.file)

    def close(self) -> None:
        """End the bar; off a terminal, a last line when the last one is out of date."""
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
        elif not self.terminal and (self._last_done < self.done or not self._printed):
            self._echo()


@contextlib.contextmanager
def progress(
    total: int | None,
    label: str,
    unit: str = "items",
    *,
    every: float = PLAIN_EVERY,
    file: IO[str] | None = None,
) -> Iterator[Progress]:
    """A :class:`Progress` for a long command, closed (bar ended, last line out) on the way
    out. ``total``: how many in all, or None until ``goto`` says; ``label``: the command;
    ``unit``: what is counted, plural ("events", "operations applied"); ``every``: seconds
    between plain lines; ``file``: where to write (standard output)."""
    bar = Progress(total, label, unit, every=every, file=file)
    try:
        yield bar
    finally:
        bar.close()


def _is_terminal(file: IO[str] | None) -> bool:
    stream = file if file is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
