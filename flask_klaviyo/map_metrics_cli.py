"""``flask klaviyo map-metrics [--dry-run]``: map the account's revenue (and the other mappings
Klaviyo allows) to this extension's metrics, by name, and print what changed
(:mod:`flask_klaviyo.metric_mapping` does the work)."""

from __future__ import annotations

import logging

import click
from flask.cli import with_appcontext

from ._state import current_state
from .exceptions import KlaviyoError
from .metric_mapping import map_metrics

__all__ = ["map_metrics_command"]

log = logging.getLogger(__name__)


@click.command("map-metrics")
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@with_appcontext
def map_metrics_command(dry_run: bool) -> None:
    """Map revenue to Placed Order (and cancelled/refunded sales, ordered product, started
    checkout, added to cart, viewed product to theirs) for Klaviyo's CLV and benchmarks.
    Update Mapped Metric allows 30 updates a day: only mappings that differ are sent."""
    try:
        changes = map_metrics(current_state().redis, dry_run=dry_run)
    except (KlaviyoError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    for change in changes:
        click.echo(change.describe())
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.status] = counts.get(change.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    click.echo(f"{'dry run: ' if dry_run else ''}{summary}")
    if any(change.status == "failed" for change in changes):
        raise SystemExit(1)
