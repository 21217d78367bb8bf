"""What ``flask klaviyo catalog sync`` shows: progress while it waits (click's bar with rate and
ETA in a terminal, a plain line every few seconds otherwise) and the summary."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import click

from .sync import SyncReport

__all__ = ["progress_printer", "render_report"]

PLAIN_EVERY = 5.0  # seconds between progress lines when the output is not a terminal


@contextlib.contextmanager
def progress_printer() -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback for the sync, closed afterwards."""
    state: dict[str, Any] = {"bar": None, "done": 0, "last": 0.0, "start": time.monotonic()}
    terminal = sys.stdout.isatty()

    def progress(done: int, total: int) -> None:
        if terminal:
            if state["bar"] is None:
                state["bar"] = click.progressbar(
                    length=total, label="catalog operations", show_eta=True, show_pos=True,
                    item_show_func=lambda _: _rate(state),
                )  # fmt: skip
                state["bar"].__enter__()
            state["bar"].update(done - state["done"])
            state["done"] = done
            return
        state["done"] = done
        now = time.monotonic()
        if now - state["last"] >= PLAIN_EVERY or done >= total:
            state["last"] = now
            click.echo(f"catalog: {done:,} of {total:,} operations applied ({_rate(state)})")

    try:
        yield progress
    finally:
        if state["bar"] is not None:
            state["bar"].__exit__(None, None, None)


def _rate(state: dict[str, Any]) -> str:
    seconds = max(time.monotonic() - state["start"], 1e-6)
    return f"{state['done'] / seconds:,.0f}/s"


def render_report(report: SyncReport) -> list[str]:
    """The summary: per resource created, updated, deleted, unchanged; then the failures."""
    verb = "would " if report.dry_run else ""
    lines = []
    for name, counts in report.plan.summary().items():
        lines.append(
            f"{name:>10}: {verb}create {counts['create']:,}, {verb}update {counts['update']:,}, "
            f"{verb}delete {counts['delete']:,}, unchanged {counts['unchanged']:,}"
        )
    if report.dry_run:
        lines.append("dry run: nothing was sent")
        for name, changes in (
            ("category", report.plan.categories),
            ("item", report.plan.items),
            ("variant", report.plan.variants),
        ):
            for action, ids in (("create", changes.create), ("update", changes.update),
                                ("delete", changes.delete)):  # fmt: skip
                for external in ids[:20]:
                    lines.append(f"  {action} {name} {external}")
                if len(ids) > 20:
                    lines.append(f"  ... and {len(ids) - 20:,} more {name} {action}s")
    elif not report.waited:
        lines.append("queued; the workers apply it (failures become dead letters)")
    failed = len(report.failed) + len(report.invalid)
    lines.append(f"failed: {failed:,} in {report.seconds:.1f}s")
    for entry in report.invalid:
        lines.append(f"  invalid {entry['item']}: {entry['field']}: {entry['message']}")
    for record in report.failed:
        operation = record.get("operation") or {}
        detail = "; ".join(str(e.get("detail")) for e in record.get("errors") or ())
        lines.append(f"  {operation.get('op')} {operation.get('key')}: {detail}")
    return lines
