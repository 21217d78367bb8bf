"""The request side of delivery: hand events to RQ in one Redis round trip, and the dead letters.

An event leaves the web process only through :meth:`Outbox.push`, after the response has been
produced; nothing here talks to Klaviyo. Events that must not or could not be sent are kept in
the dead-letter registry with the reason (our validation or Klaviyo's ``errors``), never dropped.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import redis
from rq import Queue, Retry

from .events import Event, mask_profile

__all__ = ["DEAD_LETTER_KEY", "DeadLetters", "Outbox"]

log = logging.getLogger("flask_klaviyo")

DEAD_LETTER_KEY = "klaviyo:dead"
STATS_KEY = "klaviyo:stats"
DELIVER_JOB = "flask_klaviyo.jobs.deliver_events"
# A job that still fails after this many RQ retries stays in RQ's failed registry (replayable).
DEFAULT_RETRY_MAX = 8
JOB_TIMEOUT = 300
FAILURE_TTL = 30 * 24 * 3600


class Outbox:
    """Queues events for the workers; one RQ job (one round trip) per request's events."""

    def __init__(
        self,
        connection: redis.Redis,
        *,
        queue_name: str = "klaviyo",
        retry_max: int = DEFAULT_RETRY_MAX,
    ) -> None:
        self.connection = connection
        self.queue = Queue(queue_name, connection=connection)
        self.retry_max = retry_max

    def push(self, events: Sequence[Event]) -> str | None:
        """Enqueue ``events`` for delivery; returns the RQ job id."""
        if not events:
            return None
        metrics = sorted({e.metric for e in events})
        job = self.queue.enqueue(
            DELIVER_JOB,
            [e.to_dict() for e in events],
            retry=Retry(max=self.retry_max) if self.retry_max else None,
            job_timeout=JOB_TIMEOUT,
            failure_ttl=FAILURE_TTL,
            result_ttl=3600,
            description=f"deliver {len(events)} event(s): {', '.join(metrics)}",
        )
        return job.id


class DeadLetters:
    """Events that were not sent, with why; ``replay`` takes them back out."""

    def __init__(self, connection: redis.Redis, *, key: str = DEAD_LETTER_KEY) -> None:
        self.connection = connection
        self.key = key

    def add(
        self,
        event: dict[str, Any],
        *,
        reason: str,
        errors: Iterable[dict[str, Any]] = (),
        status: int | None = None,
    ) -> str:
        """Keep one event; logged with the profile masked."""
        record = {
            "id": uuid.uuid4().hex,
            "reason": reason,
            "status": status,
            "errors": list(errors),
            "event": event,
            "dead_at": time.time(),
        }
        self.connection.hset(self.key, record["id"], json.dumps(record, default=str))
        log.warning(
            "klaviyo: %s event kept as dead letter (%s) for %s",
            event.get("metric"),
            reason,
            mask_profile(event.get("profile") or {}),
        )
        return record["id"]

    def all(self) -> list[dict[str, Any]]:
        records = [json.loads(raw) for raw in self.connection.hvals(self.key)]
        return sorted(records, key=lambda r: r["dead_at"])

    def remove(self, record_id: str) -> None:
        self.connection.hdel(self.key, record_id)

    def count(self) -> int:
        return int(self.connection.hlen(self.key))
