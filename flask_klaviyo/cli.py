"""``flask klaviyo ...``: run workers and look at the delivery state."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import click
import redis
from flask import current_app
from flask.cli import AppGroup
from rq import Queue, Worker

from ._state import current_state
from .backfill.commands import backfill_cli
from .catalog.report import render_report
from .delivery import kinds
from .delivery.outbox import Outbox
from .delivery.settings import DeliverySettings, parse_rate_limits
from .delivery.workers import (
    BurstWorker,
    InProcessWorker,
    LongRunningSimpleWorker,
    LongRunningWorker,
)
from .exceptions import KlaviyoConfigError, KlaviyoSchemaError
from .map_metrics_cli import map_metrics_command
from .ops import DEFAULT_BACKFILL_AFTER, replay_dead_letters, verify_dedup
from .privacy import forget
from .progress import progress
from .status import Thresholds, gather, problems, render

__all__ = ["klaviyo_cli"]

RESTART_PAUSE = 0.5  # seconds before a worker that lost Redis starts again (doubling, capped)
MAX_RESTART_PAUSE = 5.0

klaviyo_cli = AppGroup(
    "klaviyo",
    help=(
        "flask-klaviyo: delivery workers, status, replay of dead letters, verify, forget, "
        "catalog sync, backfill."
    ),
)


@klaviyo_cli.command("worker")
@click.option("--burst", is_flag=True, help="Drain the queue, then exit.")
@click.option(
    "--simple",
    is_flag=True,
    help="Run jobs in this process (no fork per job): faster, less isolated.",
)
def worker_command(burst: bool, simple: bool) -> None:
    """Deliver queued events to Klaviyo (an RQ worker with this app's settings)."""
    state = current_state()
    connection = state.redis
    queue = Queue(current_app.config["KLAVIYO_QUEUE"], connection=connection)
    if burst:  # one pass takes no remote commands: no listener to wait for on the way out
        worker_class: type[Worker] = InProcessWorker if simple else BurstWorker
    else:
        worker_class = LongRunningSimpleWorker if simple else LongRunningWorker
    pause = RESTART_PAUSE
    while True:  # RQ quits on a Redis error outside its dequeue: start again (a failover)
        try:
            # The job reads the API key and URL from this app's config: jobs run in its context.
            worker = worker_class([queue], connection=connection)
            if _drain_on_start(Outbox(connection, queue_name=queue.name)):
                click.echo("events are waiting in the outbox: a drain is queued")
            mode = "burst" if burst else "long-running"
            click.echo(f"klaviyo worker on queue {queue.name!r} ({mode})")
            worker.work(burst=burst, with_scheduler=True)
            return
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if burst:
                raise
            click.echo(f"klaviyo worker: Redis unreachable ({exc}); again in {pause:g}s", err=True)
            time.sleep(pause)
            pause = min(pause * 2, MAX_RESTART_PAUSE)


def _drain_on_start(outbox: Outbox) -> bool:
    """Queue a drain when events wait: a worker killed mid-drain (SIGKILL, a lost machine) left
    its entries pending and no job to finish them, and nothing else would schedule one until the
    next event arrives. An extra drain is harmless: the consumer group gives each entry to one."""
    if outbox.depth() == 0:
        return False
    outbox.refresh_flag()
    outbox.enqueue_drain()
    return True


@klaviyo_cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (for machines).")
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 when something needs a human (the reasons are printed): for a monitor.",
)
@click.option(
    "--max-waiting-age",
    type=float,
    default=Thresholds.max_waiting_age,
    show_default=True,
    help="Seconds: the oldest waiting operation may be this old.",
)
@click.option(
    "--max-new-dead-letters",
    type=int,
    default=Thresholds.max_new_dead_letters,
    show_default=True,
    help="Dead letters allowed to appear within --window.",
)
@click.option(
    "--window",
    type=float,
    default=Thresholds.dead_letter_window,
    show_default=True,
    help="Seconds: how far back --max-new-dead-letters counts.",
)
@click.option(
    "--max-spool-age",
    type=float,
    default=Thresholds.max_spool_age,
    show_default=True,
    help="Seconds the spool may hold operations (Redis unreachable meanwhile).",
)
@click.option(
    "--max-heartbeat-age",
    type=float,
    default=Thresholds.max_heartbeat_age,
    show_default=True,
    help="Seconds: some worker of the queue must have a heartbeat this recent.",
)
def status_command(
    as_json: bool,
    check: bool,
    max_waiting_age: float,
    max_new_dead_letters: int,
    window: float,
    max_spool_age: float,
    max_heartbeat_age: float,
) -> None:
    """Waiting operations by kind and age, delivery rate, dead letters by reason, parked
    visitors, spool, rate limits, the last Klaviyo error, workers and the Redis URL."""
    state = current_state()
    config = current_app.config
    thresholds = Thresholds(
        max_waiting_age=max_waiting_age,
        max_new_dead_letters=max_new_dead_letters,
        dead_letter_window=window,
        max_spool_age=max_spool_age,
        max_heartbeat_age=max_heartbeat_age,
    )
    status = gather(
        state.redis,
        queue=config["KLAVIYO_QUEUE"],
        redis_url=state.redis_url,
        spool=state.spool,
        limits=kinds.rate_limits(parse_rate_limits(config.get("KLAVIYO_RATE_LIMITS"))),
        window=window,
    )
    status.problems = problems(status, thresholds)
    if as_json:
        click.echo(status.to_json())
    else:
        for line in render(status):
            click.echo(line)
        if check and not status.problems:
            click.echo("OK: nothing needs a human")
    if check and status.problems:
        raise SystemExit(1)


