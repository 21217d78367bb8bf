"""RQ entry points only. Their dotted paths are stored in queued jobs: keep them stable.

Top-level functions with JSON-able arguments, so any RQ worker can run them: ``flask klaviyo
worker`` (settings from the app's config) or a plain ``rq worker klaviyo`` (settings from the
``KLAVIYO_*`` environment variables). The work itself lives in :mod:`flask_klaviyo.delivery`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from rq import get_current_job

from .delivery import kinds
from .delivery.deadletters import DeadLetters
from .delivery.drain import Drain
from .delivery.followup import follow_up_batch as follow_up_batch_job
from .delivery.followup import follow_up_job
from .delivery.sender import Sender
from .delivery.settings import DeliverySettings
from .events import Event
from .ratelimit import RateLimiter

__all__ = ["deliver_events", "drain", "follow_up", "follow_up_batch"]

log = logging.getLogger(__name__)


def deliver_events(events: list[dict[str, Any]]) -> dict[str, int]:
    """RQ job: deliver events queued by the web process (``Event.to_dict()`` form)."""
    settings = DeliverySettings.load()
    job = get_current_job()
    connection = job.connection if job is not None else None
    sender = Sender(
        settings.client(),
        DeadLetters(connection) if connection is not None else None,
        limiter=(
            RateLimiter(connection, limits=kinds.rate_limits(settings.rate_limits))
            if connection is not None
            else None
        ),
    )
    result = sender.send([Event.from_dict(item) for item in events])
    log.info("klaviyo: delivered %(sent)d event(s), %(dead)d dead, %(requests)d request(s)", result)
    return result


def drain(queue_name: str = "klaviyo") -> dict[str, int]:
    """RQ job: deliver what waits in the outbox stream, many operations per request.

    Reads up to ``DRAIN_BATCH`` entries at a time through the consumer group (first reclaiming
    entries a dead worker had taken), sends them (one Bulk Create Events request, or Create Event
    for a lone event) paced by the shared rate limiter, and acknowledges and deletes them once
    delivered or dead-lettered. On a failure that outlasts its retries the entries stay pending,
    the job fails, and RQ's Retry (or the next drain) reclaims them: at-least-once delivery,
    exactly-once in Klaviyo by ``unique_id``.

    A full batch means a backlog: the drain then asks for a helper, up to
    ``KLAVIYO_DRAIN_CONCURRENCY`` drains at once (the consumer group gives each entry to one).
    A partial batch waits for the endpoint's steady pace (gathering what arrives meanwhile), so
    a trickle of events goes out in few requests without spending the minute's budget at once.
    """
    job = get_current_job()
    if job is None:
        raise RuntimeError("drain() runs as an RQ job (it needs the job's Redis connection)")
    return Drain(job.connection, queue_name, job.id, DeliverySettings.load()).run()


def follow_up(
    queue_name: str,
    kind: str,
    job_id: str,
    operations: Sequence[Mapping[str, Any]],
    look: int = 1,
) -> dict[str, Any]:
    """RQ job: look at an asynchronous Klaviyo job (see :mod:`flask_klaviyo.delivery.followup`)."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("follow_up() runs as an RQ job (it needs the job's Redis connection)")
    return follow_up_job(
        job.connection, DeliverySettings.load(), queue_name, kind, job_id, operations, look
    )


def follow_up_batch(
    queue_name: str, pending: Sequence[Sequence[str]], look: int = 1
) -> dict[str, Any]:
    """RQ job: look at the asynchronous Klaviyo jobs of one send (``[kind, job id]`` pairs;
    their operations are kept in Redis; see :mod:`flask_klaviyo.delivery.followup`)."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("follow_up_batch() runs as an RQ job (it needs its Redis connection)")
    return follow_up_batch_job(job.connection, DeliverySettings.load(), queue_name, pending, look)
