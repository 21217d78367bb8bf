"""``flask klaviyo ...``: run workers and look at the delivery state."""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import AppGroup
from rq import Queue, SimpleWorker, Worker

from .jobs import parse_rate_limits
from .outbox import Outbox
from .ratelimit import RateLimiter

__all__ = ["klaviyo_cli"]

klaviyo_cli = AppGroup("klaviyo", help="flask-klaviyo: delivery workers and status.")


def _state():  # type: ignore[no-untyped-def]
    from .extension import _state as state

    return state()


@klaviyo_cli.command("worker")
@click.option("--burst", is_flag=True, help="Drain the queue, then exit.")
@click.option(
    "--simple",
    is_flag=True,
    help="Run jobs in this process (no fork per job): faster, less isolated.",
)
def worker_command(burst: bool, simple: bool) -> None:
    """Deliver queued events to Klaviyo (an RQ worker with this app's settings)."""
    state = _state()
    connection = state.redis
    queue = Queue(current_app.config["KLAVIYO_QUEUE"], connection=connection)
    worker_class = SimpleWorker if simple else Worker
    # The job reads the API key and URL from this app's config: jobs run inside its context.
    worker = worker_class([queue], connection=connection)
    click.echo(f"klaviyo worker on queue {queue.name!r} ({'burst' if burst else 'long-running'})")
    worker.work(burst=burst, with_scheduler=True)


@klaviyo_cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(as_json: bool) -> None:
    """Waiting events, their age, jobs, dead letters and the rate-limit state."""
    state = _state()
    name = current_app.config["KLAVIYO_QUEUE"]
    outbox = Outbox(state.redis, queue_name=name)
    queue = outbox.queue
    age = outbox.oldest_age()
    limits = parse_rate_limits(current_app.config.get("KLAVIYO_RATE_LIMITS"))
    status = {
        "queue": name,
        "waiting_events": outbox.depth(),
        "in_delivery": outbox.pending(),
        "oldest_waiting_seconds": round(age, 1) if age is not None else None,
        "queued_jobs": queue.count,
        "failed_jobs": queue.failed_job_registry.count,
        "dead_letters": state.dead_letters.count(),
        "rate_limit_blocked_for": {
            endpoint: round(values["blocked_for"], 1)
            for endpoint, values in RateLimiter(state.redis, limits=limits).state().items()
        },
    }
    if as_json:
        click.echo(json.dumps(status))
        return
    for key, value in status.items():
        click.echo(f"{key:>24}: {value}")
