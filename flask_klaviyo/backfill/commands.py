"""``flask klaviyo backfill orders|profiles FILE``: history from JSON Lines, resumable.

Each run continues where the last one of the same file stopped (a checkpoint in Redis); a rerun
after completion sends nothing new. ``--dry-run`` checks every line and sends nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click
from flask.cli import AppGroup

from .._state import current_state
from ..progress import progress
from .report import render_report
from .runner import BackfillReport

__all__ = ["backfill_cli"]

backfill_cli = AppGroup(
    "backfill",
    help="Send the store's history (past orders, customers) to Klaviyo, resumably.",
)

FILE = click.Path(exists=True, dir_okay=False, readable=True)


def _common(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option(
                "--dry-run", is_flag=True, help="Check every line, print what would be sent."
            ),
            click.option(
                "--restart", is_flag=True, help="Forget this file's checkpoint; start at line 1."
            ),
            click.option(
                "--wait/--no-wait",
                default=True,
                show_default=True,
                help="Return once the workers (or this process) delivered everything.",
            ),
        ]
    ):
        command = option(command)
    return command


def _finish(run: Callable[..., BackfillReport], kind: str, **options: Any) -> None:
    try:
        with progress(None, f"backfill {kind}", "lines") as bar:
            report = run(progress=bar.goto, **options)
    except KeyboardInterrupt:
        click.echo(
            f"\ninterrupted: run the same command again to continue ({kind} queued so far are "
            "in the checkpoint)",
            err=True,
        )
        raise SystemExit(130) from None
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    for line in render_report(report):
        click.echo(line)


@backfill_cli.command("orders")
@click.argument("file", type=FILE)
@_common
def orders_command(file: str, dry_run: bool, restart: bool, wait: bool) -> None:
    """Past orders from FILE (JSON Lines, one order a line; README "Historical data"):
    Placed Order, Ordered Product, Fulfilled / Canceled / Refunded Order, backfill=true."""
    extension = current_state().extension
    _finish(
        extension.backfill_orders, "orders", records=os.fspath(file), dry_run=dry_run,
        restart=restart, wait=wait,
    )  # fmt: skip


@backfill_cli.command("profiles")
@click.argument("file", type=FILE)
@click.option("--list-id", help="The list that email_consent_at / sms_consent_at were given for.")
@click.option("--source", help="custom_source recorded with the historical subscriptions.")
@_common
def profiles_command(
    file: str, list_id: str | None, source: str | None, dry_run: bool, restart: bool, wait: bool
) -> None:
    """Past customers from FILE (JSON Lines, one a line) through Bulk Import Profiles, and
    their recorded consent as historical subscriptions."""
    extension = current_state().extension
    _finish(
        extension.backfill_profiles, "profiles", records=os.fspath(file), list_id=list_id,
        source=source, dry_run=dry_run, restart=restart, wait=wait,
    )  # fmt: skip