@klaviyo_cli.command("replay")
@click.option("--metric", help="Only dead letters of this metric.")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
    help="Only events dead-lettered at or after this time (UTC).",
)
@click.option(
    "--backfill-after",
    type=float,
    default=DEFAULT_BACKFILL_AFTER.total_seconds() / 3600,
    show_default=True,
    help="Hours: older events are re-sent with backfill=true (recorded, no flows fired).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; change nothing.")
def replay_command(
    metric: str | None, since: datetime | None, backfill_after: float, dry_run: bool
) -> None:
    """Re-send dead-lettered events after a fix (idempotent: each keeps its unique_id)."""
    state = current_state()
    with progress(None, "replay", "dead letters") as bar:
        report = replay_dead_letters(
            state.dead_letters,
            Outbox(state.redis, queue_name=current_app.config["KLAVIYO_QUEUE"]),
            metric=metric,
            since=since.replace(tzinfo=UTC) if since else None,
            backfill_after=timedelta(hours=backfill_after),
            dry_run=dry_run,
            progress=bar.goto,
        )
    verb = "would requeue" if dry_run else "requeued"
    click.echo(
        f"{verb} {report.requeued} event(s) ({report.backfilled} as backfill), "
        f"skipped {report.skipped}, still invalid {len(report.still_invalid)}"
    )
    for line in report.still_invalid:
        click.echo(f"  still invalid: {line}")


@klaviyo_cli.command("verify")
@click.option("--email", default="flask-klaviyo-verify@klaviyo-demo.com", show_default=True)
def verify_command(email: str) -> None:
    """Send a server and a browser-style event with one unique_id; expect one kept."""
    config = current_app.config
    company_id = config["KLAVIYO_PUBLIC_API_KEY"]
    if not company_id:
        raise click.UsageError("KLAVIYO_PUBLIC_API_KEY (the company id) is needed for the check")
    report = verify_dedup(
        DeliverySettings.load(),
        company_id=company_id,
        client_url=config["KLAVIYO_CLIENT_URL"],
        email=email,
    )
    click.echo(json.dumps(report))
    if report["kept"] is None:
        click.echo(
            f"Both were accepted. In Klaviyo, the metric {report['metric']!r} should show one "
            f"event with unique_id {report['unique_id']} for {email}."
        )
    if not report["ok"]:
        raise SystemExit(1)


@klaviyo_cli.command("forget")
@click.argument("identifier")
def forget_command(identifier: str) -> None:
    """Honour a deletion request for an EMAIL or E.164 phone number: Klaviyo deletes the
    profile, and nothing queued here for that person is sent."""
    field = "email" if "@" in identifier else "phone_number"
    try:
        report = forget(**{field: identifier})
    except KlaviyoSchemaError as exc:
        raise click.UsageError(str(exc)) from None
    purged = report.purged
    click.echo(
        f"deletion requested in Klaviyo ({report.requests} request queued); dropped locally: "
        f"{purged.outbox} waiting, {purged.dead_letters} dead letters, {purged.spool} spooled; "
        f"anything queued for them in the next {current_app.config['KLAVIYO_FORGET_HOLD']} s "
        "is dropped before sending"
    )


catalog_cli = AppGroup("catalog", help="Klaviyo's catalog: sync it with the store's source.")
klaviyo_cli.add_command(catalog_cli)
klaviyo_cli.add_command(map_metrics_command)
klaviyo_cli.add_command(backfill_cli)


@catalog_cli.command("sync")
@click.option("--dry-run", is_flag=True, help="Print the plan; send nothing.")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Work the queue in this process until Klaviyo holds it all (with other workers).",
)
def catalog_sync_command(dry_run: bool, wait: bool) -> None:
    """Reconcile Klaviyo's catalog with the store's @klaviyo.catalog_source (API mode)."""
    extension = current_state().extension
    try:
        with progress(None, "catalog", "operations applied") as bar:
            report = extension.catalog_sync(dry_run=dry_run, wait=wait, progress=bar.goto)
    except (KlaviyoConfigError, KlaviyoSchemaError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    for line in render_report(report):
        click.echo(line)
