"""Progress of a long command (``catalog sync``, ``backfill``): click's bar with rate and ETA in
a terminal, a plain line every few seconds otherwise (logs, CI, a pipe)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import click

__all__ = ["PLAIN_EVERY", "Progress", "progress_printer"]

PLAIN_EVERY = 5.0  # seconds between progress lines when the output is not a terminal

Progress = Callable[[int, "int | None"], None]  # (done, total or None when unknown)


@contextlib.contextmanager
def progress_printer(label: str, plain: str) -> Iterator[Progress]:
    """A ``progress(done, total)`` callback, closed afterwards.

    ``label`` names the bar; ``plain`` is the line printed when the output is not a terminal,
    a format string with ``done``, ``total``, ``rate`` and ``eta``.
    """
    state: dict[str, Any] = {"bar": None, "done": 0, "last": 0.0, "start": time.monotonic()}
    terminal = sys.stdout.isatty()

    def progress(done: int, total: int | None) -> None:
        if terminal and total:
            if state["bar"] is None:
                state["bar"] = click.progressbar(
                    length=total, label=label, show_eta=True, show_pos=True,
                    item_show_func=lambda _: _rate(state),
                )  # fmt: skip
                state["bar"].__enter__()
            state["bar"].update(done - state["done"])
            state["done"] = done
            return
        state["done"] = done
        now = time.monotonic()
        finished = total is not None and done >= total and state.get("printed") != done
        if now - state["last"] >= PLAIN_EVERY or finished:
            state["last"], state["printed"] = now, done
            click.echo(
                plain.format(
                    done=done,
                    total=total if total is not None else "?",
                    rate=_rate(state),
                    eta=_eta(state, total),
                )
            )

    try:
        yield progress
    finally:
        if state["bar"] is not None:
            state["bar"].__exit__(None, None, None)


def _rate(state: dict[str, Any]) -> str:
    seconds = max(time.monotonic() - state["start"], 1e-6)
    return f"{state['done'] / seconds:,.0f}/s"


def _eta(state: dict[str, Any], total: int | None) -> str:
    """Time left at the rate so far, ``h:mm:ss`` (``?`` before any progress or without total)."""
    seconds = max(time.monotonic() - state["start"], 1e-6)
    if total is None or state["done"] <= 0:
        return "?"
    left = max(0, total - state["done"]) * seconds / state["done"]
    minutes, secs = divmod(int(left), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
